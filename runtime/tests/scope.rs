//! Behaviour of `Scope` and `TaskError`, as a user observes it: results,
//! cleanups that ran, tokens, and the tasks left alive in the runtime.
//!
//! No test asserts on wall-clock durations: time-dependent tests run on a
//! paused clock, and the real-time ones only bound a wait to catch a hang.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cancel_scope_runtime::{CancelReason, CancellationToken, Scope, TaskError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

mod common;
use common::{HANG, alive_tasks, alive_tasks_become, eventually, poll_once, unwrap_all};

/// Increments its counter when dropped.
struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

// ---------------------------------------------------------------- scale

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

// ---------------------------------------------------------------- shutdown

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

// ---------------------------------------------------------------- ordering

/// Tasks `0..n`, task `i` finishing after `n - i` seconds of (paused) time.
fn reverse_finishers(n: u64) -> Scope<u64> {
    let mut scope = Scope::new();
    for i in 0..n {
        scope.spawn(move |_token| async move {
            tokio::time::sleep(Duration::from_secs(n - i)).await;
            i
        });
    }
    scope
}

#[tokio::test(start_paused = true)]
async fn join_all_returns_results_in_spawn_order() {
    let mut scope = reverse_finishers(8);
    assert_eq!(
        unwrap_all(scope.join_all().await),
        (0..8).collect::<Vec<_>>()
    );
    assert!(scope.is_empty());
}

#[tokio::test(start_paused = true)]
async fn join_next_returns_results_in_completion_order() {
    let mut scope = reverse_finishers(8);
    let mut order = Vec::new();
    while let Some(result) = scope.join_next().await {
        order.push(result.unwrap());
        assert_eq!(scope.len(), 8 - order.len());
    }
    assert_eq!(order, (0..8).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn join_all_after_join_next_returns_the_rest_in_spawn_order() {
    let mut releases = Vec::new();
    let mut scope = Scope::new();
    for i in 0..5 {
        let (tx, rx) = oneshot::channel::<()>();
        releases.push(Some(tx));
        scope.spawn(move |_token| async move {
            rx.await.unwrap();
            i
        });
    }
    releases[3].take().unwrap().send(()).unwrap();
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 3);
    assert_eq!(scope.len(), 4);
    for tx in releases.iter_mut().rev().filter_map(Option::take) {
        tx.send(()).unwrap();
    }
    assert_eq!(unwrap_all(scope.join_all().await), [0, 1, 2, 4]);
    assert!(scope.is_empty());

    // The scope is reusable, and only reports what was spawned since.
    scope.spawn(|_token| async { 10 });
    scope.spawn(|_token| async { 11 });
    assert_eq!(unwrap_all(scope.join_all().await), [10, 11]);
}

#[tokio::test]
async fn a_long_lived_task_and_many_short_ones_joined_one_by_one() {
    let mut scope = Scope::new();
    scope.spawn(|token| async move {
        token.cancelled().await;
        usize::MAX
    });
    for i in 0..1000 {
        scope.spawn(move |_token| async move { i });
        assert_eq!(scope.join_next().await.unwrap().unwrap(), i);
        assert_eq!(scope.len(), 1);
    }
    // Three more that finish in reverse order, then everything in spawn order.
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let gates: Vec<_> = (0..3).map(|_| oneshot::channel::<()>()).collect();
    let mut senders = Vec::new();
    for (i, (gate_tx, gate_rx)) in gates.into_iter().enumerate() {
        senders.push(gate_tx);
        let tx = tx.clone();
        scope.spawn(move |_token| async move {
            gate_rx.await.unwrap();
            tx.send(()).unwrap();
            1000 + i
        });
    }
    for gate in senders.into_iter().rev() {
        gate.send(()).unwrap();
        rx.recv().await.unwrap();
    }
    scope.cancel();
    assert_eq!(
        unwrap_all(scope.join_all().await),
        [usize::MAX, 1000, 1001, 1002]
    );
}

// ---------------------------------------------------------------- cancel safety

#[tokio::test(start_paused = true)]
async fn an_interrupted_join_all_loses_no_result() {
    let mut scope = Scope::new();
    for i in 0..3u64 {
        scope.spawn(move |_token| async move {
            tokio::time::sleep(Duration::from_secs(i + 1)).await;
            i
        });
    }
    let partial = tokio::time::timeout(Duration::from_millis(2500), scope.join_all()).await;
    assert!(partial.is_err(), "interrupted after two of three tasks");
    assert_eq!(scope.len(), 3);
    assert_eq!(unwrap_all(scope.join_all().await), [0, 1, 2]);
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

#[tokio::test(start_paused = true)]
async fn results_of_aborted_tasks_survive_an_interrupted_join_all() {
    let grace = Duration::from_secs(10);
    let mut scope = Scope::new();
    scope.spawn(|_token| std::future::pending());
    scope.spawn(|_token| std::future::pending());
    scope.spawn(|token| async move {
        token.cancelled().await;
        "cooperative"
    });
    {
        let mut shutdown = pin!(scope.shutdown(grace));
        assert!(poll_once(shutdown.as_mut()).await.is_pending());
        tokio::time::sleep(grace).await;
        assert!(poll_once(shutdown.as_mut()).await.is_pending());
    }
    // A task spawned afterwards keeps the next join_all waiting.
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    scope.spawn(move |_token| async move {
        gate_rx.await.unwrap();
        "late"
    });
    tokio::task::yield_now().await; // the aborted stragglers are dropped
    {
        let mut join_all = pin!(scope.join_all());
        assert!(poll_once(join_all.as_mut()).await.is_pending());
    }
    assert_eq!(scope.len(), 4);
    gate_tx.send(()).unwrap();

    let mut results = Vec::new();
    while let Some(result) = tokio::time::timeout(HANG, scope.join_next()).await.unwrap() {
        results.push(result);
        assert_eq!(scope.len(), 4 - results.len());
    }
    assert_eq!(results.len(), 4);
    let oks: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(oks.len(), 2);
    assert!(oks.contains(&"cooperative") && oks.contains(&"late"));
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().is_err_and(TaskError::is_aborted))
            .count(),
        2
    );
}

