//! The cancellation semantics, rule by rule (the crate docs' "Cancellation
//! semantics"), and the scenarios that broke the per-thread drain of earlier
//! versions: futures owned outside a body, a cancelled caller returning `Ok`,
//! retry loops, caught panics, `block_on` in a `Drop`, big fan-outs, `shield`.
//!
//! Hangs are bounded by paused clocks or a generous watchdog; no test asserts
//! a wall-clock bound.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::Poll;
use std::time::Duration;

use cancel_scope::{CancellationToken, Cancelled, LocalScope, cancellable, on_cancel, shield};
use common::{Guard, Log, current_thread, on_watched_thread, poll_once};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::yield_now;

/// Far longer than any test needs; only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Rule 1: a call is cancelled only by its own token or its own timeout
// ---------------------------------------------------------------------------

/// A long-lived job with a token of its own: it counts its cleanups and says
/// when its work is done.
#[cancellable]
async fn job(done: oneshot::Receiver<u32>, log: Log) -> u32 {
    on_cancel! { log.push("job cleanup"); }
    done.await.unwrap()
}

/// Polls a job owned by its caller through `&mut`, for at most 10 ms.
#[cancellable(timeout = Duration::from_millis(10))]
async fn poll_job_for_a_while<F: Future<Output = Result<u32, Cancelled>> + Unpin>(
    job: &mut F,
) -> Result<u32, Cancelled> {
    job.await
}

#[tokio::test(start_paused = true)]
async fn a_job_polled_through_mut_by_a_timed_out_helper_is_untouched_and_completes() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let mut owned = Box::pin(job(CancellationToken::new(), rx, log.clone()));
    let r = poll_job_for_a_while(CancellationToken::new(), &mut owned).await;
    assert!(r.unwrap_err().is_timeout(), "the helper timed out");
    assert_eq!(
        log.events(),
        Vec::<&str>::new(),
        "the job was not cancelled"
    );
    tx.send(7).unwrap();
    let r = tokio::time::timeout(HANG, owned)
        .await
        .expect("the job hung");
    assert_eq!(r, Ok(7));
}

#[cancellable(timeout = Duration::from_millis(10))]
async fn handler(fetch: futures::future::Shared<Pin<Box<dyn Future<Output = u32> + Send>>>) -> u32 {
    fetch.await
}

/// One in-flight fetch, deduplicated with `Shared` and awaited by two
/// handlers: the first one's timeout must not cancel the fetch under the
/// other.
#[tokio::test(start_paused = true)]
async fn a_shared_fetch_survives_one_waiters_timeout() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let fetch_log = log.clone();
    let fetch: Pin<Box<dyn Future<Output = u32> + Send>> =
        Box::pin(async move { job(CancellationToken::new(), rx, fetch_log).await.unwrap() });
    let fetch = fetch.shared();
    let impatient = handler(CancellationToken::new(), fetch.clone());
    let patient = tokio::spawn(fetch.clone());

    assert!(impatient.await.unwrap_err().is_timeout());
    tx.send(42).unwrap();
    let r = tokio::time::timeout(HANG, patient)
        .await
        .expect("the other waiter hung");
    assert_eq!(r.unwrap(), 42);
    assert_eq!(
        log.events(),
        Vec::<&str>::new(),
        "the fetch was not cancelled"
    );
}

#[cancellable]
async fn join_their_scope(scope: &mut LocalScope<'_, Result<u32, Cancelled>>) -> usize {
    scope.join_all().await.len()
}

/// A `LocalScope` owned by the caller and joined inside a cancelled fn: its
/// tasks (on tokens of their own) keep running, and the caller joins them
/// later.
#[tokio::test(start_paused = true)]
async fn a_local_scope_owned_by_the_caller_outlives_a_cancelled_join() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let mut scope: LocalScope<'_, Result<u32, Cancelled>> = LocalScope::new();
    let job_log = log.clone();
    scope.spawn(move |t| job(t, rx, job_log));
    let token = CancellationToken::new();
    let canceller = token.clone();
    let (r, ()) = tokio::join!(join_their_scope(token, &mut scope), async {
        yield_now().await;
        canceller.cancel();
    });
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        Vec::<&str>::new(),
        "the scope's task was not cancelled"
    );
    tx.send(3).unwrap();
    let results = tokio::time::timeout(HANG, scope.join_all())
        .await
        .expect("hung");
    assert_eq!(results.len(), 1);
    assert_eq!(results.into_iter().next().unwrap().unwrap(), Ok(3));
}

