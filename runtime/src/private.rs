//! Support for the code `#[cancellable]` generates. Not a public API: the
//! names here may change in any release. Reached only through
//! `::cancel_scope::__private`.
//!
//! The semantics are the facade's "Cancellation semantics" section; in
//! short, a [`Race`] acts only on its own body, and only once its own token
//! (or its own deadline) says so. What the futures inside its body tell it
//! (`crate::nest`) decides only *when* it drops the body: not while a nested
//! call on a derived token is still cleaning up, or a `shield` still runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;
use tokio::time::{Sleep, Timeout};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Cancelled;
use crate::nest::{self, Busy, Draining, InFlight, Polling, Registration, Report};

// What depends on the body's type (polling it, dropping it) is all that is
// compiled again for every `#[cancellable]` fn; the cancellation path takes
// the body as a trait object and is compiled once, here.

pin_project! {
    /// Races `body` against `token`; cancellation wins ties.
    ///
    /// The fast path costs one `is_cancelled` check: no waiter is registered
    /// on the token unless the body returns `Pending`. `D` is the optional
    /// deadline ([`NoDeadline`], a zero-sized type, or [`Deadline`]); `E` says
    /// who reports a cancellation to `tracing` ([`CleanupReports`], or the
    /// race itself for a fn without `on_cancel!`).
    #[must_use = "futures do nothing unless polled"]
    pub struct Race<'a, F, D = NoDeadline, E = CleanupReports> {
        #[pin]
        body: Option<F>,
        #[pin]
        state: RaceState<'a>,
        #[pin]
        deadline: D,
        event: E,
    }
}

pin_project! {
    /// Where a race stands with respect to its token.
    #[project = StateProj]
    enum RaceState<'a> {
        /// No waiter on the token yet: the body has not had to wait.
        Fresh { token: &'a CancellationToken },
        /// Started with its token already cancelled after too many others
        /// did in the same poll of the enclosing body (a retry loop): it
        /// returns on the next poll, its body dropped.
        Returning { reason: Cancelled },
        /// The body waits, and so does a waiter on the token; `last` is what
        /// the body's last poll reported.
        Waiting {
            last: Last,
            counted: Counted,
            #[pin]
            cancelled: WaitForCancellationFuture<'a>,
        },
        /// Cancelled: the body is polled only until what is nested in it has
        /// finished (cleanups of nested calls, shields), then dropped.
        Cancelling {
            reason: Cancelled,
            counted: Counted,
            in_flight: Arc<InFlight>,
            // Registered with a cancelled race around this one.
            upward: Option<Registration>,
            // Retries that returned into the body since: past the limit,
            // the body is dropped even if a retry's cleanup is running.
            retries: u8,
            // Nested calls still waiting in the body (see `Last::alive`).
            alive: u16,
            // How long it has waited for nested calls that have not seen a
            // cancellation yet (see `Settle`).
            settled: Settle,
        },
        /// Returned.
        Done,
    }
}

/// What a cancelled race needs to know of its body's polls so far.
#[derive(Clone, Copy, Default)]
struct Last {
    /// Something nested that must finish first was pending at the end of the
    /// body's last poll (a shield, a cleanup).
    waiting: bool,
    /// Nested calls waiting in the body, counted from their first wait until
    /// they return or are dropped, whether or not the body polled them last
    /// time (a `FuturesUnordered` polls only the futures that were woken).
    alive: u16,
}

impl Last {
    /// After a poll of the body that reported `report`.
    #[inline]
    fn update(&mut self, report: Report) {
        self.waiting = report.busy();
        self.alive = self.alive.saturating_add_signed(report.alive());
    }

    /// Something is pending inside the body: a cancelled race polls it once
    /// more so that nested calls see the cancellation.
    fn nested(self) -> bool {
        self.waiting || self.alive > 0
    }
}

/// Counts a waiting race in the report of the race around it, until dropped:
/// the state holds it while the race waits or cancels.
/// It also says, while something in its own body must finish first, that
/// the race itself must (see [`Busy`]).
#[derive(Debug)]
struct Counted {
    alive: bool,
    busy: Busy,
}

impl Counted {
    fn start() -> Counted {
        Counted {
            alive: nest::alive_start(),
            busy: Busy::default(),
        }
    }

    fn none() -> Counted {
        Counted {
            alive: false,
            busy: Busy::default(),
        }
    }

