use cancel_scope::{CancellationToken, cancellable};

#[cancellable]
async fn work(token: CancellationToken) -> bool {
    token.is_cancelled()
}

fn main() {}
