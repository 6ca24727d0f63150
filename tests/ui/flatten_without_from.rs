use cancel_scope::cancellable;

#[derive(Debug)]
struct MyError;

#[cancellable(flatten)]
async fn work() -> Result<u32, MyError> {
    Ok(1)
}

fn main() {}