    /// Moves the count to a new state (this one then counts nothing).
    fn take(&mut self) -> Counted {
        Counted {
            alive: std::mem::take(&mut self.alive),
            busy: std::mem::take(&mut self.busy),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.alive {
            nest::alive_end();
        }
    }
}

/// Who reports a cancellation to `tracing`: the race itself for a fn without
/// `on_cancel!` ([`Name`]), else the cleanup when it ends.
pub trait Event {
    /// The fn's name, when the race reports.
    fn name(&self) -> Option<Name>;
}

/// A cleanup follows the race, and reports the cancellation when it ends.
#[derive(Debug)]
pub struct CleanupReports;

impl Event for CleanupReports {
    #[inline]
    fn name(&self) -> Option<Name> {
        None
    }
}

impl Event for Name {
    #[inline]
    fn name(&self) -> Option<Name> {
        Some(*self)
    }
}

impl<'a, F, D> Race<'a, F, D> {
    /// For a fn without `on_cancel!`, named `name`: the race reports its
    /// cancellation itself.
    pub fn without_cleanup(self, name: Name) -> Race<'a, F, D, Name> {
        Race {
            body: self.body,
            state: self.state,
            deadline: self.deadline,
            event: name,
        }
    }
}

/// A race with a deadline: `#[cancellable(timeout = ..)]`.
pub type RaceTimeout<'a, F> = Race<'a, F, Deadline<'a>>;

/// Runs `body` unless `token` is (or becomes) cancelled first.
pub fn race<F: Future>(token: &CancellationToken, body: F) -> Race<'_, F> {
    Race {
        body: Some(body),
        state: RaceState::Fresh { token },
        deadline: NoDeadline,
        event: CleanupReports,
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
        body: Some(body),
        state: RaceState::Fresh { token },
        deadline: Deadline {
            token,
            limit,
            sleep: None,
        },
        event: CleanupReports,
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
    #[inline]
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
            // The fn's own token: nested calls that got it are cancelled too,
            // and see it when the race polls its body once more.
            this.token.cancel();
        }
        elapsed
    }
}

impl<F: Future, D: RaceDeadline, E: Event> Future for Race<'_, F, D, E> {
    type Output = Result<F::Output, Cancelled>;

    // Only what needs the body's type is here; the rest is in `RaceState`'s
    // non-generic methods, compiled once.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // Cancellation first: it wins ties, and an already-cancelled token
        // means the body is never polled.
        let step = match this.state.as_mut().before_poll(cx) {
            Step::Go if this.deadline.poll_elapsed(cx) => {
                Step::Cancelled(this.state.last(), Some(Cancelled::timed_out()))
            }
            step => step,
        };
        let event = this.event.name();
        match step {
            Step::Go => {}
            Step::Cancelled(last, reason) => {
                return cancelled_now(this.body, this.state, last, reason, event, cx).map(Err);
            }
            Step::Drain(reason) => {
                return cancel(this.body, this.state, reason, true, event, false, cx).map(Err);
            }
            Step::Return(reason) => return Poll::Ready(Err(reason)),
        }

        let Some(body) = this.body.as_mut().as_pin_mut() else {
            polled_after_completion()
        };
        let polling = Polling::start();
        let poll = body.poll(cx);
        let report = polling.finish();
        let last = match poll {
            Poll::Ready(value) => {
                if !this.state.as_mut().ready(report, cx) {
                    this.body.set(None);
                    return Poll::Ready(Ok(value));
                }
                drop(value);
                Some(Last::default())
            }
            Poll::Pending => match this.state.as_mut().pending(report, cx) {
                None => return Poll::Pending,
                Some(last) => last,
            },
        };
        cancelled_now(this.body, this.state, last, None, event, cx).map(Err)
    }
}

/// What a race does before it polls its body.
enum Step {
    /// Poll the body.
    Go,
    /// Cancelled just now (`last`: what the body reported so far, `None` if
    /// it never waited; `reason` when known, a timeout).
    Cancelled(Option<Last>, Option<Cancelled>),
    /// Cancelled earlier: poll the body only so nested calls finish.
    Drain(Cancelled),
    /// Return `Err` now (a retry that waited a turn).
    Return(Cancelled),
}

