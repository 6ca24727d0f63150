//! Spawning and results: tokens, spawn shapes and blocking tasks, results in
//! spawn and completion order, task ids, joins that lose no result when
//! interrupted, `TaskError`.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::time::Duration;

use cancel_scope_runtime::{CancelReason, CancellationToken, Scope, TaskError, TaskId};
use tokio::sync::{mpsc, oneshot};

use crate::common::{HANG, poll_once, unwrap_all};

/// Tasks `0..n`, task `i` finishing after `n - i` seconds of (paused) time.
fn reverse_finishers(n: u64) -> Scope<u64> {
    let mut scope = Scope::new();
    for i in 0..n {
        scope.spawn(move |_token| async move {
            tokio::time::sleep(Duration::from_secs(n - i)).await;
            i
        });
    }
    scope
}

async fn metrics_loop(token: CancellationToken) -> u32 {
    token.cancelled().await;
    1
}

async fn writer_loop(token: CancellationToken, mut rx: mpsc::Receiver<u32>) -> u32 {
    let mut sum = 0;
    loop {
        tokio::select! {
            () = token.cancelled() => return sum,
            msg = rx.recv() => match msg {
                Some(n) => sum += n,
                None => return sum,
            },
        }
    }
}

fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

#[tokio::test(start_paused = true)]
async fn join_all_returns_results_in_spawn_order() {
    let mut scope = reverse_finishers(8);
    assert_eq!(
        unwrap_all(scope.join_all().await),
        (0..8).collect::<Vec<_>>()
    );
    assert!(scope.is_empty());
}

