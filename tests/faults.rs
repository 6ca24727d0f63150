//! Fault tests: what `#[cancellable]` and `Scope` do when things go wrong —
//! panics in cleanups and tasks, tasks that do not yield or ignore their
//! token during a shutdown, futures dropped half-way, cancellations from
//! another OS thread, futures polled after they finished.
//!
//! Each test states the documented behaviour it checks. Waits on real time
//! are bounded only to turn a hang into a failure; nothing asserts on how
//! long something took beyond "it did not wait for X".

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::task::Poll;
use std::time::{Duration, Instant};

mod common;

use common::{Guard, Log, panic_message, poll_once};

use cancel_scope::{CancelReason, CancellationToken, Cancelled, Scope, cancellable, on_cancel};
use tokio::sync::oneshot;
use tokio::task::yield_now;

/// Bounds a wait that only exists to turn a hang into a failure.
const HANG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A panic inside a cleanup
// ---------------------------------------------------------------------------

#[cancellable]
async fn cleanup_panics(log: Log, started: Option<oneshot::Sender<()>>) -> u32 {
    log.push("setup");
    on_cancel! {
        log.push("cleanup start");
        yield_now().await;
        // Always true; written as a condition so that the line after it
        // (which must never run) is not unreachable code.
        if log.count("cleanup start") > 0 {
            panic!("cleanup boom");
        }
        log.push("cleanup end");
    }
    let _body = Guard(log.clone(), "body dropped");
    if let Some(started) = started {
        let _ = started.send(());
    }
    std::future::pending::<()>().await;
    1
}

#[cancellable]
async fn outer_of_a_panicking_cleanup(log: Log) -> u32 {
    log.push("outer setup");
    on_cancel! { log.push("outer cleanup"); }
    let _body = Guard(log.clone(), "outer body dropped");
    cleanup_panics(token.child_token(), log.clone(), None)
        .await
        .unwrap_or(0)
}

#[cancellable]
async fn nested_inner(log: Log) {
    log.push("inner setup");
    on_cancel! {
        yield_now().await;
        log.push("inner cleanup");
    }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn nested_outer(log: Log) {
    log.push("outer setup");
    on_cancel! { log.push("outer cleanup"); }
    let _ = nested_inner(token.child_token(), log.clone()).await;
}

/// A panic in a cleanup propagates like any panic, out of the `.await` of
/// the cancelled fn: the caller (here the task that awaited it) sees it
/// with its payload. The body had already been dropped; the rest of the
/// cleanup does not run, and neither does the cleanup of an enclosing
/// `#[cancellable]` fn, which unwinds with it (its body is dropped).
///
/// Afterwards, the same thread runs nested cancellations normally: the
/// panic leaves no bookkeeping behind.
#[tokio::test(flavor = "current_thread")]
async fn a_panic_in_a_cleanup_propagates_to_the_caller_with_its_payload() {
    // Directly.
    let token = CancellationToken::new();
    let log = Log::default();
    let (started_tx, started_rx) = oneshot::channel();
    let task = tokio::spawn(cleanup_panics(token.clone(), log.clone(), Some(started_tx)));
    started_rx.await.unwrap();
    token.cancel();
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(panic_message(&*err.into_panic()), "cleanup boom");
    assert_eq!(log.events(), ["setup", "body dropped", "cleanup start"]);

    // Nested: the enclosing fn's cleanup does not run.
    let token = CancellationToken::new();
    let log = Log::default();
    let mut task = tokio::spawn(outer_of_a_panicking_cleanup(token.clone(), log.clone()));
    tokio::select! {
        biased;
        _ = &mut task => panic!("the nested call returned early"),
        () = async { for _ in 0..3 { yield_now().await; } } => {}
    }
    token.cancel();
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(panic_message(&*err.into_panic()), "cleanup boom");
    let events = log.events();
    assert_eq!(
        events,
        [
            "outer setup",
            "setup",
            "body dropped",
            "cleanup start",
            "outer body dropped"
        ]
    );
    assert!(!events.contains(&"outer cleanup"));

    // The thread is still fine: nested cleanups run innermost first.
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = Box::pin(nested_outer(token.clone(), log.clone()));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        [
            "outer setup",
            "inner setup",
            "inner cleanup",
            "outer cleanup"
        ]
    );
}