impl RaceState<'_> {
    /// Before the body's poll.
    #[inline]
    fn before_poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Step {
        match self.as_mut().project() {
            StateProj::Fresh { token } if token.is_cancelled() => Step::Cancelled(None, None),
            StateProj::Fresh { .. } => Step::Go,
            StateProj::Waiting {
                last, cancelled, ..
            } => {
                if cancelled.poll(cx).is_ready() {
                    Step::Cancelled(Some(*last), None)
                } else {
                    Step::Go
                }
            }
            StateProj::Cancelling { reason, .. } => Step::Drain(*reason),
            StateProj::Returning { reason } => {
                let reason = *reason;
                nest::may_return_cancelled(false, cx);
                self.set(RaceState::Done);
                Step::Return(reason)
            }
            StateProj::Done => polled_after_completion(),
        }
    }

    /// What the body reported so far, if it ever waited.
    #[inline]
    fn last(&self) -> Option<Last> {
        match self {
            RaceState::Waiting { last, .. } => Some(*last),
            _ => None,
        }
    }

    /// The body returned a value: `true` if the race is cancelled all the
    /// same (a nested call returned `Err(Cancelled)` into it, and the race's
    /// own token is cancelled), else the race is done.
    #[inline]
    fn ready(mut self: Pin<&mut Self>, report: Report, cx: &mut Context<'_>) -> bool {
        if report.saw_cancel() && self.as_mut().poll_cancelled(cx) {
            return true;
        }
        self.set(RaceState::Done);
        false
    }

    /// The body is pending: `None` to wait (passing on to a race around this
    /// one what must finish inside), else cancelled just now, with what the
    /// body reported so far.
    #[inline]
    fn pending(
        mut self: Pin<&mut Self>,
        report: Report,
        cx: &mut Context<'_>,
    ) -> Option<Option<Last>> {
        if self.as_mut().wait(report, cx) {
            return Some(self.last());
        }
        // A cancelled race around this one waits for what must finish
        // inside (a nested cleanup, a shield) too.
        if let StateProj::Waiting { counted, .. } = self.project() {
            if report.busy() {
                counted.busy.pending();
            } else {
                counted.busy.done();
            }
        }
        None
    }

    /// The body waits: register a waiter on the token (the first time) and
    /// keep what it reported. `true` if the token is cancelled, which a
    /// cancellation that landed while the body was polled is seen here.
    #[inline]
    fn wait(mut self: Pin<&mut Self>, report: Report, cx: &mut Context<'_>) -> bool {
        match self.as_mut().project() {
            StateProj::Waiting { last, .. } => {
                last.update(report);
                false
            }
            StateProj::Fresh { token } => {
                let token: &CancellationToken = token;
                let mut last = Last::default();
                last.update(report);
                self.set(RaceState::Waiting {
                    last,
                    counted: Counted::start(),
                    cancelled: token.cancelled(),
                });
                match self.project() {
                    StateProj::Waiting { cancelled, .. } => cancelled.poll(cx).is_ready(),
                    _ => unreachable!("just set"),
                }
            }
            StateProj::Returning { .. } | StateProj::Cancelling { .. } | StateProj::Done => {
                unreachable!("a cancelled race polls its body elsewhere")
            }
        }
    }

    /// Whether the race's token is cancelled (registering a waiter if it
    /// has one).
    #[cold]
    fn poll_cancelled(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        match self.project() {
            StateProj::Fresh { token } => token.is_cancelled(),
            StateProj::Waiting { cancelled, .. } => cancelled.poll(cx).is_ready(),
            StateProj::Returning { .. } | StateProj::Cancelling { .. } | StateProj::Done => true,
        }
    }
}

#[cold]
#[inline(never)]
fn polled_after_completion() -> ! {
    panic!("a `#[cancellable]` race was polled after completion")
}

/// A race's body, as the cancellation path sees it: polled only so that
/// nested calls can finish, then dropped. A trait object, so that the
/// cancellation path is compiled once rather than for every fn.
trait Body {
    /// Polls the body, if it is still there: `true` while it is pending (a
    /// value it returns now is dropped: the race is cancelled).
    fn poll_nested(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool;
    /// Drops the body.
    fn drop_body(self: Pin<&mut Self>);
}

impl<F: Future> Body for Option<F> {
    fn poll_nested(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        self.as_pin_mut()
            .is_some_and(|fut| fut.poll(cx).is_pending())
    }

