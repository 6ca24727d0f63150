use cancel_scope::cancellable;

#[cancellable]
async fn work() {
    tokio::spawn(async move {
        token.cancelled().await;
    });
}

fn main() {}
