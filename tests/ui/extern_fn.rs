use cancel_scope::cancellable;

#[cancellable]
async extern "C" fn answer() -> u32 {
    42
}

fn main() {}
