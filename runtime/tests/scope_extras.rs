//! The policies and tools added to `Scope` beyond the basics: task ids and
//! `join_next_with_id`, first success wins (`first_ok`, `join_first_ok`), a
//! concurrency limit (`with_limit`), a deadline (`with_deadline`,
//! `with_timeout`), and named tasks with a `shutdown_report`.
//!
//! No test asserts on wall-clock durations: time-dependent tests run on a
//! paused clock (where durations are exact), and the real-time ones only
//! bound a wait to catch a hang.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cancel_scope_runtime::{
    CancelReason, CancellationToken, Scope, ShutdownReport, TaskId, TaskOutcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

mod common;
use common::{HANG, alive_tasks, alive_tasks_become, eventually, poll_once, unwrap_all};

/// Counts the tasks inside a region, and the most there ever were at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }

    fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

// ---------------------------------------------------------------- task ids

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

#[tokio::test(start_paused = true)]
async fn tasks_aborted_by_an_interrupted_shutdown_are_reported_with_their_ids() {
    let grace = Duration::from_secs(10);
    let mut scope = Scope::new();
    let straggler_a = scope.spawn(|_token| std::future::pending());
    let cooperative = scope.spawn(|token| async move {
        token.cancelled().await;
        "cooperative"
    });
    let straggler_b = scope.spawn(|_token| std::future::pending());
    {
        let mut shutdown = pin!(scope.shutdown(grace));
        assert!(poll_once(shutdown.as_mut()).await.is_pending()); // cancels
        tokio::time::sleep(grace).await;
        // Collects the cooperative task, aborts the stragglers, waits for
        // them: interrupted there.
        assert!(poll_once(shutdown.as_mut()).await.is_pending());
    }
    // A task spawned afterwards: the aborted ones are placed once it is done.
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let late = scope.spawn(move |_token| async move {
        gate_rx.await.unwrap();
        "late"
    });
    assert_eq!(scope.len(), 4);

    let (id, result) = scope.join_next_with_id().await.unwrap();
    assert_eq!((id, result.unwrap()), (cooperative, "cooperative"));
    gate_tx.send(()).unwrap();
    let mut rest = HashMap::new();
    while let Some((id, result)) = tokio::time::timeout(HANG, scope.join_next_with_id())
        .await
        .unwrap()
    {
        let shown = match result {
            Ok(v) => v.to_string(),
            Err(e) => e.to_string(),
        };
        assert!(rest.insert(id, shown).is_none(), "each id once");
        assert_eq!(scope.len(), 3 - rest.len());
    }
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[&late], "late");
    assert_eq!(
        rest[&straggler_a],
        "task aborted (scope cancelled: shut down)"
    );
    assert_eq!(
        rest[&straggler_b],
        "task aborted (scope cancelled: shut down)"
    );
}

#[tokio::test]
async fn join_next_with_id_in_select_loses_no_result() {
    let mut scope = Scope::new();
    let (tx, rx) = oneshot::channel::<()>();
    let id = scope.spawn(move |_token| async move {
        rx.await.unwrap();
        7
    });
    tokio::select! {
        biased;
        _ = scope.join_next_with_id() => unreachable!("not finished yet"),
        () = std::future::ready(()) => {}
    }
    tx.send(()).unwrap();
    let (got, result) = scope.join_next_with_id().await.unwrap();
    assert_eq!((got, result.unwrap()), (id, 7));
    assert!(scope.join_next_with_id().await.is_none());
}

#[tokio::test]
async fn after_shutdown_the_token_stays_cancelled_and_new_tasks_start_cancelled() {
    let mut scope = Scope::new();
    scope.spawn(|token| async move { token.is_cancelled() });
    assert_eq!(unwrap_all(scope.shutdown(HANG).await), [true]);
    scope.spawn(|token| async move { token.is_cancelled() });
    assert_eq!(unwrap_all(scope.join_all().await), [true]);

    // A fresh scope is the way to start over.
    let mut fresh = Scope::new();
    fresh.spawn(|token| async move { token.is_cancelled() });
    assert_eq!(unwrap_all(fresh.join_all().await), [false]);
}

