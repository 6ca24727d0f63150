use cancel_scope::{cancellable, on_cancel};

#[cancellable]
async fn work(log: &mut Vec<u32>) {
    on_cancel! { log.push(1); }
    on_cancel! { log.push(2); }
    std::future::pending::<()>().await;
}

fn main() {}
