//! Support for the code `#[cancellable]` generates. Not a public API: the
//! names here may change in any release. Reached only through
//! `::cancel_scope::__private`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Cancelled;

pub use tokio_util::sync::CancellationToken as Token;

/// What the `#[cancellable]` calls nested in a body reported during one poll
/// of it. Kept per thread: a poll runs on one thread, and each race saves
/// and restores its caller's record around the poll of its body, so nested
/// calls report to the innermost enclosing race.
#[derive(Clone, Copy, Default)]
struct Nest {
    /// A nested call is pending inside the body.
    nested: bool,
    /// Nested calls still cancelling: draining their own bodies or running
    /// their cleanups.
    cleaning: u32,
}

thread_local! {
    static NEST: std::cell::Cell<Nest> = const {
        std::cell::Cell::new(Nest { nested: false, cleaning: 0 })
    };
}

/// Polls a body with a fresh record; returns what its nested calls reported.
fn poll_scoped<F: Future>(body: Pin<&mut F>, cx: &mut Context<'_>) -> (Poll<F::Output>, Nest) {
    let saved = NEST.replace(Nest::default());
    let poll = body.poll(cx);
    (poll, NEST.replace(saved))
}

/// Tells the enclosing race that a nested call is pending (and whether it is
/// still cancelling).
fn report(cleaning: bool) {
    let mut nest = NEST.get();
    nest.nested = true;
    if cleaning {
        nest.cleaning = nest.cleaning.saturating_add(1);
    }
    NEST.set(nest);
}

pin_project! {
    /// Races `body` against `token`; cancellation wins ties.
    ///
    /// The fast path costs one `is_cancelled` check: no waiter is registered
    /// on the token unless the body returns `Pending`.
    ///
    /// When the token is cancelled the body is dropped, inside the `poll`
    /// that observes it, so by the time the caller sees `Err` every `Drop`
    /// of the body has run. One exception keeps nested cleanups: if the body
    /// is waiting inside a nested `#[cancellable]` call, the body is polled
    /// on ("drained") until the nested calls that saw the cancellation have
    /// run their cleanups and returned, and only then dropped.
    #[must_use = "futures do nothing unless polled"]
    pub struct Race<'a, F> {
        token: &'a CancellationToken,
        state: State,
        #[pin]
        cancelled: Option<WaitForCancellationFuture<'a>>,
        #[pin]
        body: Option<F>,
    }
}

/// Where a race stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// The body runs; `nested` when it is waiting inside a nested call.
    Running { nested: bool },
    /// Cancelled: the body is polled only while nested calls clean up.
    Draining(Cancelled),
}

/// Runs `body` unless `token` is (or becomes) cancelled first.
pub fn race<F: Future>(token: &CancellationToken, body: F) -> Race<'_, F> {
    Race {
        token,
        state: State::Running { nested: false },
        cancelled: None,
        body: Some(body),
    }
}

/// Polls `cancelled`, registering it first if needed; `true` when the token
/// is cancelled.
fn poll_cancelled<'a>(
    token: &'a CancellationToken,
    mut cancelled: Pin<&mut Option<WaitForCancellationFuture<'a>>>,
    cx: &mut Context<'_>,
) -> bool {
    if cancelled.is_none() {
        cancelled.set(Some(token.cancelled()));
    }
    match cancelled.as_pin_mut() {
        Some(fut) => fut.poll(cx).is_ready(),
        None => unreachable!("the cancellation future was just set"),
    }
}

/// `true` when the token is cancelled; registers no waiter.
fn check_cancelled<'a>(
    token: &'a CancellationToken,
    cancelled: Pin<&mut Option<WaitForCancellationFuture<'a>>>,
    cx: &mut Context<'_>,
) -> bool {
    match cancelled.as_pin_mut() {
        None => token.is_cancelled(),
        Some(fut) => fut.poll(cx).is_ready(),
    }
}

/// The body was cancelled: drop it at once, or drain it while it is inside
/// nested calls. `Ready` carries the race's result.
fn cancel_body<F: Future, T>(
    mut body: Pin<&mut Option<F>>,
    state: &mut State,
    cancelled: Cancelled,
    cx: &mut Context<'_>,
) -> Poll<Result<T, Cancelled>> {
    let drain = match *state {
        State::Running { nested } => nested,
        State::Draining(_) => true,
    };
    if drain {
        if let Some(fut) = body.as_mut().as_pin_mut() {
            let (poll, nest) = poll_scoped(fut, cx);
            if poll.is_pending() && nest.cleaning > 0 {
                *state = State::Draining(cancelled);
                report(true);
                return Poll::Pending;
            }
        }
    }
    body.set(None);
    Poll::Ready(Err(cancelled))
}

