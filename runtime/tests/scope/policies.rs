//! Policies that cancel the scope: `fail_fast`, `first_ok` and
//! `join_first_ok`, deadlines, and each set on a scope whose tasks already
//! run (it holds for every task).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use cancel_scope_runtime::{CancelReason, CancellationToken, LocalScope, Scope};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::common::{HANG, alive_tasks, alive_tasks_become, eventually, poll_once, unwrap_all};
use crate::settle;

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

#[tokio::test]
async fn first_ok_cancels_the_siblings_from_inside_the_winner() {
    let cleanups = Arc::new(AtomicUsize::new(0));
    let (win_tx, win_rx) = oneshot::channel::<()>();
    let mut scope: Scope<Result<&str, &str>> = Scope::new().first_ok();
    for _ in 0..3 {
        let cleanups = cleanups.clone();
        scope.spawn(move |token| async move {
            token.cancelled().await;
            tokio::task::yield_now().await; // async cleanup
            cleanups.fetch_add(1, SeqCst);
            Err("cancelled")
        });
    }
    scope.spawn(|_token| async move {
        win_rx.await.unwrap();
        Ok("winner")
    });
    let token = scope.token().clone();
    tokio::task::yield_now().await;
    assert!(!token.is_cancelled());

    win_tx.send(()).unwrap();
    // Nobody joins: the winner itself cancels the scope.
    tokio::time::timeout(HANG, token.cancelled()).await.unwrap();
    eventually("sibling cleanups", || cleanups.load(SeqCst) == 3).await;
    assert_eq!(
        unwrap_all(scope.join_all().await),
        [
            Err("cancelled"),
            Err("cancelled"),
            Err("cancelled"),
            Ok("winner")
        ]
    );
}

#[tokio::test]
async fn under_first_ok_an_err_or_a_panic_cancels_nothing() {
    let mut scope: Scope<Result<(), &str>> = Scope::new().first_ok();
    scope.spawn(|_token| async { Err("bad") });
    scope.spawn(|_token| async { panic!("boom") });
    scope.spawn_blocking(|_token| Err("blocking bad"));
    let results = scope.join_all().await;
    assert_eq!(results[0].as_ref().unwrap(), &Err("bad"));
    assert!(results[1].as_ref().unwrap_err().is_panic());
    assert_eq!(results[2].as_ref().unwrap(), &Err("blocking bad"));
    assert!(!scope.token().is_cancelled());
}

#[tokio::test]
async fn first_ok_applies_to_blocking_tasks() {
    let mut scope: Scope<Result<&str, ()>> = Scope::new().first_ok();
    scope.spawn(|token| async move {
        token.cancelled().await;
        Err(())
    });
    scope.spawn_blocking(|_token| Ok("blocking"));
    tokio::time::timeout(HANG, scope.token().cancelled())
        .await
        .unwrap();
    assert_eq!(
        unwrap_all(scope.join_all().await),
        [Err(()), Ok("blocking")]
    );
}

#[tokio::test]
async fn first_ok_and_fail_fast_together_cancel_on_the_first_end() {
    for failing in [false, true] {
        let mut scope: Scope<Result<(), ()>> = Scope::new().fail_fast().first_ok();
        assert_eq!(
            format!("{scope:?}"),
            "Scope { len: 0, cancelled: false, fail_fast: true, first_ok: true, .. }"
        );
        scope.spawn(move |_token| async move { if failing { Err(()) } else { Ok(()) } });
        tokio::time::timeout(HANG, scope.token().cancelled())
            .await
            .unwrap();
        scope.join_all().await;
    }
}

