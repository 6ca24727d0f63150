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

/// What one poll of a body reported to the race that polls it: a few bits
/// and a count, so that saving and restoring it around every poll is cheap.
#[derive(Clone, Copy, Default)]
pub(crate) struct Report {
    flags: u8,
    /// Retries (see [`RETRIES_PER_POLL`]) that returned into the body.
    retries: u8,
}

/// This report belongs to a race (the thread's base report does not).
const INSIDE: u8 = 1;
/// A nested `#[cancellable]` call or a [`shield`](crate::shield) is pending
/// in the body: a cancelled race polls its body once more before dropping it,
/// so that nested calls on derived tokens see the cancellation and clean up.
const WAITING: u8 = 2;
/// Something in the body must finish before the body may be dropped: a
/// nested call that is cancelling, or a `shield`.
const BUSY: u8 = 4;
/// A nested call returned `Err(Cancelled)` into the body: a body that then
/// completes is checked against the race's own token.
const SAW_CANCEL: u8 = 8;
/// A nested call returned into the body (`Ok` or `Err`): with nothing else
/// nested pending, the body no longer waits inside a nested call.
const RETURNED: u8 = 16;
/// The call that just returned `Err(Cancelled)` from its race started with
/// its token already cancelled (its cleanup, which runs next in the same
/// poll, then counts as a retry).
const STARTED_CANCELLED: u8 = 32;

impl Report {
    const EMPTY: Report = Report {
        flags: 0,
        retries: 0,
    };

    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// See [`WAITING`] and [`BUSY`].
    pub(crate) fn waiting(self) -> bool {
        self.has(WAITING | BUSY)
    }

    /// See [`BUSY`].
    pub(crate) fn busy(self) -> bool {
        self.has(BUSY)
    }

    /// See [`SAW_CANCEL`].
    pub(crate) fn saw_cancel(self) -> bool {
        self.has(SAW_CANCEL)
    }

    /// See [`RETURNED`].
    pub(crate) fn returned(self) -> bool {
        self.has(RETURNED)
    }
}

/// While a cancelled race polls its body so that nested calls finish (at
/// any depth, through races that are not cancelled).
#[derive(Clone, Copy)]
struct Drain {
    /// Why: for the nested calls whose own token is cancelled too, and so
    /// that a shield that starts then defers nothing.
    reason: Option<Cancelled>,
    /// Where the nested calls that start cancelling register, so that the
    /// race waits for them even when the body does not poll them again (a
    /// `FuturesUnordered` polls only the futures that were woken). Points
    /// into an `Arc` the race holds for the whole poll.
    in_flight: *const InFlight,
}

thread_local! {
    static CURRENT: Cell<Report> = const { Cell::new(Report::EMPTY) };
    static DRAIN: Cell<Drain> = const {
        Cell::new(Drain { reason: None, in_flight: std::ptr::null() })
    };
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
    /// Before a race polls its body: a fresh report.
    #[inline]
    pub(crate) fn start() -> Polling {
        let fresh = Report {
            flags: INSIDE,
            retries: 0,
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
        if returns {
            outer.flags |= RETURNED;
        }
        CURRENT.replace(outer)
    }
}

impl Drop for Polling {
    #[inline]
    fn drop(&mut self) {
        CURRENT.set(self.outer);
    }
}

/// A cancelled race polls its body so that nested calls finish: they see
/// `reason`, and register in `in_flight`, until this is dropped (also on
/// unwind).
pub(crate) struct Draining {
    outer: Drain,
}

impl Draining {
    pub(crate) fn start(reason: Cancelled, in_flight: &Arc<InFlight>) -> Draining {
        Draining {
            outer: DRAIN.replace(Drain {
                reason: Some(reason),
                in_flight: Arc::as_ptr(in_flight),
            }),
        }
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        DRAIN.set(self.outer);
    }
}

fn update(f: impl FnOnce(&mut Report)) {
    let mut report = CURRENT.get();
    f(&mut report);
    CURRENT.set(report);
}

/// Tells the race polling us that something is pending in its body, `busy`
/// if that something must finish before the body is dropped.
#[inline]
pub(crate) fn pending(busy: bool) {
    update(|r| r.flags |= if busy { WAITING | BUSY } else { WAITING });
}

/// Registers a cancellation in flight with the cancelled race polling us, if
/// any: it will not drop its body before the registration is dropped.
pub(crate) fn register() -> Option<Registration> {
    let ptr = DRAIN.get().in_flight;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null `in_flight` was set by `Draining::start` from an
    // `Arc` that the race holds for the whole poll during which it is set;
    // it is put back (also on unwind) before the race can drop that `Arc`.
    // So the pointee is alive, and its count may be incremented for the
    // clone made here.
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
    update(|r| r.flags |= STARTED_CANCELLED);
}

/// A cancelled call is about to return `Err(Cancelled)` into the body,
/// `retry` if it started with its token already cancelled: `false` if it must
/// wait a turn first (too many retries returned in this poll of the body).
pub(crate) fn may_return_cancelled(retry: bool) -> bool {
    let mut report = CURRENT.get();
    if retry && report.has(INSIDE) {
        if report.retries >= RETRIES_PER_POLL {
            return false;
        }
        report.retries += 1;
    }
    report.flags |= SAW_CANCEL | RETURNED;
    CURRENT.set(report);
    true
}

/// Takes the flag [`started_cancelled`] set: a cleanup's first poll.
pub(crate) fn take_started_cancelled() -> bool {
    let mut report = CURRENT.get();
    let was = report.has(STARTED_CANCELLED);
    report.flags &= !STARTED_CANCELLED;
    CURRENT.set(report);
    was
}

/// Why an enclosing race, cancelled, is polling its body, if it is.
pub(crate) fn draining_reason() -> Option<Cancelled> {
    DRAIN.get().reason
}
