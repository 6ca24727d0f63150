//! Adversarial review of the cancellation semantics (issue 11): each test
//! takes one sentence of the crate docs' "Cancellation semantics" (or of
//! `shield`'s docs) and tries a shape that could break it. Public API only.
//!
//! Hangs are bounded by paused clocks, loop caps or a generous watchdog
//! thread; no test asserts a wall-clock bound.

mod common;

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cancel_scope::{CancellationToken, Cancelled, LocalScope, cancellable, on_cancel, shield};
use common::{Log, current_thread, on_watched_thread, poll_once};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::yield_now;
use tokio::time::sleep;

/// Far longer than any test needs; only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(60);

const MS: Duration = Duration::from_millis(1);

/// Waits for ever in its body; logs its cleanup.
#[cancellable]
async fn parked(log: Log, name: &'static str) {
    on_cancel! { log.push(name); }
    std::future::pending::<()>().await;
}

/// Calls `call` with a fresh token, cancels the token once the call waits,
/// and checks that the call returns `Cancelled`.
async fn cancel_once_it_waits<T, F>(call: impl FnOnce(CancellationToken) -> F)
where
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
{
    cancel_when_it_waits(None, call).await;
}

/// [`cancel_once_it_waits`], cancelling `wait` after the call's first poll.
async fn cancel_once_it_waited<T, F>(wait: Duration, call: impl FnOnce(CancellationToken) -> F)
where
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
{
    cancel_when_it_waits(Some(wait), call).await;
}