// ---------------------------------------------------------------- first ok

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

// ---------------------------------------------------------------- limit

#[tokio::test]
async fn with_limit_queues_tasks_in_spawn_order_and_starts_one_per_freed_permit() {
    let built = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let mut gates = Vec::new();
    let mut scope = Scope::new().with_limit(3);
    for i in 0..8 {
        let (gate_tx, gate_rx) = oneshot::channel::<()>();
        gates.push(gate_tx);
        let started_tx = started_tx.clone();
        built.fetch_add(1, SeqCst); // `f` runs at spawn time...
        scope.spawn(move |_token| async move {
            // ...the future only once it has a permit.
            started_tx.send(i).unwrap();
            gate_rx.await.unwrap();
            i
        });
    }
    assert_eq!(built.load(SeqCst), 8);
    assert_eq!(scope.len(), 8, "every spawn is accepted at once");

    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(started_rx.recv().await.unwrap());
    }
    tokio::task::yield_now().await;
    assert!(started_rx.try_recv().is_err(), "only three run");
    assert_eq!(started, [0, 1, 2]);

    let mut gates = gates.into_iter();
    for next in 3..8 {
        gates.next().unwrap().send(()).unwrap();
        assert_eq!(
            started_rx.recv().await.unwrap(),
            next,
            "one more, in spawn order"
        );
        tokio::task::yield_now().await;
        assert!(started_rx.try_recv().is_err());
    }
    for gate in gates {
        gate.send(()).unwrap();
    }
    assert_eq!(
        unwrap_all(scope.join_all().await),
        (0..8).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_limit_holds_for_10k_tasks_on_a_multi_thread_runtime() {
    const N: usize = 10_000;
    const LIMIT: usize = 16;
    let gauge = Arc::new(Gauge::default());
    let mut scope = Scope::new().with_limit(LIMIT);
    for i in 0..N {
        let gauge = gauge.clone();
        scope.spawn(move |_token| async move {
            gauge.enter();
            tokio::task::yield_now().await;
            gauge.leave();
            i
        });
    }
    let results = tokio::time::timeout(HANG * 6, scope.join_all())
        .await
        .unwrap();
    assert_eq!(unwrap_all(results), (0..N).collect::<Vec<_>>());
    assert!(gauge.peak() <= LIMIT, "peak {}", gauge.peak());
    assert!(gauge.peak() >= 1);
}

#[tokio::test(start_paused = true)]
async fn queued_tasks_of_a_cancelled_scope_still_run_their_cleanup_within_the_limit() {
    let gauge = Arc::new(Gauge::default());
    let started_cancelled = Arc::new(AtomicUsize::new(0));
    let mut scope = Scope::new().with_limit(2);
    for i in 0..6 {
        let gauge = gauge.clone();
        let started_cancelled = started_cancelled.clone();
        scope.spawn(move |token| async move {
            gauge.enter();
            if token.is_cancelled() {
                started_cancelled.fetch_add(1, SeqCst);
            }
            token.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await; // async cleanup
            gauge.leave();
            i
        });
    }
    tokio::task::yield_now().await; // the first two start
    let start = Instant::now();
    let results = scope.shutdown(Duration::from_secs(3600)).await;
    assert_eq!(unwrap_all(results), (0..6).collect::<Vec<_>>());
    assert_eq!(gauge.peak(), 2);
    assert_eq!(
        started_cancelled.load(SeqCst),
        4,
        "the queued four saw their token cancelled"
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "three rounds of two cleanups"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_still_queued_at_the_end_of_grace_is_aborted_without_running() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut scope = Scope::<()>::new().with_limit(1);
    for _ in 0..3 {
        let started = started.clone();
        scope.spawn(move |_token| async move {
            started.fetch_add(1, SeqCst);
            std::future::pending::<()>().await; // ignores its token
        });
    }
    let results = scope.shutdown(Duration::from_secs(5)).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap_err().is_aborted()));
    assert_eq!(results.len(), 3);
    assert_eq!(started.load(SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_task_frees_its_permit() {
    let mut scope = Scope::new().with_limit(1);
    scope.spawn(|_token| async { panic!("boom") });
    scope.spawn(|_token| async { 1 });
    let results = tokio::time::timeout(HANG, scope.join_all()).await.unwrap();
    assert!(results[0].as_ref().unwrap_err().is_panic());
    assert_eq!(results[1].as_ref().unwrap(), &1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_tasks_count_toward_the_limit() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let mut scope = Scope::new().with_limit(1);
    let async_log = log.clone();
    scope.spawn(move |_token| async move {
        async_log.lock().unwrap().push("async start");
        started_tx.send(()).unwrap();
        release_rx.await.unwrap();
        async_log.lock().unwrap().push("async end");
    });
    started_rx.await.unwrap();
    let blocking_log = log.clone();
    scope.spawn_blocking(move |_token| blocking_log.lock().unwrap().push("blocking"));
    // Give a blocking thread time to (wrongly) run the closure.
    tokio::time::sleep(Duration::from_millis(20)).await;
    release_tx.send(()).unwrap();
    tokio::time::timeout(HANG, scope.join_all()).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["async start", "async end", "blocking"]
    );
}

#[tokio::test]
async fn with_limit_and_fail_fast_combine() {
    let mut scope: Scope<Result<(), &str>> = Scope::new().with_limit(1).fail_fast();
    assert_eq!(
        format!("{scope:?}"),
        "Scope { len: 0, cancelled: false, fail_fast: true, limit: 1, .. }"
    );
    scope.spawn(|_token| async { Err("first fails") });
    scope.spawn(|token| async move {
        // Queued behind the failure: starts with its token cancelled.
        if token.is_cancelled() {
            Ok(())
        } else {
            Err("ran uncancelled")
        }
    });
    assert_eq!(
        unwrap_all(scope.join_all().await),
        [Err("first fails"), Ok(())]
    );
}

#[test]
#[should_panic(expected = "the limit must be at least 1")]
fn with_limit_zero_panics() {
    let _ = Scope::<()>::new().with_limit(0);
}

#[tokio::test]
async fn a_limit_above_the_semaphore_maximum_is_clamped() {
    let mut scope = Scope::new().with_limit(usize::MAX);
    scope.spawn(|_token| async { 1 });
    assert_eq!(unwrap_all(scope.join_all().await), [1]);
}

// ---------------------------------------------------------------- deadline

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

// ---------------------------------------------------------------- shutdown report

/// The outcome, cleanup time and name of each task.
fn rows<T>(report: &ShutdownReport<T>) -> Vec<(&str, TaskOutcome, Option<Duration>)> {
    report
        .tasks()
        .iter()
        .map(|t| (t.name(), t.outcome(), t.cleanup_time()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn shutdown_report_says_how_each_task_ended() {
    let mut scope = Scope::new();
    let done = scope.spawn_named("done", |_token| async { "done" });
    scope.spawn_named("writer", |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_millis(250)).await; // flush
        "flushed"
    });
    scope.spawn(|_token| async {
        std::future::pending::<()>().await; // ignores its token
        "never"
    });
    scope.spawn_named(String::from("panicky"), |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        panic!("cleanup failed")
    });
    scope.spawn_named("early-panic", |_token| async { panic!("early") });
    tokio::task::yield_now().await; // "done" and "early-panic" finish

    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    let ms = Duration::from_millis;
    assert_eq!(
        rows(&report),
        [
            ("done", TaskOutcome::Completed, None),
            ("writer", TaskOutcome::Stopped, Some(ms(250))),
            ("task #2", TaskOutcome::Aborted, None),
            ("panicky", TaskOutcome::Panicked, Some(ms(100))),
            ("early-panic", TaskOutcome::Panicked, None),
        ]
    );
    assert_eq!(report.tasks()[0].id(), done);
    assert_eq!(report.elapsed(), Duration::from_secs(1));
    assert_eq!(report.grace(), Duration::from_secs(1));
    assert!(!report.was_cancelled_before());
    assert!(!report.is_clean());
    assert_eq!(report.count(TaskOutcome::Panicked), 2);
    assert_eq!(report.count(TaskOutcome::Detached), 0);
    // Deliberately changed (issue 12): a summary, then only what needs
    // attention, rather than one line per task.
    assert_eq!(
        report.to_string(),
        "\
shutdown of 5 tasks took 1.000s (grace 1.000s): 1 completed, 1 cleaned up (ended after the cancel), 2 panicked, 1 aborted
  task #2      aborted   task aborted (scope cancelled: shut down)
  panicky      panicked  after 100.0ms  task panicked: cleanup failed
  early-panic  panicked  task panicked: early"
    );

    let results = report.into_results();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap(), &"done");
    assert_eq!(results[1].as_ref().unwrap(), &"flushed");
    assert!(results[2].as_ref().unwrap_err().is_aborted());
    assert!(results[3].as_ref().unwrap_err().is_panic());
    assert!(results[4].as_ref().unwrap_err().is_panic());
    assert!(scope.is_empty());
    assert!(scope.token().is_cancelled());
}

#[tokio::test]
async fn shutdown_report_of_blocking_tasks_cleaned_up_and_detached() {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let mut scope = Scope::new();
    scope.spawn_blocking_named("cooperative", |token| {
        while !token.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        "stopped"
    });
    scope.spawn_blocking_named("stubborn", move |_token| {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap(); // ignores its token
        "released"
    });
    started_rx.await.unwrap();
    let report = tokio::time::timeout(HANG, scope.shutdown_report(Duration::from_millis(200)))
        .await
        .unwrap();
    let tasks = report.tasks();
    assert_eq!(tasks[0].name(), "cooperative");
    assert_eq!(tasks[0].outcome(), TaskOutcome::Stopped);
    assert!(tasks[0].cleanup_time().is_some());
    assert_eq!(tasks[1].name(), "stubborn");
    assert_eq!(tasks[1].outcome(), TaskOutcome::Detached);
    assert_eq!(tasks[1].cleanup_time(), None);
    let shown = report.to_string();
    assert!(
        shown.contains("\n  stubborn  detached  task detached"),
        "{shown}"
    );
    assert!(
        shown.contains("1 cleaned up (ended after the cancel), 1 detached"),
        "{shown}"
    );
    let results = report.into_results();
    assert_eq!(results[0].as_ref().unwrap(), &"stopped");
    assert!(results[1].as_ref().unwrap_err().is_detached());
    release_tx.send(()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_report_after_an_earlier_cancel_says_so() {
    let mut scope = Scope::new();
    scope.spawn_named("quick", |token| async move {
        token.cancelled().await;
        1
    });
    scope.spawn_named("slow", |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        2
    });
    scope.cancel();
    tokio::task::yield_now().await; // "quick" is done before the shutdown
    let report = scope.shutdown_report(Duration::from_secs(5)).await;
    assert!(report.was_cancelled_before());
    assert_eq!(report.cancel_reason(), CancelReason::Requested);
    assert_eq!(
        rows(&report),
        [
            ("quick", TaskOutcome::Completed, None),
            ("slow", TaskOutcome::Stopped, Some(Duration::from_secs(2))),
        ]
    );
    assert!(report.is_clean());
    assert!(
        report.to_string().ends_with(
            "1 completed, 1 cleaned up (ended after the cancel); the token was already \
             cancelled as it began (cancelled by the scope's owner)"
        ),
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_report_leaves_out_what_join_next_handed_out() {
    let mut scope = Scope::new();
    scope.spawn_named("a", |_token| async { "a" });
    scope.spawn_named("b", |token| async move {
        token.cancelled().await;
        "b"
    });
    scope.spawn(|token| async move {
        token.cancelled().await;
        "c"
    });
    assert_eq!(scope.join_next().await.unwrap().unwrap(), "a");
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["b", "task #2"]);
    assert_eq!(unwrap_all(report.into_results()), ["b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn the_report_table_cuts_long_names_and_blanks_control_characters() {
    let long = "x".repeat(50);
    let mut scope = Scope::new();
    scope.spawn_named(long, |_token| async { panic!("a\nb") });
    scope.spawn_named("two\nlines", |_token| async { panic!("c") });
    tokio::task::yield_now().await;
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert_eq!(
        report.tasks()[1].name(),
        "two\nlines",
        "the name is kept as given"
    );
    let cut = format!("{}…", "x".repeat(39));
    // Only tasks that need attention are listed (issue 12).
    assert_eq!(
        report.to_string(),
        format!(
            "\
shutdown of 2 tasks took 0µs (grace 1.000s): 2 panicked
  {cut}  panicked  task panicked: a b
  two lines{pad2}  panicked  task panicked: c",
            pad2 = " ".repeat(31),
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_report_of_an_empty_scope() {
    let mut scope = Scope::<()>::new();
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert!(report.tasks().is_empty() && report.is_clean());
    assert_eq!(
        report.to_string(),
        "shutdown of 0 tasks took 0µs (grace 1.000s)"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_report_works_with_the_other_policies() {
    let baseline = alive_tasks();
    let mut scope: Scope<Result<u32, &str>> = Scope::new()
        .with_limit(1)
        .with_timeout(Duration::from_secs(3600));
    scope.spawn_named("holder", |token| async move {
        token.cancelled().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(1)
    });
    scope.spawn_named("queued", |token| async move {
        // Runs once "holder" is done, its token already cancelled.
        assert!(token.is_cancelled());
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err("cancelled")
    });
    tokio::task::yield_now().await;
    let report = scope.shutdown_report(Duration::from_secs(10)).await;
    assert_eq!(
        rows(&report),
        [
            ("holder", TaskOutcome::Stopped, Some(Duration::from_secs(1))),
            ("queued", TaskOutcome::Stopped, Some(Duration::from_secs(2))),
        ]
    );
    alive_tasks_become(baseline).await; // the deadline's timer too
}

#[tokio::test]
async fn an_interrupted_shutdown_report_loses_no_result() {
    let mut scope = Scope::new();
    let (tx, rx) = oneshot::channel::<()>();
    scope.spawn_named("slow", |token| async move {
        token.cancelled().await;
        rx.await.unwrap();
        "slow"
    });
    scope.spawn_named("quick", |token| async move {
        token.cancelled().await;
        "quick"
    });
    {
        let mut report = pin!(scope.shutdown_report(HANG));
        assert!(poll_once(report.as_mut()).await.is_pending());
        tokio::task::yield_now().await;
        assert!(poll_once(report.as_mut()).await.is_pending()); // collects "quick"
    }
    assert_eq!(scope.len(), 2);
    tx.send(()).unwrap();
    let report = scope.shutdown_report(HANG).await;
    assert!(report.was_cancelled_before());
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["slow", "quick"]);
    assert_eq!(unwrap_all(report.into_results()), ["slow", "quick"]);
}

#[tokio::test]
async fn a_report_after_many_joins_shows_only_what_is_left() {
    // A long-lived scope that joins one by one, as a server does.
    let mut scope = Scope::new();
    for i in 0..100 {
        scope.spawn_named(format!("conn-{i}"), move |_token| async move { i });
        let (id, result) = scope.join_next_with_id().await.unwrap();
        assert_eq!(result.unwrap(), i);
        assert_eq!(id.to_string(), i.to_string());
    }
    scope.spawn(|_token| async { 100 });
    tokio::task::yield_now().await; // finishes before the shutdown
    let report = scope.shutdown_report(HANG).await;
    assert_eq!(rows(&report), [("task #100", TaskOutcome::Completed, None)]);
}

// ---------------------------------------------------------------------------
// Cancel reasons
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_scope_says_why_its_token_was_cancelled() {
    // Not cancelled: no reason.
    let scope: Scope<()> = Scope::new();
    assert_eq!(scope.cancel_reason(), None);
    scope.cancel();
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Requested));

    // A failing task under fail_fast names itself; later causes do not
    // replace it.
    let mut scope: Scope<Result<u32, &str>> = Scope::new().fail_fast();
    let _ok = scope.spawn(|token| async move {
        token.cancelled().await;
        Ok(1)
    });
    let bad = scope.spawn(|_token| async { Err("boom") });
    scope.token().cancelled().await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
    scope.cancel();
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert_eq!(report.cancel_reason(), CancelReason::TaskFailed(bad));
    assert!(
        report
            .to_string()
            .contains(&format!("(task #{bad} failed)")),
        "{report}"
    );

    // A panic under fail_fast counts as a failure.
    let mut scope: Scope<Result<u32, &str>> = Scope::new().fail_fast();
    let panicked = scope.spawn(|_token| async { panic!("boom") });
    scope.token().cancelled().await;
    assert_eq!(
        scope.cancel_reason(),
        Some(CancelReason::TaskFailed(panicked))
    );
    drop(scope.join_all().await);

    // The first success under first_ok.
    let mut scope: Scope<Result<u32, &str>> = Scope::new().first_ok();
    let winner = scope.spawn(|_token| async { Ok(7) });
    scope.token().cancelled().await;
    assert_eq!(
        scope.cancel_reason(),
        Some(CancelReason::TaskSucceeded(winner))
    );
    drop(scope.join_all().await);

    // The deadline.
    let scope: Scope<()> = Scope::new().with_timeout(Duration::from_secs(3));
    scope.token().cancelled().await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Deadline));

    // The parent.
    let parent = CancellationToken::new();
    let scope: Scope<()> = Scope::child_of(&parent);
    parent.cancel();
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Parent));

    // A shutdown of a live scope.
    let mut scope: Scope<()> = Scope::new();
    scope.spawn(|token| async move { token.cancelled().await });
    let report = scope.shutdown_report(Duration::from_secs(1)).await;
    assert_eq!(scope.cancel_reason(), Some(CancelReason::Shutdown));
    assert_eq!(report.cancel_reason(), CancelReason::Shutdown);
    assert!(!report.was_cancelled_before());
}

/// The owner asks why while a fail-fast task, on another worker, is
/// cancelling the scope: the answer is `None` until the token is cancelled,
/// then the failed task, never a reason the scope does not have (a root
/// scope has no parent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_read_during_a_cancel_on_another_thread_is_the_right_one() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for _ in 0..2_000 {
        let mut scope: Scope<Result<(), ()>> = Scope::new().fail_fast();
        let go = Arc::new(AtomicBool::new(false));
        let started = go.clone();
        let failing = scope.spawn(move |_token| async move {
            while !started.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            Err(())
        });
        go.store(true, Ordering::Release);
        let reason = loop {
            if let Some(reason) = scope.cancel_reason() {
                break reason;
            }
            std::hint::spin_loop();
        };
        assert_eq!(reason, CancelReason::TaskFailed(failing));
        scope.join_all().await;
    }
}

/// Dropping a scope cancels its token for a reason its nested scopes report.
#[tokio::test]
async fn a_dropped_scope_is_the_reason_of_the_scopes_nested_in_its_tasks() {
    let mut outer: Scope<()> = Scope::new();
    let (reason_tx, reason_rx) = tokio::sync::oneshot::channel();
    let (made_tx, made_rx) = tokio::sync::oneshot::channel();
    outer.spawn(move |token| async move {
        let inner: Scope<()> = Scope::child_of(&token);
        let inner_token = inner.token().clone();
        // Outlives the aborted task: a watcher on its own.
        tokio::spawn(async move {
            inner_token.cancelled().await;
            let _ = reason_tx.send(inner.cancel_reason());
        });
        let _ = made_tx.send(());
        std::future::pending::<()>().await;
    });
    made_rx.await.unwrap();
    drop(outer);
    assert_eq!(reason_rx.await.unwrap(), Some(CancelReason::Dropped));
}
