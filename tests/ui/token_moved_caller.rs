//! An error in the body: the fn is emitted as written, so neither its
//! caller nor the rest of its body reports anything; the only error is at
//! the move.
use cancel_scope::{CancellationToken, cancellable, on_cancel};

async fn watch(token: CancellationToken) {
    token.cancelled().await;
}

#[cancellable]
async fn work(log: &mut Vec<u32>) -> usize {
    on_cancel! { log.push(0); }
    tokio::spawn(watch(token));
    log.len()
}

async fn caller() -> usize {
    let mut log = Vec::new();
    work(&mut log).await + 1
}

fn main() {
    let _ = caller;
}
