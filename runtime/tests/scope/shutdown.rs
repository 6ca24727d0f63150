//! Shutting down and reporting: graceful then forced shutdown, dropping a
//! scope, detached blocking tasks, `shutdown_report` and its table, and why
//! a scope's token was cancelled.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize};
use std::time::Duration;

use cancel_scope_runtime::{CancelReason, CancellationToken, Scope, TaskError, TaskOutcome};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::common::{HANG, alive_tasks, alive_tasks_become, eventually, poll_once, unwrap_all};
use crate::rows;

/// Increments its counter when dropped.
struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_runs_every_cleanup_of_20k_parked_tasks_and_leaves_no_task() {
    const N: usize = 20_000;
    let baseline = alive_tasks();
    let parked = Arc::new(AtomicUsize::new(0));
    let cleanups: Arc<Vec<AtomicU8>> = Arc::new((0..N).map(|_| AtomicU8::new(0)).collect());

    let mut scope = Scope::new();
    for i in 0..N {
        let parked = parked.clone();
        let cleanups = cleanups.clone();
        scope.spawn(move |token: CancellationToken| async move {
            parked.fetch_add(1, SeqCst);
            tokio::select! {
                () = token.cancelled() => {}
                () = std::future::pending::<()>() => unreachable!(),
            }
            // Async cleanup.
            cleanups[i].fetch_add(1, SeqCst);
            tokio::task::yield_now().await;
            i
        });
    }
    assert_eq!(scope.len(), N);
    eventually("all tasks parked", || parked.load(SeqCst) == N).await;

    let results = scope.shutdown(Duration::from_secs(60)).await;
    assert_eq!(unwrap_all(results), (0..N).collect::<Vec<_>>());
    assert!(
        cleanups.iter().all(|c| c.load(SeqCst) == 1),
        "each cleanup ran exactly once"
    );
    assert!(scope.is_empty());
    alive_tasks_become(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_scope_of_20k_parked_tasks_aborts_them_all() {
    const N: usize = 20_000;
    let baseline = alive_tasks();
    let parked = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));

    let mut scope = Scope::new();
    for _ in 0..N {
        let parked = parked.clone();
        let guard = OnDrop(dropped.clone());
        scope.spawn(move |_token| async move {
            let _guard = guard;
            parked.fetch_add(1, SeqCst);
            std::future::pending::<()>().await; // ignores its token
        });
    }
    eventually("all tasks parked", || parked.load(SeqCst) == N).await;
    let token = scope.token().clone();

    drop(scope);
    assert!(token.is_cancelled());
    eventually("every task dropped", || dropped.load(SeqCst) == N).await;
    alive_tasks_become(baseline).await;
}

#[tokio::test(start_paused = true)]
async fn straggler_is_aborted_at_the_end_of_grace_and_not_before() {
    let grace = Duration::from_secs(10);
    let dropped = Arc::new(AtomicUsize::new(0));
    let (cleaned_tx, cleaned_rx) = oneshot::channel();

    let mut scope = Scope::new();
    scope.spawn(move |token| async move {
        token.cancelled().await;
        cleaned_tx.send(()).unwrap();
        "cooperative"
    });
    let guard = OnDrop(dropped.clone());
    scope.spawn(move |_token| async move {
        let _guard = guard;
        std::future::pending::<()>().await; // ignores its token
        "never"
    });

    let start = Instant::now();
    let shutdown = tokio::spawn(async move {
        let results = scope.shutdown(grace).await;
        (results, Instant::now())
    });
    cleaned_rx.await.unwrap(); // the shutdown has begun

    tokio::time::sleep_until(start + grace - Duration::from_millis(1)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the whole grace period"
    );
    assert_eq!(dropped.load(SeqCst), 0, "the straggler is still running");

    let (results, end) = shutdown.await.unwrap();
    assert!(end - start >= grace);
    assert_eq!(dropped.load(SeqCst), 1, "the straggler was dropped");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap(), &"cooperative");
    let err = results[1].as_ref().unwrap_err();
    assert!(err.is_aborted());
    assert!(!err.is_detached());
    assert!(!err.is_panic());
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_as_soon_as_every_task_has_finished() {
    let grace = Duration::from_secs(3600);
    let cleanups = Arc::new(AtomicUsize::new(0));
    let mut scope = Scope::new();
    for i in 0..3u64 {
        let cleanups = cleanups.clone();
        scope.spawn(move |token| async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_secs(i + 1)).await; // async cleanup
            cleanups.fetch_add(1, SeqCst);
            i
        });
    }
    let start = Instant::now();
    let results = scope.shutdown(grace).await;
    let elapsed = start.elapsed();
    assert_eq!(unwrap_all(results), [0, 1, 2]);
    assert_eq!(cleanups.load(SeqCst), 3);
    assert!(
        elapsed >= Duration::from_secs(3),
        "waited for the slowest cleanup"
    );
    assert!(
        elapsed < grace,
        "returned before the end of grace ({elapsed:?})"
    );
}

