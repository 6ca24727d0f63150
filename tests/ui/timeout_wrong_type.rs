use cancel_scope::cancellable;

#[cancellable(timeout = 5)]
async fn work() {}

fn main() {}
