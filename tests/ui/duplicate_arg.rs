use std::time::Duration;

use cancel_scope::cancellable;

#[cancellable(timeout = Duration::from_secs(1), timeout = Duration::from_secs(2))]
async fn work() {}

fn main() {}