#[tokio::test(start_paused = true)]
async fn join_next_returns_results_in_completion_order() {
    let mut scope = reverse_finishers(8);
    let mut order = Vec::new();
    while let Some(result) = scope.join_next().await {
        order.push(result.unwrap());
        assert_eq!(scope.len(), 8 - order.len());
    }
    assert_eq!(order, (0..8).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn join_all_after_join_next_returns_the_rest_in_spawn_order() {
    let mut releases = Vec::new();
    let mut scope = Scope::new();
    for i in 0..5 {
        let (tx, rx) = oneshot::channel::<()>();
        releases.push(Some(tx));
        scope.spawn(move |_token| async move {
            rx.await.unwrap();
            i
        });
    }
    releases[3].take().unwrap().send(()).unwrap();
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 3);
    assert_eq!(scope.len(), 4);
    for tx in releases.iter_mut().rev().filter_map(Option::take) {
        tx.send(()).unwrap();
    }
    assert_eq!(unwrap_all(scope.join_all().await), [0, 1, 2, 4]);
    assert!(scope.is_empty());

    // The scope is reusable, and only reports what was spawned since.
    scope.spawn(|_token| async { 10 });
    scope.spawn(|_token| async { 11 });
    assert_eq!(unwrap_all(scope.join_all().await), [10, 11]);
}

#[tokio::test]
async fn a_long_lived_task_and_many_short_ones_joined_one_by_one() {
    let mut scope = Scope::new();
    scope.spawn(|token| async move {
        token.cancelled().await;
        usize::MAX
    });
    for i in 0..1000 {
        scope.spawn(move |_token| async move { i });
        assert_eq!(scope.join_next().await.unwrap().unwrap(), i);
        assert_eq!(scope.len(), 1);
    }
    // Three more that finish in reverse order, then everything in spawn order.
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let gates: Vec<_> = (0..3).map(|_| oneshot::channel::<()>()).collect();
    let mut senders = Vec::new();
    for (i, (gate_tx, gate_rx)) in gates.into_iter().enumerate() {
        senders.push(gate_tx);
        let tx = tx.clone();
        scope.spawn(move |_token| async move {
            gate_rx.await.unwrap();
            tx.send(()).unwrap();
            1000 + i
        });
    }
    for gate in senders.into_iter().rev() {
        gate.send(()).unwrap();
        rx.recv().await.unwrap();
    }
    scope.cancel();
    assert_eq!(
        unwrap_all(scope.join_all().await),
        [usize::MAX, 1000, 1001, 1002]
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_join_all_loses_no_result() {
    let mut scope = Scope::new();
    for i in 0..3u64 {
        scope.spawn(move |_token| async move {
            tokio::time::sleep(Duration::from_secs(i + 1)).await;
            i
        });
    }
    let partial = tokio::time::timeout(Duration::from_millis(2500), scope.join_all()).await;
    assert!(partial.is_err(), "interrupted after two of three tasks");
    assert_eq!(scope.len(), 3);
    assert_eq!(unwrap_all(scope.join_all().await), [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn results_of_aborted_tasks_survive_an_interrupted_join_all() {
    let grace = Duration::from_secs(10);
    let mut scope = Scope::new();
    scope.spawn(|_token| std::future::pending());
    scope.spawn(|_token| std::future::pending());
    scope.spawn(|token| async move {
        token.cancelled().await;
        "cooperative"
    });
    {
        let mut shutdown = pin!(scope.shutdown(grace));
        assert!(poll_once(shutdown.as_mut()).await.is_pending());
        tokio::time::sleep(grace).await;
        assert!(poll_once(shutdown.as_mut()).await.is_pending());
    }
    // A task spawned afterwards keeps the next join_all waiting.
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    scope.spawn(move |_token| async move {
        gate_rx.await.unwrap();
        "late"
    });
    tokio::task::yield_now().await; // the aborted stragglers are dropped
    {
        let mut join_all = pin!(scope.join_all());
        assert!(poll_once(join_all.as_mut()).await.is_pending());
    }
    assert_eq!(scope.len(), 4);
    gate_tx.send(()).unwrap();

    let mut results = Vec::new();
    while let Some(result) = tokio::time::timeout(HANG, scope.join_next()).await.unwrap() {
        results.push(result);
        assert_eq!(scope.len(), 4 - results.len());
    }
    assert_eq!(results.len(), 4);
    let oks: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(oks.len(), 2);
    assert!(oks.contains(&"cooperative") && oks.contains(&"late"));
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().is_err_and(TaskError::is_aborted))
            .count(),
        2
    );
}

#[tokio::test]
async fn cancelling_the_scope_cancels_every_task_token() {
    let mut scope = Scope::new();
    for _ in 0..3 {
        scope.spawn(|token| async move { token });
    }
    let tokens = unwrap_all(scope.join_all().await);
    assert!(tokens.iter().all(|t| !t.is_cancelled()));
    scope.cancel();
    assert!(tokens.iter().all(CancellationToken::is_cancelled));
}

#[tokio::test]
async fn a_task_cancelling_its_own_token_cancels_neither_scope_nor_siblings() {
    let mut scope = Scope::new();
    scope.spawn(|token| async move {
        token.cancel();
        token
    });
    scope.spawn(|token| async move { token });
    let tokens = unwrap_all(scope.join_all().await);
    assert!(tokens[0].is_cancelled());
    assert!(!tokens[1].is_cancelled());
    assert!(!scope.token().is_cancelled());
}

#[tokio::test]
async fn child_of_follows_its_parent_and_never_cancels_it() {
    let parent = CancellationToken::new();
    let scope = Scope::<()>::child_of(&parent);
    scope.cancel();
    assert!(!parent.is_cancelled());

    let mut scope = Scope::child_of(&parent);
    scope.spawn(|token| async move {
        token.cancelled().await;
        "stopped by the parent"
    });
    parent.cancel();
    assert!(scope.token().is_cancelled());
    assert_eq!(
        unwrap_all(scope.join_all().await),
        ["stopped by the parent"]
    );
}

#[tokio::test]
async fn spawn_takes_token_first_fns_as_they_are() {
    let (tx, rx) = mpsc::channel(4);
    let mut scope = Scope::new();
    scope.spawn(metrics_loop);
    scope.spawn(|t| writer_loop(t, rx));
    tx.send(20).await.unwrap();
    tx.send(22).await.unwrap();
    drop(tx);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 42);
    assert_eq!(unwrap_all(scope.shutdown(HANG).await), [1]);
}

#[test]
#[should_panic(expected = "Tokio")]
fn spawn_outside_a_runtime_panics() {
    let mut scope = Scope::new();
    scope.spawn(|_token| async {});
}

#[tokio::test]
async fn spawn_blocking_sees_cancellation() {
    let (started_tx, started_rx) = oneshot::channel();
    let mut scope = Scope::new();
    scope.spawn_blocking(move |token| {
        let mut started = Some(started_tx);
        let mut rounds = 0u32;
        while !token.is_cancelled() {
            rounds += 1;
            if let Some(started) = started.take() {
                started.send(()).unwrap(); // only now can the test cancel
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        rounds
    });
    started_rx.await.unwrap();
    let results = tokio::time::timeout(HANG, scope.shutdown(HANG))
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert!(*results[0].as_ref().unwrap() >= 1);
}

#[tokio::test]
async fn blocking_and_async_results_mix_in_spawn_order() {
    let mut scope = Scope::new();
    scope.spawn(|_token| async { 0 });
    scope.spawn_blocking(|_token| panic!("blocking boom"));
    scope.spawn_blocking(|_token| 2);
    scope.spawn(|_token| async { 3 });
    let mut results = scope.join_all().await.into_iter();
    assert_eq!(results.next().unwrap().unwrap(), 0);
    let err = results.next().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "task panicked: blocking boom");
    assert_eq!(results.next().unwrap().unwrap(), 2);
    assert_eq!(results.next().unwrap().unwrap(), 3);

    scope.spawn_blocking(|_token| 4);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 4);
    assert!(scope.join_next().await.is_none());
}

#[tokio::test]
async fn task_error_describes_panics_and_aborts() {
    assert_error::<TaskError>();

    let mut scope = Scope::<()>::new();
    scope.spawn(|_token| async { panic!("boom") });
    scope.spawn(|_token| async {
        let disk = 3; // not a literal: the payload is a `String`
        panic!("disk {disk} full")
    });
    scope.spawn(|_token| async { std::panic::panic_any(42_u8) });
    scope.spawn(|_token| std::future::pending());
    let mut results = scope.shutdown(Duration::from_millis(20)).await.into_iter();
    let mut next_err = || results.next().unwrap().unwrap_err();

    let boom = next_err();
    assert_eq!(boom.to_string(), "task panicked: boom");
    assert_eq!(format!("{boom:?}"), r#"TaskError::Panic("boom")"#);
    let formatted = next_err();
    assert_eq!(formatted.to_string(), "task panicked: disk 3 full");
    assert_eq!(
        *formatted.into_panic().downcast::<String>().unwrap(),
        "disk 3 full"
    );
    let opaque = next_err();
    assert_eq!(opaque.to_string(), "task panicked");
    assert_eq!(format!("{opaque:?}"), "TaskError::Panic(..)");
    assert_eq!(
        *opaque.try_into_panic().unwrap().downcast::<u8>().unwrap(),
        42
    );

    let aborted = next_err();
    assert_eq!(
        aborted.to_string(),
        "task aborted (scope cancelled: shut down)"
    );
    assert_eq!(format!("{aborted:?}"), "TaskError::Aborted(Some(Shutdown))");
    assert_eq!(aborted.cancel_reason(), Some(CancelReason::Shutdown));
    let dyn_err: &dyn std::error::Error = &aborted;
    assert!(dyn_err.source().is_none());
    let aborted = aborted.try_into_panic().unwrap_err();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| aborted.into_panic()));
    let message = caught.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("not a panic") && message.contains("task aborted"),
        "{message}"
    );

    let boxed: Box<dyn std::error::Error + Send + Sync> = boom.into();
    assert_eq!(boxed.to_string(), "task panicked: boom");
}

#[tokio::test]
async fn task_error_converts_into_io_error() {
    let mut scope = Scope::<()>::new();
    scope.spawn(|_token| async { panic!("boom") });
    let err = std::io::Error::from(scope.join_next().await.unwrap().unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::Other);
    assert_eq!(err.to_string(), "task panicked: boom");
}

#[tokio::test]
async fn scope_debug_shows_len_and_state() {
    let mut scope = Scope::<Result<(), ()>>::new().fail_fast();
    scope.spawn(|_token| async { Ok(()) });
    assert_eq!(
        format!("{scope:?}"),
        "Scope { len: 1, cancelled: false, fail_fast: true, .. }"
    );
    scope.cancel();
    scope.join_all().await;
    assert_eq!(
        format!("{scope:?}"),
        "Scope { len: 0, cancelled: true, fail_fast: true, .. }"
    );
}

#[tokio::test(start_paused = true)]
async fn join_next_with_id_says_which_task_each_result_belongs_to() {
    let mut scope = Scope::new();
    let ids: Vec<TaskId> = (0..4u64)
        .map(|i| {
            scope.spawn(move |_token| async move {
                tokio::time::sleep(Duration::from_secs(4 - i)).await;
                i
            })
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in spawn order");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4);

    let mut order = Vec::new();
    while let Some((id, result)) = scope.join_next_with_id().await {
        let value = result.unwrap();
        assert_eq!(id, ids[usize::try_from(value).unwrap()]);
        order.push(value);
    }
    assert_eq!(order, [3, 2, 1, 0], "completion order");
}

#[tokio::test]
async fn a_panicking_task_carries_its_id() {
    let mut scope = Scope::<u32>::new();
    let ok = scope.spawn(|_token| async { 1 });
    let boom = scope.spawn(|_token| async { panic!("boom") });
    let blocking_ok = scope.spawn_blocking(|_token| 2);
    let blocking_boom = scope.spawn_blocking(|_token| panic!("blocking boom"));

    let mut seen = HashMap::new();
    while let Some((id, result)) = scope.join_next_with_id().await {
        let shown = match result {
            Ok(v) => v.to_string(),
            Err(e) => e.to_string(),
        };
        assert!(seen.insert(id, shown).is_none(), "each id once");
    }
    assert_eq!(seen[&ok], "1");
    assert_eq!(seen[&boom], "task panicked: boom");
    assert_eq!(seen[&blocking_ok], "2");
    assert_eq!(seen[&blocking_boom], "task panicked: blocking boom");
}

#[tokio::test]
async fn ids_are_unique_within_a_scope_even_when_it_is_reused() {
    let mut scope = Scope::new();
    let first = scope.spawn(|_token| async {});
    let second = scope.spawn_blocking(|_token| {});
    scope.join_all().await;
    let third = scope.spawn(|_token| async {});
    assert!(first < second && second < third);
    assert_eq!(third.to_string(), "2");
    assert_eq!(format!("{third:?}"), "TaskId(2)");
    let (id, result) = scope.join_next_with_id().await.unwrap();
    assert_eq!(id, third);
    result.unwrap();
}

#[tokio::test]
async fn join_next_with_id_after_join_next_and_an_interrupted_join_all() {
    let mut gates = Vec::new();
    let mut ids = Vec::new();
    let mut scope = Scope::new();
    for i in 0..4 {
        let (tx, rx) = oneshot::channel::<()>();
        gates.push(Some(tx));
        ids.push(scope.spawn(move |_token| async move {
            rx.await.unwrap();
            i
        }));
    }
    gates[2].take().unwrap().send(()).unwrap();
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 2);
    gates[3].take().unwrap().send(()).unwrap();
    tokio::task::yield_now().await;
    {
        // Collects task 3, then waits for 0 and 1: interrupted there.
        let mut join_all = pin!(scope.join_all());
        assert!(poll_once(join_all.as_mut()).await.is_pending());
    }
    assert_eq!(
        scope
            .join_next_with_id()
            .await
            .map(|(id, r)| (id, r.unwrap())),
        Some((ids[3], 3))
    );
    for gate in gates.iter_mut().filter_map(Option::take) {
        gate.send(()).unwrap();
    }
    let mut rest: Vec<_> = Vec::new();
    while let Some((id, result)) = scope.join_next_with_id().await {
        rest.push((id, result.unwrap()));
    }
    rest.sort_unstable();
    assert_eq!(rest, [(ids[0], 0), (ids[1], 1)]);
}

#[tokio::test]
async fn an_interrupted_join_next_loses_no_result() {
    let mut scope = Scope::new();
    let (tx, rx) = oneshot::channel::<()>();
    let (tx2, rx2) = oneshot::channel::<()>();
    scope.spawn(move |_token| async move {
        rx.await.unwrap();
        7
    });
    let id = scope.spawn(move |_token| async move {
        rx2.await.unwrap();
        8
    });
    tokio::select! {
        biased;
        _ = scope.join_next() => unreachable!("not finished yet"),
        () = std::future::ready(()) => {}
    }
    tokio::select! {
        biased;
        _ = scope.join_next_with_id() => unreachable!("not finished yet"),
        () = std::future::ready(()) => {}
    }
    tx.send(()).unwrap();
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 7);
    tx2.send(()).unwrap();
    let (got, result) = scope.join_next_with_id().await.unwrap();
    assert_eq!((got, result.unwrap()), (id, 8));
    assert!(scope.join_next_with_id().await.is_none());
}
