//! `#[cancellable]` above `#[tracing::instrument]`: instrument sees the
//! rewritten fn, its injected `token` parameter included (skip it by name).
use cancel_scope::{CancellationToken, cancellable, on_cancel};

#[cancellable]
#[tracing::instrument(skip(token))]
async fn work(n: u32) -> u32 {
    let doubled = n * 2;
    on_cancel! { println!("cancelled"); }
    doubled
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(work(CancellationToken::new(), 2).await, Ok(4));
}
