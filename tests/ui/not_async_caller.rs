//! The fn is still emitted as the `#[cancellable]` fn it was meant to be, so
//! its callers type-check and the only error is at the missing `async`.
use cancel_scope::{CancellationToken, cancellable};

#[cancellable]
fn tick(count: &mut u32) -> u32 {
    *count += 1;
    *count
}

async fn caller(token: CancellationToken) -> u32 {
    let mut count = 0;
    tick(token, &mut count).await.unwrap_or(0)
}

fn main() {
    let _ = caller;
}
