//! Behaviour of `LocalScope`, as a user observes it: borrowed data, results
//! and their order, cleanups that ran, futures dropped, tokens.
//!
//! No test asserts on wall-clock durations: time-dependent tests run on a
//! paused clock, and the real-time ones only bound a wait to catch a hang.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use cancel_scope_runtime::{CancelReason, CancellationToken, LocalScope, TaskError, TaskId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep};

mod common;
use common::{HANG, poll_once, unwrap_all};

/// Increments its counter when dropped.
struct OnDrop<'a>(&'a Cell<usize>);

impl Drop for OnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Records when it was dropped.
struct DropAt<'a>(&'a Cell<Option<Instant>>);

impl Drop for DropAt<'_> {
    fn drop(&mut self) {
        self.0.set(Some(Instant::now()));
    }
}

// ---------------------------------------------------------------- borrowing

#[tokio::test]
async fn tasks_borrow_a_local_vec_and_a_non_send_counter() {
    let data: Vec<u32> = (1..=10).collect();
    let counter = RefCell::new(0usize); // `&RefCell` is not `Send`
    let shared = Rc::new(Cell::new(0u32)); // nor is an `Rc`
    let mut total = 0u32; // borrowed `&mut` by one task
    {
        let mut scope = LocalScope::new();
        let counter = &counter;
        for chunk in data.chunks(3) {
            let shared = Rc::clone(&shared);
            scope.spawn(move |_token| async move {
                // `&RefCell` and `Rc` held across an `.await`: `!Send`.
                tokio::task::yield_now().await;
                *counter.borrow_mut() += chunk.len();
                shared.set(shared.get() + 1);
                chunk.iter().sum::<u32>()
            });
        }
        let (total, data) = (&mut total, &data);
        scope.spawn(move |_token| async move {
            tokio::task::yield_now().await;
            *total = data.iter().sum();
            0
        });
        let sums = unwrap_all(scope.join_all().await);
        assert_eq!(sums, [6, 15, 24, 10, 0]);
    } // the scope, and its borrows, end here
    assert_eq!(*counter.borrow(), 10);
    assert_eq!(shared.get(), 4);
    assert_eq!(total, 55);
}

#[tokio::test]
async fn nothing_runs_until_a_join() {
    let polled = Cell::new(0);
    let mut scope = LocalScope::new();
    for _ in 0..3 {
        scope.spawn(|_token| async { polled.set(polled.get() + 1) });
    }
    tokio::task::yield_now().await;
    assert_eq!(polled.get(), 0);
    assert_eq!(scope.len(), 3);
    scope.join_all().await;
    assert_eq!(polled.get(), 3);
    assert!(scope.is_empty());
}

#[tokio::test(start_paused = true)]
async fn tasks_run_concurrently_ping_pong() {
    const ROUNDS: u32 = 1_000;
    let (to_b, mut b_rx) = mpsc::channel::<u32>(1);
    let (to_a, mut a_rx) = mpsc::channel::<u32>(1);
    let log = RefCell::new(Vec::new());
    let log = &log;
    let mut scope = LocalScope::new();
    scope.spawn(move |_token| async move {
        for i in 0..ROUNDS {
            to_b.send(i).await.unwrap();
            assert_eq!(a_rx.recv().await, Some(i + 1));
        }
        log.borrow_mut().push("a");
        ROUNDS
    });
    scope.spawn(move |_token| async move {
        let mut rounds = 0;
        while let Some(i) = b_rx.recv().await {
            to_a.send(i + 1).await.unwrap();
            rounds += 1;
        }
        log.borrow_mut().push("b");
        rounds
    });
    // Neither task can finish without the other: completing at all requires
    // interleaving. (On a paused clock a deadlock would reach `HANG` at once.)
    let results = tokio::time::timeout(HANG, scope.join_all())
        .await
        .expect("the tasks ran concurrently");
    assert_eq!(unwrap_all(results), [ROUNDS, ROUNDS]);
    assert_eq!(*log.borrow(), ["a", "b"]);
}

