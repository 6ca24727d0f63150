//! Helpers the runtime's test files share. Each file uses a subset.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use cancel_scope_runtime::TaskError;

/// Generous bound for waits that only exist to turn a hang into a failure.
pub const HANG: Duration = Duration::from_secs(10);

/// The runtime's alive-task count.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (real time, bounded) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + HANG;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until the runtime has `n` alive tasks (again).
pub async fn alive_tasks_become(n: usize) {
    eventually("alive tasks", || alive_tasks() == n).await;
    assert_eq!(alive_tasks(), n);
}

/// Polls `fut` once with the current task's context.
pub async fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(|cx| Poll::Ready(fut.take().expect("polled once").poll(cx))).await
}

/// Every result, unwrapped.
pub fn unwrap_all<T>(results: Vec<Result<T, TaskError>>) -> Vec<T> {
    results.into_iter().map(Result::unwrap).collect()
}