/// Polls the running body; `Ready(Ok)` when it finished.
fn poll_body<F: Future>(
    mut body: Pin<&mut Option<F>>,
    state: &mut State,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    let Some(fut) = body.as_mut().as_pin_mut() else {
        panic!("a `#[cancellable]` race was polled after completion");
    };
    let (poll, nest) = poll_scoped(fut, cx);
    if poll.is_ready() {
        body.set(None);
    } else {
        *state = State::Running {
            nested: nest.nested,
        };
    }
    poll
}

impl<F: Future> Future for Race<'_, F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let State::Draining(c) = *this.state {
            return cancel_body(this.body, this.state, c, cx);
        }
        // Cancellation first: it wins ties, and an already-cancelled token
        // means the body is never polled.
        if check_cancelled(this.token, this.cancelled.as_mut(), cx) {
            return cancel_body(this.body, this.state, Cancelled::new(), cx);
        }
        if let Poll::Ready(value) = poll_body(this.body.as_mut(), this.state, cx) {
            return Poll::Ready(Ok(value));
        }
        // The body is waiting: only now register a waiter on the token. A
        // cancellation that landed while the body was polled is seen here.
        if this.cancelled.is_none() && poll_cancelled(this.token, this.cancelled, cx) {
            return cancel_body(this.body, this.state, Cancelled::new(), cx);
        }
        report(false);
        Poll::Pending
    }
}

pin_project! {
    /// [`Race`] with a deadline: when `limit` elapses first, `token` is
    /// cancelled (so work the body handed it stops too) and the result is
    /// [`Cancelled::timed_out`].
    #[must_use = "futures do nothing unless polled"]
    pub struct RaceTimeout<'a, F> {
        token: &'a CancellationToken,
        limit: Duration,
        state: State,
        #[pin]
        cancelled: Option<WaitForCancellationFuture<'a>>,
        #[pin]
        deadline: Option<Sleep>,
        #[pin]
        body: Option<F>,
    }
}

/// Runs `body` unless `token` is cancelled or `limit` elapses first.
pub fn race_timeout<F: Future>(
    token: &CancellationToken,
    limit: Duration,
    body: F,
) -> RaceTimeout<'_, F> {
    RaceTimeout {
        token,
        limit,
        state: State::Running { nested: false },
        cancelled: None,
        deadline: None,
        body: Some(body),
    }
}

impl<F: Future> Future for RaceTimeout<'_, F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let State::Draining(c) = *this.state {
            return cancel_body(this.body, this.state, c, cx);
        }
        if this.deadline.is_none() {
            // First poll: the body starts now, and so does its deadline.
            this.deadline.set(Some(tokio::time::sleep(*this.limit)));
        }
        if check_cancelled(this.token, this.cancelled.as_mut(), cx) {
            return cancel_body(this.body, this.state, Cancelled::new(), cx);
        }
        let timed_out = match this.deadline.as_mut().as_pin_mut() {
            Some(sleep) => sleep.poll(cx).is_ready(),
            None => unreachable!("the deadline was just set"),
        };
        if timed_out {
            // Cancel the fn's own (child) token first, so nested calls that
            // got it see the cancellation while the body drains.
            this.token.cancel();
            return cancel_body(this.body, this.state, Cancelled::timed_out(), cx);
        }
        if let Poll::Ready(value) = poll_body(this.body.as_mut(), this.state, cx) {
            return Poll::Ready(Ok(value));
        }
        if this.cancelled.is_none() && poll_cancelled(this.token, this.cancelled, cx) {
            return cancel_body(this.body, this.state, Cancelled::new(), cx);
        }
        report(false);
        Poll::Pending
    }
}

pin_project! {
    /// Runs a cleanup; while it waits, it tells an enclosing race that a
    /// nested call is still cancelling, so that race drains rather than
    /// drops its body.
    #[must_use = "futures do nothing unless polled"]
    pub struct Cleanup<F> {
        #[pin]
        cleanup: F,
    }
}

/// See [`Cleanup`].
pub fn cleanup<F: Future<Output = ()>>(cleanup: F) -> Cleanup<F> {
    Cleanup { cleanup }
}

impl<F: Future<Output = ()>> Future for Cleanup<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let poll = self.project().cleanup.poll(cx);
        if poll.is_pending() {
            report(true);
        }
        poll
    }
}

