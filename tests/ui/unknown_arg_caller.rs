//! A misspelt argument: the fn is emitted as written, so its caller, which
//! calls it as written, type-checks; the only error is at the argument.
use cancel_scope::cancellable;

#[cancellable(tokn = cancel)]
async fn double(x: u32) -> u32 {
    x * 2
}

async fn caller() -> u32 {
    double(21).await
}

fn main() {
    let _ = caller;
}
