//! Behaviour of `#[cancellable]`, as a user of the facade crate observes it.
//!
//! Every test asserts on events (a shared log, counters, channels), never on
//! wall-clock time; timeouts run with Tokio's paused clock.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::{Guard, Log, poll_once};

use cancel_scope::{CancellationToken, Cancelled, cancellable, on_cancel};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A resource whose release is async and consumes it.
struct Transaction {
    log: Log,
}

impl Transaction {
    fn begin(log: &Log) -> Self {
        log.push("begin");
        Transaction { log: log.clone() }
    }

    fn write(&mut self) {
        self.log.push("write");
    }

    async fn commit(self) {
        tokio::task::yield_now().await;
        self.log.push("commit");
    }

    async fn rollback(self) {
        tokio::task::yield_now().await;
        self.log.push("rollback");
    }
}

fn cancelled_token() -> CancellationToken {
    let token = CancellationToken::new();
    token.cancel();
    token
}

async fn forever() {
    std::future::pending::<()>().await;
}

// ---------------------------------------------------------------------------
// Token injection
// ---------------------------------------------------------------------------

#[cancellable]
async fn returns_its_token(x: u32) -> (u32, CancellationToken) {
    (x, token.clone())
}

#[tokio::test]
async fn token_is_injected_as_the_first_parameter() {
    let caller = CancellationToken::new();
    let (x, seen) = returns_its_token(caller.clone(), 7).await.unwrap();
    assert_eq!(x, 7);
    assert!(!caller.is_cancelled());
    // The body's `token` is the caller's token itself, not a copy or child.
    seen.cancel();
    assert!(caller.is_cancelled());
}

struct Adder {
    base: u32,
}

impl Adder {
    #[cancellable]
    async fn add(&self, x: u32) -> (u32, CancellationToken) {
        (self.base + x, token.clone())
    }
}

#[tokio::test]
async fn token_is_injected_after_the_receiver() {
    let caller = CancellationToken::new();
    let adder = Adder { base: 40 };
    let (sum, seen) = adder.add(caller.clone(), 2).await.unwrap();
    assert_eq!(sum, 42);
    seen.cancel();
    assert!(caller.is_cancelled());
}

// `token` is an ordinary parameter here: the injected one is `cancel`.
#[cancellable(token = cancel)]
async fn renamed_token(token: &'static str) -> (&'static str, CancellationToken) {
    (token, cancel.clone())
}

#[tokio::test]
async fn token_argument_renames_the_injected_parameter() {
    let caller = CancellationToken::new();
    let (word, seen) = renamed_token(caller.clone(), "hello").await.unwrap();
    assert_eq!(word, "hello");
    seen.cancel();
    assert!(caller.is_cancelled());

    assert_eq!(
        renamed_token(cancelled_token(), "hello").await,
        Err(Cancelled::new())
    );
}

#[cancellable]
async fn declared_owned_token(x: u32, #[token] t: CancellationToken) -> (u32, CancellationToken) {
    (x, t.clone())
}

#[tokio::test]
async fn token_marked_parameter_owned_is_used_and_nothing_is_injected() {
    let caller = CancellationToken::new();
    // Two arguments, in the declared order: nothing was injected.
    let (x, seen) = declared_owned_token(3, caller.clone()).await.unwrap();
    assert_eq!(x, 3);
    seen.cancel();
    assert!(caller.is_cancelled());
    // And it is the token the body is raced against.
    assert_eq!(
        declared_owned_token(3, cancelled_token())
            .await
            .unwrap_err(),
        Cancelled::new()
    );
}

#[cancellable]
async fn declared_borrowed_token(
    label: &'static str,
    #[token] t: &CancellationToken,
) -> (&'static str, CancellationToken) {
    (label, t.clone())
}

#[tokio::test]
async fn token_marked_parameter_borrowed_is_used_and_nothing_is_injected() {
    let caller = CancellationToken::new();
    let (label, seen) = declared_borrowed_token("a", &caller).await.unwrap();
    assert_eq!(label, "a");
    seen.cancel();
    assert!(caller.is_cancelled());
    assert_eq!(
        declared_borrowed_token("a", &caller).await.unwrap_err(),
        Cancelled::new()
    );
}

// ---------------------------------------------------------------------------
// Return type
// ---------------------------------------------------------------------------

#[cancellable]
async fn double(x: u32) -> u32 {
    x * 2
}

#[tokio::test]
async fn return_type_t_becomes_result_t_cancelled() {
    let ok: Result<u32, Cancelled> = double(CancellationToken::new(), 21).await;
    assert_eq!(ok, Ok(42));
    let cancelled: Result<u32, Cancelled> = double(cancelled_token(), 21).await;
    assert_eq!(cancelled, Err(Cancelled::new()));
}

#[cancellable(flatten)]
async fn io_work(outcome: Option<io::Result<u32>>) -> io::Result<u32> {
    let value = match outcome {
        Some(result) => result?,
        None => {
            forever().await;
            0
        }
    };
    Ok(value + 1)
}

