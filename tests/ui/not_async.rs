use cancel_scope::cancellable;

#[cancellable]
fn tick(count: &mut u32) {
    *count += 1;
}

fn main() {}