async fn cancel_when_it_waits<T, F>(
    wait: Option<Duration>,
    call: impl FnOnce(CancellationToken) -> F,
) where
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
{
    let token = CancellationToken::new();
    let mut call = Box::pin(call(token.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    if let Some(wait) = wait {
        sleep(wait).await;
    }
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
}

/// Polls a future owned by its caller through `&mut` (rule 1's helper).
#[cancellable]
async fn poll_it<F: Future + Unpin>(job: &mut F) {
    let _ = job.await;
}

// ---------------------------------------------------------------------------
// Rule 1: a call is cancelled only by its own token or its own timeout; a
// future owned outside a body keeps running, untouched.
// ---------------------------------------------------------------------------

/// A job with a token of its own: waits for a message, then does a shielded
/// two-step write.
#[cancellable]
async fn shielded_after_recv(rx: &mut mpsc::Receiver<()>, log: Log) {
    on_cancel! { log.push("job cleanup"); }
    rx.recv().await;
    shield(async {
        log.push("shield start");
        sleep(10 * MS).await;
        log.push("shield end");
    })
    .await;
    std::future::pending::<()>().await;
}

/// Polls the helper `call` makes with a fresh token once, then lets the
/// job's message (on `tx`) and the helper's cancel land together: the helper
/// returns `Cancelled` (and is dropped) once the job's shield is done.
async fn cancel_as_the_message_lands<
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
>(
    tx: &mpsc::Sender<()>,
    call: impl FnOnce(CancellationToken) -> F,
) {
    let helper_token = CancellationToken::new();
    let mut helper = Box::pin(call(helper_token.clone()));
    assert!(poll_once(helper.as_mut()).is_pending());
    tx.send(()).await.unwrap();
    helper_token.cancel();
    assert_eq!(helper.await, Err(Cancelled::new()));
}

/// The log of a job whose shield started in its helper's last poll. The
/// shield is the job's (armed: its race is not the cancelled one), and a
/// cancelled race does not drop its body while a shield runs inside it,
/// even in a future it only borrows: the helper returns once the shield is
/// done; the job is untouched; the job's cleanup comes last.
const SHIELD_RUNS_WHOLE: [&str; 4] = [
    "shield start",
    "shield end",
    "helper returned",
    "job cleanup",
];

/// The helper's cancellation must not touch the job: a shield the job
/// starts in the helper's last poll is the job's, and defers the job's own
/// cancellation later like any shield that started before it.
#[tokio::test(start_paused = true)]
async fn r1_a_shield_a_job_starts_while_its_helper_is_cancelled_is_the_jobs_and_the_helper_waits_for_it()
 {
    let log = Log::default();
    let (tx, mut rx) = mpsc::channel(1);
    let job_token = CancellationToken::new();
    let mut job = Box::pin(shielded_after_recv(job_token.clone(), &mut rx, log.clone()));
    cancel_as_the_message_lands(&tx, |t| poll_it(t, &mut job)).await;
    log.push("helper returned");
    job_token.cancel();
    let r = tokio::time::timeout(HANG, job).await.expect("hung");
    assert_eq!(r, Err(Cancelled::new()));
    // The job's own cancellation came after its shield started: the shield
    // runs to its end before the job's cleanup.
    assert_eq!(log.events(), SHIELD_RUNS_WHOLE);
}

/// A job without a cleanup, on a token of its own.
#[cancellable]
async fn waits_for_ever() -> u32 {
    std::future::pending().await
}

/// Polls a job for 10 ms and keeps what the job returned.
#[cancellable(timeout = 10 * MS)]
async fn watch_for_10ms<F: Future<Output = Result<u32, Cancelled>> + Unpin>(
    job: &mut F,
    seen: &Mutex<Option<Result<u32, Cancelled>>>,
) {
    let r = job.await;
    *seen.lock().unwrap() = Some(r);
    std::future::pending::<()>().await;
}

/// Documented limit: a call whose own token is cancelled while a cancelled
/// caller polls its body (so that nested calls finish) takes that caller's
/// reason: as a rule it was cancelled with it. A job cancelled by hand at
/// the same moment as its helper's timeout then reports the timeout.
#[tokio::test(start_paused = true)]
async fn r1_a_job_cancelled_in_the_same_turn_as_its_helpers_timeout_takes_the_helpers_reason() {
    let job_token = CancellationToken::new();
    let mut job = Box::pin(waits_for_ever(job_token.clone()));
    let seen = Mutex::new(None);
    let mut watch = Box::pin(watch_for_10ms(CancellationToken::new(), &mut job, &seen));
    assert!(poll_once(watch.as_mut()).is_pending());
    // Its token cancelled by hand; the helper's deadline passes before
    // either is polled again.
    job_token.cancel();
    sleep(10 * MS).await;
    assert!(watch.await.unwrap_err().is_timeout());
    let got = seen.lock().unwrap().take();
    let got = got.expect("the job returned into the helper");
    assert!(got.unwrap_err().is_timeout());
}

/// A task of a `LocalScope` the caller owns, joined by a helper: a shield
/// the task starts in the helper's last poll still defers the task's own
/// cancellation later.
#[tokio::test(start_paused = true)]
async fn r1_a_shield_a_local_scope_task_starts_while_the_joining_helper_is_cancelled_runs_whole() {
    let log = Log::default();
    let (tx, mut rx) = mpsc::channel(1);
    let mut scope: LocalScope<'_, Result<(), Cancelled>> = LocalScope::new();
    let task_log = log.clone();
    let rx = &mut rx;
    scope.spawn(move |t| shielded_after_recv(t, rx, task_log));
    cancel_as_the_message_lands(&tx, |t| join_all_of(t, &mut scope)).await;
    log.push("helper returned");
    scope.cancel();
    let results = tokio::time::timeout(HANG, scope.join_all())
        .await
        .expect("hung");
    assert_eq!(results.len(), 1);
    assert_eq!(log.events(), SHIELD_RUNS_WHOLE);
}

#[cancellable]
async fn join_all_of(scope: &mut LocalScope<'_, Result<(), Cancelled>>) -> usize {
    scope.join_all().await.len()
}

/// A future owned outside, polled by a helper that is then dropped while it
/// is cancelling (waiting for a nested cleanup): the job is untouched and
/// completes when awaited again.
#[cancellable]
async fn helper_with_a_slow_nested_cleanup<F: Future + Unpin>(job: &mut F, log: Log) {
    let mut slow = Box::pin(slow_cleanup(token.child_token(), log.clone(), 50));
    let (_, _) = tokio::join!(&mut slow, job);
}

#[cancellable]
async fn slow_cleanup(log: Log, ms: u64) {
    on_cancel! {
        log.push("slow cleanup start");
        sleep(Duration::from_millis(ms)).await;
        log.push("slow cleanup end");
    }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn finishes_after(log: Log, ms: u64) -> u32 {
    on_cancel! { log.push("job cleanup"); }
    sleep(Duration::from_millis(ms)).await;
    7
}

#[tokio::test(start_paused = true)]
async fn r1_a_job_polled_by_a_helper_dropped_mid_cancel_completes_when_awaited_again() {
    let log = Log::default();
    let mut job = Box::pin(finishes_after(CancellationToken::new(), log.clone(), 100));
    let token = CancellationToken::new();
    {
        let mut helper = Box::pin(helper_with_a_slow_nested_cleanup(
            token.clone(),
            &mut job,
            log.clone(),
        ));
        assert!(poll_once(helper.as_mut()).is_pending());
        token.cancel();
        // The helper waits for its nested cleanup (50 ms); give up on it
        // after 10.
        assert!(
            tokio::time::timeout(10 * MS, helper.as_mut())
                .await
                .is_err()
        );
    }
    assert_eq!(tokio::time::timeout(HANG, job).await.expect("hung"), Ok(7));
    assert_eq!(log.events(), ["slow cleanup start"]);
}

// ---------------------------------------------------------------------------
// Rule 2: nested calls on derived tokens are cancelled with their caller;
// inner cleanups finish first, even when the body does not poll them again.
// ---------------------------------------------------------------------------

/// Times out after 5 ms (its own timeout), then cleans up for 20 ms.
#[cancellable(timeout = 5 * MS)]
async fn times_out_then_cleans_slowly(log: Log) {
    on_cancel! {
        log.push("inner cleanup start");
        sleep(20 * MS).await;
        log.push("inner cleanup end");
    }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn unordered_with_a_timed_out_call(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let mut calls = FuturesUnordered::new();
    calls.push(times_out_then_cleans_slowly(
        token.child_token(),
        log.clone(),
    ));
    while calls.next().await.is_some() {}
    std::future::pending::<()>().await;
}

/// The nested call (on a child token) is already cleaning up, after its own
/// timeout, when the caller is cancelled: the `FuturesUnordered` does not
/// poll it then (nothing woke it), and the caller must still wait for it.
#[tokio::test(start_paused = true)]
async fn r2_a_nested_cleanup_already_running_in_a_futures_unordered_not_polled_again_is_cut_documented_limit()
 {
    let log = Log::default();
    let token = CancellationToken::new();
    let canceller = token.clone();
    let (r, ()) = tokio::join!(unordered_with_a_timed_out_call(token, log.clone()), async {
        sleep(10 * MS).await; // the inner cleanup runs from 5 to 25 ms
        canceller.cancel();
    });
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(log.events(), ["inner cleanup start", "outer cleanup"]);
}

/// Three levels; the middle one runs on an unrelated token but hands the
/// outer token on to the innermost.
#[cancellable]
async fn innermost(log: Log) {
    on_cancel! { log.push("inner"); }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn unrelated_middle(outer_token: CancellationToken, log: Log) {
    on_cancel! { log.push("middle"); }
    let _ = innermost(outer_token.child_token(), log.clone()).await;
    log.push("middle saw inner return");
    std::future::pending::<()>().await;
}

#[cancellable]
async fn three_levels(log: Log) {
    on_cancel! { log.push("outer"); }
    let _ = unrelated_middle(CancellationToken::new(), token.clone(), log.clone()).await;
}

#[tokio::test]
async fn r2_three_deep_through_a_level_on_an_unrelated_token_inner_cleans_up_first_middle_is_dropped()
 {
    let log = Log::default();
    cancel_once_it_waits(|token| three_levels(token, log.clone())).await;
    assert_eq!(log.events(), ["inner", "middle saw inner return", "outer"]);
}

/// Two nested calls in a `join!`, one direct, one through a level on an
/// unrelated token; the caller has a setup.
#[cancellable]
async fn three_levels_through_setup(log: Log) {
    let name = "outer";
    on_cancel! { log.push(name); }
    let (a, b) = tokio::join!(
        innermost(token.child_token(), log.clone()),
        unrelated_middle(CancellationToken::new(), token.clone(), log.clone()),
    );
    let _ = (a, b);
}

#[tokio::test]
async fn r2_join_of_a_direct_and_an_indirect_nested_call_both_clean_up_before_a_caller_with_setup()
{
    let log = Log::default();
    cancel_once_it_waits(|token| three_levels_through_setup(token, log.clone())).await;
    let events = log.events();
    assert_eq!(
        events.iter().filter(|e| **e == "inner").count(),
        2,
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&"outer"), "{events:?}");
    assert!(!events.contains(&"middle"), "{events:?}");
}

/// A `select!` in a cancelled body whose other branch is ready in the poll
/// that lets nested calls see the cancellation.
#[cancellable]
async fn select_with_a_message(rx: &mut mpsc::Receiver<u32>, log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    tokio::select! {
        biased;
        _ = rx.recv() => log.push("message taken after the cancel"),
        _ = parked(token.child_token(), log.clone(), "nested cleanup") => {}
    }
    std::future::pending::<()>().await;
}

/// Rule 2: "every `#[cancellable]` call running on it or on a token derived
/// from it [...] is cancelled: [...] its cleanup runs exactly once".
#[tokio::test]
async fn r2_a_select_branch_ready_when_the_caller_polls_its_body_again_wins_the_documented_trade_off()
 {
    let log = Log::default();
    let (tx, mut rx) = mpsc::channel(1);
    let token = CancellationToken::new();
    let mut call = Box::pin(select_with_a_message(token.clone(), &mut rx, log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    tx.send(1).await.unwrap();
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        ["message taken after the cancel", "outer cleanup"]
    );
}

// ---------------------------------------------------------------------------
// Rule 4: cancellation wins at every level; retry loops
// ---------------------------------------------------------------------------

#[cancellable]
async fn cancels_itself_then_returns(log: Log) -> u32 {
    on_cancel! { log.push("cleanup"); }
    token.cancel();
    5
}

/// Rule 4: "once a caller's own token is cancelled, the caller's result is
/// `Err(Cancelled)` [...]: a cancelled caller never returns `Ok`".
#[tokio::test]
async fn r4_a_body_that_cancels_its_own_token_and_returns_without_waiting_completes() {
    let log = Log::default();
    let token = CancellationToken::new();
    let r = cancels_itself_then_returns(token.clone(), log.clone()).await;
    assert!(token.is_cancelled());
    // The race sees a cancellation before the body starts, at the body's
    // waits, or when a nested call returned `Err(Cancelled)`: here none.
    assert_eq!(r, Ok(5));
    assert_eq!(log.events(), Vec::<&str>::new());
}

#[cancellable(flatten)]
async fn io_fetch() -> std::io::Result<u32> {
    yield_now().await;
    Ok(1)
}

#[cancellable]
async fn io_fetch_or_zero(log: Log) -> u32 {
    let label = "cleanup";
    on_cancel! { log.push(label); }
    token.cancel();
    io_fetch(token.clone()).await.unwrap_or(0)
}

/// The nested call is `flatten`: its `Cancelled` is an `io::Error` by the
/// time the body sees it; the caller (with a setup) is still cancelled.
#[tokio::test]
async fn r4_a_flattened_nested_cancel_folded_into_a_fallback_still_cancels_a_caller_with_setup() {
    let log = Log::default();
    let r = io_fetch_or_zero(CancellationToken::new(), log.clone()).await;
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(log.events(), ["cleanup"]);
}

/// Its cleanup awaits (a flush), so it does not "return at once".
#[cancellable]
async fn attempt_with_a_flush(attempts: Arc<AtomicUsize>) -> u32 {
    attempts.fetch_add(1, SeqCst);
    on_cancel! { sleep(MS).await; }
    yield_now().await;
    1
}

/// Retries without `?`; gives up by itself only after 10 000 attempts.
#[cancellable]
async fn retries_with_flushes(attempts: Arc<AtomicUsize>) -> u32 {
    loop {
        if attempts.load(SeqCst) >= 10_000 {
            return 0;
        }
        if let Ok(v) = attempt_with_a_flush(token.clone(), attempts.clone()).await {
            return v;
        }
    }
}

/// DESIGN: "A body that retries a cancelled nested call in a loop never
/// wedges its thread: it is cut within a bounded number of turns [...] and
/// dropped." Here each retry's cleanup awaits a little.
#[tokio::test(start_paused = true)]
async fn r4_a_cancelled_caller_retrying_a_call_whose_cleanup_awaits_is_cut() {
    let attempts = Arc::new(AtomicUsize::new(0));
    cancel_once_it_waits(|token| retries_with_flushes(token, attempts.clone())).await;
    let n = attempts.load(SeqCst);
    assert!(n < 1_000, "not cut: {n} attempts after the cancel");
}

#[cancellable]
async fn flush_once(flushes: Arc<AtomicUsize>) {
    on_cancel! { flushes.fetch_add(1, SeqCst); }
    yield_now().await;
}

/// A cleanup that calls `#[cancellable]` fns with its own (cancelled) token,
/// 100 times: each returns `Err` after its own cleanup, and the caller's
/// cleanup ends, nested in a cancelled caller or not.
#[cancellable]
async fn cleanup_calls_with_the_cancelled_token(flushes: Arc<AtomicUsize>, errs: Arc<AtomicUsize>) {
    on_cancel! {
        for _ in 0..100 {
            if flush_once(token.clone(), flushes.clone()).await.is_err() {
                errs.fetch_add(1, SeqCst);
            }
        }
    }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn around_cleanup_calls(flushes: Arc<AtomicUsize>, errs: Arc<AtomicUsize>) {
    let _ = cleanup_calls_with_the_cancelled_token(token.clone(), flushes, errs).await;
}

#[test]
fn r4_a_cleanup_calling_cancellable_fns_with_its_cancelled_token_ends_each_cleaned_up_once() {
    on_watched_thread(|| {
        current_thread(true).block_on(async {
            for nested in [false, true] {
                let flushes = Arc::new(AtomicUsize::new(0));
                let errs = Arc::new(AtomicUsize::new(0));
                let token = CancellationToken::new();
                let mut call: std::pin::Pin<Box<dyn Future<Output = Result<(), Cancelled>>>> =
                    if nested {
                        Box::pin(around_cleanup_calls(
                            token.clone(),
                            flushes.clone(),
                            errs.clone(),
                        ))
                    } else {
                        Box::pin(cleanup_calls_with_the_cancelled_token(
                            token.clone(),
                            flushes.clone(),
                            errs.clone(),
                        ))
                    };
                assert!(poll_once(call.as_mut()).is_pending());
                token.cancel();
                assert_eq!(call.await, Err(Cancelled::new()));
                assert_eq!(errs.load(SeqCst), 100, "nested: {nested}");
                assert_eq!(flushes.load(SeqCst), 100, "nested: {nested}");
            }
        });
    });
}

/// A body that retries, not cancelled itself, on a call whose own token is
/// cancelled, with a setup and with `flatten`: other tasks still run, and
/// every attempt runs its setup and its cleanup once.
#[cancellable(flatten)]
async fn flat_attempt(
    setups: Arc<AtomicUsize>,
    cleanups: Arc<AtomicUsize>,
) -> std::io::Result<u32> {
    setups.fetch_add(1, SeqCst);
    on_cancel! { cleanups.fetch_add(1, SeqCst); }
    Ok(1)
}

#[cancellable]
async fn spins_on_flat(
    dead: CancellationToken,
    setups: Arc<AtomicUsize>,
    cleanups: Arc<AtomicUsize>,
    stop: Arc<AtomicUsize>,
) {
    while stop.load(SeqCst) == 0 {
        let _ = flat_attempt(dead.clone(), setups.clone(), cleanups.clone()).await;
    }
}

#[test]
fn r4_a_loop_on_a_flattened_call_with_a_setup_yields_and_counts_every_setup_and_cleanup() {
    on_watched_thread(|| {
        let rt = current_thread(false);
        rt.block_on(async {
            let dead = CancellationToken::new();
            dead.cancel();
            let setups = Arc::new(AtomicUsize::new(0));
            let cleanups = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicUsize::new(0));
            let spinner = tokio::spawn(spins_on_flat(
                CancellationToken::new(),
                dead,
                setups.clone(),
                cleanups.clone(),
                stop.clone(),
            ));
            // Runs only if the spinner yields.
            tokio::spawn({
                let stop = stop.clone();
                async move { stop.store(1, SeqCst) }
            })
            .await
            .unwrap();
            assert_eq!(spinner.await.unwrap(), Ok(()));
            assert!(setups.load(SeqCst) > 0);
            assert_eq!(setups.load(SeqCst), cleanups.load(SeqCst));
        });
    });
}

// ---------------------------------------------------------------------------
// Rule 5: shield
// ---------------------------------------------------------------------------

/// A shield whose second half starts a shield of its own, after the cancel.
#[cancellable]
async fn shield_in_shield(log: Log) {
    on_cancel! { log.push("cleanup"); }
    shield(async {
        sleep(10 * MS).await;
        shield(async {
            sleep(10 * MS).await;
            log.push("inner shield done");
        })
        .await;
        log.push("outer shield done");
    })
    .await;
    log.push("after shields");
    std::future::pending::<()>().await;
}

/// "A shield inside a shield is the same as the outer one", also when the
/// inner one is first polled after the cancellation.
#[tokio::test(start_paused = true)]
async fn r5_a_shield_started_inside_a_running_shield_after_the_cancel_is_covered_by_it() {
    let log = Log::default();
    cancel_once_it_waited(5 * MS, |token| shield_in_shield(token, log.clone())).await;
    assert_eq!(
        log.events(),
        [
            "inner shield done",
            "outer shield done",
            "after shields",
            "cleanup"
        ]
    );
}

/// A shield in a cleanup bounded by `cleanup_timeout`: outside a body, the
/// shield is the future itself, so the bound still cuts it.
#[cancellable(cleanup_timeout = 10 * MS)]
async fn shield_in_a_bounded_cleanup(log: Log) {
    on_cancel! {
        shield(async {
            sleep(50 * MS).await;
            log.push("shielded cleanup done");
        })
        .await;
    }
    std::future::pending::<()>().await;
}

#[tokio::test(start_paused = true)]
async fn r5_a_shield_in_a_cleanup_does_not_outlast_the_cleanup_timeout() {
    let log = Log::default();
    let token = CancellationToken::new();
    token.cancel();
    let start = tokio::time::Instant::now();
    assert_eq!(
        shield_in_a_bounded_cleanup(token, log.clone()).await,
        Err(Cancelled::new())
    );
    assert_eq!(start.elapsed(), 10 * MS);
    assert_eq!(log.events(), Vec::<&str>::new());
}

/// `cleanup_timeout` "starts when the shield is done and the body dropped".
#[cancellable(cleanup_timeout = 10 * MS)]
async fn long_shield_short_cleanup(log: Log) {
    on_cancel! {
        sleep(5 * MS).await;
        log.push("cleanup done");
    }
    shield(sleep(50 * MS)).await;
    log.push("shield done");
    std::future::pending::<()>().await;
}

#[tokio::test(start_paused = true)]
async fn r5_cleanup_timeout_counts_from_the_end_of_the_shield() {
    let log = Log::default();
    let token = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let mut call = Box::pin(long_shield_short_cleanup(token.clone(), log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["shield done", "cleanup done"]);
    assert_eq!(start.elapsed(), 55 * MS);
}

/// A `#[cancellable]` call inside the shield that got a derived token "is
/// cancelled as usual"; one with a token of its own runs to completion.
#[cancellable]
async fn shields_two_nested_calls(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let (derived, own) = shield(async {
        tokio::join!(
            finishes_after(token.child_token(), log.clone(), 20),
            finishes_after(CancellationToken::new(), log.clone(), 20),
        )
    })
    .await;
    assert!(derived.is_err());
    assert_eq!(own, Ok(7));
    log.push("both returned");
    std::future::pending::<()>().await;
}

#[tokio::test(start_paused = true)]
async fn r5_a_shield_does_not_uncancel_derived_tokens_but_lets_an_own_token_call_finish() {
    let log = Log::default();
    cancel_once_it_waited(5 * MS, |token| shields_two_nested_calls(token, log.clone())).await;
    assert_eq!(
        log.events(),
        ["job cleanup", "both returned", "outer cleanup"]
    );
}

/// A timed-out fn whose shield ends the body without another `.await`: the
/// value is dropped, the result is the timeout.
#[cancellable(timeout = 10 * MS)]
async fn shield_then_value(log: Log) -> u32 {
    on_cancel! { log.push("cleanup"); }
    shield(sleep(30 * MS)).await;
    log.push("shield done");
    9
}

#[tokio::test(start_paused = true)]
async fn r5_a_timeout_deferred_by_a_shield_that_ends_the_body_still_returns_the_timeout() {
    let log = Log::default();
    let r = shield_then_value(CancellationToken::new(), log.clone()).await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(log.events(), ["shield done", "cleanup"]);
}

// ---------------------------------------------------------------------------
// Rule 6: per-thread state and panics
// ---------------------------------------------------------------------------

#[cancellable]
async fn cleanup_panics_after_a_turn() {
    on_cancel! {
        yield_now().await;
        panic!("cleanup bomb");
    }
    std::future::pending::<()>().await;
}

/// Catches the panic of a nested call's cleanup, keeping the (spent) future
/// around, then waits.
#[cancellable]
async fn keeps_a_panicked_call(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let mut call = Box::pin(cleanup_panics_after_a_turn(token.child_token()));
    let caught = AssertUnwindSafe(call.as_mut()).catch_unwind().await;
    assert!(caught.is_err());
    log.push("caught");
    std::future::pending::<()>().await;
}

/// "A panic caught inside a body leaves nothing behind": the cancelled
/// caller still ends once its nested call is done (here: panicked).
#[test]
fn r6_a_caught_panic_of_a_nested_cleanup_does_not_keep_the_caller_waiting() {
    on_watched_thread(|| {
        current_thread(true).block_on(async {
            let log = Log::default();
            let token = CancellationToken::new();
            let mut call = Box::pin(keeps_a_panicked_call(token.clone(), log.clone()));
            assert!(poll_once(call.as_mut()).is_pending());
            token.cancel();
            let r = tokio::time::timeout(Duration::from_secs(3600), call).await;
            assert_eq!(r.expect("the caller never ended"), Err(Cancelled::new()));
            assert_eq!(log.events(), ["caught", "outer cleanup"]);
        });
    });
}

// ---------------------------------------------------------------------------
// Timeouts nested
// ---------------------------------------------------------------------------

#[cancellable(timeout = 100 * MS)]
async fn inner_with_a_long_timeout(log: Log, seen: &Mutex<Option<Cancelled>>) {
    on_cancel! { log.push("inner cleanup"); }
    let _ = seen;
    std::future::pending::<()>().await;
}

#[cancellable(timeout = 10 * MS)]
async fn outer_with_a_short_timeout(log: Log, seen: &Mutex<Option<Cancelled>>) {
    on_cancel! { log.push("outer cleanup"); }
    let r = inner_with_a_long_timeout(token.clone(), log.clone(), seen).await;
    *seen.lock().unwrap() = r.err();
    std::future::pending::<()>().await;
}

/// `is_timeout`: "of this fn or of an enclosing one".
#[tokio::test(start_paused = true)]
async fn nested_timeouts_the_enclosing_one_fires_first_and_both_see_a_timeout() {
    let log = Log::default();
    let seen = Mutex::new(None);
    let start = tokio::time::Instant::now();
    let r = outer_with_a_short_timeout(CancellationToken::new(), log.clone(), &seen).await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), 10 * MS);
    assert!(seen.lock().unwrap().expect("inner returned").is_timeout());
    assert_eq!(log.events(), ["inner cleanup", "outer cleanup"]);
}

// ---------------------------------------------------------------------------
// Rule 7: one `tracing` event per cancelled fn (`--features tracing`)
// ---------------------------------------------------------------------------

#[cfg(feature = "tracing")]
mod one_event_per_cancelled_fn {
    use super::*;

    use crate::common::{Recorder, field, run_recorded};

    /// The `cancel_scope` events `fut` emits: `(fn_name, reason, cleanup)`,
    /// each `""` when the event does not have it.
    fn events_of(fut: impl Future<Output = ()>) -> Vec<(String, String, String)> {
        let recorder = Recorder::default();
        let events = recorder.events.clone();
        run_recorded(recorder, true, fut);
        let events = events.lock().unwrap();
        let get = |fields: &[(String, String)], name| field(fields, name).unwrap_or("").to_owned();
        events
            .iter()
            .filter(|e| field(e, "target") == Some("cancel_scope"))
            .map(|e| (get(e, "fn_name"), get(e, "reason"), get(e, "cleanup")))
            .collect()
    }

    fn count(events: &[(String, String, String)], name: &str) -> usize {
        events.iter().filter(|e| e.0 == name).count()
    }

    #[cancellable]
    async fn waits_with_cleanup(log: Log) {
        on_cancel! { log.push("outer cleanup"); }
        let _ = slow_cleanup(token.child_token(), log.clone(), 50).await;
    }

    #[cancellable]
    async fn waits_without_cleanup(log: Log) {
        let _ = slow_cleanup(token.child_token(), log.clone(), 50).await;
    }

    /// Documented: a cancelled fn dropped while it waits for a nested cleanup
    /// (before its own cleanup starts, or before it returns) has no event;
    /// the nested calls, whose cleanups were dropped, have theirs.
    #[test]
    fn t7_a_cancelled_fn_dropped_before_its_cleanup_starts_has_no_event() {
        let events = events_of(async {
            let log = Log::default();
            let token = CancellationToken::new();
            let mut with = Box::pin(waits_with_cleanup(token.clone(), log.clone()));
            let mut without = Box::pin(waits_without_cleanup(token.clone(), log.clone()));
            assert!(poll_once(with.as_mut()).is_pending());
            assert!(poll_once(without.as_mut()).is_pending());
            token.cancel();
            // Both wait for their nested 50 ms cleanups; dropped after 10.
            let (a, b) = tokio::join!(
                tokio::time::timeout(10 * MS, with),
                tokio::time::timeout(10 * MS, without)
            );
            assert!(a.is_err() && b.is_err());
            assert_eq!(log.events(), ["slow cleanup start", "slow cleanup start"]);
        });
        assert_eq!(count(&events, "slow_cleanup"), 2, "{events:?}");
        assert_eq!(count(&events, "waits_with_cleanup"), 0, "{events:?}");
        assert_eq!(count(&events, "waits_without_cleanup"), 0, "{events:?}");
    }

    #[cancellable]
    async fn attempt_with(n: Arc<AtomicUsize>) {
        n.fetch_add(1, SeqCst);
        on_cancel! {}
        yield_now().await;
    }

    /// No setup: its body never runs on a cancelled token; the caller
    /// counts its attempts.
    #[cancellable]
    async fn attempt_without() {
        yield_now().await;
    }

    #[cancellable]
    async fn retries_both(with: Arc<AtomicUsize>, without: Arc<AtomicUsize>) {
        loop {
            let _ = attempt_with(token.clone(), with.clone()).await;
            without.fetch_add(1, SeqCst);
            let _ = attempt_without(token.clone()).await;
        }
    }

    /// A retry loop on a cancelled caller: every attempt, also those that
    /// wait a turn, has exactly one event, and so has the caller.
    #[test]
    fn t7_every_retry_of_a_cancelled_call_has_exactly_one_event() {
        let with = Arc::new(AtomicUsize::new(0));
        let without = Arc::new(AtomicUsize::new(0));
        let (w, wo) = (with.clone(), without.clone());
        let events = events_of(async move {
            cancel_once_it_waits(|token| retries_both(token, w, wo)).await;
        });
        assert!(with.load(SeqCst) > 1);
        assert_eq!(
            count(&events, "attempt_with"),
            with.load(SeqCst),
            "{events:?}"
        );
        assert_eq!(count(&events, "attempt_without"), without.load(SeqCst));
        assert_eq!(count(&events, "retries_both"), 1);
        assert_eq!(events.len(), with.load(SeqCst) + without.load(SeqCst) + 1);
    }

    /// Three levels through an unrelated middle: the inner and the outer
    /// have one event each, the middle (dropped, not cancelled) none; a
    /// shielded fn has its event after its shield, once.
    #[test]
    fn t7_an_unrelated_middle_level_has_no_event_and_a_shielded_fn_has_one() {
        let events = events_of(async {
            let log = Log::default();
            cancel_once_it_waits(|token| three_levels(token, log.clone())).await;
            cancel_once_it_waits(|token| shield_in_shield(token, log.clone())).await;
        });
        let names: Vec<_> = events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["innermost", "three_levels", "shield_in_shield"]);
    }

    #[cancellable(cleanup_timeout = 10 * MS)]
    async fn cut_cleanup() {
        on_cancel! { sleep(50 * MS).await; }
        std::future::pending::<()>().await;
    }

    /// A cleanup cut at its `cleanup_timeout`: one event that says so.
    #[test]
    fn t7_a_cleanup_cut_at_its_cleanup_timeout_has_one_event_that_says_so() {
        let events = events_of(async {
            let token = CancellationToken::new();
            token.cancel();
            assert_eq!(cut_cleanup(token).await, Err(Cancelled::new()));
        });
        assert_eq!(
            events,
            [(
                "cut_cleanup".to_owned(),
                "cancelled".to_owned(),
                "cut at its cleanup_timeout".to_owned()
            )]
        );
    }
}

// ---------------------------------------------------------------------------
// What the race remembers of its body between polls
// ---------------------------------------------------------------------------

/// Gives a nested call 1 ms (`tokio::time::timeout` drops it then), then
/// consumes messages.
#[cancellable]
async fn times_out_a_nested_call_then_consumes(
    rx: &mut mpsc::Receiver<u32>,
    seen: Arc<AtomicUsize>,
    log: Log,
) {
    let nested = parked(token.child_token(), log.clone(), "nested cleanup");
    let _ = tokio::time::timeout(MS, nested).await;
    while let Some(_msg) = rx.recv().await {
        seen.fetch_add(1, SeqCst);
        sleep(MS).await;
    }
}

/// "A cancelled body with nothing nested pending in it is not polled again:
/// it is dropped at once." The nested call is gone (dropped by a
/// `timeout`), so the body has nothing nested pending.
#[tokio::test(start_paused = true)]
async fn after_a_nested_call_was_dropped_by_a_timeout_a_cancelled_body_is_not_polled_again() {
    let log = Log::default();
    let (tx, mut rx) = mpsc::channel(8);
    let seen = Arc::new(AtomicUsize::new(0));
    let token = CancellationToken::new();
    let mut call = Box::pin(times_out_a_nested_call_then_consumes(
        token.clone(),
        &mut rx,
        seen.clone(),
        log.clone(),
    ));
    assert!(poll_once(call.as_mut()).is_pending());
    // The nested call is dropped by the timeout; the body waits in `recv`.
    assert!(tokio::time::timeout(5 * MS, call.as_mut()).await.is_err());
    tx.send(1).await.unwrap();
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(seen.load(SeqCst), 0, "a message was taken after the cancel");
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(log.events(), Vec::<&str>::new());
}

/// Ends after `ms`, or cleans up if cancelled first.
#[cancellable]
async fn ends_after(log: Log, name: &'static str, ms: u64) {
    on_cancel! { log.push(name); }
    sleep(Duration::from_millis(ms)).await;
}

#[cancellable]
async fn unordered_one_ends_early(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let mut calls = FuturesUnordered::new();
    calls.push(ends_after(
        token.child_token(),
        log.clone(),
        "early cleanup",
        1,
    ));
    calls.push(ends_after(
        token.child_token(),
        log.clone(),
        "late cleanup",
        1_000,
    ));
    while calls.next().await.is_some() {
        log.push("one returned");
    }
}

/// Two nested calls on child tokens in a `FuturesUnordered`; one ends
/// early. The other is still running on a derived token when the caller is
/// cancelled: its cleanup runs before the caller's.
#[tokio::test(start_paused = true)]
async fn r2_when_one_call_of_a_futures_unordered_has_returned_the_others_still_clean_up() {
    let log = Log::default();
    let token = CancellationToken::new();
    let canceller = token.clone();
    let (r, ()) = tokio::join!(unordered_one_ends_early(token, log.clone()), async {
        sleep(10 * MS).await;
        canceller.cancel();
    });
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        // The late call's `Err(Cancelled)` returns into the body like any
        // value (the loop goes on with it), then the caller is cancelled.
        [
            "one returned",
            "late cleanup",
            "one returned",
            "outer cleanup"
        ]
    );
}

// ---------------------------------------------------------------------------
// "Across threads": the recommended Scope pattern, and a Scope's grace
// ---------------------------------------------------------------------------

#[cancellable]
async fn worker(log: Log) {
    on_cancel! {
        yield_now().await;
        log.push("worker cleanup");
    }
    std::future::pending::<()>().await;
}

/// "run it in a [`Scope`] created in the setup and shut it down in the
/// cleanup (`scope.shutdown(grace).await`): each task then sees its own
/// token."
#[cancellable]
async fn fans_out_in_a_scope(n: usize, log: Log) {
    let mut scope: cancel_scope::Scope<Result<(), Cancelled>> =
        cancel_scope::Scope::child_of(&token);
    for _ in 0..n {
        let log = log.clone();
        scope.spawn(move |t| worker(t, log));
    }
    on_cancel! {
        let results = scope.shutdown(HANG).await;
        assert_eq!(results.len(), n);
        log.push("outer cleanup");
    }
    while scope.join_next().await.is_some() {}
}

#[test]
fn across_threads_a_scope_in_the_setup_shut_down_in_the_cleanup_cleans_every_task_first() {
    on_watched_thread(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..20 {
                let log = Log::default();
                let token = CancellationToken::new();
                let call = tokio::spawn(fans_out_in_a_scope(token.clone(), 50, log.clone()));
                sleep(MS).await;
                std::thread::spawn(move || token.cancel()).join().unwrap();
                assert_eq!(call.await.unwrap(), Err(Cancelled::new()));
                let events = log.events();
                assert_eq!(events.len(), 51, "{events:?}");
                assert_eq!(events.last(), Some(&"outer cleanup"));
            }
        });
    });
}

