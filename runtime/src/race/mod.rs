//! The race of a `#[cancellable]` fn: its body against its token. What the
//! generated code calls is re-exported by `crate::private`.
//!
//! - `mod.rs`: [`Race`], and what it does before and after it polls its body.
//! - `frame.rs`: the race's only per-thread state, one frame and one guard.
//! - `drain.rs`: a cancelled race polling its body so that nested calls
//!   finish.
//! - `cleanup.rs`: the cleanup, and the `tracing` event of a cancelled fn.
//! - `exit.rs`: the fn's return value (`return`/`?` in the setup, `flatten`).
//!
//! # Invariants
//!
//! 1. **Only its own token.** A race drops its body only once its own token
//!    is cancelled (or its own deadline passed). What the futures in its body
//!    report changes *when* it drops the body, never *whether*.
//! 2. **Cancellation wins.** Its token is checked before the body's first
//!    poll (already cancelled: the body is never polled), whenever the body
//!    waits, and when the body returns a value after a nested call returned
//!    `Err(Cancelled)` into it; then the race returns `Err`.
//! 3. **Inner first.** A cancelled race polls its body again if something
//!    nested was waiting in it, so that nested calls on derived tokens see
//!    their cancellation; it keeps its body while something in it must
//!    finish first (a nested cleanup, a `shield`, a nested call that started
//!    cancelling in a drain poll, registered in the race's `InFlight`).
//! 4. **Reports are the poll's.** The frame's report belongs to exactly one
//!    poll of one body: the innermost race whose body's poll is on this
//!    thread's stack. One guard saves and restores the frame around it, also
//!    on unwind. A thing that said "busy" and ended or was dropped in the
//!    same poll takes it back, so a report says what is pending when the poll
//!    returns.
//! 5. **Bounded waits.** Nested calls still waiting and not busy may be on
//!    derived tokens not marked yet (tokio-util marks a tree one node at a
//!    time): the race waits for them 8 turns, then until 50 ms have passed,
//!    once per cancellation; then drops them with the body.
//! 6. **Bounded retries.** Calls that start with a cancelled token return
//!    into one poll of a body at most 32 times, or until Tokio's budget is
//!    spent; the next waits a turn. A cancelled race drops its body there.
//!    (Tokio's budget alone is not enough: there is none under
//!    `futures::executor::block_on`, `tokio::task::unconstrained` or inside
//!    `block_in_place`.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Cancelled;

pub(crate) mod cleanup;
mod drain;
pub(crate) mod exit;
pub(crate) mod frame;

use cleanup::{Name, report_cancelled};
use drain::{Body, Cancelling};
use frame::{Busy, Polling, Report};

// What depends on the body's type (polling it, dropping it) is all that is
// compiled again for every `#[cancellable]` fn; the cancellation path takes
// the body as a trait object and is compiled once.

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
        /// did in the same poll of the enclosing body: it returns on the next
        /// poll, its body dropped (invariant 6).
        Returning { reason: Cancelled },
        /// The body waits, and so does a waiter on the token.
        Waiting {
            tally: Tally,
            #[pin]
            cancelled: WaitForCancellationFuture<'a>,
        },
        /// Cancelled: the body is polled only until what is nested in it has
        /// finished, then dropped.
        Cancelling { cancelling: Cancelling },
        /// Returned.
        Done,
    }
}

/// What a waiting or cancelling race keeps of its body's polls, and how the
/// race around it counts this one until it is dropped.
#[derive(Debug, Default)]
struct Tally {
    /// Nested calls waiting in the body, counted from their first wait until
    /// they return or are dropped, whether or not the body polled them last
    /// time (a `FuturesUnordered` polls only the futures that were woken).
    waiting: u16,
    /// This race is counted as a nested call waiting, by the race around it.
    counted: bool,
    /// Something in the body must finish first, as the body's last poll
    /// said, and so this race does, for the race around it.
    busy: Busy,
}

impl Tally {
    fn start() -> Tally {
        Tally {
            waiting: 0,
            counted: frame::alive_start(),
            busy: Busy::default(),
        }
    }