#[tokio::test]
async fn flatten_io_result_passes_the_bodys_ok_and_err_through() {
    let token = CancellationToken::new();
    let ok: io::Result<u32> = io_work(token.clone(), Some(Ok(1))).await;
    assert_eq!(ok.unwrap(), 2);
    let err = io_work(token.clone(), Some(Err(io::Error::other("own"))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_eq!(err.to_string(), "own");
    assert!(err.get_ref().unwrap().downcast_ref::<Cancelled>().is_none());
}

#[tokio::test]
async fn flatten_io_result_returns_io_error_from_cancelled_on_cancel() {
    let token = CancellationToken::new();
    let mut fut = std::pin::pin!(io_work(token.clone(), None));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    let err = fut.await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_eq!(
        err.get_ref().unwrap().downcast_ref::<Cancelled>(),
        Some(&Cancelled::new())
    );
}

#[derive(Debug, PartialEq)]
enum MyError {
    Own(&'static str),
    Cancelled(Cancelled),
}

impl From<Cancelled> for MyError {
    fn from(c: Cancelled) -> Self {
        MyError::Cancelled(c)
    }
}

#[cancellable(flatten)]
async fn my_work(log: Log, outcome: Option<Result<u32, MyError>>) -> Result<u32, MyError> {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    let value = match outcome {
        Some(result) => result?,
        None => {
            forever().await;
            0
        }
    };
    Ok(value + 1)
}

#[tokio::test]
async fn flatten_custom_error_passes_the_bodys_ok_and_err_through() {
    let token = CancellationToken::new();
    let log = Log::default();
    assert_eq!(
        my_work(token.clone(), log.clone(), Some(Ok(1))).await,
        Ok(2)
    );
    assert_eq!(
        my_work(token.clone(), log.clone(), Some(Err(MyError::Own("bad")))).await,
        Err(MyError::Own("bad"))
    );
    assert_eq!(log.events(), ["setup", "setup"]);
}

#[tokio::test]
async fn flatten_custom_error_returns_error_from_cancelled_on_cancel() {
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = std::pin::pin!(my_work(token.clone(), log.clone(), None));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    assert_eq!(fut.await, Err(MyError::Cancelled(Cancelled::new())));
    assert_eq!(log.events(), ["setup", "cleanup"]);
}

// ---------------------------------------------------------------------------
// Setup, cleanup, body
// ---------------------------------------------------------------------------

#[cancellable]
async fn slow_setup(log: Log, entered: oneshot::Sender<()>, proceed: oneshot::Receiver<()>) -> u32 {
    log.push("setup start");
    entered.send(()).unwrap();
    proceed.await.unwrap();
    log.push("setup end");
    on_cancel! { log.push("cleanup"); }
    log.push("body");
    1
}

#[tokio::test]
async fn setup_is_not_raced_and_completes_when_cancelled_meanwhile() {
    let token = CancellationToken::new();
    let log = Log::default();
    let (entered_tx, entered_rx) = oneshot::channel();
    let (proceed_tx, proceed_rx) = oneshot::channel();
    let (result, ()) = tokio::join!(
        slow_setup(token.clone(), log.clone(), entered_tx, proceed_rx),
        async {
            entered_rx.await.unwrap();
            // The fn is parked inside its setup: cancel, then let it go on.
            token.cancel();
            proceed_tx.send(()).unwrap();
        }
    );
    assert_eq!(result, Err(Cancelled::new()));
    assert_eq!(log.events(), ["setup start", "setup end", "cleanup"]);
}

#[cancellable]
async fn body_waits_forever(log: Log, started: oneshot::Sender<()>) -> u32 {
    on_cancel! { log.push("cleanup"); }
    log.push("body start");
    started.send(()).unwrap();
    forever().await;
    log.push("body end");
    1
}

#[tokio::test]
async fn body_is_raced_against_the_token() {
    let token = CancellationToken::new();
    let log = Log::default();
    let (started_tx, started_rx) = oneshot::channel();
    let (result, ()) = tokio::join!(
        body_waits_forever(token.clone(), log.clone(), started_tx),
        async {
            started_rx.await.unwrap();
            token.cancel();
        }
    );
    assert_eq!(result, Err(Cancelled::new()));
    assert!(!result.unwrap_err().is_timeout());
    assert_eq!(log.events(), ["body start", "cleanup"]);
}

#[cancellable]
async fn flagged_with_setup(log: Log, polled: Arc<AtomicBool>) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    polled.store(true, SeqCst);
    log.push("body");
    1
}

#[cancellable]
async fn flagged_without_setup(log: Log, polled: Arc<AtomicBool>) -> u32 {
    on_cancel! { log.push("cleanup"); }
    polled.store(true, SeqCst);
    log.push("body");
    1
}

#[cancellable]
async fn flagged_without_cleanup(polled: Arc<AtomicBool>) -> u32 {
    polled.store(true, SeqCst);
    1
}

#[tokio::test]
async fn already_cancelled_token_never_polls_the_body_but_runs_the_cleanup() {
    let log = Log::default();
    let polled = Arc::new(AtomicBool::new(false));
    let result = flagged_with_setup(cancelled_token(), log.clone(), polled.clone()).await;
    assert_eq!(result, Err(Cancelled::new()));
    assert!(!polled.load(SeqCst), "the body was polled");
    assert_eq!(log.events(), ["setup", "cleanup"]);

    let log = Log::default();
    let result = flagged_without_setup(cancelled_token(), log.clone(), polled.clone()).await;
    assert_eq!(result, Err(Cancelled::new()));
    assert!(!polled.load(SeqCst), "the body was polled");
    assert_eq!(log.events(), ["cleanup"]);

    let result = flagged_without_cleanup(cancelled_token(), polled.clone()).await;
    assert_eq!(result, Err(Cancelled::new()));
    assert!(!polled.load(SeqCst), "the body was polled");
}

#[cancellable]
async fn waits_for_value(log: Log, value: oneshot::Receiver<u32>) -> u32 {
    on_cancel! { log.push("cleanup"); }
    log.push("body start");
    let v = value.await.unwrap();
    log.push("body got value");
    v
}

#[tokio::test]
async fn cancellation_wins_a_tie_with_a_body_that_became_ready() {
    let token = CancellationToken::new();
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let mut fut = std::pin::pin!(waits_for_value(token.clone(), log.clone(), rx));
    assert!(poll_once(fut.as_mut()).is_pending());
    // Before the next poll, both the body's value and the cancellation land.
    tx.send(5).unwrap();
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["body start", "cleanup"]);
}

#[cancellable]
async fn guarded_body(log: Log, started: oneshot::Sender<()>) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    let _guard = Guard(log.clone(), "body dropped");
    started.send(()).unwrap();
    forever().await;
    1
}

