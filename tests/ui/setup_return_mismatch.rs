use cancel_scope::{cancellable, on_cancel};

#[cancellable]
async fn work(log: &mut Vec<u32>) -> u32 {
    if log.is_empty() {
        return "empty";
    }
    on_cancel! { log.clear(); }
    7
}

fn main() {}