    /// After a poll of the body that reported `report`.
    #[inline]
    fn update(&mut self, report: Report) {
        self.waiting = self.waiting.saturating_add_signed(report.alive);
        if report.busy() {
            self.busy.pending();
        } else {
            self.busy.done();
        }
    }

    /// Something is pending inside the body: a cancelled race polls it once
    /// more so that nested calls see the cancellation.
    fn nested(&self) -> bool {
        self.busy.is_marked() || self.waiting > 0
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if self.counted {
            frame::alive_end();
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

/// A child of `token` for a fn with a `timeout`, so the deadline can cancel
/// what the body handed the token to without cancelling the caller's token.
#[must_use]
pub fn child_token(token: &CancellationToken) -> CancellationToken {
    token.child_token()
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
        let before = match this.state.as_mut().before_poll(cx) {
            BeforePoll::PollBody if this.deadline.poll_elapsed(cx) => {
                BeforePoll::Cancelled(this.state.nested(), Some(Cancelled::timed_out()))
            }
            before => before,
        };
        let event = this.event.name();
        match before {
            BeforePoll::PollBody => {}
            BeforePoll::Cancelled(nested, reason) => {
                return this
                    .state
                    .cancelled_now(this.body, nested, reason, event, cx)
                    .map(Err);
            }
            BeforePoll::Drain => return this.state.drain(this.body, event, cx).map(Err),
            BeforePoll::Return(reason) => return Poll::Ready(Err(reason)),
        }

        let Some(body) = this.body.as_mut().as_pin_mut() else {
            polled_after_completion()
        };
        let polling = Polling::start();
        let poll = body.poll(cx);
        let report = polling.finish();
        let nested = match poll {
            Poll::Ready(value) => {
                if !this.state.as_mut().ready(report, cx) {
                    this.body.set(None);
                    return Poll::Ready(Ok(value));
                }
                drop(value);
                Some(false)
            }
            Poll::Pending => {
                if !this.state.as_mut().wait(report, cx) {
                    return Poll::Pending;
                }
                this.state.nested()
            }
        };
        this.state
            .cancelled_now(this.body, nested, None, event, cx)
            .map(Err)
    }
}

/// What a race does before it polls its body.
enum BeforePoll {
    PollBody,
    /// Cancelled just now (whether something is nested in the body, `None`
    /// if it never waited; the reason when known: a timeout).
    Cancelled(Option<bool>, Option<Cancelled>),
    /// Cancelled earlier: poll the body only so that nested calls finish.
    Drain,
    /// Return `Err` now (a retry that waited a turn).
    Return(Cancelled),
}

impl RaceState<'_> {
    #[inline]
    fn before_poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> BeforePoll {
        match self.as_mut().project() {
            StateProj::Fresh { token } if token.is_cancelled() => BeforePoll::Cancelled(None, None),
            StateProj::Fresh { .. } => BeforePoll::PollBody,
            StateProj::Waiting { cancelled, .. } => {
                if cancelled.poll(cx).is_ready() {
                    BeforePoll::Cancelled(self.nested(), None)
                } else {
                    BeforePoll::PollBody
                }
            }
            StateProj::Cancelling { .. } => BeforePoll::Drain,
            StateProj::Returning { reason } => {
                let reason = *reason;
                frame::may_return_cancelled(false, cx);
                self.set(RaceState::Done);
                BeforePoll::Return(reason)
            }
            StateProj::Done => polled_after_completion(),
        }
    }

    /// Whether something is nested in the body, if it ever waited.
    #[inline]
    fn nested(&self) -> Option<bool> {
        match self {
            RaceState::Waiting { tally, .. } => Some(tally.nested()),
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

    /// The body waits: register a waiter on the token (the first time) and
    /// keep what it reported, telling a race around this one whether
    /// something inside must finish first. `true` if the token is cancelled,
    /// which a cancellation that landed while the body was polled is seen
    /// here.
    #[inline]
    fn wait(mut self: Pin<&mut Self>, report: Report, cx: &mut Context<'_>) -> bool {
        let fresh = match self.as_mut().project() {
            StateProj::Fresh { token } => Some(&**token),
            StateProj::Waiting { .. } => None,
            StateProj::Returning { .. } | StateProj::Cancelling { .. } | StateProj::Done => {
                unreachable!("a cancelled race polls its body elsewhere")
            }
        };
        if let Some(token) = fresh {
            self.set(RaceState::Waiting {
                tally: Tally::start(),
                cancelled: token.cancelled(),
            });
        }
        let StateProj::Waiting { tally, cancelled } = self.project() else {
            unreachable!("just set")
        };
        tally.update(report);
        fresh.is_some() && cancelled.poll(cx).is_ready()
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

    /// The race has just seen its cancellation: by its token, or its
    /// deadline (`reason` given); `nested` is `None` when the body never
    /// waited.
    #[cold]
    #[inline(never)]
    fn cancelled_now(
        mut self: Pin<&mut Self>,
        body: Pin<&mut dyn Body>,
        nested: Option<bool>,
        reason: Option<Cancelled>,
        event: Option<Name>,
        cx: &mut Context<'_>,
    ) -> Poll<Cancelled> {
        let retry = nested.is_none() && reason.is_none();
        // A call whose token is cancelled while a cancelled caller polls it
        // was (as a rule) cancelled with it: it says why the caller was.
        let reason = reason
            .or_else(frame::draining_reason)
            .unwrap_or_else(token_cancelled);
        if nested != Some(true) {
            return self.finish(body, reason, event, retry, cx);
        }
        let tally = match self.as_mut().project() {
            StateProj::Waiting { tally, .. } => std::mem::take(tally),
            _ => Tally::default(),
        };
        let cancelling = Cancelling::new(reason, tally);
        self.set(RaceState::Cancelling { cancelling });
        self.drain(body, event, cx)
    }

    /// Cancelled: polls the body so that nested calls finish, and drops it
    /// once they have.
    #[cold]
    #[inline(never)]
    fn drain(
        mut self: Pin<&mut Self>,
        mut body: Pin<&mut dyn Body>,
        event: Option<Name>,
        cx: &mut Context<'_>,
    ) -> Poll<Cancelled> {
        let StateProj::Cancelling { cancelling } = self.as_mut().project() else {
            unreachable!("draining a race that is not cancelled")
        };
        let reason = cancelling.reason;
        if cancelling.drain(body.as_mut(), cx).is_pending() {
            return Poll::Pending;
        }
        self.finish(body, reason, event, false, cx)
    }

    /// Drops the body and returns `Err(reason)`, or waits a turn first (a
    /// fn without a cleanup, started cancelled: invariant 6). `retry`: the
    /// call started with its token already cancelled.
    fn finish(
        mut self: Pin<&mut Self>,
        body: Pin<&mut dyn Body>,
        reason: Cancelled,
        event: Option<Name>,
        retry: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Cancelled> {
        // What the body's nested calls report as they are dropped is this
        // race's, not the caller's.
        let polling = Polling::start();
        body.drop_body();
        let _ = polling.finish();
        self.set(RaceState::Done);
        let Some(name) = event else {
            // The cleanup runs next, and returns.
            if retry {
                frame::started_cancelled();
            }
            return Poll::Ready(reason);
        };
        // No cleanup follows: the race's `Err` is the fn's.
        report_cancelled(name, reason);
        if !frame::may_return_cancelled(retry, cx) {
            self.set(RaceState::Returning { reason });
            return Poll::Pending;
        }
        Poll::Ready(reason)
    }
}

/// Why a race whose token was cancelled was: see
/// [`CancelReason`](crate::CancelReason).
#[inline]
fn token_cancelled() -> Cancelled {
    Cancelled::because(crate::reason::of_current_task())
}

#[cold]
#[inline(never)]
pub(super) fn polled_after_completion() -> ! {
    panic!("a `#[cancellable]` race was polled after completion")
}