// ---------------------------------------------------------------------------
// Rule 2: nested calls on derived tokens are cancelled with their caller
// ---------------------------------------------------------------------------

#[cancellable]
async fn parked(log: Log, name: &'static str) {
    on_cancel! {
        yield_now().await; // a cleanup that takes a turn
        log.push(name);
    }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn fan_out(n: usize, log: Log) {
    on_cancel! { log.push("caller"); }
    let calls = (0..n).map(|_| parked(token.child_token(), log.clone(), "nested"));
    let _ = futures::future::join_all(calls).await;
}

#[tokio::test]
async fn every_call_of_a_large_join_all_on_child_tokens_cleans_up_before_its_caller() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(fan_out(token.clone(), 1_000, log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(log.count("nested"), 1_000);
    assert_eq!(log.events().last(), Some(&"caller"), "innermost first");
}

#[cancellable]
async fn unordered(n: usize, log: Log) {
    on_cancel! { log.push("caller"); }
    let mut calls: FuturesUnordered<_> = (0..n)
        .map(|_| parked(token.clone(), log.clone(), "nested"))
        .collect();
    while calls.next().await.is_some() {}
}

/// On one thread (the cancel is done before the caller is polled again).
/// Across threads a `FuturesUnordered` may not have been woken yet when the
/// caller sees its cancellation: see the docs' "Across threads".
#[tokio::test]
async fn every_call_in_a_futures_unordered_on_clones_cleans_up_before_its_caller() {
    let log = Log::default();
    let token = CancellationToken::new();
    let call = tokio::spawn(unordered(token.clone(), 200, log.clone()));
    yield_now().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    token.cancel();
    assert_eq!(call.await.unwrap(), Err(Cancelled::new()));
    assert_eq!(log.count("nested"), 200);
    assert_eq!(log.events().last(), Some(&"caller"));
}

#[cancellable]
async fn cleans_up_for(log: Log, ms: u64) {
    on_cancel! {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        log.push("nested");
    }
    std::future::pending::<()>().await;
}

/// Cleanups that end at different times inside a `FuturesUnordered`, which
/// polls only the futures that were woken: the caller waits for the last.
#[cancellable]
async fn unordered_cleanups(log: Log) {
    on_cancel! { log.push("caller"); }
    let mut calls: FuturesUnordered<_> = [30, 10, 20]
        .into_iter()
        .map(|ms| cleans_up_for(token.child_token(), log.clone(), ms))
        .collect();
    while calls.next().await.is_some() {}
}

#[tokio::test(start_paused = true)]
async fn a_futures_unordered_of_slow_cleanups_is_not_dropped_until_the_last_ends() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(unordered_cleanups(token.clone(), log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["nested", "nested", "nested", "caller"]);
}

#[cancellable]
async fn joins_three(log: Log, started: std::sync::mpsc::Sender<()>) {
    on_cancel! { log.push("caller"); }
    let _ = tokio::join!(
        parked(token.child_token(), log.clone(), "nested"),
        parked(token.clone(), log.clone(), "nested"),
        parked(token.child_token().child_token(), log.clone(), "nested"),
        async { started.send(()).unwrap() },
    );
}

/// `join!` polls every branch each time: cancelled from another thread, the
/// caller still finds every nested call.
#[test]
fn nested_calls_in_join_are_all_cleaned_up_when_cancelled_from_another_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..200 {
        let log = Log::default();
        let token = CancellationToken::new();
        let (started_tx, started) = std::sync::mpsc::channel();
        let call = rt.spawn(joins_three(token.clone(), log.clone(), started_tx));
        started.recv_timeout(HANG).expect("the body started");
        token.cancel();
        assert_eq!(rt.block_on(call).unwrap(), Err(Cancelled::new()));
        assert_eq!(log.events(), ["nested", "nested", "nested", "caller"]);
    }
}

// ---------------------------------------------------------------------------
// Rule 3: nested calls on unrelated tokens are dropped, not cancelled
// ---------------------------------------------------------------------------

#[cancellable]
async fn own_token_call(log: Log) {
    let _guard = Guard(log.clone(), "unrelated dropped");
    on_cancel! { log.push("unrelated cleanup"); }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn calls_unrelated(log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let _ = own_token_call(CancellationToken::new(), log.clone()).await;
}

/// Starts `calls_unrelated`, cancels its token and awaits it: what it logged.
async fn cancel_a_caller_of_an_unrelated_call() -> Vec<&'static str> {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(calls_unrelated(token.clone(), log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    log.events()
}

#[tokio::test]
async fn a_nested_call_on_an_unrelated_token_is_dropped_without_its_cleanup() {
    assert_eq!(
        cancel_a_caller_of_an_unrelated_call().await,
        ["unrelated dropped", "caller cleanup"]
    );
}

/// A caller whose nested call's token is marked cancelled only after the
/// caller has given its body a dozen turns: as when the thread cancelling a
/// token tree is preempted before it reaches the nested call's (derived)
/// token. Here the nested token is a separate one that the body cancels
/// itself, on its 12th poll after the caller's cancellation.
#[cancellable]
async fn caller_of_a_late_token(late: CancellationToken, log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let marks_it_late = async {
        let mut turns = 0;
        while turns < 12 {
            if token.is_cancelled() {
                turns += 1;
            }
            yield_now().await;
        }
        late.cancel();
        std::future::pending::<()>().await
    };
    let _ = tokio::join!(own_token_call(late.clone(), log.clone()), marks_it_late);
}

#[tokio::test]
async fn a_nested_call_whose_token_is_marked_turns_after_its_callers_still_cleans_up() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(caller_of_a_late_token(
        token.clone(),
        CancellationToken::new(),
        log.clone(),
    ));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(
        tokio::time::timeout(HANG, call).await.unwrap(),
        Err(Cancelled::new())
    );
    assert_eq!(
        log.events(),
        ["unrelated cleanup", "unrelated dropped", "caller cleanup"],
        "the caller waited for the nested call to see its cancellation"
    );
}

