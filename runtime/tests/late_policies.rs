//! A policy set on a scope whose tasks already run holds for every task:
//! the limit counts the running ones, the cancel rules judge them as they
//! end (and judge a kept result at once), whether the tasks are in the
//! ledger or (reaping) not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use cancel_scope_runtime::{CancelReason, LocalScope, Scope};
use tokio::sync::oneshot;

mod common;
use common::{HANG, poll_once};

/// Lets every other ready task of a current-thread runtime run.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
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
async fn fail_fast_set_while_tasks_run_judges_them_as_they_end() {
    let mut scope: Scope<Result<u8, &str>> = Scope::new();
    let (release, wait) = oneshot::channel::<()>();
    let bad = scope.spawn(move |_token| async move {
        let _ = wait.await;
        Err("disk full")
    });
    scope.spawn(|token| async move {
        token.cancelled().await;
        Ok(1)
    });
    settle().await;
    let mut scope = scope.fail_fast();
    assert!(!scope.token().is_cancelled());
    release.send(()).unwrap();
    let results = scope.join_all().await;
    assert_eq!(results[0].as_ref().unwrap(), &Err("disk full"));
    assert_eq!(results[1].as_ref().unwrap(), &Ok(1));
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
}

#[tokio::test(flavor = "current_thread")]
async fn fail_fast_set_on_a_scope_holding_a_failure_cancels_at_once() {
    let mut scope: Scope<Result<u8, &str>> = Scope::new();
    scope.spawn(|_token| async { Ok(1) });
    let bad = scope.spawn(|_token| async { Err("disk full") });
    scope.spawn(|token| async move {
        token.cancelled().await;
        Ok(2)
    });
    settle().await;
    let mut scope = scope.fail_fast();
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
    let results = scope.join_all().await;
    assert_eq!(results[2].as_ref().unwrap(), &Ok(2));
}

#[tokio::test(flavor = "current_thread")]
async fn a_handed_out_failure_is_not_judged_again() {
    let mut scope: Scope<Result<u8, &str>> = Scope::new();
    scope.spawn(|_token| async { Err("disk full") });
    assert!(scope.join_next().await.unwrap().unwrap().is_err());
    let scope = scope.fail_fast();
    assert!(!scope.token().is_cancelled());
}

#[tokio::test(flavor = "current_thread")]
async fn first_ok_set_on_a_scope_holding_a_success_cancels_at_once() {
    let mut scope: Scope<Result<u8, &str>> = Scope::new();
    scope.spawn(|_token| async { Err("refused") });
    let good = scope.spawn(|_token| async { Ok(7) });
    settle().await;
    let scope = scope.first_ok();
    assert_eq!(
        scope.cancel_reason(),
        Some(CancelReason::TaskSucceeded(good))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn fail_fast_set_on_a_reaping_scope_judges_its_running_tasks() {
    let mut scope: Scope<Result<(), String>> = Scope::new().reaping();
    let (release, wait) = oneshot::channel::<()>();
    let bad = scope.spawn(move |_token| async move {
        let _ = wait.await;
        Err("disk full".to_string())
    });
    let (seen, cancelled) = oneshot::channel();
    scope.spawn(move |token| async move {
        token.cancelled().await;
        let _ = seen.send(());
        Ok(())
    });
    settle().await;
    let mut scope = scope.fail_fast();
    release.send(()).unwrap();
    let seen = tokio::time::timeout(HANG, cancelled).await;
    assert!(matches!(seen, Ok(Ok(()))), "the sibling saw the cancel");
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
    scope.join_all().await;
    assert!(scope.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_local_scope_judges_a_kept_failure_when_fail_fast_is_set() {
    let mut scope: LocalScope<Result<u8, &str>> = LocalScope::new();
    let bad = scope.spawn(|_token| async { Err("disk full") });
    scope.spawn(|token| async move {
        token.cancelled().await;
        Ok(1)
    });
    {
        let join = std::pin::pin!(scope.join_all());
        assert!(poll_once(join).await.is_pending()); // runs the tasks once
    }
    let mut scope = scope.fail_fast();
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
    let results = scope.join_all().await;
    assert_eq!(results[1].as_ref().unwrap(), &Ok(1));
}