#[cancellable]
async fn shields_for_an_hour(log: Log) {
    on_cancel! { log.push("cleanup"); }
    shield(sleep(Duration::from_secs(3600))).await;
    log.push("shield done");
}

/// "a shield still running when `shutdown(grace)` aborts the task is
/// dropped with it."
#[tokio::test(start_paused = true)]
async fn a_scopes_grace_period_cuts_a_shield_that_outlasts_it() {
    let log = Log::default();
    let mut scope: cancel_scope::Scope<Result<(), Cancelled>> = cancel_scope::Scope::new();
    let task_log = log.clone();
    scope.spawn(move |t| shields_for_an_hour(t, task_log));
    sleep(MS).await;
    let start = tokio::time::Instant::now();
    let results = scope.shutdown(10 * MS).await;
    assert_eq!(start.elapsed(), 10 * MS);
    assert_eq!(results.len(), 1);
    assert!(results[0].as_ref().unwrap_err().is_aborted());
    assert_eq!(log.events(), Vec::<&str>::new());
}

// ---------------------------------------------------------------------------
// More shield shapes
// ---------------------------------------------------------------------------

/// Shielded writes run concurrently in a `FuturesUnordered`: each one, once
/// started, must finish ("runs `fut` to completion even when the token is
/// cancelled meanwhile").
#[cancellable]
async fn shielded_writes_in_a_futures_unordered(log: Log) {
    on_cancel! { log.push("cleanup"); }
    let mut writes = FuturesUnordered::new();
    for (name, ms) in [("write a done", 20), ("write b done", 30)] {
        let log = log.clone();
        writes.push(shield(async move {
            sleep(Duration::from_millis(ms)).await;
            log.push(name);
        }));
    }
    while writes.next().await.is_some() {}
    std::future::pending::<()>().await;
}

