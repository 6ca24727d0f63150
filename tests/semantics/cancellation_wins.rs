//! Cancellation wins at every level: a cancelled caller returns `Err` once, whatever its body made of a nested `Err(Cancelled)`; retry loops in the body, the setup and the cleanup are cut; nested timeouts.

use super::*;

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

#[cancellable]
async fn cancels_itself_then_returns(log: Log) -> u32 {
    on_cancel! { log.push("cleanup"); }
    token.cancel();
    5
}

/// Rule 4: "once a caller's own token is cancelled, the caller's result is
/// `Err(Cancelled)` [...]: a cancelled caller never returns `Ok`".
#[tokio::test]
async fn a_body_that_cancels_its_own_token_and_returns_without_waiting_completes() {
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
async fn a_flattened_nested_cancel_folded_into_a_fallback_still_cancels_a_caller_with_setup() {
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
async fn a_cancelled_caller_retrying_a_call_whose_cleanup_awaits_is_cut() {
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
fn a_cleanup_calling_cancellable_fns_with_its_cancelled_token_ends_each_cleaned_up_once() {
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
fn a_loop_on_a_flattened_call_with_a_setup_yields_and_counts_every_setup_and_cleanup() {
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

#[cancellable]
pub(crate) async fn quick_attempt() {
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
pub(crate) fn assert_the_loop_yields<F>(
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
