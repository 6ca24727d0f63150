use cancel_scope::cancellable;

#[cancellable(flatten)]
async fn work() -> Option<u32> {
    Some(1)
}

fn main() {}
