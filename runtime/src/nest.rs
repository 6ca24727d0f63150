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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

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
    /// Which poll this is: what a [`Busy`] mark compares with.
    poll: u64,
    flags: u8,
    /// Things in the body that must finish before it may be dropped (a
    /// nested call that is cancelling, a `shield`) and were pending when last
    /// polled in this poll: see [`Busy`].
    busy: u8,
    /// Retries (see [`RETRIES_PER_POLL`]) that returned into the body.
    retries: u8,
    /// How many more nested calls wait in the body than before the poll
    /// (each counts from its first wait until it returns or is dropped).
    alive: i16,
}

/// This report belongs to a race (the thread's base report does not).
const INSIDE: u8 = 1;
/// A nested call returned `Err(Cancelled)` into the body: a body that then
/// completes is checked against the race's own token.
const SAW_CANCEL: u8 = 8;
/// This report belongs to a cancelled race polling its body so that nested
/// calls finish: only the calls polled directly by that body (not through a
/// race that is not cancelled) see it.
const DRAINING: u8 = 16;
/// The call that just returned `Err(Cancelled)` from its race started with
/// its token already cancelled (its cleanup, which runs next in the same
/// poll, then counts as a retry).
const STARTED_CANCELLED: u8 = 32;

impl Report {
    const EMPTY: Report = Report {
        poll: 0,
        flags: 0,
        busy: 0,
        retries: 0,
        alive: 0,
    };

    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Something in the body must finish before the body may be dropped.
    pub(crate) fn busy(self) -> bool {
        self.busy > 0
    }

    /// See [`SAW_CANCEL`].
    pub(crate) fn saw_cancel(self) -> bool {
        self.has(SAW_CANCEL)
    }

    /// See [`Report::alive`]'s field.
    pub(crate) fn alive(self) -> i16 {
        self.alive
    }

    /// Retries that returned into the body in this poll.
    pub(crate) fn retries(self) -> u8 {
        self.retries
    }
}

thread_local! {
    static CURRENT: Cell<Report> = const { Cell::new(Report::EMPTY) };
    /// While a cancelled race polls its body so that nested calls finish:
    /// where the nested calls that start cancelling register, so that the
    /// race waits for them even when the body does not poll them again (a
    /// `FuturesUnordered` polls only the futures that were woken). Points
    /// into an `Arc` the race holds for the whole poll.
    static IN_FLIGHT: Cell<*const InFlight> = const { Cell::new(std::ptr::null()) };
    /// Why that race was cancelled: for the nested calls it polls whose own
    /// token is cancelled too (they were cancelled with it, typically).
    static WHY: Cell<Option<Cancelled>> = const { Cell::new(None) };
    /// The last poll number handed out on this thread (see [`Busy`]); the
    /// first one is taken from [`THREADS`], so that no two threads share one.
    static POLLS: Cell<u64> = const { Cell::new(0) };
}

/// Threads that have polled a race so far: the high bits of their polls'
/// numbers.
static THREADS: AtomicU64 = AtomicU64::new(1);

/// A number for a new poll of a body, unique among all threads'.
#[inline]
fn next_poll() -> u64 {
    let mut poll = POLLS.get();
    if poll == 0 {
        poll = THREADS.fetch_add(1, Ordering::Relaxed) << 32;
    }
    poll += 1;
    POLLS.set(poll);
    poll
}

/// What a thing in a body that must finish first (a cleanup, a `shield`, a
/// race with one of those in its own body) told the poll that last saw it
/// pending: the number of that poll, or 0.
///
/// The race reads its report when its body's poll returns, so a thing that
/// said it was busy and then ended, or was dropped, in the same poll (driven
/// to its end by a `block_on` inside `block_in_place`, or dropped by a
/// `select!` that another branch won) takes it back; said in an earlier
/// poll, it is gone with that poll's report.
#[derive(Debug, Default)]
pub(crate) struct Busy(u64);

impl Busy {
    /// Pending, and must finish first: counted once per poll.
    #[inline]
    pub(crate) fn pending(&mut self) {
        let mut report = CURRENT.get();
        if report.has(INSIDE) && self.0 != report.poll {
            report.busy = report.busy.saturating_add(1);
            self.0 = report.poll;
            CURRENT.set(report);
        }
    }

