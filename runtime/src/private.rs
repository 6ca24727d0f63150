//! Support for the code `#[cancellable]` generates. Not a public API: the
//! names here may change in any release. Reached only through
//! `::cancel_scope::__private`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Cancelled;

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
    /// Set, to its reason, while a cancelled race drains its body: the
    /// `#[cancellable]` calls nested in it are cancelled with it, for the same
    /// reason, whatever their own token (they may not have seen it yet: a
    /// token tree is cancelled one node at a time), and once they have
    /// cleaned up they never return into the cancelled body. Cleared while a
    /// cleanup runs, so that a cleanup's own calls run normally.
    static DRAINING: std::cell::Cell<Option<Cancelled>> = const { std::cell::Cell::new(None) };
}

// The code below is split so that what depends on the body's type (polling
// it, dropping it) is all that is compiled again for every `#[cancellable]`
// fn; the rest is compiled once, here. The non-generic helpers are
// `#[inline]`: an optimised build may still inline them, an unoptimised one
// calls this crate's copy.

/// Sets [`DRAINING`] until dropped, then restores it, also when the poll in
/// between panics (else every later `#[cancellable]` call on the thread
/// would be cancelled, and never return).
struct Draining {
    outer: Option<Cancelled>,
}

impl Draining {
    #[inline]
    fn set(value: Option<Cancelled>) -> Draining {
        Draining {
            outer: DRAINING.replace(value),
        }
    }
}

impl Drop for Draining {
    #[inline]
    fn drop(&mut self) {
        DRAINING.set(self.outer);
    }
}

/// Before polling a body: a fresh record for its nested calls. Give what it
/// returns to [`nest_leave`] after the poll.
#[inline]
fn nest_enter() -> Nest {
    NEST.replace(Nest::default())
}

/// After polling a body: what its nested calls reported; restores the
/// caller's record.
#[inline]
fn nest_leave(saved: Nest) -> Nest {
    NEST.replace(saved)
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
    ///
    /// `D` is the optional deadline: [`NoDeadline`] (a zero-sized type) or
    /// [`Deadline`] for `#[cancellable(timeout = ..)]`.
    #[must_use = "futures do nothing unless polled"]
    pub struct Race<'a, F, D = NoDeadline, K = ThenCleanup> {
        #[pin]
        waiter: Waiter<'a>,
        #[pin]
        deadline: D,
        #[pin]
        body: Option<F>,
        then: K,
    }
}

/// What follows a race: a cleanup ([`ThenCleanup`]) or nothing ([`Final`]).
pub trait Then {
    /// The fn's name when nothing follows: the race itself reports the
    /// cancellation (a cleanup reports it when it ends).
    fn last(&self) -> Option<Name>;
}

/// A cleanup runs after the race when it is cancelled.
#[derive(Debug)]
pub struct ThenCleanup;

impl Then for ThenCleanup {
    fn last(&self) -> Option<Name> {
        None
    }
}

/// Nothing runs after the race: inside a draining race, a cancelled one never
/// returns into the cancelled body. With the `tracing` feature, the race
/// reports the cancellation itself.
#[derive(Debug)]
pub struct Final(Name);

impl Then for Final {
    fn last(&self) -> Option<Name> {
        Some(self.0)
    }
}

/// A fn without a cleanup was cancelled: its `tracing` event.
fn report_cancelled(_name: Name, _reason: Cancelled) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "cancel_scope", fn_name = _name.0, reason = %_reason, "cancelled");
}

impl<'a, F, D> Race<'a, F, D, ThenCleanup> {
    /// For a fn without `on_cancel!`, named `name`.
    pub fn without_cleanup(self, name: Name) -> Race<'a, F, D, Final> {
        Race {
            waiter: self.waiter,
            deadline: self.deadline,
            body: self.body,
            then: Final(name),
        }
    }
}

pin_project! {
    /// Where a race stands with respect to its token. One enum, so that the
    /// state costs no more than the waiter it holds.
    #[project = WaiterProj]
    enum Waiter<'a> {
        /// The body has not waited yet: no waiter is registered.
        Fresh { token: &'a CancellationToken },
        /// The body waits, `nested` inside a nested `#[cancellable]` call.
        Waiting {
            nested: bool,
            #[pin]
            cancelled: WaitForCancellationFuture<'a>,
        },
        /// Cancelled: the body is polled only while nested calls clean up.
        Draining { reason: Cancelled },
    }
}

/// A race with a deadline: `#[cancellable(timeout = ..)]`.
pub type RaceTimeout<'a, F> = Race<'a, F, Deadline<'a>>;