/// In a `Scope`, a panic in a task's cleanup is that task's result: a
/// `TaskError` with `is_panic()` (not `is_aborted()`), whose `into_panic()`
/// gives the payload back. Its siblings are not affected (without
/// `fail_fast`): they run their cleanups and return `Err(Cancelled)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_cleanup_is_the_scope_tasks_panic_with_its_payload() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new();
    let panicking = Log::default();
    let (started_tx, started_rx) = oneshot::channel();
    {
        let log = panicking.clone();
        scope.spawn(move |t| cleanup_panics(t, log, Some(started_tx)));
    }
    let siblings: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let mut sibling_started = Vec::new();
    for log in &siblings {
        let (tx, rx) = oneshot::channel();
        sibling_started.push(rx);
        let log = log.clone();
        scope.spawn(move |t| parked(t, log, tx));
    }
    started_rx.await.unwrap();
    for rx in sibling_started {
        rx.await.unwrap();
    }

    let results = tokio::time::timeout(HANG, scope.shutdown(HANG))
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    let mut results = results.into_iter();
    let err = results.next().unwrap().unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_aborted());
    assert_eq!(err.to_string(), "task panicked: cleanup boom");
    assert_eq!(panic_message(&*err.into_panic()), "cleanup boom");
    assert_eq!(
        panicking.events(),
        ["setup", "body dropped", "cleanup start"]
    );
    for (r, log) in results.zip(&siblings) {
        assert_eq!(r.unwrap(), Err(Cancelled::because(CancelReason::Shutdown)));
        assert_eq!(log.count("cleanup end"), 1);
    }
}

// ---------------------------------------------------------------------------
// A panicking task in a fail-fast scope
// ---------------------------------------------------------------------------

#[cancellable]
async fn parked(log: Log, started: oneshot::Sender<()>) -> u32 {
    log.push("setup");
    on_cancel! {
        log.push("cleanup start");
        yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        log.push("cleanup end");
    }
    let _body = Guard(log.clone(), "body dropped");
    let _ = started.send(());
    std::future::pending::<()>().await;
    1
}

/// `fail_fast()`: a task that panics cancels the scope's token at once, from
/// inside the task, so its `#[cancellable]` siblings run their cleanups (to
/// completion, each exactly once) without anyone joining anything. The
/// panicking task's result keeps the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_under_fail_fast_cancels_the_siblings_which_run_their_cleanups() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new().fail_fast();
    let logs: Vec<Log> = (0..4).map(|_| Log::default()).collect();
    let mut started = Vec::new();
    for log in &logs {
        let (tx, rx) = oneshot::channel();
        started.push(rx);
        let log = log.clone();
        scope.spawn(move |t| parked(t, log, tx));
    }
    let (fail_tx, fail_rx) = oneshot::channel::<()>();
    let bad = scope.spawn(move |_t| async move {
        fail_rx.await.unwrap();
        panic!("task boom {}", 7);
    });
    for rx in started {
        rx.await.unwrap();
    }
    let token = scope.token().clone();
    assert!(!token.is_cancelled());

    fail_tx.send(()).unwrap();
    // Nobody joins: the panicking task cancels the scope itself.
    tokio::time::timeout(HANG, token.cancelled()).await.unwrap();
    let deadline = Instant::now() + HANG;
    while logs.iter().any(|l| l.count("cleanup end") == 0) {
        assert!(
            Instant::now() < deadline,
            "the siblings' cleanups did not run"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let results = tokio::time::timeout(HANG, scope.join_all()).await.unwrap();
    assert_eq!(results.len(), 5);
    for (r, log) in results.iter().zip(&logs) {
        // Each sibling knows which task brought it down.
        let cancelled = Cancelled::because(CancelReason::TaskFailed(bad));
        assert_eq!(r.as_ref().unwrap(), &Err(cancelled));
        assert_eq!(
            log.events(),
            ["setup", "body dropped", "cleanup start", "cleanup end"]
        );
    }
    let err = results.into_iter().nth(4).unwrap().unwrap_err();
    assert!(err.is_panic());
    assert_eq!(panic_message(&*err.into_panic()), "task boom 7");
}

// ---------------------------------------------------------------------------
// A task that does not yield during a shutdown
// ---------------------------------------------------------------------------

/// Burns `for_how_long` of CPU on the calling thread without ever yielding.
fn hog(for_how_long: Duration) {
    let start = Instant::now();
    while start.elapsed() < for_how_long {
        std::thread::sleep(Duration::from_millis(1));
    }
}

const HOG: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(20);

/// `shutdown(grace)` aborts what is left at the end of the grace period, and
/// an abort takes effect at the task's next yield: a task that runs past the
/// grace period without yielding cannot be interrupted. The shutdown waits
/// for it to yield (it still returns), and a task that then finishes without
/// having yielded has finished: it is reported as completed, with its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_out_a_task_that_never_yields_and_reports_it_completed() {
    let (started_tx, started_rx) = oneshot::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let mut scope = Scope::new();
    let done = finished.clone();
    scope.spawn(move |_token| async move {
        started_tx.send(()).unwrap();
        hog(HOG); // ignores its token, never awaits
        done.store(true, SeqCst);
        "finished"
    });
    started_rx.await.unwrap();
    let results = tokio::time::timeout(HANG, scope.shutdown(GRACE))
        .await
        .expect("shutdown returns");
    assert!(
        finished.load(SeqCst),
        "shutdown returned before the task did"
    );
    assert_eq!(results.len(), 1);
    assert_eq!(*results[0].as_ref().unwrap(), "finished");
}

