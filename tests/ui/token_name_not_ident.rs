use cancel_scope::cancellable;

#[cancellable(token = self)]
async fn work() {}

fn main() {}
