//! Nested calls on unrelated tokens are dropped, not cancelled; who waits for whom (unrelated work, scopes in a body); across threads: the recommended `Scope` pattern and a scope's grace.

use super::*;

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
async fn a_scope_dropped_with_the_body_aborts_its_tasks_shut_it_down_in_the_cleanup() {
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
async fn when_one_call_of_a_large_join_all_has_returned_the_others_still_clean_up() {
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