/// The same task, but it awaits once after hogging the thread: the abort
/// requested at the end of the grace period takes effect at that `.await`,
/// so the code after it never runs and the task is reported as aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_a_task_that_never_yields_at_its_next_yield() {
    let (started_tx, started_rx) = oneshot::channel();
    let log = Log::default();
    let mut scope = Scope::new();
    let l = log.clone();
    scope.spawn(move |_token| async move {
        let _task = Guard(l.clone(), "task dropped");
        started_tx.send(()).unwrap();
        hog(HOG);
        l.push("hogged");
        yield_now().await;
        l.push("after the yield");
        "finished"
    });
    started_rx.await.unwrap();
    let results = tokio::time::timeout(HANG, scope.shutdown(GRACE))
        .await
        .expect("shutdown returns");
    assert_eq!(results.len(), 1);
    let err = results[0].as_ref().unwrap_err();
    assert!(err.is_aborted() && !err.is_panic() && !err.is_detached());
    assert_eq!(log.events(), ["hogged", "task dropped"]);
}

#[cancellable]
async fn cancellable_hog(log: Log, started: oneshot::Sender<()>) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    started.send(()).unwrap();
    hog(HOG); // the token is cancelled meanwhile
    log.push("hogged");
    std::future::pending::<()>().await;
    log.push("after the await");
    1
}

/// A `#[cancellable]` body that hogs the thread while the shutdown cancels
/// its token: when it reaches its first `.await`, the race sees the
/// cancellation in the same poll, drops the body and runs the cleanup; a
/// cleanup that does not await completes in that poll too, so the task
/// returns `Err(Cancelled)` before the abort can take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellable_body_that_hogs_the_thread_still_cleans_up_at_its_first_await() {
    let (started_tx, started_rx) = oneshot::channel();
    let log = Log::default();
    let mut scope = Scope::new();
    let l = log.clone();
    scope.spawn(move |t| cancellable_hog(t, l, started_tx));
    started_rx.await.unwrap();
    let results = tokio::time::timeout(HANG, scope.shutdown(GRACE))
        .await
        .expect("shutdown returns");
    assert_eq!(results.len(), 1);
    assert_eq!(
        *results[0].as_ref().unwrap(),
        Err(Cancelled::because(CancelReason::Shutdown))
    );
    assert_eq!(log.events(), ["setup", "hogged", "cleanup"]);
}

// ---------------------------------------------------------------------------
// A blocking task that ignores its token during a shutdown
// ---------------------------------------------------------------------------