#[tokio::test]
async fn body_future_is_dropped_before_the_cleanup_starts() {
    let token = CancellationToken::new();
    let log = Log::default();
    let (started_tx, started_rx) = oneshot::channel();
    let (result, ()) = tokio::join!(
        guarded_body(token.clone(), log.clone(), started_tx),
        async {
            started_rx.await.unwrap();
            token.cancel();
        }
    );
    assert_eq!(result, Err(Cancelled::new()));
    assert_eq!(log.events(), ["setup", "body dropped", "cleanup"]);
}

#[cancellable]
async fn awaiting_cleanup(
    log: Log,
    runs: Arc<AtomicUsize>,
    out: mpsc::Sender<&'static str>,
    started: oneshot::Sender<()>,
) {
    on_cancel! {
        runs.fetch_add(1, SeqCst);
        tokio::task::yield_now().await;
        // The channel is full: this waits until the test drains it.
        out.send("from cleanup").await.unwrap();
        tokio::task::yield_now().await;
        log.push("cleanup end");
    }
    started.send(()).unwrap();
    forever().await;
}

#[tokio::test]
async fn cleanup_may_await_and_runs_to_completion_exactly_once() {
    let token = CancellationToken::new();
    let log = Log::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let (out_tx, mut out_rx) = mpsc::channel(1);
    out_tx.send("prefill").await.unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let fut = awaiting_cleanup(token.clone(), log.clone(), runs.clone(), out_tx, started_tx);
    let (result, first) = tokio::join!(fut, async {
        started_rx.await.unwrap();
        token.cancel();
        out_rx.recv().await
    });
    assert_eq!(first, Some("prefill"));
    assert_eq!(result, Err(Cancelled::new()));
    assert_eq!(log.events(), ["cleanup end"]);
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(out_rx.recv().await, Some("from cleanup"));
    // The sender went away with the finished fn: nothing else was sent.
    assert_eq!(out_rx.recv().await, None);
}

#[cancellable]
async fn buffered(out: &mut Vec<u32>) {
    let mut pending = Vec::new();
    on_cancel! {
        pending.push(99);
        out.append(&mut pending);
    }
    pending.push(1);
    pending.push(2);
    forever().await;
}

#[tokio::test]
async fn cleanup_uses_setup_locals_mutably_after_the_body_changed_them() {
    let token = CancellationToken::new();
    let mut out = Vec::new();
    {
        let mut fut = std::pin::pin!(buffered(token.clone(), &mut out));
        assert!(poll_once(fut.as_mut()).is_pending());
        token.cancel();
        assert_eq!(fut.await, Err(Cancelled::new()));
    }
    assert_eq!(out, [1, 2, 99]);
}

#[cancellable]
async fn consumes_setup_local(log: Log) {
    let mut tx = Transaction::begin(&log);
    on_cancel! { tx.rollback().await; }
    tx.write();
    forever().await;
}

