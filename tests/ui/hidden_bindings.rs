//! The expansion's own bindings are invisible to the user's code.
use cancel_scope::{cancellable, on_cancel};

#[cancellable]
async fn work(log: &mut Vec<u32>) {
    log.push(1);
    on_cancel! { log.push(2); }
    let _ = cancel_scope_token.is_cancelled();
}

fn main() {}