/// A `spawn_blocking` task cannot be aborted once it runs. `shutdown(grace)`
/// does not wait for one that ignores its token: at the end of the grace
/// period it returns, reporting it as detached (`is_detached()`, and
/// `is_aborted()` too); the closure keeps running on its thread until it
/// returns. The async siblings shut down normally (cleanups ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_detaches_a_blocking_task_that_ignores_its_token() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new();
    let sibling = Log::default();
    let (sibling_tx, sibling_rx) = oneshot::channel();
    {
        let log = sibling.clone();
        scope.spawn(move |t| parked(t, log, sibling_tx));
    }
    let (started_tx, started_rx) = oneshot::channel();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let (finished_tx, finished_rx) = std::sync::mpsc::channel();
    let seen = saw_cancel.clone();
    scope.spawn_blocking(move |token| {
        started_tx.send(()).unwrap();
        hog(Duration::from_millis(600)); // ignores its token
        seen.store(token.is_cancelled(), SeqCst);
        finished_tx.send(()).unwrap();
        Ok(2)
    });
    sibling_rx.await.unwrap();
    started_rx.await.unwrap();

    let results = tokio::time::timeout(HANG, scope.shutdown(Duration::from_millis(50)))
        .await
        .expect("shutdown does not wait for the blocking task");
    assert!(
        finished_rx.try_recv().is_err(),
        "shutdown waited for the blocking task"
    );
    assert_eq!(results.len(), 2);
    assert_eq!(
        *results[0].as_ref().unwrap(),
        Err(Cancelled::because(CancelReason::Shutdown))
    );
    assert_eq!(sibling.count("cleanup end"), 1);
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::Shutdown));
    assert!(err.is_detached() && err.is_aborted() && !err.is_panic());
    assert!(scope.is_empty());

    // The detached closure runs to its end, and saw its token cancelled.
    finished_rx.recv_timeout(HANG).unwrap();
    assert!(saw_cancel.load(SeqCst));
}

// ---------------------------------------------------------------------------
// Dropping is not cancelling
// ---------------------------------------------------------------------------

#[cancellable]
async fn droppable(log: Log, started: Option<oneshot::Sender<()>>) -> u32 {
    log.push("setup");
    on_cancel! {
        log.push("cleanup start");
        yield_now().await;
        log.push("cleanup end");
    }
    let _body = Guard(log.clone(), "body dropped");
    if let Some(started) = started {
        let _ = started.send(());
    }
    std::future::pending::<()>().await;
    1
}

#[cancellable]
async fn droppable_outer(log: Log) -> u32 {
    log.push("outer setup");
    on_cancel! { log.push("outer cleanup"); }
    let _body = Guard(log.clone(), "outer body dropped");
    droppable(token.child_token(), log.clone(), None)
        .await
        .unwrap_or(0)
}

/// Dropping a half-polled `#[cancellable]` future from outside (a `select!`
/// whose other branch won, an aborted task, a dropped nested chain, a future
/// dropped in the middle of its cleanup) is not a cancellation: the body's
/// `Drop`s run, as for any dropped future, but the cleanup does not (or
/// stops where it was), since nothing polls it any more; cancelling the
/// token afterwards does not bring it back.
#[tokio::test(flavor = "current_thread")]
async fn dropping_a_half_polled_future_drops_the_body_and_skips_the_cleanup() {
    // A `select!` picks the other branch.
    let token = CancellationToken::new();
    let log = Log::default();
    let winner = tokio::select! {
        r = droppable(token.clone(), log.clone(), None) => format!("{r:?}"),
        () = async { for _ in 0..3 { yield_now().await; } } => "other".to_owned(),
    };
    assert_eq!(winner, "other");
    token.cancel();
    yield_now().await;
    assert_eq!(log.events(), ["setup", "body dropped"]);

    // An aborted task.
    let token = CancellationToken::new();
    let log = Log::default();
    let (started_tx, started_rx) = oneshot::channel();
    let task = tokio::spawn(droppable(token.clone(), log.clone(), Some(started_tx)));
    started_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    token.cancel();
    yield_now().await;
    assert_eq!(log.events(), ["setup", "body dropped"]);

    // A nested chain: no level's cleanup runs; the bodies are dropped from
    // the inside out.
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = Box::pin(droppable_outer(token.clone(), log.clone()));
    assert!(poll_once(fut.as_mut()).is_pending());
    drop(fut);
    token.cancel();
    assert_eq!(
        log.events(),
        ["outer setup", "setup", "body dropped", "outer body dropped"]
    );

    // Dropped in the middle of its cleanup: the rest of it never runs.
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = Box::pin(droppable(token.clone(), log.clone(), None));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    assert!(poll_once(fut.as_mut()).is_pending()); // inside the cleanup
    drop(fut);
    assert_eq!(log.events(), ["setup", "body dropped", "cleanup start"]);
}

// ---------------------------------------------------------------------------
// Cancelling from another OS thread while the runtime is parked
// ---------------------------------------------------------------------------