#[tokio::test]
async fn cleanup_consumes_a_setup_local() {
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = std::pin::pin!(consumes_setup_local(token.clone(), log.clone()));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["begin", "write", "rollback"]);
}

#[cancellable]
async fn consumes_parameter(mut conn: Transaction) {
    on_cancel! { conn.rollback().await; }
    conn.write();
    forever().await;
}

#[tokio::test]
async fn cleanup_consumes_a_parameter() {
    let token = CancellationToken::new();
    let log = Log::default();
    let conn = Transaction::begin(&log);
    let mut fut = std::pin::pin!(consumes_parameter(token.clone(), conn));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["begin", "write", "rollback"]);
}

#[cancellable]
async fn completes_with_setup(log: Log) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    tokio::task::yield_now().await;
    log.push("body");
    5
}

#[cancellable]
async fn completes_without_setup(log: Log) -> u32 {
    on_cancel! { log.push("cleanup"); }
    tokio::task::yield_now().await;
    log.push("body");
    6
}

#[tokio::test]
async fn completed_fn_returns_ok_and_does_not_run_the_cleanup() {
    let token = CancellationToken::new();
    let log = Log::default();
    assert_eq!(
        completes_with_setup(token.clone(), log.clone()).await,
        Ok(5)
    );
    assert_eq!(
        completes_without_setup(token.clone(), log.clone()).await,
        Ok(6)
    );
    // Cancelling afterwards changes nothing: the fns are done.
    token.cancel();
    assert_eq!(log.events(), ["setup", "body", "body"]);
}

#[derive(Debug, PartialEq)]
struct Payload(u32);

#[cancellable]
async fn panics_in_body(log: Log) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    tokio::task::yield_now().await;
    std::panic::panic_any(Payload(42));
}

#[tokio::test]
async fn panic_in_the_body_propagates_unchanged_and_skips_the_cleanup() {
    let token = CancellationToken::new();
    let log = Log::default();
    let err = tokio::spawn(panics_in_body(token.clone(), log.clone()))
        .await
        .unwrap_err();
    assert!(err.is_panic());
    let payload = err.into_panic().downcast::<Payload>().unwrap();
    assert_eq!(*payload, Payload(42));
    assert!(!token.is_cancelled());
    assert_eq!(log.events(), ["setup"]);
}

// ---------------------------------------------------------------------------
// The idiom for a resource both body and cleanup need
// ---------------------------------------------------------------------------

#[cancellable]
async fn transfer(log: Log, go: oneshot::Receiver<()>) -> &'static str {
    let mut tx = Some(Transaction::begin(&log));
    on_cancel! {
        if let Some(tx) = tx.take() {
            tx.rollback().await;
        }
    }
    if let Some(tx) = tx.as_mut() {
        tx.write();
    }
    go.await.unwrap();
    if let Some(tx) = tx.take() {
        tx.commit().await;
    }
    "done"
}

#[tokio::test]
async fn option_take_idiom_commits_when_the_body_completes() {
    let log = Log::default();
    let (go_tx, go_rx) = oneshot::channel();
    go_tx.send(()).unwrap();
    assert_eq!(
        transfer(CancellationToken::new(), log.clone(), go_rx).await,
        Ok("done")
    );
    assert_eq!(log.events(), ["begin", "write", "commit"]);
}

#[tokio::test]
async fn option_take_idiom_rolls_back_when_cancelled() {
    let token = CancellationToken::new();
    let log = Log::default();
    let (_go_tx, go_rx) = oneshot::channel();
    let mut fut = std::pin::pin!(transfer(token.clone(), log.clone(), go_rx));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["begin", "write", "rollback"]);
}