/// The wait of a cancelled caller for nested calls that have not seen a
/// cancellation needs no timer: without one (or outside Tokio) the caller
/// still returns, the nested call on an unrelated token dropped.
#[test]
fn a_caller_waiting_on_an_unrelated_nested_call_returns_without_a_timer() {
    let run = cancel_a_caller_of_an_unrelated_call;
    let expected = ["unrelated dropped", "caller cleanup"];
    on_watched_thread(move || {
        let no_timer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(no_timer.block_on(run()), expected);
        let no_timer = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        assert_eq!(no_timer.block_on(run()), expected);
        assert_eq!(futures::executor::block_on(run()), expected);
    });
}

/// `depth + 1` levels on child tokens, each with a nested call on an
/// unrelated token waiting beside the next level.
fn levels_beside_unrelated(
    token: CancellationToken,
    depth: usize,
    log: Log,
) -> Pin<Box<dyn Future<Output = Result<(), Cancelled>> + Send>> {
    Box::pin(level_beside_unrelated(token, depth, log))
}

#[cancellable]
async fn level_beside_unrelated(depth: usize, log: Log) {
    on_cancel! { log.push("level cleanup"); }
    let unrelated = own_token_call(CancellationToken::new(), log.clone());
    if depth == 0 {
        let _ = unrelated.await;
    } else {
        let inner = levels_beside_unrelated(token.child_token(), depth - 1, log.clone());
        let _ = tokio::join!(unrelated, inner);
    }
}

/// The wait for nested calls that have not seen a cancellation is bounded
/// once per cancellation, not once per level: each level's clock starts when
/// the cancellation reaches it, and keeps running while the levels inside it
/// clean up. (Waited level after level, 21 levels would take at least
/// 21 x 50 ms; the bound below only catches that.)
#[test]
fn the_wait_for_unrelated_nested_calls_does_not_add_up_across_levels() {
    const DEPTH: usize = 20;
    on_watched_thread(|| {
        current_thread(false).block_on(async {
            let log = Log::default();
            let token = CancellationToken::new();
            let mut call = levels_beside_unrelated(token.clone(), DEPTH, log.clone());
            assert!(poll_once(call.as_mut()).is_pending());
            let cancelled_at = std::time::Instant::now();
            token.cancel();
            assert_eq!(call.await, Err(Cancelled::new()));
            let took = cancelled_at.elapsed();
            assert_eq!(
                log.count("level cleanup"),
                DEPTH + 1,
                "every level cleaned up"
            );
            assert_eq!(log.count("unrelated dropped"), DEPTH + 1);
            assert_eq!(
                log.count("unrelated cleanup"),
                0,
                "unrelated calls are dropped"
            );
            assert!(
                took < Duration::from_millis(50) * u32::try_from(DEPTH).unwrap(),
                "the wait added up level after level: {took:?}"
            );
        });
    });
}