#[tokio::test]
async fn join_next_in_select_loses_no_result() {
    let mut scope = Scope::new();
    let (tx, rx) = oneshot::channel::<()>();
    scope.spawn(move |_token| async move {
        rx.await.unwrap();
        7
    });
    tokio::select! {
        biased;
        _ = scope.join_next() => unreachable!("not finished yet"),
        () = std::future::ready(()) => {}
    }
    tx.send(()).unwrap();
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 7);
}

// ---------------------------------------------------------------- fail fast

#[tokio::test]
async fn fail_fast_on_err_cancels_the_siblings_at_once() {
    let cleanups = Arc::new(AtomicUsize::new(0));
    let (fail_tx, fail_rx) = oneshot::channel::<()>();
    let mut scope: Scope<Result<&str, String>> = Scope::new().fail_fast();
    for _ in 0..3 {
        let cleanups = cleanups.clone();
        scope.spawn(move |token| async move {
            token.cancelled().await;
            tokio::task::yield_now().await; // async cleanup
            cleanups.fetch_add(1, SeqCst);
            Ok("cleaned up")
        });
    }
    scope.spawn(|_token| async move {
        fail_rx.await.unwrap();
        Err("disk full".to_string())
    });
    let token = scope.token().clone();
    tokio::task::yield_now().await;
    assert!(!token.is_cancelled());

    fail_tx.send(()).unwrap();
    // Nobody joins: the failing task itself cancels the scope, and the
    // siblings run their cleanups.
    tokio::time::timeout(HANG, token.cancelled()).await.unwrap();
    eventually("sibling cleanups", || cleanups.load(SeqCst) == 3).await;

    let results = unwrap_all(scope.join_all().await);
    assert_eq!(
        results,
        [
            Ok("cleaned up"),
            Ok("cleaned up"),
            Ok("cleaned up"),
            Err("disk full".into())
        ]
    );
}

#[tokio::test]
async fn fail_fast_on_panic_cancels_the_siblings_and_keeps_the_payload() {
    let cleanups = Arc::new(AtomicUsize::new(0));
    let (fail_tx, fail_rx) = oneshot::channel::<()>();
    let mut scope: Scope<Result<u32, ()>> = Scope::new().fail_fast();
    for i in 0..2 {
        let cleanups = cleanups.clone();
        scope.spawn(move |token| async move {
            token.cancelled().await;
            tokio::task::yield_now().await;
            cleanups.fetch_add(1, SeqCst);
            Ok(i)
        });
    }
    scope.spawn(|_token| async move {
        fail_rx.await.unwrap();
        panic!("boom");
    });
    let token = scope.token().clone();
    fail_tx.send(()).unwrap();
    tokio::time::timeout(HANG, token.cancelled()).await.unwrap();
    eventually("sibling cleanups", || cleanups.load(SeqCst) == 2).await;

    let mut results = scope.join_all().await.into_iter();
    assert_eq!(results.next().unwrap().unwrap(), Ok(0));
    assert_eq!(results.next().unwrap().unwrap(), Ok(1));
    let err = results.next().unwrap().unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_aborted());
    assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "boom");
}

