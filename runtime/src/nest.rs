//! What the futures polled inside one poll of a `#[cancellable]` body tell
//! the race that polls it: the only per-thread state of the race.
//!
//! A race makes a fresh [`Report`] the thread's current one while it polls
//! its body and puts its caller's back afterwards (also when the poll
//! panics), so a report reaches exactly the innermost race whose body's poll
//! is on the stack: its reach is the body's call tree for that poll, and
//! nothing in it cancels anything. A race reads its report only to decide
//! what to do with its *own* body once its *own* token is cancelled.

use std::cell::Cell;

use crate::Cancelled;

/// How many `#[cancellable]` calls may return `Err(Cancelled)` into one
/// poll of the body that contains them before the next one waits a turn
/// (its cleanup done): a body that retries a cancelled call in a loop is cut
/// there, and a cancelled caller drops it at that point.
pub(crate) const RETURNS_PER_POLL: u8 = 64;

/// What one poll of a body reported to the race that polls it.
#[derive(Clone, Copy, Default)]
pub(crate) struct Report {
    /// This report belongs to a race (the thread's base report does not).
    pub(crate) inside: bool,
    /// A nested `#[cancellable]` call or a [`shield`](crate::shield) is
    /// pending in the body: a cancelled race polls its body once more before
    /// dropping it, so that nested calls on derived tokens see the
    /// cancellation and clean up.
    pub(crate) waiting: bool,
    /// Something in the body must finish before the body may be dropped: a
    /// nested call that is cancelling (running its cleanup, or waiting for
    /// its own nested calls), or a `shield`.
    pub(crate) busy: bool,
    /// A nested call returned `Err(Cancelled)` into the body: a body that
    /// then completes is checked against the race's own token.
    pub(crate) saw_cancel: bool,
    /// Nested calls that returned `Err(Cancelled)` into the body.
    pub(crate) returns: u8,
    /// While a cancelled race polls its body to let nested calls clean up
    /// (at any depth): why, for the nested calls whose own token is
    /// cancelled too, and so that a shield that starts then defers nothing.
    pub(crate) reason: Option<Cancelled>,
}

thread_local! {
    static CURRENT: Cell<Report> = const {
        Cell::new(Report {
            inside: false,
            waiting: false,
            busy: false,
            saw_cancel: false,
            returns: 0,
            reason: None,
        })
    };
}

/// The caller's report, put back when dropped: also when the poll in between
/// panics, so that a caught panic leaves nothing behind.
pub(crate) struct Polling {
    outer: Report,
}

impl Polling {
    /// Before a race polls its body: a fresh report, `reason` set when the
    /// race is cancelled and polls its body only so nested calls clean up
    /// (or inherited from a cancelled race around it).
    #[inline]
    pub(crate) fn start(reason: Option<Cancelled>) -> Polling {
        let fresh = Report {
            inside: true,
            reason,
            ..Report::default()
        };
        let outer = CURRENT.replace(fresh);
        if reason.is_none() && outer.reason.is_some() {
            inherit(outer.reason);
        }
        Polling { outer }
    }

    /// After the poll: what the body's futures reported.
    #[inline]
    pub(crate) fn finish(self) -> Report {
        let this = std::mem::ManuallyDrop::new(self);
        CURRENT.replace(this.outer)
    }
}

impl Drop for Polling {
    #[inline]
    fn drop(&mut self) {
        CURRENT.set(self.outer);
    }
}

/// A race polled while one around it is cancelled and drains its body: the
/// calls and shields inside it see that cancellation too.
#[cold]
fn inherit(reason: Option<Cancelled>) {
    let mut report = CURRENT.get();
    report.reason = reason;
    CURRENT.set(report);
}

/// Tells the race polling us that something is pending in its body, `busy`
/// if that something must finish before the body is dropped.
#[inline]
pub(crate) fn pending(busy: bool) {
    let mut report = CURRENT.get();
    report.waiting = true;
    report.busy |= busy;
    CURRENT.set(report);
}

/// A nested call, cancelled and cleaned up, is about to return
/// `Err(Cancelled)` into the body: `false` if it must wait a turn first
/// (too many did in this poll of the body).
pub(crate) fn may_return_cancelled() -> bool {
    let mut report = CURRENT.get();
    if report.inside {
        if report.returns >= RETURNS_PER_POLL {
            return false;
        }
        report.returns += 1;
    }
    report.saw_cancel = true;
    CURRENT.set(report);
    true
}

/// A nested call that waited a turn returns `Err(Cancelled)` into the body
/// now, whatever the count (so it cannot wait for ever, e.g. polled by a
/// `block_on` inside the body).
pub(crate) fn return_cancelled() {
    let mut report = CURRENT.get();
    report.saw_cancel = true;
    CURRENT.set(report);
}

/// Why an enclosing race, cancelled, is polling its body, if it is.
pub(crate) fn draining_reason() -> Option<Cancelled> {
    CURRENT.get().reason
}
