use cancel_scope::cancellable;

#[cancellable(cleanup_timeout = std::time::Duration::from_secs(1))]
async fn work() {}

fn main() {}
