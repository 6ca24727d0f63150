use cancel_scope::cancellable;

#[cancellable(timeout)]
async fn work() {}

fn main() {}