/// Runs `body` unless `token` is (or becomes) cancelled first.
pub fn race<F: Future>(token: &CancellationToken, body: F) -> Race<'_, F> {
    Race {
        waiter: Waiter::Fresh { token },
        deadline: NoDeadline,
        body: Some(body),
        then: ThenCleanup,
    }
}

/// Runs `body` unless `token` is cancelled or `limit` elapses first. When the
/// deadline fires, `token` is cancelled (so work the body handed it stops
/// too) and the result is [`Cancelled::timed_out`].
pub fn race_timeout<F: Future>(
    token: &CancellationToken,
    limit: Duration,
    body: F,
) -> RaceTimeout<'_, F> {
    Race {
        waiter: Waiter::Fresh { token },
        deadline: Deadline {
            token,
            limit,
            sleep: None,
        },
        body: Some(body),
        then: ThenCleanup,
    }
}

/// The deadline of a race, if any.
pub trait RaceDeadline {
    /// `true` once the deadline has passed; the first call starts it.
    fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool;
}

/// No deadline: the race ends only by the body or the token.
#[derive(Debug, Clone, Copy)]
pub struct NoDeadline;

impl RaceDeadline for NoDeadline {
    fn poll_elapsed(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> bool {
        false
    }
}

pin_project! {
    /// A deadline `limit` after the body's first poll; when it passes, the
    /// fn's own (child) token is cancelled.
    pub struct Deadline<'a> {
        token: &'a CancellationToken,
        limit: Duration,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl RaceDeadline for Deadline<'_> {
    fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        let mut this = self.project();
        if this.sleep.is_none() {
            // First poll: the body starts now, and so does its deadline.
            this.sleep.set(Some(tokio::time::sleep(*this.limit)));
        }
        let elapsed = this
            .sleep
            .as_pin_mut()
            .is_some_and(|sleep| sleep.poll(cx).is_ready());
        if elapsed {
            // Cancel the fn's own (child) token first, so nested calls that
            // got it see the cancellation while the body drains.
            this.token.cancel();
        }
        elapsed
    }
}

/// What a race does next, as its waiter sees it.
enum Step {
    /// Poll the body.
    Go,
    /// Cancelled for `reason`; `drain` when the body waits inside nested
    /// calls, which must see it first.
    Cancel { reason: Cancelled, drain: bool },
}

impl Waiter<'_> {
    /// Before the body's poll: cancelled (or cancelled with an enclosing
    /// race that drains its body), or go on. Cancellation first: it wins
    /// ties, and an already-cancelled token means the body is never polled.
    #[inline]
    fn check(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Step {
        let forced = DRAINING.get();
        let (cancelled, nested) = match self.project() {
            WaiterProj::Draining { reason } => {
                return Step::Cancel {
                    reason: *reason,
                    drain: true,
                };
            }
            WaiterProj::Fresh { token } => (forced.is_some() || token.is_cancelled(), false),
            WaiterProj::Waiting { nested, cancelled } => {
                (forced.is_some() || cancelled.poll(cx).is_ready(), *nested)
            }
        };
        if cancelled {
            let reason = forced.unwrap_or_else(token_cancelled);
            return Step::Cancel {
                reason,
                drain: nested,
            };
        }
        Step::Go
    }

    /// Whether the body waits inside a nested call.
    #[inline]
    fn nested(&self) -> bool {
        matches!(
            self,
            Waiter::Waiting { nested: true, .. } | Waiter::Draining { .. }
        )
    }

    /// The body is waiting: only now register a waiter on the token. A
    /// cancellation that landed while the body was polled is seen here.
    /// `None` to wait, or the reason it was cancelled.
    #[inline]
    fn pending(mut self: Pin<&mut Self>, nest: Nest, cx: &mut Context<'_>) -> Option<Cancelled> {
        match self.as_mut().project() {
            WaiterProj::Waiting { nested, .. } => *nested = nest.nested,
            WaiterProj::Draining { .. } => unreachable!("a draining race polls its body elsewhere"),
            WaiterProj::Fresh { token } => {
                let token: &CancellationToken = token;
                self.set(Waiter::Waiting {
                    nested: nest.nested,
                    cancelled: token.cancelled(),
                });
                if let WaiterProj::Waiting { cancelled, .. } = self.as_mut().project() {
                    if cancelled.poll(cx).is_ready() {
                        return Some(token_cancelled());
                    }
                }
            }
        }
        // Pass on whether a cleanup is running below: an enclosing race that
        // drains must wait for it even though this race was not cancelled.
        report(nest.cleaning > 0);
        None
    }

    /// After a drained poll of the body: `true` while nested calls are
    /// still cancelling (then the race waits, draining).
    #[inline]
    fn keep_draining(
        mut self: Pin<&mut Self>,
        pending: bool,
        nest: Nest,
        reason: Cancelled,
    ) -> bool {
        if pending && nest.cleaning > 0 {
            self.as_mut().drain(reason);
            report(true);
            return true;
        }
        false
    }

    /// From now on the race only drains (or, with no cleanup of its own,
    /// waits to be dropped).
    #[inline]
    fn drain(mut self: Pin<&mut Self>, reason: Cancelled) {
        if !matches!(*self, Waiter::Draining { .. }) {
            self.set(Waiter::Draining { reason });
        }
    }
}