// ---------------------------------------------------------------------------
// Rule 4: once its own token is cancelled, a caller returns Err, once
// ---------------------------------------------------------------------------

#[cancellable]
async fn answer() -> u32 {
    yield_now().await;
    42
}

/// Cancels its own token, then calls a nested fn with it and falls back to 0
/// when that is cancelled.
#[cancellable]
async fn cancels_itself(log: Log) -> u32 {
    on_cancel! { log.push("cleanup"); }
    token.cancel();
    answer(token.clone()).await.unwrap_or(0)
}

#[tokio::test]
async fn a_caller_whose_nested_call_saw_the_cancel_first_returns_err_not_its_fallback() {
    let log = Log::default();
    let r = cancels_itself(CancellationToken::new(), log.clone()).await;
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(log.events(), ["cleanup"], "the cleanup ran once");
}

/// Lets another thread cancel the token while the body is being polled,
/// then calls a nested fn with a clone and falls back to 0.
#[cancellable]
async fn cancelled_mid_poll(
    cancel_now: std::sync::mpsc::Sender<()>,
    cancelled: std::sync::mpsc::Receiver<()>,
    log: Log,
) -> u32 {
    on_cancel! { log.push("cleanup"); }
    cancel_now.send(()).unwrap();
    cancelled.recv().unwrap(); // blocks this poll until the other thread cancelled
    answer(token.clone()).await.unwrap_or(0)
}