// ---------------------------------------------------------------------------
// `return` and `?`
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct OpenError(&'static str);

struct File {
    log: Log,
}

impl File {
    fn write(&mut self) {
        self.log.push("write");
    }

    async fn close(self) {
        tokio::task::yield_now().await;
        self.log.push("close");
    }
}

fn open(log: &Log, ok: bool) -> Result<File, OpenError> {
    if ok {
        log.push("open");
        Ok(File { log: log.clone() })
    } else {
        log.push("open failed");
        Err(OpenError("no such file"))
    }
}

#[cancellable]
async fn fallible_setup(log: Log, ok: bool, early: bool) -> Result<u32, OpenError> {
    if early {
        return Ok(7);
    }
    let mut f = open(&log, ok)?;
    on_cancel! { f.close().await; }
    f.write();
    forever().await;
    Ok(1)
}

#[tokio::test]
async fn return_in_the_setup_gives_ok_of_the_early_value() {
    let log = Log::default();
    assert_eq!(
        fallible_setup(CancellationToken::new(), log.clone(), true, true).await,
        Ok(Ok(7))
    );
    // The setup is not raced: it returns before the cancellation is looked at,
    // and the cleanup (which pairs with a completed setup) does not run.
    assert_eq!(
        fallible_setup(cancelled_token(), log.clone(), true, true).await,
        Ok(Ok(7))
    );
    assert!(log.events().is_empty());
}

#[tokio::test]
async fn question_mark_in_the_setup_gives_ok_of_the_error() {
    let log = Log::default();
    assert_eq!(
        fallible_setup(CancellationToken::new(), log.clone(), false, false).await,
        Ok(Err(OpenError("no such file")))
    );
    assert_eq!(log.events(), ["open failed"]);
}

#[tokio::test]
async fn fallible_setup_then_cancel_runs_the_cleanup_with_the_setup_local() {
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = std::pin::pin!(fallible_setup(token.clone(), log.clone(), true, false));
    assert!(poll_once(fut.as_mut()).is_pending());
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    assert_eq!(log.events(), ["open", "write", "close"]);
}

#[cancellable]
async fn body_exits_with_setup(
    log: Log,
    input: Result<u32, OpenError>,
    early: bool,
) -> Result<u32, OpenError> {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    tokio::task::yield_now().await;
    if early {
        return Ok(100);
    }
    let v = input?;
    Ok(v + 1)
}

#[cancellable]
async fn body_exits_without_setup(
    log: Log,
    input: Result<u32, OpenError>,
    early: bool,
) -> Result<u32, OpenError> {
    on_cancel! { log.push("cleanup"); }
    tokio::task::yield_now().await;
    if early {
        return Ok(100);
    }
    let v = input?;
    Ok(v + 1)
}

#[cancellable]
async fn body_exits_without_cleanup(
    input: Result<u32, OpenError>,
    early: bool,
) -> Result<u32, OpenError> {
    tokio::task::yield_now().await;
    if early {
        return Ok(100);
    }
    let v = input?;
    Ok(v + 1)
}

#[tokio::test]
async fn return_in_the_body_gives_ok_of_the_early_value() {
    let t = CancellationToken::new();
    let log = Log::default();
    assert_eq!(
        body_exits_with_setup(t.clone(), log.clone(), Ok(1), true).await,
        Ok(Ok(100))
    );
    assert_eq!(
        body_exits_without_setup(t.clone(), log.clone(), Ok(1), true).await,
        Ok(Ok(100))
    );
    assert_eq!(
        body_exits_without_cleanup(t.clone(), Ok(1), true).await,
        Ok(Ok(100))
    );
    assert_eq!(log.events(), ["setup"]);
}

#[tokio::test]
async fn question_mark_in_the_body_gives_ok_of_the_error() {
    let t = CancellationToken::new();
    let log = Log::default();
    let e = || Err(OpenError("bad input"));
    assert_eq!(
        body_exits_with_setup(t.clone(), log.clone(), e(), false).await,
        Ok(Err(OpenError("bad input")))
    );
    assert_eq!(
        body_exits_without_setup(t.clone(), log.clone(), e(), false).await,
        Ok(Err(OpenError("bad input")))
    );
    assert_eq!(
        body_exits_without_cleanup(t.clone(), e(), false).await,
        Ok(Err(OpenError("bad input")))
    );
    // And the non-early, successful path for comparison.
    assert_eq!(
        body_exits_with_setup(t.clone(), log.clone(), Ok(1), false).await,
        Ok(Ok(2))
    );
    assert_eq!(log.events(), ["setup", "setup"]);
}

#[cancellable]
async fn cleanup_returns_with_setup(log: Log, stop_early: bool) -> u32 {
    log.push("setup");
    on_cancel! {
        log.push("cleanup start");
        if stop_early {
            return;
        }
        log.push("cleanup end");
    }
    forever().await;
    1
}

#[cancellable]
async fn cleanup_returns_without_setup(log: Log, stop_early: bool) -> u32 {
    on_cancel! {
        log.push("cleanup start");
        if stop_early {
            return;
        }
        log.push("cleanup end");
    }
    forever().await;
    1
}

#[tokio::test]
async fn return_in_the_cleanup_ends_the_cleanup_and_the_fn_returns_cancelled() {
    let log = Log::default();
    assert_eq!(
        cleanup_returns_with_setup(cancelled_token(), log.clone(), true).await,
        Err(Cancelled::new())
    );
    assert_eq!(log.events(), ["setup", "cleanup start"]);

    let log = Log::default();
    assert_eq!(
        cleanup_returns_without_setup(cancelled_token(), log.clone(), true).await,
        Err(Cancelled::new())
    );
    assert_eq!(log.events(), ["cleanup start"]);

    // Without the early `return;` the cleanup runs to its end.
    let log = Log::default();
    assert_eq!(
        cleanup_returns_with_setup(cancelled_token(), log.clone(), false).await,
        Err(Cancelled::new())
    );
    assert_eq!(log.events(), ["setup", "cleanup start", "cleanup end"]);
}

// ---------------------------------------------------------------------------
// timeout
// ---------------------------------------------------------------------------

#[cancellable(timeout = Duration::from_secs(5))]
async fn never_finishes_within(
    log: Log,
    seen: Arc<Mutex<Option<CancellationToken>>>,
    stopped: oneshot::Sender<()>,
) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    *seen.lock().unwrap() = Some(token.clone());
    let handed = token.clone();
    tokio::spawn(async move {
        handed.cancelled().await;
        stopped.send(()).unwrap();
    });
    forever().await;
    1
}