#[cancellable]
async fn deep(log: Log, depth: u32, started: Option<oneshot::Sender<()>>) -> u32 {
    log.push(["setup 0", "setup 1", "setup 2"][depth as usize]);
    on_cancel! {
        yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        log.push(["cleanup 0", "cleanup 1", "cleanup 2"][depth as usize]);
    }
    if depth < 2 {
        Box::pin(deep(token.child_token(), log.clone(), depth + 1, started))
            .await
            .unwrap_or(0)
    } else {
        if let Some(started) = started {
            let _ = started.send(());
        }
        std::future::pending::<()>().await;
        0
    }
}

#[cancellable]
async fn parked_in_setup(log: Log, entered: oneshot::Sender<()>, proceed: oneshot::Receiver<()>) {
    log.push("setup start");
    entered.send(()).unwrap();
    proceed.await.unwrap();
    log.push("setup end");
    on_cancel! {
        yield_now().await;
        log.push("cleanup");
    }
    log.push("body polled");
}

/// A current-thread runtime parked (nothing to run) while a chain of three
/// `#[cancellable]` calls waits: another OS thread cancels the root token,
/// which wakes the runtime; every level runs its (awaiting) cleanup exactly
/// once, innermost first, and the call returns `Err(Cancelled)`.
///
/// Parked inside a setup instead: the setup is not raced, so it completes
/// when it is released; the token is then already cancelled, so the body is
/// never polled and the cleanup runs.
#[test]
fn cancel_from_another_os_thread_wakes_a_parked_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let token = CancellationToken::new();
        let log = Log::default();
        let (started_tx, started_rx) = oneshot::channel();
        let remote = token.clone();
        let canceller = std::thread::spawn(move || {
            started_rx.blocking_recv().unwrap();
            // Let the runtime go idle and park.
            std::thread::sleep(Duration::from_millis(20));
            remote.cancel();
        });
        let r = tokio::time::timeout(HANG, deep(token, log.clone(), 0, Some(started_tx)))
            .await
            .expect("the cancellation woke the runtime");
        canceller.join().unwrap();
        assert_eq!(r, Err(Cancelled::new()));
        assert_eq!(
            log.events(),
            [
                "setup 0",
                "setup 1",
                "setup 2",
                "cleanup 2",
                "cleanup 1",
                "cleanup 0"
            ]
        );

        let token = CancellationToken::new();
        let log = Log::default();
        let (entered_tx, entered_rx) = oneshot::channel();
        let (proceed_tx, proceed_rx) = oneshot::channel();
        let remote = token.clone();
        let canceller = std::thread::spawn(move || {
            entered_rx.blocking_recv().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            remote.cancel();
            proceed_tx.send(()).unwrap();
        });
        let r = tokio::time::timeout(
            HANG,
            parked_in_setup(token, log.clone(), entered_tx, proceed_rx),
        )
        .await
        .expect("the setup was released");
        canceller.join().unwrap();
        assert_eq!(r, Err(Cancelled::new()));
        assert_eq!(log.events(), ["setup start", "setup end", "cleanup"]);
    });
}

// ---------------------------------------------------------------------------
// Polling a finished future again
// ---------------------------------------------------------------------------

#[cancellable]
async fn counted(runs: Arc<AtomicUsize>, cleanups: Arc<AtomicUsize>) -> u32 {
    runs.fetch_add(1, SeqCst);
    on_cancel! { cleanups.fetch_add(1, SeqCst); }
    7
}

/// A `#[cancellable]` fn is an `async fn`: `.await` consumes its future, so
/// it cannot be polled after it returned that way. Polled by hand after it
/// returned (`Ok` or `Err`), it panics, as every `async fn` future does,
/// and nothing in it runs a second time (no setup, no cleanup).
#[test]
fn polling_a_finished_cancellable_future_again_panics_and_reruns_nothing() {
    for cancel in [false, true] {
        let token = CancellationToken::new();
        if cancel {
            token.cancel();
        }
        let (runs, cleanups) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut fut = Box::pin(counted(token, runs.clone(), cleanups.clone()));
        let expected = if cancel { Err(Cancelled::new()) } else { Ok(7) };
        assert_eq!(poll_once(fut.as_mut()), Poll::Ready(expected));
        let again = catch_unwind(AssertUnwindSafe(|| poll_once(fut.as_mut())));
        let payload = again.expect_err("polling a finished future again must panic");
        assert!(
            panic_message(&*payload).contains("after completion"),
            "unexpected panic: {}",
            panic_message(&*payload)
        );
        assert_eq!(runs.load(SeqCst), 1);
        assert_eq!(cleanups.load(SeqCst), usize::from(cancel));
    }
}