#[test]
fn a_cancel_from_another_thread_mid_poll_still_makes_the_caller_err() {
    let token = CancellationToken::new();
    let (cancel_tx, cancel_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let canceller = token.clone();
    let thread = std::thread::spawn(move || {
        cancel_rx.recv().unwrap();
        canceller.cancel();
        done_tx.send(()).unwrap();
    });
    let log = Log::default();
    let r =
        current_thread(false).block_on(cancelled_mid_poll(token, cancel_tx, done_rx, log.clone()));
    thread.join().unwrap();
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(log.events(), ["cleanup"]);
}

#[cancellable]
async fn attempt(attempts: Arc<AtomicUsize>, cleanups: Arc<AtomicUsize>) -> u32 {
    attempts.fetch_add(1, SeqCst);
    on_cancel! { cleanups.fetch_add(1, SeqCst); }
    std::future::pending::<u32>().await
}

/// Retries for ever: only the library can cut this loop.
#[cancellable]
async fn retries_for_ever(attempts: Arc<AtomicUsize>, cleanups: Arc<AtomicUsize>) -> u32 {
    loop {
        if let Ok(v) = attempt(token.clone(), attempts.clone(), cleanups.clone()).await {
            return v;
        }
    }
}

#[test]
fn an_unbounded_retry_loop_is_cut_and_does_not_wedge_a_current_thread_runtime() {
    let (attempts, cleanups, r) = on_watched_thread(|| {
        let attempts = Arc::new(AtomicUsize::new(0));
        let cleanups = Arc::new(AtomicUsize::new(0));
        let token = CancellationToken::new();
        let r = current_thread(false).block_on({
            let (attempts, cleanups) = (attempts.clone(), cleanups.clone());
            async move {
                let call = tokio::spawn(retries_for_ever(token.clone(), attempts, cleanups));
                // A sibling task gets to run: the thread is not wedged.
                let sibling = tokio::spawn(async { 5 });
                yield_now().await;
                token.cancel();
                let r = call.await.unwrap();
                assert_eq!(sibling.await.unwrap(), 5);
                r
            }
        });
        (attempts.load(SeqCst), cleanups.load(SeqCst), r)
    });
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(attempts, cleanups, "every setup got its cleanup");
    assert!(
        attempts <= 128,
        "cut within a bounded number of turns: {attempts}"
    );
}

/// A body that loops on a call whose (unrelated) token is cancelled, without
/// being cancelled itself: it yields every so often, so a sibling task on
/// the same current-thread runtime runs.
#[cancellable]
async fn spins_on_a_dead_token(dead: CancellationToken, stop: Arc<AtomicUsize>) -> usize {
    let mut n = 0;
    while stop.load(SeqCst) == 0 {
        let _ = answer(dead.clone()).await;
        n += 1;
    }
    n
}

#[test]
fn a_loop_on_a_cancelled_call_yields_to_other_tasks() {
    let n = on_watched_thread(|| {
        current_thread(false).block_on(async {
            let dead = CancellationToken::new();
            dead.cancel();
            let stop = Arc::new(AtomicUsize::new(0));
            let spinner = tokio::spawn(spins_on_a_dead_token(
                CancellationToken::new(),
                dead,
                stop.clone(),
            ));
            tokio::spawn(async move { stop.store(1, SeqCst) })
                .await
                .unwrap();
            spinner.await.unwrap().unwrap()
        })
    });
    assert!(n > 0);
}

// ---------------------------------------------------------------------------
// Rule 6: per-thread state survives panics; block_on in a Drop
// ---------------------------------------------------------------------------

#[cancellable]
async fn panics_when_polled() {
    panic!("nested boom");
}

/// Catches the panic of one nested call, then waits in another.
#[cancellable]
async fn catches_a_panic(log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let caught = AssertUnwindSafe(panics_when_polled(token.clone()))
        .catch_unwind()
        .await;
    assert!(caught.is_err());
    let _ = parked(token.clone(), log.clone(), "sibling cleanup").await;
}

#[tokio::test]
async fn a_panic_caught_inside_the_body_leaves_a_siblings_cleanup_alone() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(catches_a_panic(token.clone(), log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["sibling cleanup", "caller cleanup"]);
}

/// Runs a `#[cancellable]` fn to completion with `block_on` when dropped.
struct BlocksOnDrop(Arc<AtomicUsize>);

impl Drop for BlocksOnDrop {
    fn drop(&mut self) {
        let r = futures::executor::block_on(answer_now(CancellationToken::new()));
        assert_eq!(r, Ok(1));
        self.0.fetch_add(1, SeqCst);
    }
}

#[cancellable]
async fn answer_now() -> u32 {
    1
}

#[cancellable]
async fn holds_a_blocking_drop(dropped: Arc<AtomicUsize>, log: Log) {
    let _blocks = BlocksOnDrop(dropped);
    let _ = parked(token.clone(), log, "nested").await;
}

#[test]
fn block_on_in_a_drop_inside_a_cancelled_body_does_not_hang() {
    let dropped = on_watched_thread(|| {
        current_thread(false).block_on(async {
            let dropped = Arc::new(AtomicUsize::new(0));
            let token = CancellationToken::new();
            let mut call = Box::pin(holds_a_blocking_drop(
                token.clone(),
                dropped.clone(),
                Log::default(),
            ));
            assert!(poll_once(call.as_mut()).is_pending());
            token.cancel();
            assert_eq!(call.await, Err(Cancelled::new()));
            dropped.load(SeqCst)
        })
    });
    assert_eq!(dropped, 1);
}

// ---------------------------------------------------------------------------
// Rule 5: shield
// ---------------------------------------------------------------------------

/// Writes each reply whole under `shield`, waiting (cancel-safe) in between;
/// says goodbye on cancel.
#[cancellable]
async fn serve_replies(
    conn: &mut tokio::io::DuplexStream,
    replies: mpsc::Receiver<Vec<u8>>,
    log: Log,
) -> std::io::Result<()> {
    let mut replies = replies;
    on_cancel! {
        log.push("cleanup");
        let _ = conn.write_all(b"<bye>").await;
        let _ = conn.shutdown().await;
    }
    while let Some(reply) = replies.recv().await {
        shield(conn.write_all(&reply)).await?;
        log.push("reply written");
    }
    Ok(())
}

#[tokio::test]
async fn a_reply_under_shield_is_never_torn_by_a_cancel_mid_write() {
    let log = Log::default();
    let (mut server_end, mut client_end) = tokio::io::duplex(64); // a slow pipe
    let (tx, rx) = mpsc::channel(4);
    let reply: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    tx.send(reply.clone()).await.unwrap();
    let token = CancellationToken::new();
    let server = serve_replies(token.clone(), &mut server_end, rx, log.clone());
    let client = async {
        let mut got = Vec::new();
        let mut buf = [0; 256];
        loop {
            let n = client_end.read(&mut buf).await.unwrap();
            if n == 0 {
                break got;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() >= 1_000 && !token.is_cancelled() {
                token.cancel(); // lands in the middle of the reply
            }
        }
    };
    let (r, got) = tokio::time::timeout(HANG, async { tokio::join!(server, client) })
        .await
        .expect("hung");
    assert_eq!(r.unwrap_err(), Cancelled::new());
    let mut expected = reply;
    expected.extend_from_slice(b"<bye>");
    assert!(got == expected, "the reply was torn ({} bytes)", got.len());
    // The body was dropped at its next wait: the log line after the shield
    // ran (it is not an await), the cleanup ran once, after it.
    assert_eq!(log.events(), ["reply written", "cleanup"]);
}

#[tokio::test]
async fn shield_outside_a_cancellable_body_is_the_future_itself() {
    assert_eq!(shield(async { 5 }).await, 5);
    let token = CancellationToken::new();
    token.cancel();
    // Not a token wrapper: a shielded wait on a cancelled token ends.
    shield(token.cancelled()).await;
}

#[cancellable]
async fn shielded_sleep(log: Log, ms: u64) {
    on_cancel! { log.push("cleanup"); }
    shield(async {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        log.push("shielded done");
    })
    .await;
    log.push("after shield");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test(start_paused = true)]
async fn a_shield_defers_a_cancel_until_it_is_done_then_the_cleanup_runs_once() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(shielded_sleep(token.clone(), log.clone(), 100));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["shielded done", "after shield", "cleanup"]);
}