#[tokio::test(start_paused = true)]
async fn r5_shields_in_a_futures_unordered_not_polled_again_are_cut_documented_limit() {
    let log = Log::default();
    let token = CancellationToken::new();
    let canceller = token.clone();
    let (r, ()) = tokio::join!(
        shielded_writes_in_a_futures_unordered(token, log.clone()),
        async {
            sleep(5 * MS).await;
            canceller.cancel();
        }
    );
    assert_eq!(r, Err(Cancelled::new()));
    // Documented limit: a shield is seen when the body polls it; one inside a
    // combinator that does not poll it again (nothing woke it) is dropped
    // with the body. Wrap the combinator in the shield instead.
    assert_eq!(log.events(), ["cleanup"]);
}

/// The body cancels its own token, then starts a shield in the same poll
/// (the race has not seen the cancellation yet): the shield runs whole.
#[cancellable]
async fn cancels_then_shields(log: Log) {
    on_cancel! { log.push("cleanup"); }
    token.cancel();
    shield(async {
        yield_now().await;
        log.push("shielded work done");
    })
    .await;
    log.push("after shield");
    yield_now().await;
    log.push("not reached");
}

#[tokio::test]
async fn r5_a_shield_started_in_the_poll_that_cancels_the_token_runs_whole() {
    let log = Log::default();
    let r = cancels_then_shields(CancellationToken::new(), log.clone()).await;
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        ["shielded work done", "after shield", "cleanup"]
    );
}

