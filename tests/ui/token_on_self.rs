use cancel_scope::cancellable;

struct Worker;

impl Worker {
    #[cancellable]
    async fn work(#[token] &self) {}
}

fn main() {}
