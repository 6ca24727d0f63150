//! `Scope` as a server uses it (issue 12): a limit that pushes back on the
//! accept loop, a reaping scope that stays flat under churn, failures
//! reported by name, one task cancelled or aborted alone, spawning from
//! other tasks; and the adversarial cases: limit order on a multi-thread
//! runtime, queued blocking tasks after a shutdown or a drop.
//!
//! No test asserts on wall-clock time; "not yet" is asserted after letting
//! a single-threaded runtime run everything else that is ready.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cancel_scope_runtime::{CancelReason, Scope, TaskOutcome};
use tokio::sync::{mpsc, oneshot};

mod common;
use common::{HANG, alive_tasks, alive_tasks_become};

/// Lets every other ready task of a current-thread runtime run.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A connection, as the accept loop sees it: closed when `close` fires.
struct Conn {
    id: usize,
    close: oneshot::Receiver<()>,
}

/// An accept loop over a channel of connections: reserves a place before it
/// accepts, as a server should; counts what it accepted.
async fn accept_loop(
    mut listener: mpsc::UnboundedReceiver<Conn>,
    accepted: Arc<AtomicUsize>,
    limit: usize,
) -> Scope<Result<(), String>> {
    let conns = Scope::new().reaping().with_limit(limit);
    loop {
        let permit = conns.reserve().await;
        let Some(conn) = listener.recv().await else {
            break;
        };
        accepted.fetch_add(1, SeqCst);
        permit.spawn_named(format!("conn {}", conn.id), move |token| async move {
            tokio::select! {
                _ = conn.close => Ok(()),
                () = token.cancelled() => Ok(()),
            }
        });
    }
    conns
}

#[tokio::test(flavor = "current_thread")]
async fn at_the_limit_the_next_connection_is_not_accepted_until_one_closes() {
    let (connect, listener) = mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(accept_loop(listener, accepted.clone(), 2));
    let mut closers = Vec::new();
    for id in 0..3 {
        let (close, rx) = oneshot::channel();
        closers.push(close);
        connect.send(Conn { id, close: rx }).unwrap();
    }
    settle().await;
    assert_eq!(accepted.load(SeqCst), 2, "the third waits in the backlog");
    closers.remove(0).send(()).unwrap(); // connection 0 closes
    settle().await;
    assert_eq!(accepted.load(SeqCst), 3, "now there is room");
    drop(connect);
    for close in closers {
        close.send(()).unwrap();
    }
    let mut conns = tokio::time::timeout(HANG, server).await.unwrap().unwrap();
    let report = conns.shutdown_report(HANG).await;
    assert_eq!(report.count(TaskOutcome::Completed), 3);
    assert!(report.is_clean(), "{report}");
}

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
    common::eventually("every plain task ran", || {
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
async fn a_fail_fast_reason_names_the_failed_task() {
    let mut scope: Scope<Result<(), &str>> = Scope::new().fail_fast();
    scope.spawn_named("worker", |_token| std::future::pending());
    let db = scope.spawn_named("db", |_token| async { Err("refused") });
    scope.token().cancelled().await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(db)));
    let results = scope.shutdown(Duration::ZERO).await;
    let aborted = results[0].as_ref().unwrap_err();
    assert_eq!(
        aborted.to_string(),
        format!("task aborted (scope cancelled: task #{db} \"db\" failed)")
    );
}

