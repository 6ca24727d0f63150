//! What the futures polled inside one poll of a `#[cancellable]` body tell
//! the race that polls it: the only per-thread state of the race.
//!
//! A race makes a fresh [`Report`] the thread's current one while it polls
//! its body and puts its caller's back afterwards (also when the poll
//! panics), so a report reaches exactly the innermost race whose body's poll
//! is on the stack: its reach is the body's call tree for that poll, and
//! nothing in it cancels anything. A race reads its report only to decide
//! *when* to drop its *own* body, once its *own* token is cancelled.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Cancelled;

/// How many `#[cancellable]` calls that start with an already-cancelled
/// token may return `Err(Cancelled)` into one poll of the body that contains
/// them before the next one waits a turn (its cleanup done): a body that
/// retries a cancelled call in a loop is cut there, and a cancelled caller
/// drops it at that point.
pub(crate) const RETRIES_PER_POLL: u8 = 32;

/// What one poll of a body reported to the race that polls it.
#[derive(Clone, Copy)]
pub(crate) struct Report {
    /// This report belongs to a race (the thread's base report does not).
    pub(crate) inside: bool,
    /// A nested `#[cancellable]` call or a [`shield`](crate::shield) is
    /// pending in the body: a cancelled race polls its body once more before
    /// dropping it, so that nested calls on derived tokens see the
    /// cancellation and clean up.
    pub(crate) waiting: bool,
    /// Something in the body must finish before the body may be dropped: a
    /// nested call that is cancelling, or a `shield`.
    pub(crate) busy: bool,
    /// A nested call returned `Err(Cancelled)` into the body: a body that
    /// then completes is checked against the race's own token.
    pub(crate) saw_cancel: bool,
    /// A nested call returned into the body (`Ok` or `Err`): with nothing
    /// else nested pending, the body no longer waits inside a nested call.
    pub(crate) returned: bool,
    /// The call that just returned `Err(Cancelled)` from its race started
    /// with its token already cancelled (its cleanup, which runs next in
    /// the same poll, then counts as a retry).
    pub(crate) started_cancelled: bool,
    /// Retries (see [`RETRIES_PER_POLL`]) that returned into the body.
    pub(crate) retries: u8,
    /// While a cancelled race polls its body to let nested calls clean up
    /// (at any depth): why, for the nested calls whose own token is
    /// cancelled too, and so that a shield that starts then defers nothing.
    pub(crate) reason: Option<Cancelled>,
    /// While a cancelled race polls its body: where the nested calls that
    /// start cancelling register, so that the race waits for them even when
    /// the body does not poll them again (a `FuturesUnordered` polls only
    /// the futures that were woken). Points into an `Arc` the race holds
    /// for the whole poll.
    in_flight: *const InFlight,
}

impl Report {
    const EMPTY: Report = Report {
        inside: false,
        waiting: false,
        busy: false,
        saw_cancel: false,
        returned: false,
        started_cancelled: false,
        retries: 0,
        reason: None,
        in_flight: std::ptr::null(),
    };
}

thread_local! {
    static CURRENT: Cell<Report> = const { Cell::new(Report::EMPTY) };
}

/// The cancellations in flight inside one cancelled race's body: nested
/// calls that started cancelling while it polled its body and have not
/// finished their cleanups, and shields that run.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
}

impl InFlight {
    /// Nothing registered is still running.
    pub(crate) fn is_idle(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }
}

/// One registered cancellation in flight; finished when dropped.
pub(crate) struct Registration(Arc<InFlight>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Release);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registration")
    }
}

/// The caller's report, put back when dropped: also when the poll in between
/// panics, so that a caught panic leaves nothing behind.
pub(crate) struct Polling {
    outer: Report,
}

impl Polling {
    /// Before a race polls its body: a fresh report (inheriting, from a
    /// cancelled race around it, why and where to register).
    #[inline]
    pub(crate) fn start() -> Polling {
        let fresh = Report {
            inside: true,
            ..Report::EMPTY
        };
        let outer = CURRENT.replace(fresh);
        if outer.reason.is_some() {
            inherit(outer);
        }
        Polling { outer }
    }

    /// Before a cancelled race polls its body so that nested calls finish:
    /// they see `reason`, and register in `in_flight`.
    pub(crate) fn draining(reason: Cancelled, in_flight: &Arc<InFlight>) -> Polling {
        let fresh = Report {
            inside: true,
            reason: Some(reason),
            in_flight: Arc::as_ptr(in_flight),
            ..Report::EMPTY
        };
        Polling {
            outer: CURRENT.replace(fresh),
        }
    }

    /// After the poll: what the body's futures reported. `returns`: the
    /// race returns now, into the body around it.
    #[inline]
    pub(crate) fn finish(self, returns: bool) -> Report {
        let this = std::mem::ManuallyDrop::new(self);
        let mut outer = this.outer;
        outer.returned |= returns;
        CURRENT.replace(outer)
    }
}

impl Drop for Polling {
    #[inline]
    fn drop(&mut self) {
        CURRENT.set(self.outer);
    }
}

/// A race polled while one around it is cancelled and polls its body: the
/// calls and shields inside it see that cancellation too.
#[cold]
fn inherit(outer: Report) {
    let mut report = CURRENT.get();
    report.reason = outer.reason;
    report.in_flight = outer.in_flight;
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

/// Registers a cancellation in flight with the cancelled race polling us, if
/// any: it will not drop its body before the registration is dropped.
pub(crate) fn register() -> Option<Registration> {
    let ptr = CURRENT.get().in_flight;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null `in_flight` was set by `Polling::draining` from an
    // `Arc` that the race holds for the whole poll during which this report
    // is the current one; the report is replaced (also on unwind) before the
    // race can drop it. So the pointee is alive, and its count may be
    // incremented for the clone made here.
    let in_flight = unsafe {
        Arc::increment_strong_count(ptr);
        Arc::from_raw(ptr)
    };
    in_flight.count.fetch_add(1, Ordering::AcqRel);
    Some(Registration(in_flight))
}

/// A call that starts with its token already cancelled returns from its
/// race: its cleanup, which runs next, counts it as a retry.
pub(crate) fn started_cancelled() {
    let mut report = CURRENT.get();
    report.started_cancelled = true;
    CURRENT.set(report);
}

/// A cancelled call is about to return `Err(Cancelled)` into the body,
/// `retry` if it started with its token already cancelled: `false` if it must
/// wait a turn first (too many retries returned in this poll of the body).
pub(crate) fn may_return_cancelled(retry: bool) -> bool {
    let mut report = CURRENT.get();
    if retry && report.inside {
        if report.retries >= RETRIES_PER_POLL {
            return false;
        }
        report.retries += 1;
    }
    report.saw_cancel = true;
    report.returned = true;
    CURRENT.set(report);
    true
}

/// Takes the flag [`started_cancelled`] set: a cleanup's first poll.
pub(crate) fn take_started_cancelled() -> bool {
    let mut report = CURRENT.get();
    let was = std::mem::replace(&mut report.started_cancelled, false);
    CURRENT.set(report);
    was
}

/// Why an enclosing race, cancelled, is polling its body, if it is.
pub(crate) fn draining_reason() -> Option<Cancelled> {
    CURRENT.get().reason
}
