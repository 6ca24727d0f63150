//! `#[cancellable]` above `#[tracing::instrument]`: instrument sees the
//! rewritten fn, its injected `token` parameter included (skip it by name).
//! The other order works too when there is no `on_cancel!` to hide.
//! (`tracing_attributes::instrument` is `tracing::instrument`, see Cargo.toml.)
use cancel_scope::{CancellationToken, cancellable, on_cancel};

#[cancellable]
#[tracing_attributes::instrument(skip(token))]
async fn work(n: u32) -> u32 {
    let doubled = n * 2;
    on_cancel! { println!("cancelled"); }
    doubled
}

#[tracing_attributes::instrument]
#[cancellable]
async fn raced(n: u32) -> u32 {
    tokio::task::yield_now().await;
    n + 1
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(work(CancellationToken::new(), 2).await, Ok(4));
    assert_eq!(raced(CancellationToken::new(), 2).await, Ok(3));
}
