use cancel_scope::cancellable;

#[cancellable]
struct Worker {
    id: u32,
}

fn main() {}