    /// Ended, dropped, or no longer busy: takes back what it said in this
    /// poll.
    #[inline]
    pub(crate) fn done(&mut self) {
        if self.0 == 0 {
            return;
        }
        let mut report = CURRENT.get();
        if report.poll == self.0 {
            report.busy = report.busy.saturating_sub(1);
            CURRENT.set(report);
        }
        self.0 = 0;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.done();
    }
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
        Polling::with(INSIDE)
    }

    /// Before a cancelled race polls its body so that nested calls finish
    /// (with a [`Draining`] in place).
    pub(crate) fn draining() -> Polling {
        Polling::with(INSIDE | DRAINING)
    }

    #[inline]
    fn with(flags: u8) -> Polling {
        let fresh = Report {
            poll: next_poll(),
            flags,
            ..Report::EMPTY
        };
        Polling {
            outer: CURRENT.replace(fresh),
        }
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

/// A cancelled race polls its body so that nested calls finish: they
/// register in `in_flight` until this is dropped (also on unwind).
pub(crate) struct Draining {
    outer: (*const InFlight, Option<Cancelled>),
}

impl Draining {
    pub(crate) fn start(reason: Cancelled, in_flight: &Arc<InFlight>) -> Draining {
        Draining {
            outer: (
                IN_FLIGHT.replace(Arc::as_ptr(in_flight)),
                WHY.replace(Some(reason)),
            ),
        }
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        IN_FLIGHT.set(self.outer.0);
        WHY.set(self.outer.1);
    }
}

fn update(f: impl FnOnce(&mut Report)) {
    let mut report = CURRENT.get();
    f(&mut report);
    CURRENT.set(report);
}

/// Registers a cancellation in flight with the cancelled race polling us, if
/// any: it will not drop its body before the registration is dropped.
#[inline]
pub(crate) fn register() -> Option<Registration> {
    if !CURRENT.get().has(DRAINING) {
        return None;
    }
    let ptr = IN_FLIGHT.get();
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
#[inline]
pub(crate) fn started_cancelled() {
    update(|r| r.flags |= STARTED_CANCELLED);
}

/// A cancelled call is about to return `Err(Cancelled)` into the body,
/// `retry` if it started with its token already cancelled: `false` if it must
/// wait a turn first (too many retries returned in this poll of the body, or
/// the task's cooperative budget with Tokio is spent; then the task is woken
/// again).
#[inline]
pub(crate) fn may_return_cancelled(retry: bool, cx: &mut Context<'_>) -> bool {
    let mut report = CURRENT.get();
    if retry {
        if report.has(INSIDE) && report.retries >= RETRIES_PER_POLL {
            cx.waker().wake_by_ref();
            return false;
        }
        match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(budget) => budget.made_progress(),
            Poll::Pending => return false,
        }
        report.retries = report.retries.saturating_add(1);
    }
    report.flags |= SAW_CANCEL;
    CURRENT.set(report);
    true
}

/// A nested call starts waiting in the body: `true` if it is counted (it is
/// inside a race), and must then call [`alive_end`] when it stops waiting.
#[inline]
pub(crate) fn alive_start() -> bool {
    let mut report = CURRENT.get();
    if !report.has(INSIDE) {
        return false;
    }
    report.alive = report.alive.saturating_add(1);
    CURRENT.set(report);
    true
}

/// A counted nested call stops waiting (returns, or is dropped).
#[inline]
pub(crate) fn alive_end() {
    update(|r| r.alive = r.alive.saturating_sub(1));
}

/// Takes the flag [`started_cancelled`] set: a cleanup's first poll.
#[inline]
pub(crate) fn take_started_cancelled() -> bool {
    let mut report = CURRENT.get();
    let was = report.has(STARTED_CANCELLED);
    report.flags &= !STARTED_CANCELLED;
    CURRENT.set(report);
    was
}

/// The race polling us is cancelled, and polls its body only so that
/// nested calls finish.
#[inline]
pub(crate) fn draining() -> bool {
    CURRENT.get().has(DRAINING)
}

/// Why the race polling us is cancelled, if it is and polls its body only so
/// that nested calls finish.
#[inline]
pub(crate) fn draining_reason() -> Option<Cancelled> {
    if draining() { WHY.get() } else { None }
}
