use cancel_scope::{cancellable, on_cancel};

async fn flush(_: &mut Vec<u8>) -> std::io::Result<()> {
    Ok(())
}

#[cancellable]
async fn work(buf: &mut Vec<u8>) -> std::io::Result<()> {
    on_cancel! { flush(buf).await?; }
    flush(buf).await
}

fn main() {}
