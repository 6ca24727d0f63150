//! What the setup and the body may do with the token without moving it, and
//! a shadowing clone that a `move` block may take: none is reported.
use cancel_scope::{CancellationToken, cancellable, on_cancel};

async fn watch(token: CancellationToken) {
    token.cancelled().await;
}

fn by_ref(token: &CancellationToken) -> bool {
    token.is_cancelled()
}

#[cancellable]
async fn borrows(log: &mut Vec<bool>) {
    log.push(by_ref(&token));
    let child = token.child_token();
    on_cancel! {
        // The cleanup may move it.
        drop(token);
    }
    let _ = &token;
    let (a, b) = (token.clone(), child);
    tokio::spawn(watch(a));
    let handle = tokio::spawn(async move {
        b.cancelled().await;
    });
    handle.abort();
    log.push(token.is_cancelled());
}

#[cancellable]
async fn shadows() {
    let token = token.clone();
    tokio::spawn(async move {
        token.cancelled().await;
    })
    .abort();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut log = Vec::new();
    borrows(CancellationToken::new(), &mut log).await.unwrap();
    assert_eq!(log, [false, false]);
    shadows(CancellationToken::new()).await.unwrap();
}
