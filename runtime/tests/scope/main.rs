//! `Scope` as a user observes it: results, cleanups that ran, tokens,
//! reports, and the tasks left alive in the runtime; one module per thing a
//! user does with a scope.
//!
//! No test asserts on wall-clock durations: time-dependent tests run on a
//! paused clock (where durations are exact), and the real-time ones only
//! bound a wait to catch a hang; "not yet" is asserted after letting a
//! single-threaded runtime run everything else that is ready.

use cancel_scope_runtime::{ShutdownReport, TaskOutcome};
use std::time::Duration;

#[path = "../common/mod.rs"]
mod common;

mod handles;
mod limits;
mod policies;
mod reaping;
mod shutdown;
mod spawn;

/// The outcome, cleanup time and name of each task.
fn rows<T>(report: &ShutdownReport<T>) -> Vec<(&str, TaskOutcome, Option<Duration>)> {
    report
        .tasks()
        .iter()
        .map(|t| (t.name(), t.outcome(), t.cleanup_time()))
        .collect()
}

/// Lets every other ready task of a current-thread runtime run.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}