/// Where a cleanup that ran leaves its [`Cancelled`] for [`run`] to return.
///
/// Written and read inside one `poll` of [`Run`], on one thread; the atomic
/// only makes the slot `Sync`, so that a future holding `&Slot` stays `Send`.
#[derive(Debug, Default)]
pub struct Slot(AtomicU8);

const EMPTY: u8 = 0;
const CANCELLED: u8 = 1;
const TIMED_OUT: u8 = 2;

impl Slot {
    /// An empty slot.
    #[must_use]
    pub const fn new() -> Self {
        Slot(AtomicU8::new(EMPTY))
    }

    fn put(&self, c: Cancelled) {
        let v = if c.is_timeout() { TIMED_OUT } else { CANCELLED };
        self.0.store(v, Ordering::Relaxed);
    }

    fn take(&self) -> Option<Cancelled> {
        match self.0.swap(EMPTY, Ordering::Relaxed) {
            CANCELLED => Some(Cancelled::new()),
            TIMED_OUT => Some(Cancelled::timed_out()),
            _ => None,
        }
    }
}

pin_project! {
    /// Runs the part of a `#[cancellable]` fn whose `return` and `?` must see
    /// the declared return type `T`: `Ok(v)` when it returns `v`, `Err(c)`
    /// when it reaches [`exit`] after its cleanup.
    #[must_use = "futures do nothing unless polled"]
    pub struct Run<'a, F> {
        slot: &'a Slot,
        #[pin]
        inner: F,
    }
}

/// See [`Run`].
pub fn run<F: Future>(slot: &Slot, inner: F) -> Run<'_, F> {
    Run { slot, inner }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(value) => Poll::Ready(Ok(value)),
            Poll::Pending => match this.slot.take() {
                Some(c) => Poll::Ready(Err(c)),
                None => Poll::Pending,
            },
        }
    }
}

/// The last `.await` of a cancelled run: records `c` in the slot and never
/// completes, so it can stand for a value of any type `T`. [`Run`] sees the
/// slot filled in the same `poll` and returns `Err(c)`.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Exit<'a, T> {
    slot: &'a Slot,
    cancelled: Cancelled,
    _output: PhantomData<fn() -> T>,
}

/// See [`Exit`].
pub fn exit<T>(slot: &Slot, cancelled: Cancelled) -> Exit<'_, T> {
    Exit {
        slot,
        cancelled,
        _output: PhantomData,
    }
}

impl<T> Future for Exit<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        self.slot.put(self.cancelled);
        Poll::Pending
    }
}

/// Runs a cleanup for at most `limit`; past it the cleanup is dropped and
/// the fn still returns `Err(Cancelled)`.
pub fn cleanup_within<F: Future<Output = ()>>(
    limit: Duration,
    cleanup: F,
) -> Cleanup<impl Future<Output = ()>> {
    Cleanup {
        cleanup: async move {
            let _elapsed = tokio::time::timeout(limit, cleanup).await;
        },
    }
}

/// The declared return type of a `#[cancellable(flatten)]` fn: a `Result`
/// whose error type can hold a [`Cancelled`].
#[diagnostic::on_unimplemented(
    message = "`#[cancellable(flatten)]` needs an error type that implements `From<Cancelled>`",
    label = "`{Self}` cannot hold a `Cancelled`",
    note = "implement `From<cancel_scope::Cancelled>` for the error type, or remove `flatten` to return `Result<T, Cancelled>`"
)]
pub trait Flatten: Sized {
    /// `Err(E::from(cancelled))`.
    fn from_cancelled(cancelled: Cancelled) -> Self;
}

impl<T, E: From<Cancelled>> Flatten for Result<T, E> {
    fn from_cancelled(cancelled: Cancelled) -> Self {
        Err(E::from(cancelled))
    }
}

/// `#[cancellable(flatten)]`: folds `Cancelled` into the declared error type.
///
/// # Errors
/// `Err(E::from(Cancelled))` when cancelled, the body's own `Err` otherwise.
pub fn flatten<R: Flatten>(r: Result<R, Cancelled>) -> R {
    match r {
        Ok(v) => v,
        Err(c) => R::from_cancelled(c),
    }
}

/// A child of `token` for a fn with a `timeout`, so the deadline can cancel
/// what the body handed the token to without cancelling the caller's token.
#[must_use]
pub fn child_token(token: &CancellationToken) -> CancellationToken {
    token.child_token()
}

/// Never called: `if false { return fake::<T>(); }` tells the type checker
/// the declared return type before it reads the user's code, so a mismatch is
/// reported at the user's expression rather than at the attribute.
#[doc(hidden)]
pub fn fake<T>() -> T {
    unreachable!("cancel-scope: type hint only, never called")
}
