//! Limits and backpressure: `with_limit` queues in spawn order on every
//! runtime, `reserve` and `SpawnPermit` push back on an accept loop, queued
//! tasks after a cancel, a shutdown or a drop, and a limit set while tasks run.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cancel_scope_runtime::{Scope, TaskOutcome};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::common::{HANG, unwrap_all};
use crate::settle;

/// Counts the tasks inside a region, and the most there ever were at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }

    fn peak(&self) -> usize {
        self.peak.load(SeqCst)
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

/// Spawns a task that holds until its sender fires, then returns `value`.
fn held<T: Send + 'static>(scope: &mut Scope<T>, value: T) -> oneshot::Sender<()> {
    let (release, wait) = oneshot::channel::<()>();
    scope.spawn(move |_token| async move {
        let _ = wait.await;
        value
    });
    release
}

/// Spawns a task that records that it started.
fn marker<T: Send + 'static>(scope: &mut Scope<T>, value: T) -> Arc<AtomicBool> {
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    scope.spawn(move |_token| async move {
        flag.store(true, SeqCst);
        value
    });
    started
}

#[tokio::test]
async fn with_limit_queues_tasks_in_spawn_order_and_starts_one_per_freed_permit() {
    let built = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let mut gates = Vec::new();
    let mut scope = Scope::new().with_limit(3);
    for i in 0..8 {
        let (gate_tx, gate_rx) = oneshot::channel::<()>();
        gates.push(gate_tx);
        let started_tx = started_tx.clone();
        built.fetch_add(1, SeqCst); // `f` runs at spawn time...
        scope.spawn(move |_token| async move {
            // ...the future only once it has a permit.
            started_tx.send(i).unwrap();
            gate_rx.await.unwrap();
            i
        });
    }
    assert_eq!(built.load(SeqCst), 8);
    assert_eq!(scope.len(), 8, "every spawn is accepted at once");

    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(started_rx.recv().await.unwrap());
    }
    tokio::task::yield_now().await;
    assert!(started_rx.try_recv().is_err(), "only three run");
    assert_eq!(started, [0, 1, 2]);

    let mut gates = gates.into_iter();
    for next in 3..8 {
        gates.next().unwrap().send(()).unwrap();
        assert_eq!(
            started_rx.recv().await.unwrap(),
            next,
            "one more, in spawn order"
        );
        tokio::task::yield_now().await;
        assert!(started_rx.try_recv().is_err());
    }
    for gate in gates {
        gate.send(()).unwrap();
    }
    assert_eq!(
        unwrap_all(scope.join_all().await),
        (0..8).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_limit_holds_for_10k_tasks_on_a_multi_thread_runtime() {
    const N: usize = 10_000;
    const LIMIT: usize = 16;
    let gauge = Arc::new(Gauge::default());
    let mut scope = Scope::new().with_limit(LIMIT);
    for i in 0..N {
        let gauge = gauge.clone();
        scope.spawn(move |_token| async move {
            gauge.enter();
            tokio::task::yield_now().await;
            gauge.leave();
            i
        });
    }
    let results = tokio::time::timeout(HANG * 6, scope.join_all())
        .await
        .unwrap();
    assert_eq!(unwrap_all(results), (0..N).collect::<Vec<_>>());
    assert!(gauge.peak() <= LIMIT, "peak {}", gauge.peak());
    assert!(gauge.peak() >= 1);
}

#[tokio::test(start_paused = true)]
async fn queued_tasks_of_a_cancelled_scope_still_run_their_cleanup_within_the_limit() {
    let gauge = Arc::new(Gauge::default());
    let started_cancelled = Arc::new(AtomicUsize::new(0));
    let mut scope = Scope::new().with_limit(2);
    for i in 0..6 {
        let gauge = gauge.clone();
        let started_cancelled = started_cancelled.clone();
        scope.spawn(move |token| async move {
            gauge.enter();
            if token.is_cancelled() {
                started_cancelled.fetch_add(1, SeqCst);
            }
            token.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await; // async cleanup
            gauge.leave();
            i
        });
    }
    tokio::task::yield_now().await; // the first two start
    let start = Instant::now();
    let results = scope.shutdown(Duration::from_secs(3600)).await;
    assert_eq!(unwrap_all(results), (0..6).collect::<Vec<_>>());
    assert_eq!(gauge.peak(), 2);
    assert_eq!(
        started_cancelled.load(SeqCst),
        4,
        "the queued four saw their token cancelled"
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "three rounds of two cleanups"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_still_queued_at_the_end_of_grace_is_aborted_without_running() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut scope = Scope::<()>::new().with_limit(1);
    for _ in 0..3 {
        let started = started.clone();
        scope.spawn(move |_token| async move {
            started.fetch_add(1, SeqCst);
            std::future::pending::<()>().await; // ignores its token
        });
    }
    let results = scope.shutdown(Duration::from_secs(5)).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap_err().is_aborted()));
    assert_eq!(results.len(), 3);
    assert_eq!(started.load(SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_task_frees_its_permit() {
    let mut scope = Scope::new().with_limit(1);
    scope.spawn(|_token| async { panic!("boom") });
    scope.spawn(|_token| async { 1 });
    let results = tokio::time::timeout(HANG, scope.join_all()).await.unwrap();
    assert!(results[0].as_ref().unwrap_err().is_panic());
    assert_eq!(results[1].as_ref().unwrap(), &1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_tasks_count_toward_the_limit() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let mut scope = Scope::new().with_limit(1);
    let async_log = log.clone();
    scope.spawn(move |_token| async move {
        async_log.lock().unwrap().push("async start");
        started_tx.send(()).unwrap();
        release_rx.await.unwrap();
        async_log.lock().unwrap().push("async end");
    });
    started_rx.await.unwrap();
    let blocking_log = log.clone();
    scope.spawn_blocking(move |_token| blocking_log.lock().unwrap().push("blocking"));
    // Give a blocking thread time to (wrongly) run the closure.
    tokio::time::sleep(Duration::from_millis(20)).await;
    release_tx.send(()).unwrap();
    tokio::time::timeout(HANG, scope.join_all()).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["async start", "async end", "blocking"]
    );
}

#[tokio::test]
async fn with_limit_and_fail_fast_combine() {
    let mut scope: Scope<Result<(), &str>> = Scope::new().with_limit(1).fail_fast();
    assert_eq!(
        format!("{scope:?}"),
        "Scope { len: 0, cancelled: false, fail_fast: true, limit: 1, .. }"
    );
    scope.spawn(|_token| async { Err("first fails") });
    scope.spawn(|token| async move {
        // Queued behind the failure: starts with its token cancelled.
        if token.is_cancelled() {
            Ok(())
        } else {
            Err("ran uncancelled")
        }
    });
    assert_eq!(
        unwrap_all(scope.join_all().await),
        [Err("first fails"), Ok(())]
    );
}

#[test]
#[should_panic(expected = "the limit must be at least 1")]
fn with_limit_zero_panics() {
    let _ = Scope::<()>::new().with_limit(0);
}

#[tokio::test]
async fn a_limit_above_the_semaphore_maximum_is_clamped() {
    let mut scope = Scope::new().with_limit(usize::MAX);
    scope.spawn(|_token| async { 1 });
    assert_eq!(unwrap_all(scope.join_all().await), [1]);
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
async fn a_dropped_permit_gives_its_place_back_and_reserve_is_cancel_safe() {
    let mut scope = Scope::<u32>::new().with_limit(1);
    let permit = scope.reserve().await;
    {
        // At the limit: a second reserve waits; dropping it takes nothing.
        let second = scope.reserve();
        tokio::pin!(second);
        assert!(crate::common::poll_once(second.as_mut()).await.is_pending());
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

#[tokio::test(flavor = "current_thread")]
async fn a_limit_set_while_tasks_run_counts_them() {
    let mut scope = Scope::new();
    let first = held(&mut scope, ());
    let second = held(&mut scope, ());
    let third = held(&mut scope, ());
    settle().await;
    let mut scope = scope.with_limit(2);
    let started = marker(&mut scope, ());
    settle().await;
    assert!(!started.load(SeqCst), "3 tasks run: over the limit of 2");
    first.send(()).unwrap();
    settle().await;
    assert!(!started.load(SeqCst), "2 tasks still run: at the limit");
    second.send(()).unwrap();
    settle().await;
    assert!(started.load(SeqCst), "a place freed up");
    third.send(()).unwrap();
    assert_eq!(scope.join_all().await.len(), 4);
}

#[tokio::test(flavor = "current_thread")]
async fn a_limit_set_on_a_reaping_scope_counts_its_running_tasks() {
    let mut scope = Scope::<()>::new().reaping();
    let first = held(&mut scope, ());
    let second = held(&mut scope, ());
    settle().await;
    let mut scope = scope.with_limit(1);
    let started = marker(&mut scope, ());
    settle().await;
    assert!(!started.load(SeqCst));
    first.send(()).unwrap();
    settle().await;
    assert!(!started.load(SeqCst), "one task still holds the only place");
    second.send(()).unwrap();
    settle().await;
    assert!(started.load(SeqCst));
    scope.join_all().await;
    assert!(scope.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_permit_reserved_before_the_limit_takes_a_place() {
    let scope = Scope::new();
    let permit = scope.reserve().await; // no limit yet: holds no place
    let mut scope = scope.with_limit(1);
    let (release, wait) = oneshot::channel::<()>();
    permit.spawn(move |_token| async move {
        let _ = wait.await;
    });
    let started = marker(&mut scope, ());
    settle().await;
    assert!(!started.load(SeqCst), "the permit's task holds the place");
    release.send(()).unwrap();
    settle().await;
    assert!(started.load(SeqCst));
    assert_eq!(scope.join_all().await.len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_lowered_limit_holds_once_enough_tasks_have_ended() {
    let mut scope = Scope::new().with_limit(2);
    let first = held(&mut scope, ());
    let second = held(&mut scope, ());
    settle().await;
    let mut scope = scope.with_limit(1);
    let started = marker(&mut scope, ());
    settle().await;
    assert!(
        !started.load(SeqCst),
        "2 tasks run: over the new limit of 1"
    );
    first.send(()).unwrap();
    settle().await;
    assert!(!started.load(SeqCst), "1 task still runs: at the limit");
    second.send(()).unwrap();
    settle().await;
    assert!(started.load(SeqCst));
    assert_eq!(scope.join_all().await.len(), 3);
}
