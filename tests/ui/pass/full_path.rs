#![deny(warnings)]

#[cancel_scope::cancellable(token = stop)]
async fn work(log: &mut Vec<u32>) {
    cancel_scope::on_cancel!(log.push(0));
    if !stop.is_cancelled() {
        log.push(1);
    }
}

fn main() {
    let _ = work;
}