#[cancellable(timeout = Duration::from_millis(10))]
async fn shielded_past_its_timeout(log: Log) {
    on_cancel! { log.push("cleanup"); }
    shield(tokio::time::sleep(Duration::from_millis(50))).await;
    log.push("shield done");
    std::future::pending::<()>().await;
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_deferred_by_a_shield_and_still_reported_as_a_timeout() {
    let log = Log::default();
    let start = tokio::time::Instant::now();
    let r = shielded_past_its_timeout(CancellationToken::new(), log.clone()).await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(50),
        "paused clock: exact"
    );
    assert_eq!(log.events(), ["shield done", "cleanup"]);
}

#[cancellable]
async fn shields_a_loop_of_writes(log: Log, per_item: bool) {
    on_cancel! { log.push("cleanup"); }
    if per_item {
        for _ in 0..3 {
            shield(tokio::time::sleep(Duration::from_millis(10))).await;
            log.push("item");
        }
    } else {
        shield(async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                log.push("item");
            }
        })
        .await;
    }
    std::future::pending::<()>().await;
}

#[tokio::test(start_paused = true)]
async fn a_shield_that_starts_after_the_cancel_defers_nothing() {
    for (per_item, items) in [(true, 1), (false, 3)] {
        let log = Log::default();
        let token = CancellationToken::new();
        let mut call = Box::pin(shields_a_loop_of_writes(
            token.clone(),
            log.clone(),
            per_item,
        ));
        assert!(poll_once(call.as_mut()).is_pending());
        token.cancel();
        assert_eq!(call.await, Err(Cancelled::new()));
        assert_eq!(log.count("item"), items, "per_item: {per_item}");
        assert_eq!(log.events().last(), Some(&"cleanup"));
    }
}

/// A shield inside a nested call on an unrelated token: the nested call is
/// not cancelled, but the caller does not drop its body while the shield
/// runs.
#[cancellable]
async fn shield_in_unrelated(log: Log) {
    let _ = shielded_sleep(CancellationToken::new(), log.clone(), 30).await;
}

