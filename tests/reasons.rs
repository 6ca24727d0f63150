//! Cancel reasons, as a user observes them: the `Cancelled` a
//! `#[cancellable]` fn returns says why it was cancelled (its caller's token,
//! its own timeout, or the reason of the scope whose task runs it: a
//! sibling's failure, a winner, the deadline, a shutdown, a signal, the
//! parent), and an aborted task's `TaskError` says why its scope stopped.
//!
//! Timers run on Tokio's paused clock; nothing asserts on wall-clock time.

use std::future::pending;
use std::time::Duration;

use cancel_scope::{
    CancelReason, CancellationToken, Cancelled, LocalScope, Scope, ShutdownSignal, TaskId,
    cancellable, on_cancel,
};
use tokio::sync::oneshot;

/// Waits until cancelled; its cleanup records nothing, the result is what
/// matters here.
#[cancellable]
async fn park() -> u32 {
    pending::<u32>().await
}

/// Waits until cancelled, with a cleanup that awaits (so the reason must
/// survive the cleanup) and tells the test it ran.
#[cancellable]
async fn park_with_cleanup(cleaned: oneshot::Sender<()>) -> u32 {
    let mut cleaned = Some(cleaned);
    on_cancel! {
        tokio::task::yield_now().await;
        if let Some(tx) = cleaned.take() {
            let _ = tx.send(());
        }
    }
    pending::<u32>().await
}

/// A fn that calls another and passes on the inner result: a nested call
/// cancelled with its caller returns its `Err(Cancelled)` into the body like
/// any value (the caller's result is `Err(Cancelled)` all the same).
#[cancellable]
async fn outer(inner_result: oneshot::Sender<Result<u32, Cancelled>>) -> u32 {
    let inner_token = token.child_token();
    let mut inner_result = Some(inner_result);
    on_cancel! {}
    let r = park(inner_token).await;
    if let Some(tx) = inner_result.take() {
        let _ = tx.send(r);
    }
    r.unwrap_or(0)
}

/// A fn with a timeout, calling another with the token it was given.
#[cancellable(timeout = Duration::from_secs(5))]
async fn outer_with_timeout() -> Result<u32, Cancelled> {
    park(token.clone()).await
}

#[tokio::test(start_paused = true)]
async fn a_fn_called_with_its_callers_token_says_token() {
    let token = CancellationToken::new();
    let call = tokio::spawn(park(token.clone()));
    tokio::task::yield_now().await;
    token.cancel();
    let c = call.await.unwrap().unwrap_err();
    assert_eq!(c.reason(), CancelReason::Token);
    assert_eq!(c, Cancelled::new());
    assert_eq!(c.to_string(), "cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_fns_own_timeout_says_timeout() {
    let r = outer_with_timeout(CancellationToken::new()).await;
    let c = r.unwrap_err();
    assert_eq!(c.reason(), CancelReason::Timeout);
    assert!(c.is_timeout());
    assert_eq!(c.to_string(), "cancelled: timed out");
}

#[tokio::test(start_paused = true)]
async fn a_sibling_failure_under_fail_fast_names_the_failed_task() {
    let mut scope: Scope<Result<u32, String>> = Scope::new().fail_fast();
    let (cleaned_tx, cleaned_rx) = oneshot::channel();
    let waiter = scope.spawn(|t| async move {
        park_with_cleanup(t, cleaned_tx)
            .await
            .map_err(|c| c.to_string())
    });
    let (fail_tx, fail_rx) = oneshot::channel::<()>();
    let bad = scope.spawn(|_t| async move {
        fail_rx.await.unwrap();
        Err("disk full".to_owned())
    });
    tokio::task::yield_now().await;
    fail_tx.send(()).unwrap();

    let results = scope.join_all().await;
    cleaned_rx.await.expect("the cleanup ran");
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(format!("cancelled: task #{bad} failed"))
    );
    assert_ne!(waiter, bad);
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sibling_under_fail_fast_is_named_too() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new().fail_fast();
    scope.spawn(park);
    let bad = scope.spawn(|_t| async { panic!("boom") });
    let results = scope.join_all().await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::TaskFailed(bad)))
    );
    assert!(results[1].as_ref().unwrap_err().is_panic());
}

