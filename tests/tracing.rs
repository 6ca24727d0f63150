//! With the `tracing` feature, a cancelled `#[cancellable]` fn emits one
//! event: its name, the reason, and (with a cleanup) how long the cleanup
//! took. Run with `cargo test --features tracing --test tracing` (CI does).
#![cfg(feature = "tracing")]

use std::time::Duration;

use cancel_scope::{CancellationToken, Scope, cancellable, on_cancel};
use common::{Recorder, field, run_recorded};

mod common;

#[cancellable]
async fn with_cleanup(log: &mut Vec<&'static str>) {
    log.push("setup");
    on_cancel! {
        tokio::task::yield_now().await;
        log.push("cleanup");
    }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn without_cleanup() {
    std::future::pending::<()>().await;
}

#[cancellable]
async fn completes() -> u32 {
    1
}

#[test]
fn a_cancelled_fn_emits_one_event_with_its_name_reason_and_cleanup_time() {
    let recorder = Recorder::default();
    let events = recorder.events.clone();
    run_recorded(recorder, false, async {
        let token = CancellationToken::new();
        assert_eq!(completes(token.clone()).await, Ok(1));
        token.cancel();
        let mut log = Vec::new();
        assert!(with_cleanup(token.clone(), &mut log).await.is_err());
        assert_eq!(log, ["setup", "cleanup"]);
        assert!(without_cleanup(token).await.is_err());
    });
    let events = events.lock().unwrap();
    let ours: Vec<_> = events
        .iter()
        .filter(|e| field(e, "target") == Some("cancel_scope"))
        .collect();
    assert_eq!(
        ours.len(),
        2,
        "one event per cancelled fn, none for `completes`: {ours:?}"
    );
    assert_eq!(field(ours[0], "fn_name"), Some("with_cleanup"));
    assert_eq!(field(ours[0], "reason"), Some("cancelled"));
    assert!(field(ours[0], "cleanup_us").is_some(), "{:?}", ours[0]);
    assert_eq!(field(ours[1], "fn_name"), Some("without_cleanup"));
    assert_eq!(field(ours[1], "reason"), Some("cancelled"));
    assert_eq!(field(ours[1], "cleanup_us"), None);
}

#[cancellable]
async fn calls_two(log: &mut Vec<&'static str>) {
    let _ = without_cleanup(token.clone()).await;
    let _ = with_cleanup(token.clone(), log).await;
}

#[test]
fn calls_nested_in_a_scope_task_each_report_the_scopes_reason() {
    let recorder = Recorder::default();
    let events = recorder.events.clone();
    let bad = run_recorded(recorder, false, async {
        let mut scope: Scope<Result<(), &str>> = Scope::new().fail_fast();
        scope.spawn(|token| async move {
            let mut log = Vec::new();
            let _ = calls_two(token, &mut log).await;
            Ok(())
        });
        let bad = scope.spawn(|_token| async {
            tokio::task::yield_now().await;
            Err("bad")
        });
        scope.join_all().await;
        bad
    });
    let events = events.lock().unwrap();
    let ours: Vec<_> = events
        .iter()
        .filter(|e| field(e, "target") == Some("cancel_scope"))
        .map(|e| (field(e, "fn_name").unwrap(), field(e, "reason").unwrap()))
        .collect();
    let reason = format!("cancelled: task #{bad} failed");
    // One event per cancelled fn, innermost first: the nested call, cancelled
    // with its caller; the second one, which the body then starts with the
    // cancelled token; then the caller.
    assert_eq!(
        ours,
        [
            ("without_cleanup", reason.as_str()),
            ("with_cleanup", reason.as_str()),
            ("calls_two", reason.as_str())
        ],
    );
}

#[test]
fn every_scope_task_runs_in_a_span_with_its_id_and_name() {
    let recorder = Recorder::default();
    let spans = recorder.spans.clone();
    run_recorded(recorder, false, async {
        let mut scope: Scope<()> = Scope::new();
        scope.spawn(|_token| async {});
        scope.spawn_named("writer", |token| async move { token.cancelled().await });
        scope.shutdown(Duration::from_secs(5)).await;
    });
    let spans = spans.lock().unwrap();
    let tasks: Vec<_> = spans
        .iter()
        .filter(|s| field(s, "span") == Some("task"))
        .collect();
    assert_eq!(tasks.len(), 2, "{spans:?}");
    assert!(
        tasks
            .iter()
            .all(|s| field(s, "target") == Some("cancel_scope"))
    );
    assert_eq!(field(tasks[0], "id"), Some("0"));
    assert_eq!(field(tasks[0], "name"), None);
    assert_eq!(field(tasks[1], "id"), Some("1"));
    assert_eq!(field(tasks[1], "name"), Some("writer"));
}
