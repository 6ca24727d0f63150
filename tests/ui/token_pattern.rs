use cancel_scope::{CancellationToken, cancellable};

#[cancellable]
async fn work(#[token] ref t: CancellationToken) -> bool {
    t.is_cancelled()
}

fn main() {}