// ---------------------------------------------------------------- order

/// Task `i` of `n` finishes after `n - i` milliseconds: the last spawned
/// finishes first.
fn reverse_finishers<'env>(n: u64) -> LocalScope<'env, u64> {
    let mut scope = LocalScope::new();
    for i in 0..n {
        scope.spawn(move |_token| async move {
            sleep(Duration::from_millis(n - i)).await;
            i
        });
    }
    scope
}

#[tokio::test(start_paused = true)]
async fn join_all_returns_results_in_spawn_order() {
    let mut scope = reverse_finishers(50);
    let results = unwrap_all(scope.join_all().await);
    assert_eq!(results, (0..50).collect::<Vec<_>>());
    assert!(scope.is_empty());
}

#[tokio::test(start_paused = true)]
async fn join_next_returns_results_in_completion_order() {
    let mut scope = reverse_finishers(50);
    let mut order = Vec::new();
    while let Some(result) = scope.join_next().await {
        order.push(result.unwrap());
        assert_eq!(scope.len(), 50 - order.len());
    }
    assert_eq!(order, (0..50).rev().collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn join_next_with_id_hands_back_the_spawn_ids() {
    let mut scope = LocalScope::new();
    let ids: Vec<TaskId> = (0..5u64)
        .map(|i| {
            scope.spawn(move |_token| async move {
                sleep(Duration::from_millis(5 - i)).await;
                assert!(i != 2, "task two fails");
                i
            })
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let mut seen = Vec::new();
    while let Some((id, result)) = scope.join_next_with_id().await {
        let i = ids.iter().position(|&x| x == id).unwrap() as u64;
        match result {
            Ok(value) => assert_eq!(value, i),
            Err(e) => {
                assert_eq!(i, 2);
                assert!(e.is_panic());
            }
        }
        seen.push(i);
    }
    assert_eq!(seen, [4, 3, 2, 1, 0]);
    // Ids are never reused.
    let next = scope.spawn(|_token| async { 0 });
    assert!(next > ids[4]);
}

#[tokio::test(start_paused = true)]
async fn join_all_after_join_next_returns_the_rest_in_spawn_order() {
    let mut scope = reverse_finishers(10);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 9);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 8);
    let rest = unwrap_all(scope.join_all().await);
    assert_eq!(rest, (0..8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_join_all_loses_no_result() {
    let mut scope = LocalScope::new();
    for ms in [30u64, 10, 20] {
        scope.spawn(move |_token| async move {
            sleep(Duration::from_millis(ms)).await;
            ms
        });
    }
    let interrupted = tokio::time::timeout(Duration::from_millis(25), scope.join_all()).await;
    assert!(interrupted.is_err());
    assert_eq!(scope.len(), 3);
    // What it collected comes first, in completion order.
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 10);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 20);
    assert_eq!(scope.join_next().await.unwrap().unwrap(), 30);
    assert!(scope.join_next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn join_next_in_select_loses_no_result() {
    let mut scope = reverse_finishers(20);
    let mut got = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(700));
    while !scope.is_empty() {
        tokio::select! {
            Some(result) = scope.join_next() => got.push(result.unwrap()),
            _ = tick.tick() => {}
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

// ---------------------------------------------------------------- shutdown

#[tokio::test(start_paused = true)]
async fn shutdown_runs_every_cleanup_once_and_returns_as_soon_as_all_finished() {
    const N: usize = 100;
    let cleanups: Vec<Cell<u8>> = (0..N).map(|_| Cell::new(0)).collect();
    let grace = Duration::from_secs(10);
    let mut scope = LocalScope::new();
    for (i, cleanup) in cleanups.iter().enumerate() {
        scope.spawn(move |token| async move {
            tokio::select! {
                () = token.cancelled() => {
                    sleep(Duration::from_millis(10)).await; // an async cleanup
                    cleanup.set(cleanup.get() + 1);
                }
                () = std::future::pending() => {}
            }
            i
        });
    }
    // The tasks are parked on their tokens.
    assert!(poll_once(pin!(scope.join_next())).await.is_pending());
    let start = Instant::now();
    let results = scope.shutdown(grace).await;
    let elapsed = start.elapsed();
    assert_eq!(unwrap_all(results), (0..N).collect::<Vec<_>>());
    assert!(cleanups.iter().all(|c| c.get() == 1));
    assert!(elapsed < grace);
    assert_eq!(elapsed, Duration::from_millis(10));
    assert!(scope.is_empty());
    assert!(scope.token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_straggler_is_dropped_at_the_end_of_grace_and_not_before() {
    let grace = Duration::from_secs(5);
    let dropped_at = Cell::new(None);
    let cleaned_up = Cell::new(false);
    let (dropped_at, cleaned_up) = (&dropped_at, &cleaned_up);
    let mut scope = LocalScope::new();
    scope.spawn(move |_token| async move {
        let _guard = DropAt(dropped_at);
        std::future::pending::<()>().await; // ignores its token
        "never"
    });
    scope.spawn(move |token| async move {
        token.cancelled().await;
        sleep(Duration::from_secs(1)).await;
        cleaned_up.set(true);
        "cleaned up"
    });
    let start = Instant::now();
    let watcher = async {
        sleep(Duration::from_millis(4_999)).await; // 1ms before the end
        assert!(cleaned_up.get());
        assert_eq!(dropped_at.get(), None, "dropped before the end of grace");
    };
    let (results, ()) = tokio::join!(scope.shutdown(grace), watcher);
    assert_eq!(dropped_at.get(), Some(start + grace));
    assert_eq!(start.elapsed(), grace);
    let err = results[0].as_ref().unwrap_err();
    assert!(err.is_aborted() && !err.is_panic());
    assert_eq!(err.to_string(), "task aborted (scope cancelled: shut down)");
    assert_eq!(err.cancel_reason(), Some(CancelReason::Shutdown));
    assert_eq!(results[1].as_ref().unwrap(), &"cleaned up");
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_shutdown_loses_no_result() {
    let mut scope = LocalScope::new();
    scope.spawn(|token| async move {
        token.cancelled().await;
        sleep(Duration::from_millis(10)).await;
        1
    });
    scope.spawn(|token| async move {
        token.cancelled().await;
        sleep(Duration::from_millis(100)).await;
        2
    });
    let interrupted = tokio::time::timeout(
        Duration::from_millis(50),
        scope.shutdown(Duration::from_secs(5)),
    )
    .await;
    assert!(interrupted.is_err());
    assert_eq!(scope.len(), 2);
    assert!(scope.token().is_cancelled());
    assert_eq!(unwrap_all(scope.join_all().await), [1, 2]);
}

#[test]
fn shutdown_of_a_finished_scope_needs_no_timer() {
    // A runtime without `enable_time`: `shutdown` only needs the timer when
    // tasks are left running.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut scope = LocalScope::new();
        assert!(scope.shutdown(Duration::from_secs(1)).await.is_empty());
        scope.spawn(|_token| async { 7 });
        scope.join_next().await.unwrap().unwrap();
        // The first shutdown cancelled the token, for good.
        scope.spawn(|token| async move { u32::from(token.is_cancelled()) });
        assert_eq!(scope.join_next().await.unwrap().unwrap(), 1);
        assert!(scope.shutdown(Duration::from_secs(1)).await.is_empty());
    });
}

// ---------------------------------------------------------------- policies

#[tokio::test(start_paused = true)]
async fn fail_fast_on_err_cancels_the_siblings_at_once() {
    let cleanups = Cell::new(0);
    let cleanups = &cleanups;
    let mut scope = LocalScope::new().fail_fast();
    for _ in 0..3 {
        scope.spawn(move |token| async move {
            token.cancelled().await;
            sleep(Duration::from_millis(1)).await;
            cleanups.set(cleanups.get() + 1);
            Ok(())
        });
    }
    scope.spawn(|_token| async {
        sleep(Duration::from_millis(10)).await;
        Err("disk full")
    });
    let first = scope.join_next().await.unwrap().unwrap();
    assert_eq!(first, Err("disk full"));
    // Cancelled in the poll that saw the `Err`, before it was handed out.
    assert!(scope.token().is_cancelled());
    let rest = unwrap_all(scope.join_all().await);
    assert_eq!(rest, [Ok(()), Ok(()), Ok(())]);
    assert_eq!(cleanups.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_on_panic_cancels_the_siblings_and_keeps_the_payload() {
    let cleanups = Cell::new(0);
    let cleanups = &cleanups;
    let mut scope = LocalScope::<Result<(), ()>>::new().fail_fast();
    for _ in 0..3 {
        scope.spawn(move |token| async move {
            token.cancelled().await;
            cleanups.set(cleanups.get() + 1);
            Ok(())
        });
    }
    scope.spawn(|_token| async {
        tokio::task::yield_now().await;
        panic!("boom")
    });
    let results = scope.join_all().await;
    assert_eq!(cleanups.get(), 3);
    assert!(scope.token().is_cancelled());
    let mut results = results.into_iter();
    for _ in 0..3 {
        assert_eq!(results.next().unwrap().unwrap(), Ok(()));
    }
    let err = results.next().unwrap().unwrap_err();
    assert!(err.is_panic() && !err.is_aborted());
    assert_eq!(err.to_string(), "task panicked: boom");
    assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "boom");
}

#[tokio::test]
async fn without_fail_fast_an_err_or_a_panic_cancels_nothing() {
    let mut scope = LocalScope::new();
    scope.spawn(|_token| async { Err::<bool, _>("no") });
    scope.spawn(|_token| async { panic!("bug") });
    scope.spawn(|token| async move {
        tokio::task::yield_now().await;
        Ok(token.is_cancelled())
    });
    let results = scope.join_all().await;
    assert_eq!(results[0].as_ref().unwrap(), &Err("no"));
    assert!(results[1].as_ref().unwrap_err().is_panic());
    assert_eq!(results[2].as_ref().unwrap(), &Ok(false));
    assert!(!scope.token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn first_ok_cancels_the_losers() {
    let mut scope = LocalScope::new().first_ok();
    scope.spawn(|_token| async { Err("refused") });
    for ms in [300u64, 100, 200] {
        scope.spawn(move |token| async move {
            match token
                .run_until_cancelled(sleep(Duration::from_millis(ms)))
                .await
            {
                Some(()) => Ok(ms),
                None => Err("cancelled"),
            }
        });
    }
    let start = Instant::now();
    let results = unwrap_all(scope.join_all().await);
    assert_eq!(
        results,
        [Err("refused"), Err("cancelled"), Ok(100), Err("cancelled")]
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn a_task_cancelling_its_own_token_cancels_neither_scope_nor_siblings() {
    let mut tokens = Vec::new();
    let mut scope = LocalScope::new();
    scope.spawn(|token| {
        tokens.push(token.clone());
        async move { token.cancel() }
    });
    scope.spawn(|token| {
        tokens.push(token.clone());
        async move { tokio::task::yield_now().await }
    });
    scope.join_all().await;
    assert!(tokens[0].is_cancelled());
    assert!(!tokens[1].is_cancelled());
    assert!(!scope.token().is_cancelled());
    scope.cancel();
    assert!(tokens[1].is_cancelled());
}

#[tokio::test]
async fn child_of_follows_its_parent_and_never_cancels_it() {
    let parent = CancellationToken::new();
    let mut scope = LocalScope::child_of(&parent);
    scope.spawn(|token| async move {
        token.cancelled().await;
        "saw the parent"
    });
    assert!(poll_once(pin!(scope.join_next())).await.is_pending());
    parent.cancel();
    assert!(scope.token().is_cancelled());
    assert_eq!(scope.join_next().await.unwrap().unwrap(), "saw the parent");

    let parent = CancellationToken::new();
    let scope = LocalScope::<()>::child_of(&parent);
    scope.cancel();
    assert!(scope.token().is_cancelled());
    assert!(!parent.is_cancelled());
    drop(scope);
    assert!(!parent.is_cancelled());
}

// ---------------------------------------------------------------- drop

#[tokio::test]
async fn dropping_the_scope_drops_every_future_and_cancels_the_token() {
    let dropped = Cell::new(0);
    let cleanups = Cell::new(0);
    let unpolled = Cell::new(0);
    let (dropped, cleanups) = (&dropped, &cleanups);
    let mut scope = LocalScope::new();
    for _ in 0..10 {
        scope.spawn(move |token| async move {
            let _guard = OnDrop(dropped);
            token.cancelled().await;
            cleanups.set(cleanups.get() + 1);
        });
    }
    // Poll them once: they are parked on their tokens, guards built.
    assert!(poll_once(pin!(scope.join_next())).await.is_pending());
    // And five never polled, holding a guard from the start.
    for _ in 0..5 {
        let guard = OnDrop(&unpolled);
        scope.spawn(move |_token| async move {
            let _guard = guard;
        });
    }
    let token = scope.token().clone();
    assert_eq!((dropped.get(), unpolled.get()), (0, 0));
    drop(scope);
    assert!(token.is_cancelled());
    assert_eq!(dropped.get(), 10);
    assert_eq!(unpolled.get(), 5);
    assert_eq!(cleanups.get(), 0, "no cleanup runs on drop");
}

// ---------------------------------------------------------------- scale

#[tokio::test]
async fn ten_thousand_tasks_joined_in_spawn_order() {
    const N: usize = 10_000;
    let inputs: Vec<usize> = (0..N).collect();
    let running = Cell::new(0usize);
    let peak = Cell::new(0usize);
    let (running, peak) = (&running, &peak);
    let mut scope = LocalScope::new();
    for x in &inputs {
        scope.spawn(move |_token| async move {
            running.set(running.get() + 1);
            peak.set(peak.get().max(running.get()));
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            running.set(running.get() - 1);
            x * 2
        });
    }
    assert_eq!(scope.len(), N);
    let results = unwrap_all(scope.join_all().await);
    assert_eq!(results, inputs.iter().map(|x| x * 2).collect::<Vec<_>>());
    // They were all in flight at once: concurrency, on one thread.
    assert_eq!(peak.get(), N);
    assert!(scope.is_empty());
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_tasks_shut_down_with_their_cleanups() {
    const N: usize = 10_000;
    let cleanups = Cell::new(0usize);
    let cleanups = &cleanups;
    let mut scope = LocalScope::new();
    for i in 0..N {
        scope.spawn(move |token| async move {
            token.cancelled().await;
            sleep(Duration::from_millis(1)).await;
            cleanups.set(cleanups.get() + 1);
            i
        });
    }
    assert!(poll_once(pin!(scope.join_next())).await.is_pending());
    let results = scope.shutdown(Duration::from_secs(1)).await;
    assert_eq!(unwrap_all(results), (0..N).collect::<Vec<_>>());
    assert_eq!(cleanups.get(), N);
}

#[tokio::test(start_paused = true)]
async fn a_long_lived_task_and_many_short_ones_joined_one_by_one() {
    const N: u64 = 10_000;
    let mut scope = LocalScope::new();
    let long = scope.spawn(|token| async move {
        token.cancelled().await;
        u64::MAX
    });
    let mut last = long;
    for round in 0..N / 100 {
        for i in 0..100 {
            let id = scope.spawn(move |_token| async move {
                sleep(Duration::from_micros(100 - i)).await;
                round * 100 + i
            });
            assert!(id > last);
            last = id;
        }
        let mut got = Vec::new();
        for _ in 0..100 {
            let (id, value) = scope.join_next_with_id().await.unwrap();
            assert_ne!(id, long);
            got.push(value.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (round * 100..round * 100 + 100).collect::<Vec<_>>());
        assert_eq!(scope.len(), 1);
    }
    scope.cancel();
    let (id, value) = scope.join_next_with_id().await.unwrap();
    assert_eq!((id, value.unwrap()), (long, u64::MAX));
    assert!(scope.join_next().await.is_none());
}

// ---------------------------------------------------------------- polling

/// Pending once, waking itself: a yield that needs no runtime.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Pending forever, waking itself every time: a busy task.
struct Busy;

impl Future for Busy {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: no Tokio runtime.
fn block_on<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(value) = fut.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

#[test]
fn joins_run_on_any_executor_and_take_wake_ups_from_other_threads() {
    let log = RefCell::new(Vec::new());
    let log = &log;
    let (tx, rx) = oneshot::channel::<&str>();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        tx.send("from another thread").unwrap();
    });
    let results = block_on(async {
        let mut scope = LocalScope::new();
        scope.spawn(move |_token| async move {
            let msg = rx.await.unwrap();
            log.borrow_mut().push(msg);
            1
        });
        for i in 2..5 {
            scope.spawn(move |_token| async move {
                YieldOnce(false).await;
                log.borrow_mut().push("yielded");
                i
            });
        }
        scope.join_all().await
    });
    sender.join().unwrap();
    assert_eq!(unwrap_all(results), [1, 2, 3, 4]);
    assert_eq!(log.borrow().last(), Some(&"from another thread"));
}

#[tokio::test]
async fn a_busy_task_starves_neither_its_siblings_nor_the_runtime() {
    let mut scope = LocalScope::new();
    scope.spawn(|_token| async {
        Busy.await;
        "never"
    });
    // Needs the runtime's timer: the join must yield to the runtime.
    scope.spawn(|_token| async {
        sleep(Duration::from_millis(1)).await;
        "slept"
    });
    let next = tokio::time::timeout(HANG, scope.join_next())
        .await
        .expect("the join yields to the runtime");
    assert_eq!(next.unwrap().unwrap(), "slept");
    let results = tokio::time::timeout(HANG, scope.shutdown(Duration::from_millis(5)))
        .await
        .expect("the grace period ends");
    assert!(results[0].as_ref().unwrap_err().is_aborted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_woken_from_other_runtime_threads() {
    const N: usize = 50;
    let mut senders = Vec::new();
    let mut scope = LocalScope::new();
    for i in 0..N {
        let (tx, rx) = oneshot::channel();
        senders.push(tx);
        scope.spawn(move |_token| async move { rx.await.unwrap() + i });
    }
    let feeder = tokio::spawn(async move {
        for tx in senders {
            tokio::task::yield_now().await;
            tx.send(1000).unwrap();
        }
    });
    let results = tokio::time::timeout(HANG, scope.join_all())
        .await
        .expect("every wake-up reached the scope");
    feeder.await.unwrap();
    assert_eq!(unwrap_all(results), (1000..1000 + N).collect::<Vec<_>>());
}

#[tokio::test]
async fn local_scope_debug_shows_len_and_state() {
    let mut scope = LocalScope::<Result<(), ()>>::new().fail_fast();
    scope.spawn(|_token| async { Ok(()) });
    scope.cancel();
    assert_eq!(
        format!("{scope:?}"),
        "LocalScope { len: 1, cancelled: true, fail_fast: true, .. }"
    );
}

/// The grace of `shutdown` holds even when the tasks never let the budget
/// rest: tasks that ignore their token and spin on `consume_budget` are
/// aborted once it passes (a hand-polled sleep was starved by them, and
/// `shutdown` never returned).
#[tokio::test]
async fn shutdown_ends_at_its_grace_when_tasks_use_up_the_budget() {
    let mut scope = LocalScope::new();
    for _ in 0..3 {
        scope.spawn(|_token| async {
            loop {
                tokio::task::consume_budget().await;
            }
        });
    }
    let shutdown = scope.shutdown(Duration::from_millis(50));
    let results = tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown returned at its grace");
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(TaskError::is_aborted))
    );
}