#[tokio::test(start_paused = true)]
async fn timeout_elapsing_returns_timed_out_and_runs_the_cleanup() {
    let caller = CancellationToken::new();
    let log = Log::default();
    let seen = Arc::new(Mutex::new(None));
    let (stopped_tx, _stopped_rx) = oneshot::channel();
    let start = Instant::now();
    let err = never_finishes_within(caller.clone(), log.clone(), seen, stopped_tx)
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err, Cancelled::timed_out());
    // Paused (virtual) time: the deadline is the declared one.
    assert!(start.elapsed() >= Duration::from_secs(5));
    assert_eq!(log.events(), ["setup", "cleanup"]);
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_the_bodys_token_but_not_the_callers() {
    let caller = CancellationToken::new();
    let log = Log::default();
    let seen = Arc::new(Mutex::new(None));
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let result = never_finishes_within(caller.clone(), log.clone(), seen.clone(), stopped_tx).await;
    assert!(result.unwrap_err().is_timeout());
    let seen = seen.lock().unwrap().take().expect("the body ran");
    assert!(seen.is_cancelled(), "the body's token was not cancelled");
    // The spawned task the body handed its token to was told to stop.
    stopped_rx.await.unwrap();
    assert!(!caller.is_cancelled(), "the caller's token was cancelled");
}

#[cancellable(timeout = Duration::from_secs(5))]
async fn borrowed_token_within(
    #[token] t: &CancellationToken,
    seen: Arc<Mutex<Option<CancellationToken>>>,
) -> u32 {
    *seen.lock().unwrap() = Some(t.clone());
    forever().await;
    1
}

#[tokio::test(start_paused = true)]
async fn timeout_with_a_token_marked_parameter_spares_the_callers_token() {
    let caller = CancellationToken::new();
    let seen = Arc::new(Mutex::new(None));
    let result = borrowed_token_within(&caller, seen.clone()).await;
    assert_eq!(result, Err(Cancelled::timed_out()));
    assert!(seen.lock().unwrap().take().unwrap().is_cancelled());
    assert!(!caller.is_cancelled());
}

#[cancellable(timeout = Duration::from_secs(5))]
async fn finishes_within(log: Log) -> u32 {
    on_cancel! { log.push("cleanup"); }
    tokio::time::sleep(Duration::from_secs(1)).await;
    log.push("body");
    3
}

#[tokio::test(start_paused = true)]
async fn body_finishing_before_the_timeout_returns_ok() {
    let caller = CancellationToken::new();
    let log = Log::default();
    assert_eq!(finishes_within(caller.clone(), log.clone()).await, Ok(3));
    assert_eq!(log.events(), ["body"]);
    assert!(!caller.is_cancelled());
}

#[cancellable(timeout = Duration::from_secs(5))]
async fn parked_within(log: Log) -> u32 {
    on_cancel! { log.push("cleanup"); }
    forever().await;
    1
}

#[tokio::test(start_paused = true)]
async fn caller_cancellation_during_a_timeout_fn_is_not_a_timeout() {
    let caller = CancellationToken::new();
    let log = Log::default();
    let mut fut = std::pin::pin!(parked_within(caller.clone(), log.clone()));
    assert!(poll_once(fut.as_mut()).is_pending());
    caller.cancel();
    let err = fut.await.unwrap_err();
    assert!(!err.is_timeout());
    assert_eq!(log.events(), ["cleanup"]);
}

#[cancellable(timeout = Duration::from_millis(limit_ms))]
async fn works_for(limit_ms: u64, work_ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(work_ms)).await;
    work_ms
}

#[tokio::test(start_paused = true)]
async fn timeout_expression_may_use_a_parameter() {
    let t = CancellationToken::new();
    assert_eq!(works_for(t.clone(), 100, 50).await, Ok(50));
    assert_eq!(
        works_for(t.clone(), 50, 100).await,
        Err(Cancelled::timed_out())
    );
    assert!(!t.is_cancelled());
}

// ---------------------------------------------------------------------------
// cleanup_timeout
// ---------------------------------------------------------------------------

#[cancellable(cleanup_timeout = Duration::from_secs(1))]
async fn stuck_cleanup(log: Log) -> u32 {
    log.push("setup");
    on_cancel! {
        let _guard = Guard(log.clone(), "cleanup dropped");
        log.push("cleanup start");
        forever().await;
        log.push("cleanup end");
    }
    forever().await;
    1
}