// ---------------------------------------------------------------------------
// Retry loops outside the body: in the setup, in the cleanup
// ---------------------------------------------------------------------------

#[cancellable]
async fn quick_attempt() {
    yield_now().await;
}

/// Connect-with-retry in the setup (not raced), with a cap so that a wedge
/// shows as a count rather than a hang.
#[cancellable]
async fn retries_in_its_setup(sibling_ran: Arc<AtomicUsize>, attempts: Arc<AtomicUsize>) {
    while sibling_ran.load(SeqCst) == 0 && attempts.load(SeqCst) < 200_000 {
        attempts.fetch_add(1, SeqCst);
        let _ = quick_attempt(token.clone()).await;
    }
    on_cancel! {}
    yield_now().await;
}

/// "A body that retries a cancelled call in a loop cannot wedge its
/// thread": the same loop in the setup of a fn run as a task, whose token
/// is cancelled, on a current-thread runtime with another task waiting.
/// Spawns `spinner` (a retry loop that stops once its sibling ran, or after
/// 200,000 attempts) on a current-thread runtime with a cancelled token,
/// beside a sibling task: the loop must yield to it.
fn assert_the_loop_yields<F>(
    spinner: fn(CancellationToken, Arc<AtomicUsize>, Arc<AtomicUsize>) -> F,
) where
    F: Future<Output = Result<(), Cancelled>> + Send + 'static,
{
    on_watched_thread(move || {
        current_thread(false).block_on(async {
            let sibling_ran = Arc::new(AtomicUsize::new(0));
            let attempts = Arc::new(AtomicUsize::new(0));
            let token = CancellationToken::new();
            token.cancel();
            let spinner = tokio::spawn(spinner(token, sibling_ran.clone(), attempts.clone()));
            let sibling = tokio::spawn({
                let sibling_ran = sibling_ran.clone();
                async move { sibling_ran.store(1, SeqCst) }
            });
            let _ = spinner.await.unwrap();
            sibling.await.unwrap();
            let n = attempts.load(SeqCst);
            assert!(n < 200_000, "the loop never yielded: {n} attempts");
        });
    });
}

