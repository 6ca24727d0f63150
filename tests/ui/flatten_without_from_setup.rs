use cancel_scope::{cancellable, on_cancel};

#[derive(Debug)]
struct MyError;

#[cancellable(flatten)]
async fn work(log: &mut Vec<u32>) -> Result<u32, MyError> {
    log.push(1);
    on_cancel! { log.clear(); }
    Ok(1)
}

fn main() {}