#[tokio::test]
async fn shutdown_of_an_empty_scope_returns_nothing() {
    let mut scope = Scope::<()>::new();
    assert!(scope.shutdown(Duration::from_secs(3600)).await.is_empty());
    assert!(scope.token().is_cancelled());
    assert!(scope.join_all().await.is_empty());
    assert!(scope.join_next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_shutdown_loses_no_result() {
    let grace = Duration::from_secs(10);
    let mut scope = Scope::new();
    // Two stragglers and one task that stops when cancelled.
    scope.spawn(|_token| std::future::pending());
    scope.spawn(|_token| std::future::pending());
    scope.spawn(|token| async move {
        token.cancelled().await;
        "cooperative"
    });

    {
        let mut shutdown = pin!(scope.shutdown(grace));
        assert!(poll_once(shutdown.as_mut()).await.is_pending()); // cancels the token
        tokio::time::sleep(grace).await; // the cooperative task finishes; grace ends
        // Takes the cooperative result, aborts the stragglers, then waits for
        // them: interrupted there.
        assert!(poll_once(shutdown.as_mut()).await.is_pending());
    }
    assert_eq!(scope.len(), 3);

    let mut results = Vec::new();
    while let Some(result) = tokio::time::timeout(HANG, scope.join_next()).await.unwrap() {
        results.push(result);
        assert_eq!(scope.len(), 3 - results.len());
    }
    assert_eq!(results.len(), 3);
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|v| *v == "cooperative"))
            .count(),
        1
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().is_err_and(TaskError::is_aborted))
            .count(),
        2
    );
}

#[tokio::test]
async fn dropping_a_scope_cancels_its_token_but_not_its_parent() {
    let parent = CancellationToken::new();
    let scope = Scope::<()>::child_of(&parent);
    let token = scope.token().clone();
    drop(scope);
    assert!(token.is_cancelled());
    assert!(!parent.is_cancelled());
}

#[tokio::test]
async fn a_blocking_task_that_ignores_its_token_is_detached_not_awaited() {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (finished_tx, finished_rx) = oneshot::channel();
    let mut scope = Scope::new();
    scope.spawn(|token| async move {
        token.cancelled().await;
        0
    });
    scope.spawn_blocking(move |_token| {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap(); // ignores its token
        finished_tx.send(()).unwrap();
        1
    });
    started_rx.await.unwrap();

    let results = tokio::time::timeout(HANG, scope.shutdown(Duration::from_millis(50)))
        .await
        .expect("shutdown does not wait for a blocking task");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap(), &0);
    let err = results[1].as_ref().unwrap_err();
    assert!(err.is_detached());
    assert!(err.is_aborted());
    assert!(!err.is_panic());
    assert!(scope.is_empty());

    // The detached closure keeps running until it returns.
    release_tx.send(()).unwrap();
    tokio::time::timeout(HANG, finished_rx)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn a_queued_blocking_task_never_starts_after_shutdown() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (finished_tx, finished_rx) = std::sync::mpsc::channel::<()>();
    let queued_ran = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        let (started_tx, started_rx) = oneshot::channel();
        let mut scope = Scope::new();
        scope.spawn_blocking(move |_token| {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            finished_tx.send(()).unwrap();
        });
        let ran = queued_ran.clone();
        scope.spawn_blocking(move |_token| ran.store(true, SeqCst)); // waits for the only thread
        started_rx.await.unwrap();
        let results = tokio::time::timeout(HANG, scope.shutdown(Duration::from_millis(20)))
            .await
            .unwrap();
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap_err().is_detached())
        );
    });
    release_tx.send(()).unwrap();
    finished_rx.recv_timeout(HANG).unwrap();
    drop(rt); // waits for the blocking thread, which would run the queued task now
    assert!(!queued_ran.load(SeqCst));
}