#[test]
fn a_retry_loop_in_the_setup_of_a_cancelled_task_fn_lets_other_tasks_run() {
    assert_the_loop_yields(retries_in_its_setup);
}

/// The same loop in a cleanup ("flush until it works"), with its cancelled
/// token.
#[cancellable]
async fn retries_in_its_cleanup(sibling_ran: Arc<AtomicUsize>, attempts: Arc<AtomicUsize>) {
    on_cancel! {
        while sibling_ran.load(SeqCst) == 0 && attempts.load(SeqCst) < 200_000 {
            attempts.fetch_add(1, SeqCst);
            let _ = quick_attempt(token.clone()).await;
        }
    }
    std::future::pending::<()>().await;
}

#[test]
fn a_retry_loop_in_the_cleanup_of_a_cancelled_task_fn_lets_other_tasks_run() {
    assert_the_loop_yields(retries_in_its_cleanup);
}

// ---------------------------------------------------------------------------
// The setup of a nested call
// ---------------------------------------------------------------------------

/// Its setup awaits (say, a connection from a pool); the cleanup pairs with
/// it.
#[cancellable]
async fn acquires_in_its_setup(log: Log) {
    log.push("setup start");
    sleep(10 * MS).await;
    log.push("setup end");
    on_cancel! { log.push("nested cleanup"); }
    std::future::pending::<()>().await;
}

