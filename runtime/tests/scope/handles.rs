//! Handles and spawners: one task cancelled or aborted alone, spawning from
//! other tasks, and no task outliving its scope whoever spawned it.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use cancel_scope_runtime::{Scope, TaskOutcome};
use tokio::sync::mpsc;

use crate::common::{HANG, alive_tasks, alive_tasks_become};
use crate::settle;

#[tokio::test]
async fn one_stuck_task_is_aborted_alone() {
    let mut scope = Scope::new().reaping().track_failures();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for n in 0..5 {
        let done = done_tx.clone();
        let handle = scope
            .spawn_when_ready(move |token| async move {
                if n == 2 {
                    std::future::pending::<()>().await; // stuck: ignores its token
                }
                token.cancelled().await;
                done.send(n).unwrap();
            })
            .await;
        handles.push(handle);
    }
    settle().await;
    handles[2].abort();
    crate::common::eventually("the stuck task is gone", || handles[2].is_finished()).await;
    assert_eq!(scope.len(), 4, "the others run on");
    assert!(!scope.token().is_cancelled());
    handles[0].cancel(); // a polite one: its own token only
    assert_eq!(done_rx.recv().await, Some(0));
    assert_eq!(scope.len(), 3);
    let report = scope.shutdown_report(HANG).await;
    assert_eq!(report.count(TaskOutcome::Aborted), 1);
    let names: Vec<_> = report.needs_attention().map(|t| t.name()).collect();
    assert_eq!(names, ["task #2"]);
    assert_eq!(report.count(TaskOutcome::Stopped), 3);
}

#[tokio::test]
async fn a_spawner_spawns_from_other_tasks_and_is_refused_once_the_scope_stops() {
    let mut scope = Scope::new();
    let spawner = scope.spawner();
    let (tx, mut rx) = mpsc::unbounded_channel();
    scope.spawn(move |_token| async move {
        // A handler spawns a sub-task into its own scope.
        let sub = spawner.spawn_named("sub", |token| async move {
            token.cancelled().await;
            "sub cleaned up"
        });
        tx.send(spawner).unwrap();
        assert!(sub.is_some());
        "handler"
    });
    let spawner = rx.recv().await.unwrap();
    assert_eq!(scope.len(), 2);
    let results = scope.shutdown(HANG).await;
    let values: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, ["handler", "sub cleaned up"]);
    let called = AtomicBool::new(false);
    assert!(
        spawner
            .spawn(|_token| {
                called.store(true, SeqCst);
                async { "late" }
            })
            .is_none()
    );
    assert!(!called.load(SeqCst), "a refused spawn does not call f");
}

#[tokio::test]
async fn tasks_a_spawner_started_do_not_outlive_a_dropped_scope() {
    let baseline = alive_tasks();
    let scope = Scope::<()>::new().with_limit(2);
    let spawner = scope.spawner();
    let remote = spawner.clone(); // `Send + Sync`
    assert!(std::thread::spawn(move || remote.is_open()).join().unwrap());
    for _ in 0..5 {
        // Two start, three queue; all ignore their token.
        spawner.spawn(|_token| std::future::pending()).unwrap();
    }
    settle().await;
    drop(scope);
    assert!(!spawner.is_open());
    assert!(spawner.spawn(|_token| std::future::pending()).is_none());
    alive_tasks_become(baseline).await;
}

#[tokio::test]
async fn a_queued_task_aborted_through_its_handle_never_starts() {
    let mut scope = Scope::new().with_limit(1);
    let started = Arc::new(AtomicUsize::new(0));
    let hold = {
        let started = started.clone();
        scope.spawner().spawn(move |token| async move {
            started.fetch_add(1, SeqCst);
            token.cancelled().await;
        })
    };
    let queued = {
        let started = started.clone();
        scope.spawner().spawn(move |_token| async move {
            started.fetch_add(1, SeqCst);
        })
    };
    settle().await;
    queued.as_ref().unwrap().abort();
    hold.unwrap().cancel();
    let results = scope.join_all().await;
    assert!(results[0].is_ok());
    assert!(results[1].as_ref().unwrap_err().is_aborted());
    assert_eq!(started.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawners_racing_a_shutdown_leave_no_task_behind() {
    let baseline = alive_tasks();
    let mut scope = Scope::<u32>::new().with_limit(16);
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut spawners = Vec::new();
    for _ in 0..4 {
        let spawner = scope.spawner();
        let accepted = accepted.clone();
        spawners.push(tokio::spawn(async move {
            // Spawn until refused; half the tasks ignore their token.
            let mut n = 0u32;
            while let Some(_task) = spawner.spawn(move |token| async move {
                if n % 2 == 0 {
                    token.cancelled().await;
                } else {
                    std::future::pending::<()>().await;
                }
                n
            }) {
                accepted.fetch_add(1, SeqCst);
                n += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    crate::common::eventually("spawners are busy", || accepted.load(SeqCst) > 100).await;
    let results = scope.shutdown(Duration::from_millis(20)).await;
    for spawner in spawners {
        tokio::time::timeout(HANG, spawner).await.unwrap().unwrap();
    }
    // Whatever was accepted is accounted for: in the shutdown's results, or
    // (spawned while it ran) in the next join.
    let late = scope.join_all().await;
    assert_eq!(results.len() + late.len(), accepted.load(SeqCst));
    assert!(results.iter().any(|r| r.as_ref().is_ok_and(|n| n % 2 == 0)));
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.is_aborted()))
    );
    assert!(scope.is_empty());
    drop(scope);
    alive_tasks_become(baseline).await;
}

#[test]
fn scopes_spawners_handles_and_their_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let mut scope = Scope::<u32>::new();
    send_sync(&scope);
    send_sync(&scope.spawner());
    // The owner's loop can run in a spawned task.
    send(&scope.reserve());
    send(&scope.join_next());
    send(&scope.shutdown(Duration::ZERO));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let permit = rt.block_on(scope.reserve());
    send(&permit);
    let handle = permit.spawn(|_token| async { 1 });
    send_sync(&handle);
}
