//! A `const fn`: emitted as written, so it stays usable in a const context;
//! the only error is at `const`.
use cancel_scope::cancellable;

#[cancellable]
const fn answer() -> u32 {
    42
}

const ANSWER: u32 = answer();

fn main() {
    let _ = ANSWER;
}
