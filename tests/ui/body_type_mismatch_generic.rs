use cancel_scope::cancellable;

#[cancellable]
async fn work(x: u32) -> Vec<u32> {
    let doubled = x * 2;
    format!("{doubled}")
}

fn main() {}
