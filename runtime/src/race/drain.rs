//! The drain: a cancelled race polls its body only so that what is nested
//! in it finishes (invariants 3 to 6 in `race/mod.rs`), then drops it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Tally;
use super::frame::{self, Drain, InFlight, Registration};
use crate::Cancelled;

/// A race's body, as the drain sees it. A trait object, so that the
/// cancellation path is compiled once rather than for every fn.
pub(super) trait Body {
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

/// A cancelled race that still polls its body so that nested calls finish.
#[derive(Debug)]
pub(super) struct Cancelling {
    pub(super) reason: Cancelled,
    tally: Tally,
    /// Nested calls that started cancelling in the body's drain polls.
    in_flight: Arc<InFlight>,
    /// Registered with a cancelled race around this one.
    _upward: Option<Registration>,
    /// Retries that returned into the body since the cancellation.
    retries: u8,
    /// Turns waited for nested calls that have not seen a cancellation, and
    /// since when (invariant 5: `UNMARKED_TURNS`, then `UNMARKED_TIME`).
    unmarked_turns: u8,
    unmarked_since: Option<Instant>,
}

impl Cancelling {
    pub(super) fn new(reason: Cancelled, tally: Tally) -> Cancelling {
        Cancelling {
            reason,
            tally,
            in_flight: Arc::default(),
            _upward: frame::draining().map(Drain::register),
            retries: 0,
            unmarked_turns: 0,
            unmarked_since: None,
        }
    }

    /// Polls the body once more: `Pending` while something nested in it
    /// must finish (or may not have seen its cancellation yet), `Ready` when
    /// the body may be dropped.
    pub(super) fn drain(&mut self, body: Pin<&mut dyn Body>, cx: &mut Context<'_>) -> Poll<()> {
        let (pending, report) =
            frame::with_draining_report(self.reason, &self.in_flight, || body.poll_nested(cx));
        self.retries = self.retries.saturating_add(report.retries);
        self.tally.update(report);
        let waiting = self.tally.waiting > 0;
        // A registration is a clone of `in_flight`.
        let busy = report.busy() || Arc::get_mut(&mut self.in_flight).is_none();
        if waiting {
            self.unmarked_since.get_or_insert_with(Instant::now);
        }
        let unmarked = !busy && waiting && self.wait_unmarked();
        if !pending || !(busy || unmarked) || self.retries >= frame::RETRIES_PER_POLL {
            return Poll::Ready(());
        }
        if unmarked {
            yield_turn(cx);
        }
        self.tally.busy.pending();
        Poll::Pending
    }

    /// Whether to wait one more turn for nested calls that may be on derived
    /// tokens not marked cancelled yet (tokio-util marks a tree one node at a
    /// time, on the cancelling thread), counting it. The clock runs while
    /// nested cleanups keep the body busy too, so the wait does not add up
    /// across levels.
    fn wait_unmarked(&mut self) -> bool {
        if self.unmarked_turns < UNMARKED_TURNS {
            self.unmarked_turns += 1;
            return true;
        }
        self.unmarked_since
            .is_some_and(|since| since.elapsed() < UNMARKED_TIME)
    }
}

/// Turns a cancelled race waits for nested calls before it looks at the
/// clock: enough when the cancelling thread runs.
const UNMARKED_TURNS: u8 = 8;

/// How long, past `UNMARKED_TURNS`, a cancelled race waits for nested calls
/// that have not seen a cancellation: longer than a thread preempted on a
/// loaded machine waits for its core.
const UNMARKED_TIME: Duration = Duration::from_millis(50);

/// Asks to be polled again after the other tasks that are ready (as
/// `tokio::task::yield_now` does; outside a Tokio runtime, at once).
fn yield_turn(cx: &mut Context<'_>) {
    let mut turn = std::pin::pin!(tokio::task::yield_now());
    let _ = turn.as_mut().poll(cx);
}
