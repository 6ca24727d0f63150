use cancel_scope::{CancellationToken, cancellable};

async fn watch(token: CancellationToken) {
    token.cancelled().await;
}

#[cancellable]
async fn work() {
    tokio::spawn(watch(token));
}

fn main() {}