#[tokio::test(start_paused = true)]
async fn tasks_aborted_by_an_interrupted_shutdown_are_reported_with_their_ids() {
    let grace = Duration::from_secs(10);
    let mut scope = Scope::new();
    let straggler_a = scope.spawn(|_token| std::future::pending());
    let cooperative = scope.spawn(|token| async move {
        token.cancelled().await;
        "cooperative"
    });
    let straggler_b = scope.spawn(|_token| std::future::pending());
    {
        let mut shutdown = pin!(scope.shutdown(grace));
        assert!(poll_once(shutdown.as_mut()).await.is_pending()); // cancels
        tokio::time::sleep(grace).await;
        // Collects the cooperative task, aborts the stragglers, waits for
        // them: interrupted there.
        assert!(poll_once(shutdown.as_mut()).await.is_pending());
    }
    // A task spawned afterwards: the aborted ones are placed once it is done.
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let late = scope.spawn(move |_token| async move {
        gate_rx.await.unwrap();
        "late"
    });
    assert_eq!(scope.len(), 4);

    let (id, result) = scope.join_next_with_id().await.unwrap();
    assert_eq!((id, result.unwrap()), (cooperative, "cooperative"));
    gate_tx.send(()).unwrap();
    let mut rest = HashMap::new();
    while let Some((id, result)) = tokio::time::timeout(HANG, scope.join_next_with_id())
        .await
        .unwrap()
    {
        let shown = match result {
            Ok(v) => v.to_string(),
            Err(e) => e.to_string(),
        };
        assert!(rest.insert(id, shown).is_none(), "each id once");
        assert_eq!(scope.len(), 3 - rest.len());
    }
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[&late], "late");
    assert_eq!(
        rest[&straggler_a],
        "task aborted (scope cancelled: shut down)"
    );
    assert_eq!(
        rest[&straggler_b],
        "task aborted (scope cancelled: shut down)"
    );
}

