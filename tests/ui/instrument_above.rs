use cancel_scope::{cancellable, on_cancel};

#[tracing::instrument]
#[cancellable]
async fn work(n: u32) -> u32 {
    let doubled = n * 2;
    on_cancel! { println!("cancelled"); }
    doubled
}

fn main() {}
