use cancel_scope::cancellable;

#[cancellable(tokn = cancel)]
async fn work() {}

fn main() {}
