use cancel_scope::cancellable;

#[cancellable(5)]
async fn work() {}

fn main() {}