    fn drop_body(mut self: Pin<&mut Self>) {
        self.set(None);
    }
}

/// The race has just seen its cancellation: by its token, or its deadline
/// (`reason` given); `last` is `None` when the body never waited.
#[cold]
#[inline(never)]
fn cancelled_now(
    body: Pin<&mut dyn Body>,
    state: Pin<&mut RaceState<'_>>,
    last: Option<Last>,
    reason: Option<Cancelled>,
    event: Option<Name>,
    cx: &mut Context<'_>,
) -> Poll<Cancelled> {
    let retry = last.is_none() && reason.is_none();
    // A call whose token is cancelled while a cancelled caller polls it was
    // (as a rule) cancelled with it: it says why the caller was.
    let reason = reason
        .or_else(nest::draining_reason)
        .unwrap_or_else(token_cancelled);
    let drain = last.is_some_and(Last::nested);
    cancel(body, state, reason, drain, event, retry, cx)
}

/// Why a race whose token was cancelled was: see
/// [`CancelReason`](crate::CancelReason).
#[cold]
fn token_cancelled() -> Cancelled {
    Cancelled::because(crate::reason::of_current_task())
}

/// Cancelled for `reason`: polls the body again if `drain` (something was
/// pending inside it) and waits while what is nested in it is busy, then
/// drops it. `Ready(reason)` when the race returns `Err(reason)`. `retry`:
/// the call started with its token already cancelled.
fn cancel(
    mut body: Pin<&mut dyn Body>,
    mut state: Pin<&mut RaceState<'_>>,
    reason: Cancelled,
    drain: bool,
    event: Option<Name>,
    retry: bool,
    cx: &mut Context<'_>,
) -> Poll<Cancelled> {
    if drain {
        let (in_flight, retries, alive, settled) = match &*state {
            RaceState::Cancelling {
                in_flight,
                retries,
                alive,
                settled,
                ..
            } => (Arc::clone(in_flight), *retries, *alive, *settled),
            other => (
                Arc::default(),
                0,
                other.last().map_or(0, |l| l.alive),
                Settle::default(),
            ),
        };
        let draining = Draining::start(reason, &in_flight);
        let polling = Polling::draining();
        let pending = body.as_mut().poll_nested(cx);
        let report = polling.finish();
        drop(draining);
        let retries = retries.saturating_add(report.retries());
        let alive = alive.saturating_add_signed(report.alive());
        // A body that retries a cancelled call whose cleanup takes a turn
        // stays busy for ever: past the limit it is dropped all the same.
        let busy = report.busy() || !in_flight.is_idle();
        // Nested calls still wait, and none is busy: they may be on tokens
        // derived from ours that are not marked cancelled yet (see `Settle`).
        let mut settled = settled;
        if alive > 0 {
            settled.start();
        }
        let settle = !busy && alive > 0 && settled.again();
        if pending && (busy || settle) && retries < nest::RETRIES_PER_POLL {
            if settle {
                yield_turn(cx);
            }
            match state.as_mut().project() {
                StateProj::Cancelling {
                    retries: r,
                    alive: a,
                    settled: s,
                    ..
                } => {
                    *r = retries;
                    *a = alive;
                    *s = settled;
                }
                StateProj::Waiting { counted, .. } => {
                    let counted = counted.take();
                    state.set(RaceState::Cancelling {
                        reason,
                        counted,
                        in_flight,
                        upward: nest::register(),
                        retries,
                        alive,
                        settled,
                    });
                }
                _ => state.set(RaceState::Cancelling {
                    reason,
                    counted: Counted::none(),
                    in_flight,
                    upward: nest::register(),
                    retries,
                    alive,
                    settled,
                }),
            }
            if let StateProj::Cancelling { counted, .. } = state.project() {
                counted.busy.pending();
            }
            return Poll::Pending;
        }
    }
    // What the body's nested calls report as they are dropped is this
    // race's, not the caller's.
    let polling = Polling::start();
    body.drop_body();
    let _ = polling.finish();
    state.set(RaceState::Done);
    let Some(name) = event else {
        // The cleanup runs next, and returns.
        if retry {
            nest::started_cancelled();
        }
        return Poll::Ready(reason);
    };
    // No cleanup follows: the race's `Err` is the fn's.
    report_cancelled(name, reason);
    if !nest::may_return_cancelled(retry, cx) {
        state.set(RaceState::Returning { reason });
        return Poll::Pending;
    }
    Poll::Ready(reason)
}

/// How long a cancelled race waits for nested calls that still wait in its
/// body, none of them busy, before it drops them with the body.
///
/// They may be on unrelated tokens (then they are dropped, as documented), or
/// on tokens derived from the race's own that are not marked cancelled yet:
/// tokio-util cancels a tree one node at a time, on the cancelling thread, and
/// marks a node before its own children, which are adopted and marked later in
/// the same walk. tokio-util cannot tell the two apart, so the race waits
/// `SETTLE_TURNS` turns and, if the walk is still not done (the cancelling
/// thread was preempted), until `SETTLE_TIME` has passed since it first
/// polled its body with nested calls waiting in it. The clock runs while
/// nested cleanups keep the body busy too, so the wait does not add up
/// across nesting levels (each level's clock starts as the cancellation
/// reaches it). A derived call ends the wait as soon as it sees its
/// cancellation (its cleanup makes the body busy); only a call on an
/// unrelated token pays the whole wait, once per cancellation.
#[derive(Clone, Copy, Debug, Default)]
struct Settle {
    turns: u8,
    since: Option<Instant>,
}

impl Settle {
    /// Starts the clock, unless it runs already.
    fn start(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether to wait one more turn, counting it.
    fn again(&mut self) -> bool {
        if self.turns < SETTLE_TURNS {
            self.turns += 1;
            return true;
        }
        self.since
            .is_some_and(|since| since.elapsed() < SETTLE_TIME)
    }
}

/// Turns a cancelled race waits for nested calls before it looks at the
/// clock (see [`Settle`]): enough when the cancelling thread runs.
const SETTLE_TURNS: u8 = 8;

/// How long after it first polled its body with nested calls in it, past
/// `SETTLE_TURNS`, a cancelled race waits for nested calls that have not seen
/// a cancellation (see [`Settle`]): longer than a thread preempted on a
/// loaded machine waits for its core.
const SETTLE_TIME: Duration = Duration::from_millis(50);

/// Asks to be polled again after the other tasks that are ready (as
/// `tokio::task::yield_now` does; outside a Tokio runtime, at once).
fn yield_turn(cx: &mut Context<'_>) {
    let mut turn = std::pin::pin!(tokio::task::yield_now());
    let _ = turn.as_mut().poll(cx);
}

/// A fn without a cleanup was cancelled: its `tracing` event.
fn report_cancelled(_name: Name, _reason: Cancelled) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "cancel_scope", fn_name = _name.0, reason = %_reason, "cancelled");
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

/// What a cleanup reports when it ends (or is dropped before it ends), with
/// the `tracing` feature: one event per cancelled fn.
#[derive(Debug)]
pub struct Trace {
    #[cfg(feature = "tracing")]
    name: &'static str,
    #[cfg(feature = "tracing")]
    reason: Cancelled,
    #[cfg(feature = "tracing")]
    started: Option<std::time::Instant>,
    #[cfg(feature = "tracing")]
    reported: bool,
}

impl Trace {
    #[cfg(feature = "tracing")]
    fn new(name: Name, reason: Cancelled) -> Self {
        Trace {
            name: name.0,
            reason,
            started: None,
            reported: false,
        }
    }