#[cancellable]
async fn calls_one_in_its_setup(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let _ = acquires_in_its_setup(token.child_token(), log.clone()).await;
}

/// At the top level a setup is "not raced": cancelled meanwhile, it
/// completes and its cleanup runs (tests/cancellable.rs). Nested on a child
/// token of a cancelled caller, the same call is "cancelled with it [...]
/// and its cleanup runs before the caller's".
#[tokio::test(start_paused = true)]
async fn a_nested_call_still_in_its_setup_is_dropped_with_its_cancelled_caller_documented_limit() {
    let log = Log::default();
    let token = CancellationToken::new();
    let canceller = token.clone();
    let (r, ()) = tokio::join!(calls_one_in_its_setup(token, log.clone()), async {
        sleep(5 * MS).await;
        canceller.cancel();
    });
    assert_eq!(r, Err(Cancelled::new()));
    // A setup is raced against nothing of its own, but it runs inside its
    // caller's body: a caller that drops its body drops it too (and its
    // cleanup, which pairs with a finished setup, does not run).
    assert_eq!(log.events(), ["setup start", "outer cleanup"]);
}

// ---------------------------------------------------------------------------
// Who waits for whom: unrelated work, scopes in a body
// ---------------------------------------------------------------------------

/// Gives the job 10 ms (rule 1's `peek`).
#[cancellable(timeout = 10 * MS)]
async fn peek_10ms<F: Future + Unpin>(job: &mut F) {
    let _ = job.await;
}