#[tokio::test]
async fn fail_fast_applies_to_blocking_tasks() {
    let mut scope: Scope<Result<(), &str>> = Scope::new().fail_fast();
    scope.spawn(|token| async move {
        token.cancelled().await;
        Ok(())
    });
    scope.spawn_blocking(|_token| Err("bad input"));
    let token = scope.token().clone();
    tokio::time::timeout(HANG, token.cancelled()).await.unwrap();
    assert_eq!(
        unwrap_all(scope.join_all().await),
        [Ok(()), Err("bad input")]
    );
}

#[tokio::test]
async fn without_fail_fast_an_err_or_a_panic_cancels_nothing() {
    let mut scope: Scope<Result<u32, &str>> = Scope::new();
    scope.spawn(|_token| async { Err("bad") });
    scope.spawn(|_token| async { panic!("boom") });
    let results = scope.join_all().await;
    assert_eq!(results[0].as_ref().unwrap(), &Err("bad"));
    assert!(results[1].as_ref().unwrap_err().is_panic());
    assert!(!scope.token().is_cancelled());
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn cancelling_the_scope_cancels_every_task_token() {
    let mut scope = Scope::new();
    for _ in 0..3 {
        scope.spawn(|token| async move { token });
    }
    let tokens = unwrap_all(scope.join_all().await);
    assert!(tokens.iter().all(|t| !t.is_cancelled()));
    scope.cancel();
    assert!(tokens.iter().all(CancellationToken::is_cancelled));
}

#[tokio::test]
async fn a_task_cancelling_its_own_token_cancels_neither_scope_nor_siblings() {
    let mut scope = Scope::new();
    scope.spawn(|token| async move {
        token.cancel();
        token
    });
    scope.spawn(|token| async move { token });
    let tokens = unwrap_all(scope.join_all().await);
    assert!(tokens[0].is_cancelled());
    assert!(!tokens[1].is_cancelled());
    assert!(!scope.token().is_cancelled());
}

#[tokio::test]
async fn child_of_follows_its_parent_and_never_cancels_it() {
    let parent = CancellationToken::new();
    let scope = Scope::<()>::child_of(&parent);
    scope.cancel();
    assert!(!parent.is_cancelled());

    let mut scope = Scope::child_of(&parent);
    scope.spawn(|token| async move {
        token.cancelled().await;
        "stopped by the parent"
    });
    parent.cancel();
    assert!(scope.token().is_cancelled());
    assert_eq!(
        unwrap_all(scope.join_all().await),
        ["stopped by the parent"]
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

// ---------------------------------------------------------------- spawn shapes

async fn metrics_loop(token: CancellationToken) -> u32 {
    token.cancelled().await;
    1
}

async fn writer_loop(token: CancellationToken, mut rx: mpsc::Receiver<u32>) -> u32 {
    let mut sum = 0;
    loop {
        tokio::select! {
            () = token.cancelled() => return sum,
            msg = rx.recv() => match msg {
                Some(n) => sum += n,
                None => return sum,
            },
        }
    }
}

#[tokio::test]
async fn spawn_takes_token_first_fns_as_they_are() {
    let (tx, rx) = mpsc::channel(4);
    let mut scope = Scope::new();
    scope.spawn(metrics_loop);
    scope.spawn(|t| writer_loop(t, rx));
    tx.send(20).await.unwrap();
    tx.send(22).await.unwrap();
    drop(tx);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 42);
    assert_eq!(unwrap_all(scope.shutdown(HANG).await), [1]);
}

#[test]
#[should_panic(expected = "Tokio")]
fn spawn_outside_a_runtime_panics() {
    let mut scope = Scope::new();
    scope.spawn(|_token| async {});
}

// ---------------------------------------------------------------- blocking

#[tokio::test]
async fn spawn_blocking_sees_cancellation() {
    let (started_tx, started_rx) = oneshot::channel();
    let mut scope = Scope::new();
    scope.spawn_blocking(move |token| {
        let mut started = Some(started_tx);
        let mut rounds = 0u32;
        while !token.is_cancelled() {
            rounds += 1;
            if let Some(started) = started.take() {
                started.send(()).unwrap(); // only now can the test cancel
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        rounds
    });
    started_rx.await.unwrap();
    let results = tokio::time::timeout(HANG, scope.shutdown(HANG))
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert!(*results[0].as_ref().unwrap() >= 1);
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

#[tokio::test]
async fn blocking_and_async_results_mix_in_spawn_order() {
    let mut scope = Scope::new();
    scope.spawn(|_token| async { 0 });
    scope.spawn_blocking(|_token| panic!("blocking boom"));
    scope.spawn_blocking(|_token| 2);
    scope.spawn(|_token| async { 3 });
    let mut results = scope.join_all().await.into_iter();
    assert_eq!(results.next().unwrap().unwrap(), 0);
    let err = results.next().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "task panicked: blocking boom");
    assert_eq!(results.next().unwrap().unwrap(), 2);
    assert_eq!(results.next().unwrap().unwrap(), 3);

    scope.spawn_blocking(|_token| 4);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 4);
    assert!(scope.join_next().await.is_none());
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

// ---------------------------------------------------------------- TaskError

fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

#[tokio::test]
async fn task_error_describes_panics_and_aborts() {
    assert_error::<TaskError>();

    let mut scope = Scope::<()>::new();
    scope.spawn(|_token| async { panic!("boom") });
    scope.spawn(|_token| async {
        let disk = 3; // not a literal: the payload is a `String`
        panic!("disk {disk} full")
    });
    scope.spawn(|_token| async { std::panic::panic_any(42_u8) });
    scope.spawn(|_token| std::future::pending());
    let mut results = scope.shutdown(Duration::from_millis(20)).await.into_iter();
    let mut next_err = || results.next().unwrap().unwrap_err();

    let boom = next_err();
    assert_eq!(boom.to_string(), "task panicked: boom");
    assert_eq!(format!("{boom:?}"), r#"TaskError::Panic("boom")"#);
    let formatted = next_err();
    assert_eq!(formatted.to_string(), "task panicked: disk 3 full");
    assert_eq!(
        *formatted.into_panic().downcast::<String>().unwrap(),
        "disk 3 full"
    );
    let opaque = next_err();
    assert_eq!(opaque.to_string(), "task panicked");
    assert_eq!(format!("{opaque:?}"), "TaskError::Panic(..)");
    assert_eq!(
        *opaque.try_into_panic().unwrap().downcast::<u8>().unwrap(),
        42
    );

    let aborted = next_err();
    assert_eq!(
        aborted.to_string(),
        "task aborted (scope cancelled: shut down)"
    );
    assert_eq!(format!("{aborted:?}"), "TaskError::Aborted(Some(Shutdown))");
    assert_eq!(aborted.cancel_reason(), Some(CancelReason::Shutdown));
    let dyn_err: &dyn std::error::Error = &aborted;
    assert!(dyn_err.source().is_none());
    let aborted = aborted.try_into_panic().unwrap_err();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| aborted.into_panic()));
    let message = caught.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("not a panic") && message.contains("task aborted"),
        "{message}"
    );

    let boxed: Box<dyn std::error::Error + Send + Sync> = boom.into();
    assert_eq!(boxed.to_string(), "task panicked: boom");
}

#[tokio::test]
async fn task_error_converts_into_io_error() {
    let mut scope = Scope::<()>::new();
    scope.spawn(|_token| async { panic!("boom") });
    let err = std::io::Error::from(scope.join_next().await.unwrap().unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::Other);
    assert_eq!(err.to_string(), "task panicked: boom");
}

#[tokio::test]
async fn scope_debug_shows_len_and_state() {
    let mut scope = Scope::<Result<(), ()>>::new().fail_fast();
    scope.spawn(|_token| async { Ok(()) });
    assert_eq!(
        format!("{scope:?}"),
        "Scope { len: 1, cancelled: false, fail_fast: true, .. }"
    );
    scope.cancel();
    scope.join_all().await;
    assert_eq!(
        format!("{scope:?}"),
        "Scope { len: 0, cancelled: true, fail_fast: true, .. }"
    );
}
