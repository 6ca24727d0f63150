//! Reaping: a long-lived scope frees its tasks as they end, stays flat under
//! churn, and still reports its failures and stragglers by name.

use std::time::Duration;

use cancel_scope_runtime::{Scope, TaskOutcome};

use crate::common::{HANG, alive_tasks, alive_tasks_become};
use crate::settle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_short_tasks_through_a_reaping_scope_stay_flat() {
    const N: usize = 200_000;
    const LIMIT: usize = 64;
    let baseline = alive_tasks();
    let mut scope: Scope<Result<(), String>> = Scope::new().reaping().with_limit(LIMIT);
    let mut peak_len = 0;
    let mut peak_alive = 0;
    for n in 0..N {
        scope
            .spawn_when_ready(move |_token| async move {
                if n % 50_000 == 7 {
                    Err(format!("bad request {n}"))
                } else {
                    Ok(())
                }
            })
            .await;
        peak_len = peak_len.max(scope.len());
        if n % 1000 == 0 {
            peak_alive = peak_alive.max(alive_tasks() - baseline);
        }
    }
    scope.join_all().await;
    assert!(scope.is_empty());
    // What a user can observe of the scope's size: it never holds more than
    // the tasks that run, however many went through.
    assert!(peak_len <= LIMIT, "len() peaked at {peak_len}");
    // A task frees its place as it reports its end, a moment before Tokio
    // retires it on its worker: at most one such task per worker.
    assert!(peak_alive <= LIMIT + 2, "{peak_alive} tasks alive at once");
    let report = scope.shutdown_report(HANG).await;
    assert_eq!(report.len(), N);
    assert_eq!(report.count(TaskOutcome::Completed), N - 4);
    assert_eq!(report.count(TaskOutcome::Failed), 4);
    let failed: Vec<_> = report.needs_attention().map(|t| t.error()).collect();
    assert_eq!(
        failed,
        [
            Some("bad request 7"),
            Some("bad request 50007"),
            Some("bad request 100007"),
            Some("bad request 150007")
        ]
    );
    alive_tasks_become(baseline).await;
}

#[tokio::test]
async fn a_plain_scope_keeps_what_is_not_joined_a_reaping_one_does_not() {
    let mut plain = Scope::new();
    let mut reaping = Scope::<()>::new().reaping();
    for _ in 0..1000 {
        plain.spawn(|_token| async {});
        reaping.spawn(|_token| async {});
    }
    reaping.join_all().await; // waits; hands out nothing
    crate::common::eventually("every plain task ran", || {
        plain.len() == 1000 && reaping.is_empty()
    })
    .await;
    assert_eq!(plain.join_all().await.len(), 1000);
}

#[tokio::test]
async fn a_failing_task_is_reported_as_failed_by_name() {
    let mut scope: Scope<Result<(), String>> = Scope::new().reaping();
    scope.spawn_named("conn 10.0.0.7", |_token| async {
        Err("malformed request".to_string())
    });
    scope.spawn_named("conn 10.0.0.8", |_token| async { Ok(()) });
    scope.spawn_named("conn 10.0.0.9", |_token| async { panic!("bug") });
    scope.join_all().await;
    let report = scope.shutdown_report(HANG).await;
    assert!(!report.is_clean());
    let rows: Vec<_> = report
        .needs_attention()
        .map(|t| (t.name(), t.outcome(), t.error()))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "conn 10.0.0.7",
                TaskOutcome::Failed,
                Some("malformed request")
            ),
            (
                "conn 10.0.0.9",
                TaskOutcome::Panicked,
                Some("task panicked: bug")
            ),
        ]
    );
    let shown = report.to_string();
    assert!(
        shown.starts_with("shutdown of 3 tasks took"),
        "the summary counts every task: {shown}"
    );
    assert!(
        shown.contains("1 completed, 1 failed, 1 panicked"),
        "{shown}"
    );
    assert!(
        shown.contains("\n  conn 10.0.0.7  failed    malformed request"),
        "{shown}"
    );
    assert!(
        !shown.contains("10.0.0.8"),
        "only what needs attention: {shown}"
    );
}

#[tokio::test]
async fn a_reaping_scope_without_a_limit_aborts_on_drop_and_reports_its_stragglers() {
    let baseline = alive_tasks();
    let scope = {
        let mut scope = Scope::<()>::new().reaping();
        for _ in 0..1000 {
            scope.spawn(|_token| std::future::pending());
        }
        scope
    };
    settle().await;
    drop(scope);
    alive_tasks_become(baseline).await;

    let mut scope = Scope::<()>::new().reaping();
    for n in 0..100 {
        scope.spawn_named(format!("conn {n}"), move |token| async move {
            if n % 2 == 0 {
                token.cancelled().await; // cleans up
            } else {
                std::future::pending::<()>().await; // stuck
            }
        });
    }
    scope.spawn(|_token| async {});
    settle().await;
    let report = scope.shutdown_report(Duration::from_millis(10)).await;
    assert_eq!(report.len(), 101);
    assert_eq!(report.count(TaskOutcome::Completed), 1);
    assert_eq!(report.count(TaskOutcome::Stopped), 50);
    assert_eq!(report.count(TaskOutcome::Aborted), 50);
    assert_eq!(report.needs_attention().count(), 32, "the log is bounded");
    let shown = report.to_string();
    assert!(shown.ends_with("\n  (and 18 more not listed)"), "{shown}");
    alive_tasks_become(baseline).await;
}