#[tokio::test]
async fn after_shutdown_the_token_stays_cancelled_and_new_tasks_start_cancelled() {
    let mut scope = Scope::new();
    scope.spawn(|token| async move { token.is_cancelled() });
    assert_eq!(unwrap_all(scope.shutdown(HANG).await), [true]);
    scope.spawn(|token| async move { token.is_cancelled() });
    assert_eq!(unwrap_all(scope.join_all().await), [true]);

    // A fresh scope is the way to start over.
    let mut fresh = Scope::new();
    fresh.spawn(|token| async move { token.is_cancelled() });
    assert_eq!(unwrap_all(fresh.join_all().await), [false]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_report_says_how_each_task_ended() {
    let mut scope = Scope::new();
    let done = scope.spawn_named("done", |_token| async { "done" });
    scope.spawn_named("writer", |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_millis(250)).await; // flush
        "flushed"
    });
    scope.spawn(|_token| async {
        std::future::pending::<()>().await; // ignores its token
        "never"
    });
    scope.spawn_named(String::from("panicky"), |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        panic!("cleanup failed")
    });
    scope.spawn_named("early-panic", |_token| async { panic!("early") });
    tokio::task::yield_now().await; // "done" and "early-panic" finish

    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    let ms = Duration::from_millis;
    assert_eq!(
        rows(&report),
        [
            ("done", TaskOutcome::Completed, None),
            ("writer", TaskOutcome::Stopped, Some(ms(250))),
            ("task #2", TaskOutcome::Aborted, None),
            ("panicky", TaskOutcome::Panicked, Some(ms(100))),
            ("early-panic", TaskOutcome::Panicked, None),
        ]
    );
    assert_eq!(report.tasks()[0].id(), done);
    assert_eq!(report.elapsed(), Duration::from_secs(1));
    assert_eq!(report.grace(), Duration::from_secs(1));
    assert!(!report.was_cancelled_before());
    assert!(!report.is_clean());
    assert_eq!(report.count(TaskOutcome::Panicked), 2);
    assert_eq!(report.count(TaskOutcome::Detached), 0);
    // Deliberately changed (issue 12): a summary, then only what needs
    // attention, rather than one line per task.
    assert_eq!(
        report.to_string(),
        "\
shutdown of 5 tasks took 1.000s (grace 1.000s): 1 completed, 1 cleaned up (ended after the cancel), 2 panicked, 1 aborted
  task #2      aborted   task aborted (scope cancelled: shut down)
  panicky      panicked  after 100.0ms  task panicked: cleanup failed
  early-panic  panicked  task panicked: early"
    );

    let results = report.into_results();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap(), &"done");
    assert_eq!(results[1].as_ref().unwrap(), &"flushed");
    assert!(results[2].as_ref().unwrap_err().is_aborted());
    assert!(results[3].as_ref().unwrap_err().is_panic());
    assert!(results[4].as_ref().unwrap_err().is_panic());
    assert!(scope.is_empty());
    assert!(scope.token().is_cancelled());
}

