use cancel_scope::cancellable;

#[cancellable(token = rx)]
async fn work(rx: u32) -> u32 {
    rx
}

fn main() {}