    #[cfg(not(feature = "tracing"))]
    fn new(_name: Name, _reason: Cancelled) -> Self {
        Trace {}
    }

    fn polled(&mut self) {
        #[cfg(feature = "tracing")]
        self.started.get_or_insert_with(std::time::Instant::now);
    }

    /// `end`: how the cleanup ended ("done", "cut at its cleanup_timeout",
    /// "dropped").
    fn done(&mut self, _end: &'static str) {
        #[cfg(feature = "tracing")]
        if !std::mem::replace(&mut self.reported, true) {
            let cleanup = self.started.map(|t| t.elapsed()).unwrap_or_default();
            tracing::debug!(
                target: "cancel_scope",
                fn_name = self.name,
                reason = %self.reason,
                cleanup = _end,
                cleanup_us = u64::try_from(cleanup.as_micros()).unwrap_or(u64::MAX),
                "cancelled"
            );
        }
    }
}

#[cfg(feature = "tracing")]
impl Drop for Trace {
    fn drop(&mut self) {
        self.done("dropped");
    }
}

pin_project! {
    /// Runs a cleanup, then gives back the [`Cancelled`] it ran for (so that
    /// the generated code keeps no copy of it across the cleanup's awaits).
    /// While it runs it tells the race polling it that a nested call is
    /// still cancelling, so a cancelled caller does not drop its body yet.
    #[must_use = "futures do nothing unless polled"]
    pub struct Cleanup<F> {
        reason: Cancelled,
        trace: Trace,
        stage: Stage,
        // Registered with a cancelled race around the fn.
        upward: Option<Registration>,
        busy: Busy,
        #[pin]
        cleanup: F,
    }
}

pin_project! {
    /// A cleanup without a bound: it ends when the user's block does.
    pub struct Unbounded<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = ()>> Future for Unbounded<F> {
    type Output = &'static str;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
        self.project().inner.poll(cx).map(|()| "done")
    }
}

pin_project! {
    /// A cleanup with a `cleanup_timeout`: cut when it passes.
    pub struct Bounded<F> {
        #[pin]
        inner: Timeout<F>,
    }
}

impl<F: Future<Output = ()>> Future for Bounded<F> {
    type Output = &'static str;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
        self.project().inner.poll(cx).map(|r| match r {
            Ok(()) => "done",
            Err(_) => "cut at its cleanup_timeout",
        })
    }
}