impl<F: Future, D: RaceDeadline, K: Then> Future for Race<'_, F, D, K> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut step = this.waiter.as_mut().check(cx);
        if matches!(step, Step::Go) && this.deadline.poll_elapsed(cx) {
            step = Step::Cancel {
                reason: Cancelled::timed_out(),
                drain: this.waiter.nested(),
            };
        }
        let (reason, drain) = match step {
            Step::Cancel { reason, drain } => (reason, drain),
            Step::Go => {
                let Some(body) = this.body.as_mut().as_pin_mut() else {
                    polled_after_completion()
                };
                let saved = nest_enter();
                let poll = body.poll(cx);
                let nest = nest_leave(saved);
                if let Poll::Ready(value) = poll {
                    this.body.set(None);
                    return Poll::Ready(Ok(value));
                }
                match this.waiter.as_mut().pending(nest, cx) {
                    None => return Poll::Pending,
                    Some(reason) => (reason, nest.nested),
                }
            }
        };
        if cancel_body(this.body, this.waiter, drain, this.then.last(), reason, cx) {
            Poll::Ready(Err(reason))
        } else {
            Poll::Pending
        }
    }
}

#[cold]
#[inline(never)]
fn polled_after_completion() -> ! {
    panic!("a `#[cancellable]` race was polled after completion")
}

/// Why a race whose token was cancelled was: see
/// [`CancelReason`](crate::CancelReason).
#[cold]
fn token_cancelled() -> Cancelled {
    Cancelled::because(crate::reason::of_current_task())
}

/// A race's body, as the cancellation path sees it: polled only to drain
/// it, then dropped. A trait object, so that [`cancel_body`] is compiled
/// once rather than for every fn (it is the cold path).
trait Body {
    /// Polls the body, if it is still there, for a drain: `true` while it is
    /// pending (a value it returns now is dropped: the race is cancelled).
    fn poll_drain(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool;
    /// Drops the body; `true` if it was still there.
    fn drop_body(self: Pin<&mut Self>) -> bool;
}

impl<F: Future> Body for Option<F> {
    fn poll_drain(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        match self.as_pin_mut() {
            Some(fut) => fut.poll(cx).is_pending(),
            None => false,
        }
    }