#[tokio::test(start_paused = true)]
async fn the_first_success_under_first_ok_names_the_winner() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new().first_ok();
    scope.spawn(park);
    let winner = scope.spawn(|_t| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(7)
    });
    let results = scope.join_all().await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::TaskSucceeded(winner)))
    );
    assert_eq!(results[1].as_ref().unwrap(), &Ok(7));
}

#[tokio::test(start_paused = true)]
async fn the_scope_deadline_says_deadline() {
    let mut scope: Scope<Result<u32, Cancelled>> =
        Scope::new().with_timeout(Duration::from_secs(30));
    scope.spawn(park);
    let results = scope.join_all().await;
    let c = results[0].as_ref().unwrap().unwrap_err();
    assert_eq!(c.reason(), CancelReason::Deadline);
    assert!(
        !c.is_timeout(),
        "the scope's deadline is not the fn's timeout"
    );
    assert_eq!(c.to_string(), "cancelled: the scope's deadline passed");
    assert_eq!(std::io::Error::from(c).kind(), std::io::ErrorKind::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn cancel_and_shutdown_say_requested_and_shutdown() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new();
    scope.spawn(park);
    tokio::task::yield_now().await;
    scope.cancel();
    let results = scope.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::Requested)),
        "the first cause stands: cancel came before shutdown"
    );

    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new();
    scope.spawn(park);
    let results = scope.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::Shutdown))
    );
}

#[tokio::test(start_paused = true)]
async fn a_parent_token_says_parent() {
    let parent = CancellationToken::new();
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::child_of(&parent);
    scope.spawn(park);
    tokio::task::yield_now().await;
    parent.cancel();
    let results = scope.join_all().await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::Parent))
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_signal_names_the_signal_through_its_scopes() {
    let signal = ShutdownSignal::install().unwrap();
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::child_of(signal.token());
    scope.spawn(park);
    // A scope nested in a task of the first, made from the task's token.
    let (inner_tx, inner_rx) = oneshot::channel();
    scope.spawn(|token| async move {
        let mut inner: Scope<Result<u32, Cancelled>> = Scope::child_of(&token);
        inner.spawn(park);
        let results = inner.join_all().await;
        let _ = inner_tx.send((inner.cancel_reason(), results));
        Ok(0)
    });
    tokio::task::yield_now().await;
    signal.trigger("SIGTERM");

    let results = scope.join_all().await;
    let by_signal = Cancelled::because(CancelReason::Signal("SIGTERM"));
    assert_eq!(results[0].as_ref().unwrap(), &Err(by_signal));
    assert_eq!(by_signal.to_string(), "cancelled: shutdown signal: SIGTERM");
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Signal("SIGTERM")));
    let (inner_reason, inner_results) = inner_rx.await.unwrap();
    assert_eq!(inner_reason, Some(CancelReason::Signal("SIGTERM")));
    assert_eq!(inner_results[0].as_ref().unwrap(), &Err(by_signal));
}

#[tokio::test(start_paused = true)]
async fn a_nested_scope_reports_the_outer_scopes_reason() {
    let mut outer_scope: Scope<Result<u32, String>> = Scope::new().fail_fast();
    let (inner_tx, inner_rx) = oneshot::channel();
    outer_scope.spawn(|token| async move {
        let mut inner: Scope<Result<u32, Cancelled>> = Scope::child_of(&token);
        inner.spawn(park);
        let results = inner.join_all().await;
        let _ = inner_tx.send(results);
        Ok(0)
    });
    let bad = outer_scope.spawn(|_t| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err("bad".to_owned())
    });
    outer_scope.join_all().await;
    let inner_results = inner_rx.await.unwrap();
    assert_eq!(
        inner_results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::TaskFailed(bad)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_nested_scope_with_an_unrelated_parent_does_not_borrow_the_outer_reason() {
    let mut outer_scope: Scope<Result<u32, Cancelled>> = Scope::new();
    let unrelated = CancellationToken::new();
    let cancel_it = unrelated.clone();
    outer_scope.spawn(move |_token| async move {
        let mut inner: Scope<Result<u32, Cancelled>> = Scope::child_of(&unrelated);
        inner.spawn(park);
        let results = inner.join_all().await;
        assert_eq!(inner.cancel_reason(), Some(CancelReason::Parent));
        results.into_iter().next().unwrap().unwrap()
    });
    tokio::task::yield_now().await;
    cancel_it.cancel();
    let results = outer_scope.join_all().await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::Parent))
    );
    assert_eq!(outer_scope.cancel_reason(), None);
}