/// See [`Cleanup`].
pub fn cleanup<F: Future<Output = ()>>(
    name: Name,
    reason: Cancelled,
    cleanup: F,
) -> Cleanup<Unbounded<F>> {
    Cleanup {
        reason,
        trace: Trace::new(name, reason),
        stage: Stage::Start,
        upward: None,
        busy: Busy::default(),
        cleanup: Unbounded { inner: cleanup },
    }
}

/// Runs a cleanup for at most `limit`; past it the cleanup is dropped and
/// the fn still returns `Err(Cancelled)`.
pub fn cleanup_within<F: Future<Output = ()>>(
    name: Name,
    reason: Cancelled,
    limit: Duration,
    cleanup: F,
) -> Cleanup<Bounded<F>> {
    Cleanup {
        reason,
        trace: Trace::new(name, reason),
        stage: Stage::Start,
        upward: None,
        busy: Busy::default(),
        cleanup: Bounded {
            inner: tokio::time::timeout(limit, cleanup),
        },
    }
}

impl<F: Future<Output = &'static str>> Future for Cleanup<F> {
    type Output = Cancelled;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Cancelled> {
        let this = self.project();
        poll_cleanup(
            this.cleanup,
            this.trace,
            this.stage,
            this.upward,
            this.busy,
            *this.reason,
            cx,
        )
    }
}

/// Polls a cleanup. A trait object, so that it is compiled once rather than
/// for every fn (a cleanup is the cold path).
fn poll_cleanup(
    cleanup: Pin<&mut dyn Future<Output = &'static str>>,
    trace: &mut Trace,
    stage: &mut Stage,
    upward: &mut Option<Registration>,
    busy: &mut Busy,
    reason: Cancelled,
    cx: &mut Context<'_>,
) -> Poll<Cancelled> {
    if let Stage::Start = stage {
        *stage = Stage::Running {
            retry: nest::take_started_cancelled(),
        };
        *upward = nest::register();
    }
    match *stage {
        Stage::Start => unreachable!("started above"),
        Stage::Running { retry } => {
            trace.polled();
            // The cleanup's own calls (a retry loop in it included) report
            // to the cleanup, not to the body around the fn.
            let polling = Polling::start();
            let poll = cleanup.poll(cx);
            let _ = polling.finish();
            let Poll::Ready(end) = poll else {
                busy.pending();
                return Poll::Pending;
            };
            busy.done();
            trace.done(end);
            *upward = None;
            if !nest::may_return_cancelled(retry, cx) {
                *stage = Stage::Done;
                return Poll::Pending;
            }
        }
        Stage::Done => {
            nest::may_return_cancelled(false, cx);
        }
        Stage::Returned => polled_after_completion(),
    }
    *stage = Stage::Returned;
    Poll::Ready(reason)
}

/// Where a [`Cleanup`] stands.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Not polled yet.
    Start,
    /// The user's block runs; `retry`: the fn started with its token
    /// already cancelled.
    Running { retry: bool },
    /// The block is done; the fn returns on the next poll (a retry that
    /// waits a turn: see `nest::RETRIES_PER_POLL`).
    Done,
    /// The fn returned.
    Returned,
}

/// A child of `token` for a fn with a `timeout`, so the deadline can cancel
/// what the body handed the token to without cancelling the caller's token.
#[must_use]
pub fn child_token(token: &CancellationToken) -> CancellationToken {
    token.child_token()
}

mod finish;
pub use finish::*;