#[tokio::test(start_paused = true)]
async fn a_shield_deep_inside_defers_every_caller_around_it() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(shield_in_unrelated(token.clone(), log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    // The inner call was dropped (its token is not cancelled) after its
    // shield finished: no cleanup of its own.
    assert_eq!(log.events(), ["shielded done", "after shield"]);
}

/// The body is not polled again after its cancellation when nothing is
/// pending inside it: buffered messages are not consumed.
#[cancellable]
async fn consumer(rx: &mut mpsc::Receiver<u32>, seen: Arc<AtomicUsize>) {
    while let Some(_msg) = rx.recv().await {
        seen.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_body_with_nothing_nested_is_not_polled_again() {
    let (tx, mut rx) = mpsc::channel(8);
    for i in 0..8 {
        tx.send(i).await.unwrap();
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let token = CancellationToken::new();
    let mut call = Box::pin(consumer(token.clone(), &mut rx, seen.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    assert_eq!(seen.load(SeqCst), 1);
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(seen.load(SeqCst), 1);
    assert!(matches!(
        poll_once(Box::pin(rx.recv()).as_mut()),
        Poll::Ready(Some(1))
    ));
}

// ---------------------------------------------------------------------------
// A nested call run to completion within one poll of the body (`block_on`
// inside `block_in_place`, a `select!` dropping the loser): what it said
// while it waited does not outlive it
// ---------------------------------------------------------------------------

/// Its cleanup takes a turn, so it waits (and says so) before it returns.
#[cancellable]
async fn cleans_up_in_a_turn(log: Log) {
    on_cancel! {
        yield_now().await;
        log.push("blocking call cleanup");
    }
    std::future::pending::<()>().await;
}

/// Waits in a nested call; once cancelled, runs a second nested call to its
/// end inside `block_in_place`, then goes on to two `.await`s that wait.
#[cancellable]
async fn blocks_in_place_once_cancelled(started: oneshot::Sender<()>, log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let _ = parked_after(token.child_token(), started, log.clone()).await;
    let (child, in_place) = (token.child_token(), log.clone());
    let r = tokio::task::block_in_place(move || {
        tokio::runtime::Handle::current().block_on(cleans_up_in_a_turn(child, in_place))
    });
    assert!(r.is_err());
    log.push("after the blocking call");
    yield_now().await;
    log.push("past its next await");
    yield_now().await;
    log.push("beyond");
}

/// `parked`, saying when it waits.
#[cancellable]
async fn parked_after(started: oneshot::Sender<()>, log: Log) {
    on_cancel! { log.push("nested cleanup"); }
    let _ = started.send(());
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_call_ended_inside_block_in_place_is_dropped_at_its_next_wait() {
    let log = Log::default();
    let token = CancellationToken::new();
    let (started, running) = oneshot::channel();
    let task = tokio::spawn(blocks_in_place_once_cancelled(
        token.clone(),
        started,
        log.clone(),
    ));
    running.await.unwrap();
    token.cancel();
    assert_eq!(
        tokio::time::timeout(HANG, task).await.unwrap().unwrap(),
        Err(Cancelled::new())
    );
    assert_eq!(
        log.events(),
        [
            "nested cleanup",
            "blocking call cleanup",
            "after the blocking call",
            "caller cleanup"
        ]
    );
}

/// Once cancelled, a `select!` drops a shield that it had polled, in the
/// same poll, for a nested call that returns `Err(Cancelled)`.
#[cancellable]
async fn drops_a_shield_it_polled(started: oneshot::Sender<()>, log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let mut started = Some(started);
    let mut nested = std::pin::pin!(parked_after(
        token.child_token(),
        oneshot::channel().0,
        log.clone()
    ));
    loop {
        tokio::select! {
            biased;
            () = shield(std::future::pending::<()>()) => unreachable!(),
            r = &mut nested => {
                assert!(r.is_err());
                break;
            }
            () = yield_now(), if started.is_some() => {
                let _ = started.take().unwrap().send(());
            }
        }
    }
    log.push("after the nested call");
    yield_now().await;
    log.push("past its next await");
}

#[tokio::test]
async fn a_shield_dropped_in_the_poll_that_polled_it_defers_nothing() {
    let log = Log::default();
    let token = CancellationToken::new();
    let (started, running) = oneshot::channel();
    let call = drops_a_shield_it_polled(token.clone(), started, log.clone());
    let canceller = async {
        running.await.unwrap();
        token.cancel();
    };
    let (r, ()) = tokio::join!(call, canceller);
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        ["nested cleanup", "after the nested call", "caller cleanup"]
    );
}
