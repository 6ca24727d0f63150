//! A raced body that loops without `.await` cannot be cancelled until it
//! ends: `#[cancellable]` warns (denied here so trybuild sees it).
#![deny(deprecated)]

use cancel_scope::cancellable;

#[cancellable]
async fn spin(n: u64) -> u64 {
    let mut acc = 0;
    for i in 0..n {
        acc ^= i;
    }
    acc
}

fn main() {}