#[tokio::test(start_paused = true)]
async fn join_first_ok_returns_the_winner_and_joins_the_cancelled_rest() {
    let baseline = alive_tasks();
    let cleanups = Arc::new(AtomicUsize::new(0));
    let mut scope = Scope::new(); // no `first_ok`: `join_first_ok` cancels
    let mut ids = HashMap::new();
    for (name, secs) in [("slow", 30), ("fast", 2), ("failing", 1), ("medium", 10)] {
        let cleanups = cleanups.clone();
        let id = scope.spawn(move |token| async move {
            if name == "failing" {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                return Err("refused");
            }
            let work = tokio::time::sleep(Duration::from_secs(secs));
            if token.run_until_cancelled(work).await.is_some() {
                return Ok(name);
            }
            tokio::time::sleep(Duration::from_secs(1)).await; // async cleanup
            cleanups.fetch_add(1, SeqCst);
            Err("cancelled")
        });
        ids.insert(name, id);
    }
    let start = Instant::now();
    assert_eq!(scope.join_first_ok().await.unwrap(), "fast");
    assert_eq!(
        scope.cancel_reason(),
        Some(CancelReason::TaskSucceeded(ids["fast"])),
        "the winner is why the scope was cancelled"
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "waited for the cleanups"
    );
    assert_eq!(cleanups.load(SeqCst), 2, "slow and medium cleaned up");
    assert!(scope.token().is_cancelled());
    assert!(scope.is_empty());
    alive_tasks_become(baseline).await;
}

#[tokio::test]
async fn join_first_ok_without_a_success_returns_every_result_in_spawn_order() {
    let mut scope: Scope<Result<u32, String>> = Scope::new().first_ok();
    let (tx, rx) = oneshot::channel::<()>();
    scope.spawn(|_token| async move {
        rx.await.unwrap();
        Err("late".to_string())
    });
    scope.spawn(|_token| async { panic!("boom") });
    scope.spawn_blocking(|_token| Err("blocking".to_string()));
    scope.spawn(move |_token| async move {
        tx.send(()).unwrap();
        Err("early".to_string())
    });
    let failures = scope.join_first_ok().await.unwrap_err();
    assert_eq!(failures.len(), 4);
    assert_eq!(failures[0].as_ref().unwrap(), &Err("late".to_string()));
    assert!(failures[1].as_ref().unwrap_err().is_panic());
    assert_eq!(failures[2].as_ref().unwrap(), &Err("blocking".to_string()));
    assert_eq!(failures[3].as_ref().unwrap(), &Err("early".to_string()));
    assert!(!scope.token().is_cancelled(), "no winner, no cancel");
    assert!(scope.is_empty());

    let mut empty = Scope::<Result<(), ()>>::new();
    assert!(empty.join_first_ok().await.unwrap_err().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_join_first_ok_keeps_its_winner() {
    let mut scope: Scope<Result<&str, &str>> = Scope::new();
    // Its cleanup returns an `Ok` too, spawned first: it must not win.
    scope.spawn(|token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok("cleanup")
    });
    scope.spawn(|_token| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok("winner")
    });
    scope.spawn(|token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        Err("cancelled")
    });
    // The winner at 1s; the first loser done at 11s; interrupted at 15s.
    let interrupted = tokio::time::timeout(Duration::from_secs(15), scope.join_first_ok()).await;
    assert!(interrupted.is_err());
    assert!(scope.token().is_cancelled());
    assert_eq!(scope.len(), 3);
    assert_eq!(scope.join_first_ok().await.unwrap(), "winner");
    assert!(scope.is_empty());
}

