use cancel_scope::{CancellationToken, cancellable};

#[cancellable(token = cancel)]
async fn work(#[token] token: CancellationToken) -> bool {
    token.is_cancelled()
}

fn main() {}