// ---------------------------------------------------------------------------
// A panic while the cancelled body is dropped
// ---------------------------------------------------------------------------

/// Panics when dropped.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("drop boom");
    }
}

#[cancellable]
async fn body_with_a_bomb(log: Log) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    let _bomb = Bomb;
    std::future::pending::<()>().await;
    1
}

/// The body is dropped before the cleanup runs; a `Drop` that panics there
/// is a panic of the body: it propagates out of the `.await` of the fn, and,
/// as for any panic of the body, the cleanup does not run.
#[tokio::test(flavor = "current_thread")]
async fn a_panic_while_dropping_the_cancelled_body_propagates_and_skips_the_cleanup() {
    let token = CancellationToken::new();
    let log = Log::default();
    let mut task = tokio::spawn(body_with_a_bomb(token.clone(), log.clone()));
    tokio::select! {
        biased;
        _ = &mut task => panic!("returned early"),
        () = yield_now() => {}
    }
    token.cancel();
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(panic_message(&*err.into_panic()), "drop boom");
    assert_eq!(log.events(), ["setup"]);
}

// ---------------------------------------------------------------------------
// A retry loop around a cancelled nested call
// ---------------------------------------------------------------------------

#[cancellable]
async fn attempt(attempts: Arc<AtomicUsize>, cleanups: Arc<AtomicUsize>) -> u32 {
    attempts.fetch_add(1, SeqCst);
    on_cancel! { cleanups.fetch_add(1, SeqCst); }
    std::future::pending::<()>().await;
    1
}

/// Retries a failed attempt at once, up to 1_000 times (a real loop would
/// retry for ever; the bound keeps a livelock from hanging the test).
#[cancellable]
async fn retrying(attempts: Arc<AtomicUsize>, cleanups: Arc<AtomicUsize>) -> u32 {
    on_cancel! {}
    for _ in 0..1_000 {
        if let Ok(v) = attempt(token.child_token(), attempts.clone(), cleanups.clone()).await {
            return v;
        }
    }
    0
}

/// A nested call's `Err(Cancelled)` reaches the body like any value, so a
/// body that retries it goes on after its token is cancelled; but the retry
/// loop is cut within a bounded number of turns (each call that starts
/// cancelled still runs its cleanup, which pairs with its setup), and the
/// caller returns `Err(Cancelled)`, never the body's fallback.
#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_body_retrying_a_nested_call_is_cut_within_a_bound() {
    let token = CancellationToken::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let cleanups = Arc::new(AtomicUsize::new(0));
    let mut fut = Box::pin(retrying(token.clone(), attempts.clone(), cleanups.clone()));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(attempts.load(SeqCst), 1);
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    let (attempts, cleanups) = (attempts.load(SeqCst), cleanups.load(SeqCst));
    assert_eq!(attempts, cleanups, "every setup got its cleanup");
    assert!(
        attempts <= 128,
        "the retry loop was cut within a bounded number of turns: {attempts} attempts"
    );
}

// ---------------------------------------------------------------------------
// A panic while a cancelled body is drained
// ---------------------------------------------------------------------------

/// Panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("drop boom");
    }
}

#[cancellable]
async fn holds_a_panicking_drop() {
    let _boom = PanicOnDrop;
    std::future::pending::<()>().await;
}

#[cancellable]
async fn waits_inside_a_nested_call() {
    let _ = holds_a_panicking_drop(token.clone()).await;
}

#[cancellable]
async fn answers() -> u32 {
    yield_now().await;
    42
}

/// The nested body's `Drop` panics while its cancelled caller drains it; the
/// panic reaches the task. The thread is left as it was: a later call with a
/// live token runs normally (it is not taken for a drained one).
#[tokio::test]
async fn a_panic_while_draining_leaves_later_calls_on_the_thread_alone() {
    let token = CancellationToken::new();
    let task = tokio::spawn(waits_inside_a_nested_call(token.clone()));
    yield_now().await; // the task now waits inside the nested call
    token.cancel();
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(panic_message(&*err.into_panic()), "drop boom");

    // Same thread (current-thread runtime), fresh token.
    let later = tokio::time::timeout(HANG, answers(CancellationToken::new()))
        .await
        .expect("the call does not hang");
    assert_eq!(later, Ok(42));
}
