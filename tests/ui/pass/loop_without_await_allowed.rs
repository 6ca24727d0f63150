//! `allow_no_await` silences the warning, and a loop that awaits never
//! triggers it.
#![deny(warnings)]

use cancel_scope::cancellable;

#[cancellable(allow_no_await)]
async fn spin(n: u64) -> u64 {
    let mut acc = 0;
    for i in 0..n {
        acc ^= i;
    }
    acc
}

#[cancellable]
async fn polite(n: u64) -> u64 {
    let mut acc = 0;
    for i in 0..n {
        acc ^= i;
        tokio::task::yield_now().await;
    }
    acc
}

fn main() {
    let _ = (spin, polite);
}