#[tokio::test]
async fn shutdown_report_of_blocking_tasks_cleaned_up_and_detached() {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let mut scope = Scope::new();
    scope.spawn_blocking_named("cooperative", |token| {
        while !token.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        "stopped"
    });
    scope.spawn_blocking_named("stubborn", move |_token| {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap(); // ignores its token
        "released"
    });
    started_rx.await.unwrap();
    let report = tokio::time::timeout(HANG, scope.shutdown_report(Duration::from_millis(200)))
        .await
        .unwrap();
    let tasks = report.tasks();
    assert_eq!(tasks[0].name(), "cooperative");
    assert_eq!(tasks[0].outcome(), TaskOutcome::Stopped);
    assert!(tasks[0].cleanup_time().is_some());
    assert_eq!(tasks[1].name(), "stubborn");
    assert_eq!(tasks[1].outcome(), TaskOutcome::Detached);
    assert_eq!(tasks[1].cleanup_time(), None);
    let shown = report.to_string();
    assert!(
        shown.contains("\n  stubborn  detached  task detached"),
        "{shown}"
    );
    assert!(
        shown.contains("1 cleaned up (ended after the cancel), 1 detached"),
        "{shown}"
    );
    let results = report.into_results();
    assert_eq!(results[0].as_ref().unwrap(), &"stopped");
    assert!(results[1].as_ref().unwrap_err().is_detached());
    release_tx.send(()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_report_after_an_earlier_cancel_says_so() {
    let mut scope = Scope::new();
    scope.spawn_named("quick", |token| async move {
        token.cancelled().await;
        1
    });
    scope.spawn_named("slow", |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        2
    });
    scope.cancel();
    tokio::task::yield_now().await; // "quick" is done before the shutdown
    let report = scope.shutdown_report(Duration::from_secs(5)).await;
    assert!(report.was_cancelled_before());
    assert_eq!(report.cancel_reason(), CancelReason::Requested);
    assert_eq!(
        rows(&report),
        [
            ("quick", TaskOutcome::Completed, None),
            ("slow", TaskOutcome::Stopped, Some(Duration::from_secs(2))),
        ]
    );
    assert!(report.is_clean());
    assert!(
        report.to_string().ends_with(
            "1 completed, 1 cleaned up (ended after the cancel); the token was already \
             cancelled as it began (cancelled by the scope's owner)"
        ),
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_report_leaves_out_what_join_next_handed_out() {
    let mut scope = Scope::new();
    scope.spawn_named("a", |_token| async { "a" });
    scope.spawn_named("b", |token| async move {
        token.cancelled().await;
        "b"
    });
    scope.spawn(|token| async move {
        token.cancelled().await;
        "c"
    });
    assert_eq!(scope.join_next().await.unwrap().unwrap(), "a");
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["b", "task #2"]);
    assert_eq!(unwrap_all(report.into_results()), ["b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn the_report_table_cuts_long_names_and_blanks_control_characters() {
    let long = "x".repeat(50);
    let mut scope = Scope::new();
    scope.spawn_named(long, |_token| async { panic!("a\nb") });
    scope.spawn_named("two\nlines", |_token| async { panic!("c") });
    tokio::task::yield_now().await;
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert_eq!(
        report.tasks()[1].name(),
        "two\nlines",
        "the name is kept as given"
    );
    let cut = format!("{}…", "x".repeat(39));
    // Only tasks that need attention are listed (issue 12).
    assert_eq!(
        report.to_string(),
        format!(
            "\
shutdown of 2 tasks took 0µs (grace 1.000s): 2 panicked
  {cut}  panicked  task panicked: a b
  two lines{pad2}  panicked  task panicked: c",
            pad2 = " ".repeat(31),
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_report_of_an_empty_scope() {
    let mut scope = Scope::<()>::new();
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert!(report.tasks().is_empty() && report.is_clean());
    assert_eq!(
        report.to_string(),
        "shutdown of 0 tasks took 0µs (grace 1.000s)"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_report_works_with_the_other_policies() {
    let baseline = alive_tasks();
    let mut scope: Scope<Result<u32, &str>> = Scope::new()
        .with_limit(1)
        .with_timeout(Duration::from_secs(3600));
    scope.spawn_named("holder", |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(1)
    });
    scope.spawn_named("queued", |token| async move {
        // Runs once "holder" is done, its token already cancelled.
        assert!(token.is_cancelled());
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err("cancelled")
    });
    tokio::task::yield_now().await;
    let report = scope.shutdown_report(Duration::from_secs(10)).await;
    assert_eq!(
        rows(&report),
        [
            ("holder", TaskOutcome::Stopped, Some(Duration::from_secs(1))),
            ("queued", TaskOutcome::Stopped, Some(Duration::from_secs(2))),
        ]
    );
    alive_tasks_become(baseline).await; // the deadline's timer too
}

#[tokio::test]
async fn an_interrupted_shutdown_report_loses_no_result() {
    let mut scope = Scope::new();
    let (tx, rx) = oneshot::channel::<()>();
    scope.spawn_named("slow", |token| async move {
        token.cancelled().await;
        rx.await.unwrap();
        "slow"
    });
    scope.spawn_named("quick", |token| async move {
        token.cancelled().await;
        "quick"
    });
    {
        let mut report = pin!(scope.shutdown_report(HANG));
        assert!(poll_once(report.as_mut()).await.is_pending());
        tokio::task::yield_now().await;
        assert!(poll_once(report.as_mut()).await.is_pending()); // collects "quick"
    }
    assert_eq!(scope.len(), 2);
    tx.send(()).unwrap();
    let report = scope.shutdown_report(HANG).await;
    assert!(report.was_cancelled_before());
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["slow", "quick"]);
    assert_eq!(unwrap_all(report.into_results()), ["slow", "quick"]);
}

#[tokio::test]
async fn a_report_after_many_joins_shows_only_what_is_left() {
    // A long-lived scope that joins one by one, as a server does.
    let mut scope = Scope::new();
    for i in 0..100 {
        scope.spawn_named(format!("conn-{i}"), move |_token| async move { i });
        let (id, result) = scope.join_next_with_id().await.unwrap();
        assert_eq!(result.unwrap(), i);
        assert_eq!(id.to_string(), i.to_string());
    }
    scope.spawn(|_token| async { 100 });
    tokio::task::yield_now().await; // finishes before the shutdown
    let report = scope.shutdown_report(HANG).await;
    assert_eq!(rows(&report), [("task #100", TaskOutcome::Completed, None)]);
}

#[tokio::test(start_paused = true)]
async fn the_scope_says_why_its_token_was_cancelled() {
    // Not cancelled: no reason.
    let scope: Scope<()> = Scope::new();
    assert_eq!(scope.cancel_reason(), None);
    scope.cancel();
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Requested));

    // A failing task under fail_fast names itself; later causes do not
    // replace it.
    let mut scope: Scope<Result<u32, &str>> = Scope::new().fail_fast();
    let _ok = scope.spawn(|token| async move {
        token.cancelled().await;
        Ok(1)
    });
    let bad = scope.spawn(|_token| async { Err("boom") });
    scope.token().cancelled().await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
    scope.cancel();
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert_eq!(report.cancel_reason(), CancelReason::TaskFailed(bad));
    assert!(
        report
            .to_string()
            .contains(&format!("(task #{bad} failed)")),
        "{report}"
    );

    // A panic under fail_fast counts as a failure.
    let mut scope: Scope<Result<u32, &str>> = Scope::new().fail_fast();
    let panicked = scope.spawn(|_token| async { panic!("boom") });
    scope.token().cancelled().await;
    assert_eq!(
        scope.cancel_reason(),
        Some(CancelReason::TaskFailed(panicked))
    );
    drop(scope.join_all().await);

    // The first success under first_ok.
    let mut scope: Scope<Result<u32, &str>> = Scope::new().first_ok();
    let winner = scope.spawn(|_token| async { Ok(7) });
    scope.token().cancelled().await;
    assert_eq!(
        scope.cancel_reason(),
        Some(CancelReason::TaskSucceeded(winner))
    );
    drop(scope.join_all().await);

    // The deadline.
    let scope: Scope<()> = Scope::new().with_timeout(Duration::from_secs(3));
    scope.token().cancelled().await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Deadline));

    // The parent.
    let parent = CancellationToken::new();
    let scope: Scope<()> = Scope::child_of(&parent);
    parent.cancel();
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Parent));

    // A shutdown of a live scope.
    let mut scope: Scope<()> = Scope::new();
    scope.spawn(|token| async move { token.cancelled().await });
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Shutdown));
    assert_eq!(report.cancel_reason(), CancelReason::Shutdown);
    assert!(!report.was_cancelled_before());
}

