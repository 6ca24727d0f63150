use cancel_scope::{CancellationToken, cancellable};

#[cancellable]
async fn work(#[token] a: CancellationToken, #[token] b: &CancellationToken) -> bool {
    a.is_cancelled() || b.is_cancelled()
}

fn main() {}
