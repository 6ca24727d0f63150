//! Nested calls on derived tokens are cancelled with their caller, innermost first, even when the body does not poll them again; what the race remembers of its body between polls; a nested call still in its setup.

use super::*;

#[cancellable]
async fn fan_out(n: usize, log: Log) {
    on_cancel! { log.push("caller"); }
    let calls = (0..n).map(|_| parked_with_a_turn(token.child_token(), log.clone(), "nested"));
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
        .map(|_| parked_with_a_turn(token.clone(), log.clone(), "nested"))
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
        parked_with_a_turn(token.child_token(), log.clone(), "nested"),
        parked_with_a_turn(token.clone(), log.clone(), "nested"),
        parked_with_a_turn(token.child_token().child_token(), log.clone(), "nested"),
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
async fn a_nested_cleanup_already_running_in_a_futures_unordered_not_polled_again_is_cut_documented_limit()
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
pub(crate) async fn three_levels(log: Log) {
    on_cancel! { log.push("outer"); }
    let _ = unrelated_middle(CancellationToken::new(), token.clone(), log.clone()).await;
}

#[tokio::test]
async fn three_deep_through_a_level_on_an_unrelated_token_inner_cleans_up_first_middle_is_dropped()
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
async fn join_of_a_direct_and_an_indirect_nested_call_both_clean_up_before_a_caller_with_setup() {
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
async fn a_select_branch_ready_when_the_caller_polls_its_body_again_wins_the_documented_trade_off()
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
pub(crate) async fn ends_after(log: Log, name: &'static str, ms: u64) {
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
async fn when_one_call_of_a_futures_unordered_has_returned_the_others_still_clean_up() {
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
