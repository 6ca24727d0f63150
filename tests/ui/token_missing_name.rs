use cancel_scope::cancellable;

#[cancellable(token)]
async fn work() {}

fn main() {}
