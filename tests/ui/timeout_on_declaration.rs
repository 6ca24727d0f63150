use cancel_scope::cancellable;

trait Worker {
    #[cancellable(timeout = std::time::Duration::from_secs(1))]
    async fn work(&self);
}

fn main() {}
