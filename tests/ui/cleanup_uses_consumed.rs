use cancel_scope::{cancellable, on_cancel};

struct Tx;

impl Tx {
    async fn commit(self) {}
    async fn rollback(self) {}
}

#[cancellable]
async fn work() {
    let tx = Tx;
    on_cancel! { tx.rollback().await; }
    tx.commit().await;
}

fn main() {}
