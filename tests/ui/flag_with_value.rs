use cancel_scope::cancellable;

#[cancellable(flatten = true)]
async fn work() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
