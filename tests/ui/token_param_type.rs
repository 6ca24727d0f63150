use cancel_scope::cancellable;

#[cancellable]
async fn work(#[token] deadline: u64) -> u64 {
    deadline
}

fn main() {}
