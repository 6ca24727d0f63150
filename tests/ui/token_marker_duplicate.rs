use cancel_scope::{CancellationToken, cancellable};

#[cancellable]
async fn work(#[token] #[token] t: CancellationToken) -> bool {
    t.is_cancelled()
}

fn main() {}
