//! `use cancel_scope::on_cancel;` is used even though the attribute consumes
//! the statement, and nothing the expansion adds trips a lint.
#![deny(warnings)]

use cancel_scope::{cancellable, on_cancel};

#[cancellable]
async fn work(log: &mut Vec<u32>) -> usize {
    let before = log.len();
    on_cancel! { log.push(0); }
    log.push(1);
    before
}

fn main() {
    let _ = work;
}
