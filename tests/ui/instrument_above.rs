//! `#[tracing::instrument]` (spelled `tracing_attributes::instrument`, the
//! same macro, see Cargo.toml) above `#[cancellable]`, with an `on_cancel!`.
use cancel_scope::{cancellable, on_cancel};

#[tracing_attributes::instrument]
#[cancellable]
async fn work(n: u32) -> u32 {
    let doubled = n * 2;
    on_cancel! { println!("cancelled"); }
    doubled
}

fn main() {}