#[tokio::test(start_paused = true)]
async fn an_unrelated_token_in_a_live_scopes_task_says_token() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new();
    let own = CancellationToken::new();
    let cancel_it = own.clone();
    scope.spawn(move |_scope_token| park(own));
    tokio::task::yield_now().await;
    cancel_it.cancel();
    let results = scope.join_all().await;
    assert_eq!(results[0].as_ref().unwrap(), &Err(Cancelled::new()));
}

#[tokio::test(start_paused = true)]
async fn a_fn_calling_others_in_a_scope_task_reports_the_scopes_reason() {
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new().fail_fast();
    let (inner_tx, inner_rx) = oneshot::channel();
    scope.spawn(|t| outer(t, inner_tx));
    let bad = scope.spawn(|_t| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err(Cancelled::new())
    });
    let results = scope.join_all().await;
    let expected = Cancelled::because(CancelReason::TaskFailed(bad));
    assert_eq!(results[0].as_ref().unwrap(), &Err(expected));
    // The inner call was cancelled with the outer one, for the same reason,
    // and its `Err` reached the outer body, which sent it on.
    assert_eq!(inner_rx.await.unwrap(), Err(expected));
}

#[tokio::test(start_paused = true)]
async fn a_local_scope_passes_its_reason_to_its_tasks() {
    let mut scope: LocalScope<'_, Result<u32, Cancelled>> = LocalScope::new().fail_fast();
    scope.spawn(park);
    let bad: TaskId = scope.spawn(|_t| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err(Cancelled::new())
    });
    let results = scope.join_all().await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::TaskFailed(bad)))
    );
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));

    let mut scope: LocalScope<'_, Result<u32, Cancelled>> = LocalScope::new();
    scope.spawn(park);
    let results = scope.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::Shutdown))
    );
}

#[tokio::test(start_paused = true)]
async fn an_aborted_task_says_why_its_scope_stopped() {
    let mut scope: Scope<u32> = Scope::new().with_timeout(Duration::from_secs(10));
    scope.spawn(|_t| pending());
    scope.token().cancelled().await;
    let results = scope.shutdown(Duration::from_secs(1)).await;
    let err = results[0].as_ref().unwrap_err();
    assert!(err.is_aborted());
    assert_eq!(err.cancel_reason(), Some(CancelReason::Deadline));
    assert_eq!(
        err.to_string(),
        "task aborted (scope cancelled: the scope's deadline passed)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_blocking_task_carries_its_scopes_reason() {
    // Blocking code that drives a `#[cancellable]` fn with `block_on` sees
    // the scope's reason, as an async task does.
    let mut scope: Scope<Result<u32, Cancelled>> = Scope::new();
    let (parked_tx, parked_rx) = oneshot::channel::<()>();
    scope.spawn_blocking(move |token| {
        let handle = tokio::runtime::Handle::current();
        handle.block_on(async move {
            let call = park(token);
            tokio::pin!(call);
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx)));
            assert!(first.await.is_pending());
            parked_tx.send(()).unwrap();
            call.await
        })
    });
    parked_rx.await.unwrap();
    let results = scope.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Err(Cancelled::because(CancelReason::Shutdown))
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_report_says_which_tasks_ran_a_cancellable_cleanup() {
    for reaping in [false, true] {
        let mut scope: Scope<Result<u32, Cancelled>> = Scope::new();
        if reaping {
            scope = scope.reaping();
        }
        let (cleaned_tx, cleaned) = oneshot::channel();
        scope.spawn_named("flusher", |token| park_with_cleanup(token, cleaned_tx));
        scope.spawn_named("by hand", |token| async move {
            token.cancelled().await; // stops, runs no `#[cancellable]` cleanup
            Ok(0)
        });
        tokio::task::yield_now().await;
        let report = scope.shutdown_report(Duration::from_secs(1)).await;
        cleaned.await.unwrap();
        assert_eq!(report.cleanups_ran(), 1, "reaping: {reaping}");
        if !reaping {
            let ran: Vec<_> = report.tasks().iter().map(|t| t.cleanup_ran()).collect();
            assert_eq!(ran, [true, false]);
        }
        assert!(
            report.to_string().ends_with(
                "2 cleaned up (ended after the cancel; 1 ran a `#[cancellable]` cleanup)"
            ),
            "{report}"
        );
    }
}