#[tokio::test]
async fn one_stuck_task_is_aborted_alone() {
    let mut scope = Scope::new().reaping().track_failures();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for n in 0..5 {
        let done = done_tx.clone();
        let handle = scope
            .spawn_when_ready(move |token| async move {
                if n == 2 {
                    std::future::pending::<()>().await; // stuck: ignores its token
                }
                token.cancelled().await;
                done.send(n).unwrap();
            })
            .await;
        handles.push(handle);
    }
    settle().await;
    handles[2].abort();
    common::eventually("the stuck task is gone", || handles[2].is_finished()).await;
    assert_eq!(scope.len(), 4, "the others run on");
    assert!(!scope.token().is_cancelled());
    handles[0].cancel(); // a polite one: its own token only
    assert_eq!(done_rx.recv().await, Some(0));
    assert_eq!(scope.len(), 3);
    let report = scope.shutdown_report(HANG).await;
    assert_eq!(report.count(TaskOutcome::Aborted), 1);
    let names: Vec<_> = report.needs_attention().map(|t| t.name()).collect();
    assert_eq!(names, ["task #2"]);
    assert_eq!(report.count(TaskOutcome::Stopped), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_limit_one_starts_queued_tasks_in_spawn_order_on_a_multi_thread_runtime() {
    for limit in [1, 3] {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut scope = Scope::new().with_limit(limit);
        for n in 0..200 {
            let order = order.clone();
            scope.spawn(move |_token| async move {
                order.lock().unwrap().push(n);
                tokio::task::yield_now().await;
            });
        }
        scope.join_all().await;
        let order = order.lock().unwrap();
        if limit == 1 {
            assert_eq!(*order, (0..200).collect::<Vec<_>>());
        } else {
            // Started in spawn order: no task starts before one spawned
            // `limit` earlier.
            for (i, n) in order.iter().enumerate() {
                assert!(*n < i + limit, "task {n} started {i}th");
            }
        }
    }
}

/// A scope with one blocking task holding the only place, and one queued
/// behind it that records whether its closure ever ran.
fn blocked_scope(
    release: std::sync::mpsc::Receiver<()>,
    started: oneshot::Sender<()>,
    ran: Arc<AtomicBool>,
) -> Scope<()> {
    let mut scope = Scope::new().with_limit(1);
    scope.spawn_blocking(move |_token| {
        started.send(()).unwrap();
        let _ = release.recv();
    });
    scope.spawn_blocking(move |_token| ran.store(true, SeqCst));
    scope
}

#[test]
fn a_queued_blocking_task_never_runs_after_shutdown_or_drop() {
    for shut_down in [true, false] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let ran = Arc::new(AtomicBool::new(false));
        rt.block_on(async {
            let (started_tx, started_rx) = oneshot::channel();
            let mut scope = blocked_scope(release_rx, started_tx, ran.clone());
            started_rx.await.unwrap();
            if shut_down {
                let results = scope.shutdown(Duration::from_millis(20)).await;
                assert!(results[0].as_ref().unwrap_err().is_detached());
                assert!(results[1].as_ref().unwrap_err().is_aborted());
            } else {
                drop(scope);
            }
        });
        release_tx.send(()).unwrap(); // the place frees up now
        drop(rt); // waits for the blocking thread
        assert!(!ran.load(SeqCst), "shut_down: {shut_down}");
    }
}

#[tokio::test]
async fn a_spawner_spawns_from_other_tasks_and_is_refused_once_the_scope_stops() {
    let mut scope = Scope::new();
    let spawner = scope.spawner();
    let (tx, mut rx) = mpsc::unbounded_channel();
    scope.spawn(move |_token| async move {
        // A handler spawns a sub-task into its own scope.
        let sub = spawner.spawn_named("sub", |token| async move {
            token.cancelled().await;
            "sub cleaned up"
        });
        tx.send(spawner).unwrap();
        assert!(sub.is_some());
        "handler"
    });
    let spawner = rx.recv().await.unwrap();
    assert_eq!(scope.len(), 2);
    let results = scope.shutdown(HANG).await;
    let values: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, ["handler", "sub cleaned up"]);
    let called = AtomicBool::new(false);
    assert!(
        spawner
            .spawn(|_token| {
                called.store(true, SeqCst);
                async { "late" }
            })
            .is_none()
    );
    assert!(!called.load(SeqCst), "a refused spawn does not call f");
}