/// Rule 1's example: `peek` "gives the job 10 ms". The job (on a token of
/// its own) was cancelled by its owner and is cleaning up for an hour; the
/// helper's timeout is the helper's, and a nested call on an unrelated
/// token "is not cancelled [...] it is dropped with" the helper's body.
#[tokio::test(start_paused = true)]
async fn a_helper_waits_for_a_cleanup_running_in_a_job_it_polls() {
    let log = Log::default();
    let job_token = CancellationToken::new();
    let mut job = Box::pin(slow_cleanup(job_token.clone(), log.clone(), 3_600_000));
    assert!(poll_once(job.as_mut()).is_pending());
    job_token.cancel();
    let start = tokio::time::Instant::now();
    let r = peek_10ms(CancellationToken::new(), &mut job).await;
    assert!(r.unwrap_err().is_timeout());
    // A cancelled race does not drop its body while a cleanup runs inside
    // it, even in a future it only borrows: the helper's timeout fired at
    // 10 ms and it returned when the job's cleanup ended.
    assert_eq!(start.elapsed(), 3_600_000 * MS);
}

/// A `Scope` on a child token in the body, joined but not shut down.
#[cancellable]
async fn joins_a_scope_in_its_body(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let mut scope: cancel_scope::Scope<Result<(), Cancelled>> =
        cancel_scope::Scope::child_of(&token);
    let task_log = log.clone();
    scope.spawn(move |t| slow_cleanup(t, task_log, 10));
    while scope.join_next().await.is_some() {}
}

/// Rule 2: "every `#[cancellable]` call running on it or on a token derived
/// from it (a clone, `child_token()`, a `Scope`'s child token), at any
/// depth, is cancelled: [...] its cleanup runs exactly once. Inner cleanups
/// finish before the calls that contain them". (The "Across threads"
/// section says to shut the scope down in the cleanup; rule 2 does not.)
#[tokio::test(start_paused = true)]
async fn r2_a_scope_dropped_with_the_body_aborts_its_tasks_shut_it_down_in_the_cleanup() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(joins_a_scope_in_its_body(token.clone(), log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    sleep(MS).await; // the task runs, parks
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    sleep(100 * MS).await;
    // A `Scope` dropped with the body aborts its tasks (rule 2 says to shut
    // it down in the cleanup; `across_threads_a_scope_in_the_setup_...`
    // shows that).
    assert_eq!(log.events(), ["outer cleanup"]);
}

/// A level on a token of its own, between a retry loop and the cancelled
/// call: it returns `Ok` each time.
#[cancellable]
async fn wraps_one_attempt(inner: CancellationToken) {
    let _ = quick_attempt(inner).await;
}

#[cancellable]
async fn retries_through_a_wrapper(
    dead: CancellationToken,
    sibling_ran: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
) {
    while sibling_ran.load(SeqCst) == 0 && attempts.load(SeqCst) < 200_000 {
        attempts.fetch_add(1, SeqCst);
        let _ = wraps_one_attempt(CancellationToken::new(), dead.clone()).await;
    }
}

/// "A body that retries a cancelled call in a loop cannot wedge its thread
/// [...] a caller that is not cancelled simply yields", when the cancelled
/// call is one level down, under a fn on a token of its own.
#[test]
fn a_retry_loop_one_level_above_the_cancelled_call_lets_other_tasks_run() {
    assert_the_loop_yields(|dead, sibling_ran, attempts| {
        retries_through_a_wrapper(CancellationToken::new(), dead, sibling_ran, attempts)
    });
}

#[cancellable]
async fn join_all_one_ends_early(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let mut calls = vec![ends_after(
        token.child_token(),
        log.clone(),
        "early cleanup",
        1,
    )];
    for _ in 0..40 {
        calls.push(ends_after(
            token.child_token(),
            log.clone(),
            "late cleanup",
            1_000,
        ));
    }
    futures::future::join_all(calls).await;
}

/// The same with `futures::future::join_all` of 41 calls (which, past 30,
/// polls only the woken ones), on one thread: every late call cleans up.
#[tokio::test(start_paused = true)]
async fn r2_when_one_call_of_a_large_join_all_has_returned_the_others_still_clean_up() {
    let log = Log::default();
    let token = CancellationToken::new();
    let canceller = token.clone();
    let (r, ()) = tokio::join!(join_all_one_ends_early(token, log.clone()), async {
        sleep(10 * MS).await;
        canceller.cancel();
    });
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(log.count("late cleanup"), 40, "{:?}", log.events());
    assert_eq!(log.events().last(), Some(&"outer cleanup"));
}