    fn drop_body(mut self: Pin<&mut Self>) -> bool {
        let was = self.is_some();
        self.set(None);
        was
    }
}

/// The body was cancelled: drop it at once, or drain it while it is inside
/// nested calls that are still cancelling. `true` when the race returns
/// `Err(reason)` now, `false` when it waits. `last` is the fn's name when no
/// cleanup follows the race.
fn cancel_body(
    mut body: Pin<&mut dyn Body>,
    mut waiter: Pin<&mut Waiter<'_>>,
    drain: bool,
    last: Option<Name>,
    reason: Cancelled,
    cx: &mut Context<'_>,
) -> bool {
    if drain {
        let draining = Draining::set(Some(reason));
        let saved = nest_enter();
        let pending = body.as_mut().poll_drain(cx);
        let nest = nest_leave(saved);
        drop(draining);
        if waiter.as_mut().keep_draining(pending, nest, reason) {
            return false;
        }
    }
    let dropped_now = body.drop_body();
    let Some(name) = last else {
        // The cleanup reports it when it ends.
        return true;
    };
    if DRAINING.get().is_none() {
        report_cancelled(name, reason);
        return true;
    }
    // Inside a draining race, with no cleanup of its own: never return into
    // the cancelled body, which is about to be dropped. It was cancelled all
    // the same: say so, once.
    if dropped_now {
        report_cancelled(name, reason);
    }
    waiter.drain(reason);
    false
}

/// The name of a `#[cancellable]` fn, for its `tracing` events; nothing
/// without the `tracing` feature.
#[cfg(feature = "tracing")]
#[derive(Debug, Clone, Copy)]
pub struct Name(&'static str);

/// The name of a `#[cancellable]` fn, for its `tracing` events; nothing
/// without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
#[derive(Debug, Clone, Copy)]
pub struct Name;

/// See [`Name`].
#[cfg(feature = "tracing")]
#[must_use]
pub const fn name(name: &'static str) -> Name {
    Name(name)
}

/// See [`Name`].
#[cfg(not(feature = "tracing"))]
#[must_use]
pub const fn name(_name: &'static str) -> Name {
    Name
}

/// What a cleanup reports when it ends, with the `tracing` feature.
#[derive(Debug)]
pub struct Trace {
    #[cfg(feature = "tracing")]
    name: &'static str,
    #[cfg(feature = "tracing")]
    started: Option<std::time::Instant>,
}

impl Trace {
    #[cfg(feature = "tracing")]
    fn new(name: Name) -> Self {
        Trace {
            name: name.0,
            started: None,
        }
    }

    #[cfg(not(feature = "tracing"))]
    fn new(_name: Name) -> Self {
        Trace {}
    }

    fn polled(&mut self) {
        #[cfg(feature = "tracing")]
        self.started.get_or_insert_with(std::time::Instant::now);
    }

    fn done(&self, _reason: Cancelled) {
        #[cfg(feature = "tracing")]
        {
            let cleanup = self.started.map(|t| t.elapsed()).unwrap_or_default();
            tracing::debug!(
                target: "cancel_scope",
                fn_name = self.name,
                reason = %_reason,
                cleanup_us = u64::try_from(cleanup.as_micros()).unwrap_or(u64::MAX),
                "cancelled; cleanup done"
            );
        }
    }
}

pin_project! {
    /// Runs a cleanup, then gives back the [`Cancelled`] it ran for (so that
    /// the generated code keeps no copy of it across the cleanup's awaits);
    /// while it waits, it tells an enclosing race that a nested call is still
    /// cancelling, so that race drains rather than drops its body. Inside a
    /// draining race, a finished cleanup never completes: its fn does not
    /// return into the cancelled body.
    #[must_use = "futures do nothing unless polled"]
    pub struct Cleanup<F> {
        reason: Cancelled,
        trace: Trace,
        #[pin]
        cleanup: Option<F>,
    }
}

/// See [`Cleanup`].
pub fn cleanup<F: Future<Output = ()>>(name: Name, reason: Cancelled, cleanup: F) -> Cleanup<F> {
    Cleanup {
        reason,
        trace: Trace::new(name),
        cleanup: Some(cleanup),
    }
}

impl<F: Future<Output = ()>> Future for Cleanup<F> {
    type Output = Cancelled;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Cancelled> {
        let mut this = self.project();
        let Some(cleanup) = this.cleanup.as_mut().as_pin_mut() else {
            // Finished inside a draining race: wait to be dropped with it.
            return Poll::Pending;
        };
        match poll_cleanup(cleanup, this.trace, *this.reason, cx) {
            Poll::Ready(true) => {
                this.cleanup.set(None);
                Poll::Pending
            }
            Poll::Ready(false) => Poll::Ready(*this.reason),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Polls a cleanup, whose own `#[cancellable]` calls run normally: `Pending`
/// while it runs, else whether it finished inside a draining race (then it
/// waits to be dropped with it rather than return into the cancelled body).
/// Takes a trait object, so that it is compiled once rather than for every
/// fn (a cleanup is the cold path).
fn poll_cleanup(
    cleanup: Pin<&mut dyn Future<Output = ()>>,
    trace: &mut Trace,
    reason: Cancelled,
    cx: &mut Context<'_>,
) -> Poll<bool> {
    trace.polled();
    let draining = Draining::set(None);
    let pending = cleanup.poll(cx).is_pending();
    let draining_outer = draining.outer.is_some();
    drop(draining);
    if pending {
        report(true);
        return Poll::Pending;
    }
    trace.done(reason);
    Poll::Ready(draining_outer)
}

/// Runs a cleanup for at most `limit`; past it the cleanup is dropped and
/// the fn still returns `Err(Cancelled)`.
pub fn cleanup_within<F: Future<Output = ()>>(
    name: Name,
    reason: Cancelled,
    limit: Duration,
    cleanup: F,
) -> Cleanup<impl Future<Output = ()>> {
    Cleanup {
        reason,
        trace: Trace::new(name),
        cleanup: Some(async move {
            let _elapsed = tokio::time::timeout(limit, cleanup).await;
            #[cfg(feature = "tracing")]
            if _elapsed.is_err() {
                tracing::warn!(target: "cancel_scope", fn_name = name.0, ?limit, "cleanup dropped at its cleanup_timeout");
            }
        }),
    }
}

/// A child of `token` for a fn with a `timeout`, so the deadline can cancel
/// what the body handed the token to without cancelling the caller's token.
#[must_use]
pub fn child_token(token: &CancellationToken) -> CancellationToken {
    token.child_token()
}

mod finish;
pub use finish::*;