#[tokio::test]
async fn tasks_a_spawner_started_do_not_outlive_a_dropped_scope() {
    let baseline = alive_tasks();
    let scope = Scope::<()>::new().with_limit(2);
    let spawner = scope.spawner();
    let remote = spawner.clone(); // `Send + Sync`
    assert!(std::thread::spawn(move || remote.is_open()).join().unwrap());
    for _ in 0..5 {
        // Two start, three queue; all ignore their token.
        spawner.spawn(|_token| std::future::pending()).unwrap();
    }
    settle().await;
    drop(scope);
    assert!(!spawner.is_open());
    assert!(spawner.spawn(|_token| std::future::pending()).is_none());
    alive_tasks_become(baseline).await;
}

#[tokio::test]
async fn a_dropped_permit_gives_its_place_back_and_reserve_is_cancel_safe() {
    let mut scope = Scope::<u32>::new().with_limit(1);
    let permit = scope.reserve().await;
    {
        // At the limit: a second reserve waits; dropping it takes nothing.
        let second = scope.reserve();
        tokio::pin!(second);
        assert!(common::poll_once(second.as_mut()).await.is_pending());
    }
    drop(permit);
    let task = scope.reserve().await.spawn(|_token| async { 1 });
    assert_eq!(scope.join_next_with_id().await.unwrap().0, task.id());
    // A spawn beyond the limit still queues (it does not wait).
    scope.spawn(|_token| async { 2 });
    scope.spawn(|_token| async { 3 });
    assert_eq!(scope.len(), 2);
    let values: Vec<u32> = scope
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(values, [2, 3]);
}

#[tokio::test]
async fn a_queued_task_aborted_through_its_handle_never_starts() {
    let mut scope = Scope::new().with_limit(1);
    let started = Arc::new(AtomicUsize::new(0));
    let hold = {
        let started = started.clone();
        scope.spawner().spawn(move |token| async move {
            started.fetch_add(1, SeqCst);
            token.cancelled().await;
        })
    };
    let queued = {
        let started = started.clone();
        scope.spawner().spawn(move |_token| async move {
            started.fetch_add(1, SeqCst);
        })
    };
    settle().await;
    queued.as_ref().unwrap().abort();
    hold.unwrap().cancel();
    let results = scope.join_all().await;
    assert!(results[0].is_ok());
    assert!(results[1].as_ref().unwrap_err().is_aborted());
    assert_eq!(started.load(SeqCst), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawners_racing_a_shutdown_leave_no_task_behind() {
    let baseline = alive_tasks();
    let mut scope = Scope::<u32>::new().with_limit(16);
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut spawners = Vec::new();
    for _ in 0..4 {
        let spawner = scope.spawner();
        let accepted = accepted.clone();
        spawners.push(tokio::spawn(async move {
            // Spawn until refused; half the tasks ignore their token.
            let mut n = 0u32;
            while let Some(_task) = spawner.spawn(move |token| async move {
                if n % 2 == 0 {
                    token.cancelled().await;
                } else {
                    std::future::pending::<()>().await;
                }
                n
            }) {
                accepted.fetch_add(1, SeqCst);
                n += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    common::eventually("spawners are busy", || accepted.load(SeqCst) > 100).await;
    let results = scope.shutdown(Duration::from_millis(20)).await;
    for spawner in spawners {
        tokio::time::timeout(HANG, spawner).await.unwrap().unwrap();
    }
    // Whatever was accepted is accounted for: in the shutdown's results, or
    // (spawned while it ran) in the next join.
    let late = scope.join_all().await;
    assert_eq!(results.len() + late.len(), accepted.load(SeqCst));
    assert!(results.iter().any(|r| r.as_ref().is_ok_and(|n| n % 2 == 0)));
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.is_aborted()))
    );
    assert!(scope.is_empty());
    drop(scope);
    alive_tasks_become(baseline).await;
}

#[test]
fn scopes_spawners_handles_and_their_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let mut scope = Scope::<u32>::new();
    send_sync(&scope);
    send_sync(&scope.spawner());
    // The owner's loop can run in a spawned task.
    send(&scope.reserve());
    send(&scope.join_next());
    send(&scope.shutdown(Duration::ZERO));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let permit = rt.block_on(scope.reserve());
    send(&permit);
    let handle = permit.spawn(|_token| async { 1 });
    send_sync(&handle);
}
