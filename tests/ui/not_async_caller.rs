//! On an error the fn is emitted as written (no token injected, the declared
//! return type), so its callers, which call it as written, type-check; the
//! body's use of the token it was meant to get reports nothing either. The
//! only error is at the missing `async`.
use cancel_scope::cancellable;

#[cancellable]
fn tick(count: &mut u32) -> u32 {
    if token.is_cancelled() {
        return 0;
    }
    *count += 1;
    *count
}

fn caller() -> u32 {
    let mut count = 0;
    tick(&mut count) + tick(&mut count)
}

fn main() {
    let _ = caller;
}
