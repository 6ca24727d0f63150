use cancel_scope::{cancellable, on_cancel};

#[cancellable]
async fn work(log: &mut Vec<u32>, early: bool) {
    if early {
        on_cancel! { log.push(1); }
    }
    std::future::pending::<()>().await;
}

fn main() {}