/// The owner asks why while a fail-fast task, on another worker, is
/// cancelling the scope: the answer is `None` until the token is cancelled,
/// then the failed task, never a reason the scope does not have (a root
/// scope has no parent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_read_during_a_cancel_on_another_thread_is_the_right_one() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for _ in 0..2_000 {
        let mut scope: Scope<Result<(), ()>> = Scope::new().fail_fast();
        let go = Arc::new(AtomicBool::new(false));
        let started = go.clone();
        let failing = scope.spawn(move |_token| async move {
            while !started.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            Err(())
        });
        go.store(true, Ordering::Release);
        let reason = loop {
            if let Some(reason) = scope.cancel_reason() {
                break reason;
            }
            std::hint::spin_loop();
        };
        assert_eq!(reason, CancelReason::TaskFailed(failing));
        scope.join_all().await;
    }
}

/// Dropping a scope cancels its token for a reason its nested scopes report.
#[tokio::test]
async fn a_dropped_scope_is_the_reason_of_the_scopes_nested_in_its_tasks() {
    let mut outer: Scope<()> = Scope::new();
    let (reason_tx, reason_rx) = tokio::sync::oneshot::channel();
    let (made_tx, made_rx) = tokio::sync::oneshot::channel();
    outer.spawn(move |token| async move {
        let inner: Scope<()> = Scope::child_of(&token);
        let inner_token = inner.token().clone();
        // Outlives the aborted task: a watcher on its own.
        tokio::spawn(async move {
            inner_token.cancelled().await;
            let _ = reason_tx.send(inner.cancel_reason());
        });
        let _ = made_tx.send(());
        std::future::pending::<()>().await;
    });
    made_rx.await.unwrap();
    drop(outer);
    assert_eq!(reason_rx.await.unwrap(), Some(CancelReason::Dropped));
}
