//! Per-thread state: correct again after a caught panic, `block_on` in a `Drop`, and what a nested call said while it waited does not outlive it (`block_on` inside `block_in_place`, a `select!` dropping the loser).

use super::*;

#[cancellable]
async fn panics_when_polled() {
    panic!("nested boom");
}

/// Catches the panic of one nested call, then waits in another.
#[cancellable]
async fn catches_a_panic(log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let caught = AssertUnwindSafe(panics_when_polled(token.clone()))
        .catch_unwind()
        .await;
    assert!(caught.is_err());
    let _ = parked_with_a_turn(token.clone(), log.clone(), "sibling cleanup").await;
}

#[tokio::test]
async fn a_panic_caught_inside_the_body_leaves_a_siblings_cleanup_alone() {
    let log = Log::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(catches_a_panic(token.clone(), log.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["sibling cleanup", "caller cleanup"]);
}

/// Runs a `#[cancellable]` fn to completion with `block_on` when dropped.
struct BlocksOnDrop(Arc<AtomicUsize>);

impl Drop for BlocksOnDrop {
    fn drop(&mut self) {
        let r = futures::executor::block_on(answer_now(CancellationToken::new()));
        assert_eq!(r, Ok(1));
        self.0.fetch_add(1, SeqCst);
    }
}

#[cancellable]
async fn answer_now() -> u32 {
    1
}

#[cancellable]
async fn holds_a_blocking_drop(dropped: Arc<AtomicUsize>, log: Log) {
    let _blocks = BlocksOnDrop(dropped);
    let _ = parked_with_a_turn(token.clone(), log, "nested").await;
}

#[test]
fn block_on_in_a_drop_inside_a_cancelled_body_does_not_hang() {
    let dropped = on_watched_thread(|| {
        current_thread(false).block_on(async {
            let dropped = Arc::new(AtomicUsize::new(0));
            let token = CancellationToken::new();
            let mut call = Box::pin(holds_a_blocking_drop(
                token.clone(),
                dropped.clone(),
                Log::default(),
            ));
            assert!(poll_once(call.as_mut()).is_pending());
            token.cancel();
            assert_eq!(call.await, Err(Cancelled::new()));
            dropped.load(SeqCst)
        })
    });
    assert_eq!(dropped, 1);
}

#[cancellable]
async fn cleanup_panics_after_a_turn() {
    on_cancel! {
        yield_now().await;
        panic!("cleanup bomb");
    }
    std::future::pending::<()>().await;
}

/// Catches the panic of a nested call's cleanup, keeping the (spent) future
/// around, then waits.
#[cancellable]
async fn keeps_a_panicked_call(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let mut call = Box::pin(cleanup_panics_after_a_turn(token.child_token()));
    let caught = AssertUnwindSafe(call.as_mut()).catch_unwind().await;
    assert!(caught.is_err());
    log.push("caught");
    std::future::pending::<()>().await;
}

/// "A panic caught inside a body leaves nothing behind": the cancelled
/// caller still ends once its nested call is done (here: panicked).
#[test]
fn a_caught_panic_of_a_nested_cleanup_does_not_keep_the_caller_waiting() {
    on_watched_thread(|| {
        current_thread(true).block_on(async {
            let log = Log::default();
            let token = CancellationToken::new();
            let mut call = Box::pin(keeps_a_panicked_call(token.clone(), log.clone()));
            assert!(poll_once(call.as_mut()).is_pending());
            token.cancel();
            let r = tokio::time::timeout(Duration::from_secs(3600), call).await;
            assert_eq!(r.expect("the caller never ended"), Err(Cancelled::new()));
            assert_eq!(log.events(), ["caught", "outer cleanup"]);
        });
    });
}

/// Its cleanup takes a turn, so it waits (and says so) before it returns.
#[cancellable]
async fn cleans_up_in_a_turn(log: Log) {
    on_cancel! {
        yield_now().await;
        log.push("blocking call cleanup");
    }
    std::future::pending::<()>().await;
}

/// Waits in a nested call; once cancelled, runs a second nested call to its
/// end inside `block_in_place`, then goes on to two `.await`s that wait.
#[cancellable]
async fn blocks_in_place_once_cancelled(started: oneshot::Sender<()>, log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let _ = parked_after(token.child_token(), started, log.clone()).await;
    let (child, in_place) = (token.child_token(), log.clone());
    let r = tokio::task::block_in_place(move || {
        tokio::runtime::Handle::current().block_on(cleans_up_in_a_turn(child, in_place))
    });
    assert!(r.is_err());
    log.push("after the blocking call");
    yield_now().await;
    log.push("past its next await");
    yield_now().await;
    log.push("beyond");
}

/// `parked`, saying when it waits.
#[cancellable]
async fn parked_after(started: oneshot::Sender<()>, log: Log) {
    on_cancel! { log.push("nested cleanup"); }
    let _ = started.send(());
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_call_ended_inside_block_in_place_is_dropped_at_its_next_wait() {
    let log = Log::default();
    let token = CancellationToken::new();
    let (started, running) = oneshot::channel();
    let task = tokio::spawn(blocks_in_place_once_cancelled(
        token.clone(),
        started,
        log.clone(),
    ));
    running.await.unwrap();
    token.cancel();
    assert_eq!(
        tokio::time::timeout(HANG, task).await.unwrap().unwrap(),
        Err(Cancelled::new())
    );
    assert_eq!(
        log.events(),
        [
            "nested cleanup",
            "blocking call cleanup",
            "after the blocking call",
            "caller cleanup"
        ]
    );
}

/// Once cancelled, a `select!` drops a shield that it had polled, in the
/// same poll, for a nested call that returns `Err(Cancelled)`.
#[cancellable]
async fn drops_a_shield_it_polled(started: oneshot::Sender<()>, log: Log) {
    on_cancel! { log.push("caller cleanup"); }
    let mut started = Some(started);
    let mut nested = std::pin::pin!(parked_after(
        token.child_token(),
        oneshot::channel().0,
        log.clone()
    ));
    loop {
        tokio::select! {
            biased;
            () = shield(std::future::pending::<()>()) => unreachable!(),
            r = &mut nested => {
                assert!(r.is_err());
                break;
            }
            () = yield_now(), if started.is_some() => {
                let _ = started.take().unwrap().send(());
            }
        }
    }
    log.push("after the nested call");
    yield_now().await;
    log.push("past its next await");
}

#[tokio::test]
async fn a_shield_dropped_in_the_poll_that_polled_it_defers_nothing() {
    let log = Log::default();
    let token = CancellationToken::new();
    let (started, running) = oneshot::channel();
    let call = drops_a_shield_it_polled(token.clone(), started, log.clone());
    let canceller = async {
        running.await.unwrap();
        token.cancel();
    };
    let (r, ()) = tokio::join!(call, canceller);
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        ["nested cleanup", "after the nested call", "caller cleanup"]
    );
}
