use cancel_scope::on_cancel;

async fn work(log: &mut Vec<u32>) {
    on_cancel! { log.push(1); }
    std::future::pending::<()>().await;
}

fn main() {}