#[tokio::test(start_paused = true)]
async fn join_first_ok_takes_a_success_an_interrupted_join_all_collected() {
    let mut scope: Scope<Result<u32, &str>> = Scope::new();
    scope.spawn(|token| async move {
        token.cancelled().await;
        Err("cancelled")
    });
    scope.spawn(|_token| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(1)
    });
    let interrupted = tokio::time::timeout(Duration::from_secs(2), scope.join_all()).await;
    assert!(interrupted.is_err());
    assert!(!scope.token().is_cancelled());
    assert_eq!(scope.join_first_ok().await.unwrap(), 1);
    assert!(scope.token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn join_first_ok_with_a_timeout_returns_the_failures_at_the_deadline() {
    let mut scope = Scope::new().first_ok().with_timeout(Duration::from_secs(5));
    for secs in [10, 20] {
        scope.spawn(move |token| async move {
            let work = tokio::time::sleep(Duration::from_secs(secs));
            token.run_until_cancelled(work).await.ok_or("timed out")
        });
    }
    let start = Instant::now();
    let failures = scope.join_first_ok().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(unwrap_all(failures), [Err("timed out"), Err("timed out")]);
}

#[tokio::test(start_paused = true)]
async fn with_timeout_cancels_the_token_at_the_deadline() {
    let start = Instant::now();
    let mut scope = Scope::new().with_timeout(Duration::from_secs(10));
    assert_eq!(scope.deadline(), Some(start + Duration::from_secs(10)));
    scope.spawn(|token| async move {
        token.cancelled().await;
        Instant::now()
    });
    tokio::time::sleep(Duration::from_millis(9999)).await;
    assert!(!scope.token().is_cancelled());
    let results = scope.join_all().await;
    assert_eq!(results.len(), 1, "the timer is not a task of the scope");
    assert_eq!(
        results[0].as_ref().unwrap(),
        &(start + Duration::from_secs(10))
    );
    assert!(scope.token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_timer_is_gone_after_it_fires_a_shutdown_or_a_drop() {
    let baseline = alive_tasks();

    let mut fired = Scope::<()>::new().with_timeout(Duration::from_secs(1));
    assert_eq!(alive_tasks(), baseline + 1);
    assert_eq!(fired.len(), 0);
    fired.token().cancelled().await;
    alive_tasks_become(baseline).await;
    assert!(fired.join_all().await.is_empty());

    let mut shut = Scope::<()>::new().with_timeout(Duration::from_secs(3600));
    shut.spawn(|token| async move { token.cancelled().await });
    assert_eq!(alive_tasks(), baseline + 2);
    assert_eq!(shut.shutdown(HANG).await.len(), 1);
    alive_tasks_become(baseline).await;

    let dropped = Scope::<()>::new().with_timeout(Duration::from_secs(3600));
    let token = dropped.token().clone();
    drop(dropped);
    assert!(token.is_cancelled());
    alive_tasks_become(baseline).await;
}

#[tokio::test(start_paused = true)]
async fn a_second_deadline_replaces_the_first() {
    let baseline = alive_tasks();
    let start = Instant::now();
    let scope = Scope::<()>::new()
        .with_timeout(Duration::from_secs(10))
        .with_deadline(start + Duration::from_secs(20));
    assert_eq!(scope.deadline(), Some(start + Duration::from_secs(20)));
    alive_tasks_become(baseline + 1).await;
    tokio::time::sleep_until(start + Duration::from_secs(15)).await;
    assert!(!scope.token().is_cancelled());
    scope.token().cancelled().await;
    assert_eq!(Instant::now(), start + Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn a_past_deadline_cancels_at_once_and_spawns_no_timer() {
    let baseline = alive_tasks();
    let scope = Scope::<()>::new().with_deadline(Instant::now());
    assert!(scope.token().is_cancelled());
    assert_eq!(alive_tasks(), baseline);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_cancels_the_scope_not_its_parent() {
    let parent = CancellationToken::new();
    let mut scope = Scope::child_of(&parent).with_timeout(Duration::from_secs(1));
    scope.spawn(|token| async move { token.cancelled().await });
    unwrap_all(scope.join_all().await);
    assert!(scope.token().is_cancelled());
    assert!(!parent.is_cancelled());
}

#[test]
#[should_panic(expected = "timers are disabled")]
fn with_timeout_on_a_runtime_without_timer_panics() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = Scope::<()>::new().with_timeout(Duration::from_secs(1));
    });
}

#[tokio::test]
async fn a_fail_fast_reason_names_the_failed_task() {
    let mut scope: Scope<Result<(), &str>> = Scope::new().fail_fast();
    scope.spawn_named("worker", |_token| std::future::pending());
    let db = scope.spawn_named("db", |_token| async { Err("refused") });
    scope.token().cancelled().await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(db)));
    let results = scope.shutdown(Duration::ZERO).await;
    let aborted = results[0].as_ref().unwrap_err();
    assert_eq!(
        aborted.to_string(),
        format!("task aborted (scope cancelled: task #{db} \"db\" failed)")
    );
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