#[tokio::test(start_paused = true)]
async fn cleanup_past_cleanup_timeout_is_dropped_and_fn_returns_cancelled() {
    let log = Log::default();
    let start = Instant::now();
    let result = stuck_cleanup(cancelled_token(), log.clone()).await;
    assert_eq!(result, Err(Cancelled::new()));
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(log.events(), ["setup", "cleanup start", "cleanup dropped"]);
}

#[cancellable(cleanup_timeout = Duration::from_secs(1))]
async fn quick_cleanup(log: Log) -> u32 {
    on_cancel! {
        log.push("cleanup start");
        tokio::time::sleep(Duration::from_millis(10)).await;
        log.push("cleanup end");
    }
    forever().await;
    1
}

#[tokio::test(start_paused = true)]
async fn cleanup_within_cleanup_timeout_completes_normally() {
    let log = Log::default();
    let result = quick_cleanup(cancelled_token(), log.clone()).await;
    assert_eq!(result, Err(Cancelled::new()));
    assert_eq!(log.events(), ["cleanup start", "cleanup end"]);
}

// ---------------------------------------------------------------------------
// Cancelling from another thread
// ---------------------------------------------------------------------------

#[cancellable]
async fn parked(runs: Arc<AtomicUsize>, started: oneshot::Sender<()>) {
    on_cancel! {
        runs.fetch_add(1, SeqCst);
        tokio::task::yield_now().await;
    }
    started.send(()).unwrap();
    forever().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_another_thread_runs_the_cleanup_once() {
    let token = CancellationToken::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = oneshot::channel();
    let task = tokio::spawn(parked(token.clone(), runs.clone(), started_tx));
    started_rx.await.unwrap();
    let remote = token.clone();
    std::thread::spawn(move || remote.cancel()).join().unwrap();
    assert_eq!(task.await.unwrap(), Err(Cancelled::new()));
    assert_eq!(runs.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------
// Cancelled
// ---------------------------------------------------------------------------

fn assert_traits<T>()
where
    T: std::fmt::Debug + Clone + Copy + PartialEq + Eq + std::fmt::Display,
    T: std::error::Error + Send + Sync + 'static,
{
}

#[test]
fn cancelled_implements_the_promised_traits() {
    assert_traits::<Cancelled>();
    let c = Cancelled::new();
    let copied = c; // Copy: `c` is still usable below
    #[allow(clippy::clone_on_copy)]
    let cloned = c.clone();
    assert_eq!(c, copied);
    assert_eq!(c, cloned);
    assert_ne!(Cancelled::new(), Cancelled::timed_out());
    assert!(format!("{c:?}").contains("Cancelled"));
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Cancelled::timed_out());
    assert!(boxed.source().is_none());
    assert_eq!(
        boxed.downcast_ref::<Cancelled>(),
        Some(&Cancelled::timed_out())
    );
}

#[test]
fn cancelled_displays_cancelled_or_timed_out() {
    assert_eq!(Cancelled::new().to_string(), "cancelled");
    assert_eq!(Cancelled::timed_out().to_string(), "cancelled: timed out");
    assert!(!Cancelled::new().is_timeout());
    assert!(Cancelled::timed_out().is_timeout());
}

#[test]
fn cancelled_converts_into_io_error() {
    let e = io::Error::from(Cancelled::new());
    assert_eq!(e.kind(), io::ErrorKind::Other);
    assert_eq!(
        e.get_ref().unwrap().downcast_ref::<Cancelled>(),
        Some(&Cancelled::new())
    );

    let e: io::Error = Cancelled::timed_out().into();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        e.get_ref().unwrap().downcast_ref::<Cancelled>(),
        Some(&Cancelled::timed_out())
    );
}

// ---------------------------------------------------------------------------
// Send futures
// ---------------------------------------------------------------------------

fn assert_send<T: Send>(_: &T) {}

struct Service {
    log: Log,
}

impl Service {
    #[cancellable(timeout = Duration::from_secs(5), cleanup_timeout = Duration::from_secs(1))]
    async fn handle(self: Arc<Self>, n: u32) -> u32 {
        let mut tx = Some(Transaction::begin(&self.log));
        on_cancel! {
            if let Some(tx) = tx.take() {
                tx.rollback().await;
            }
        }
        tokio::task::yield_now().await;
        if let Some(tx) = tx.take() {
            tx.commit().await;
        }
        n
    }
}

#[tokio::test]
async fn returned_futures_are_send_and_can_be_spawned() {
    let t = CancellationToken::new();
    let log = Log::default();

    let setup_and_cleanup = fallible_setup(t.clone(), log.clone(), true, true);
    assert_send(&setup_and_cleanup);
    assert_eq!(tokio::spawn(setup_and_cleanup).await.unwrap(), Ok(Ok(7)));

    let cleanup_only = completes_without_setup(t.clone(), log.clone());
    assert_send(&cleanup_only);
    assert_eq!(tokio::spawn(cleanup_only).await.unwrap(), Ok(6));

    let no_cleanup = double(t.clone(), 2);
    assert_send(&no_cleanup);
    assert_eq!(tokio::spawn(no_cleanup).await.unwrap(), Ok(4));

    let flattened = my_work(t.clone(), log.clone(), Some(Ok(1)));
    assert_send(&flattened);
    assert_eq!(tokio::spawn(flattened).await.unwrap(), Ok(2));

    let method = Arc::new(Service { log: log.clone() }).handle(t.clone(), 9);
    assert_send(&method);
    assert_eq!(tokio::spawn(method).await.unwrap(), Ok(9));

    let cancelled = Arc::new(Service { log: log.clone() }).handle(cancelled_token(), 9);
    assert_send(&cancelled);
    assert_eq!(
        tokio::spawn(cancelled).await.unwrap(),
        Err(Cancelled::new())
    );

    assert_eq!(
        log.events(),
        ["body", "setup", "begin", "commit", "begin", "rollback"]
    );
}

// ---------------------------------------------------------------------------
// Dropping is not cancelling
// ---------------------------------------------------------------------------

#[cancellable]
async fn droppable(log: Log) -> u32 {
    log.push("setup");
    on_cancel! { log.push("cleanup"); }
    let _guard = Guard(log.clone(), "body dropped");
    forever().await;
    1
}

/// Dropping a half-polled `#[cancellable]` future is not a cancellation: the
/// body's `Drop` impls run (as for any dropped future), but the `on_cancel!`
/// cleanup does not, because nothing is left to drive its `.await`s. Only
/// cancelling the token (or a `timeout`) runs the cleanup.
#[tokio::test]
async fn dropping_a_half_polled_future_drops_the_body_but_skips_the_cleanup() {
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = Box::pin(droppable(token.clone(), log.clone()));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(log.events(), ["setup"]);
    drop(fut);
    assert_eq!(log.events(), ["setup", "body dropped"]);
    // Cancelling afterwards does not bring the cleanup back.
    token.cancel();
    tokio::task::yield_now().await;
    assert_eq!(log.events(), ["setup", "body dropped"]);
}

// ---------------------------------------------------------------------------
// Nesting
// ---------------------------------------------------------------------------

#[cancellable]
async fn inner(log: Log) -> u32 {
    log.push("inner setup");
    on_cancel! { log.push("inner cleanup"); }
    forever().await;
    1
}

#[cancellable]
async fn outer_with_child_token(log: Log) -> u32 {
    log.push("outer setup");
    on_cancel! { log.push("outer cleanup"); }
    inner(token.child_token(), log.clone()).await.unwrap_or(0)
}

#[cancellable]
async fn outer_with_cloned_token(log: Log) -> u32 {
    log.push("outer setup");
    on_cancel! { log.push("outer cleanup"); }
    inner(token.clone(), log.clone()).await.unwrap_or(0)
}

// Cancelling the outer fn's token cancels the inner fn's too (a child or a
// clone of it): both were cancelled, so both cleanups run, the inner one
// (which pairs with the later setup) first.
async fn runs_both_cleanups_innermost_first<F>(outer: fn(CancellationToken, Log) -> F)
where
    F: std::future::Future<Output = Result<u32, Cancelled>>,
{
    let token = CancellationToken::new();
    let log = Log::default();
    let mut fut = std::pin::pin!(outer(token.clone(), log.clone()));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(log.events(), ["outer setup", "inner setup"]);
    token.cancel();
    assert_eq!(fut.await, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        [
            "outer setup",
            "inner setup",
            "inner cleanup",
            "outer cleanup"
        ]
    );
}

#[tokio::test]
async fn nested_with_child_token_runs_both_cleanups_innermost_first() {
    runs_both_cleanups_innermost_first(outer_with_child_token).await;
}

#[tokio::test]
async fn nested_with_cloned_token_runs_both_cleanups_innermost_first() {
    runs_both_cleanups_innermost_first(outer_with_cloned_token).await;
}

#[cancellable]
async fn outer_cancelling_its_child(log: Log) -> u32 {
    log.push("outer setup");
    on_cancel! { log.push("outer cleanup"); }
    let child = token.child_token();
    let cancel_child = async {
        tokio::task::yield_now().await;
        child.cancel();
    };
    let (inner_result, ()) = tokio::join!(inner(child.clone(), log.clone()), cancel_child);
    log.push("outer body after inner");
    inner_result.unwrap_or(0)
}

#[tokio::test]
async fn nested_child_cancelled_alone_runs_only_the_inner_cleanup() {
    let token = CancellationToken::new();
    let log = Log::default();
    assert_eq!(
        outer_cancelling_its_child(token.clone(), log.clone()).await,
        Ok(0)
    );
    assert_eq!(
        log.events(),
        [
            "outer setup",
            "inner setup",
            "inner cleanup",
            "outer body after inner"
        ]
    );
    assert!(!token.is_cancelled());
}
