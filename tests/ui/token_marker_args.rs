use cancel_scope::{CancellationToken, cancellable};

#[cancellable]
async fn work(#[token(owned)] t: CancellationToken) -> bool {
    t.is_cancelled()
}

fn main() {}
