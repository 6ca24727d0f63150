//! A `#[token]` marker on a parameter of another type: the fn is emitted as
//! written, marker removed, so its caller type-checks; the only error is at
//! the parameter's type.
use cancel_scope::cancellable;

#[cancellable]
async fn work(#[token] deadline: u64) -> u64 {
    deadline
}

async fn caller() -> u64 {
    work(5).await
}

fn main() {
    let _ = caller;
}
