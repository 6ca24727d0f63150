//! The race's only per-thread state: one [`Frame`], saved and restored
//! around every poll of a body by one guard, [`Polling`].

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use crate::Cancelled;

/// How many calls that start with an already-cancelled token may return
/// `Err(Cancelled)` into one poll of the body that contains them before the
/// next one waits a turn (invariant 6 of the race).
pub(crate) const RETRIES_PER_POLL: u8 = 32;

thread_local! {
    /// What one poll of a body on this thread is told by the futures inside
    /// it. All of it is `Copy` (no destructor to register, no lazy check).
    static FRAME: Frame = const {
        Frame {
            report: Cell::new(Report::EMPTY),
            drain: Cell::new(None),
            exit: Cell::new(None),
        }
    };
}

/// The race's per-thread state.
struct Frame {
    /// What the futures inside the body being polled reported so far.
    report: Cell<Report>,
    /// While a cancelled race polls its body so that nested calls finish:
    /// its reason, and where they register.
    drain: Cell<Option<Drain>>,
    /// The `Cancelled` an [`Exit`](super::exit::Exit) hands to the
    /// [`Run`](super::exit::Run) polling it, within that one poll.
    exit: Cell<Option<Cancelled>>,
}

/// Twice the poll numbers handed out so far, by every thread: taken only by
/// a poll in which something said it is busy, so the fast path never counts,
/// and shared, so a thing moved to another thread is not mistaken for one
/// counted in that thread's poll. A poll's number is odd: never 0 or
/// [`UNCOUNTED`].
static POLLS: AtomicU32 = AtomicU32::new(0);

/// A cancelled race polling its body so that nested calls finish.
#[derive(Clone, Copy)]
pub(crate) struct Drain {
    /// Why the race is cancelled.
    pub(crate) reason: Cancelled,
    /// Points into an `Arc` the race holds for the whole poll.
    in_flight: *const InFlight,
}

/// What one poll of a body reported to the race that polls it: eight
/// aligned bytes, copied whole around every poll.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct Report {
    /// The flags below, and in the high four bits the number of things that
    /// must finish before the body may be dropped, pending when last polled
    /// in this poll (see [`Busy`]; at 15 it sticks: busy until the poll
    /// ends).
    flags: u8,
    /// Retries that returned into the body.
    pub(crate) retries: u8,
    /// How many more nested calls wait in the body than before the poll.
    pub(crate) alive: i16,
    /// The number of this poll, once something in it said it is busy (0
    /// before): what a [`Busy`] mark compares with.
    poll: u32,
}

/// This report belongs to a race (the thread's base report does not).
const INSIDE: u8 = 1;
/// A nested call returned `Err(Cancelled)` into the body.
const SAW_CANCEL: u8 = 2;
/// This report belongs to a cancelled race polling its body so that nested
/// calls finish.
const DRAINING: u8 = 4;
/// The call that just returned `Err(Cancelled)` from its race started with
/// its token already cancelled (its cleanup, next, then counts a retry).
const STARTED_CANCELLED: u8 = 8;
/// One thing busy, in the high bits of `flags`.
const BUSY_ONE: u8 = 16;
/// The most things counted busy: from there the count sticks.
const BUSY_STUCK: u8 = 15;

impl Report {
    const EMPTY: Report = Report {
        flags: 0,
        retries: 0,
        alive: 0,
        poll: 0,
    };

    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn busy_count(self) -> u8 {
        self.flags >> 4
    }

    /// Something in the body must finish before the body may be dropped.
    pub(crate) fn busy(self) -> bool {
        self.busy_count() > 0
    }

    /// A nested call returned `Err(Cancelled)` into the body.
    pub(crate) fn saw_cancel(self) -> bool {
        self.has(SAW_CANCEL)
    }
}

fn update<R>(f: impl FnOnce(&mut Report) -> R) -> R {
    FRAME.with(|frame| {
        let mut report = frame.report.get();
        let r = f(&mut report);
        frame.report.set(report);
        r
    })
}

/// Runs `poll` (a race polling its body, or dropping it) with a fresh report
/// in the frame: returns what the futures in it reported.
#[inline]
pub(crate) fn with_report<R>(poll: impl FnOnce() -> R) -> (R, Report) {
    with_fresh_report(INSIDE, None, poll)
}

/// [`with_report`] for a cancelled race polling its body so that nested
/// calls finish: they register in `in_flight` meanwhile.
pub(crate) fn with_draining_report<R>(
    reason: Cancelled,
    in_flight: &Arc<InFlight>,
    poll: impl FnOnce() -> R,
) -> (R, Report) {
    let drain = Drain {
        reason,
        in_flight: Arc::as_ptr(in_flight),
    };
    with_fresh_report(INSIDE | DRAINING, Some(drain), poll)
}

#[inline]
fn with_fresh_report<R>(flags: u8, drain: Option<Drain>, poll: impl FnOnce() -> R) -> (R, Report) {
    let _outer = FRAME.with(|frame| {
        let fresh = Report {
            flags,
            ..Report::EMPTY
        };
        Polling {
            outer: frame.report.replace(fresh),
            outer_drain: drain.map(|drain| frame.drain.replace(Some(drain))),
        }
    });
    let polled = poll();
    (polled, FRAME.with(|frame| frame.report.get()))
}

/// The frame as it was before a race polled its body, put back when dropped:
/// also when the poll panics, so that a caught panic leaves nothing behind.
struct Polling {
    outer: Report,
    /// The drain it replaced, if it set one (a plain poll leaves the drain
    /// alone: it is read only under a report with `DRAINING`).
    outer_drain: Option<Option<Drain>>,
}

impl Drop for Polling {
    #[inline]
    fn drop(&mut self) {
        FRAME.with(|frame| {
            if let Some(drain) = self.outer_drain {
                frame.drain.set(drain);
            }
            frame.report.set(self.outer);
        });
    }
}

/// The cancellations in flight inside one cancelled race's body: each
/// nested call that started cancelling while the race polled its body holds
/// a clone of the race's `Arc<InFlight>` (a [`Registration`]) until its
/// cleanup ends.
#[derive(Debug, Default)]
pub(crate) struct InFlight;

/// One registered cancellation in flight; finished when dropped.
pub(crate) type Registration = Arc<InFlight>;

/// The cancelled race polling us, if it polls its body only so that nested
/// calls finish.
#[inline]
pub(crate) fn draining() -> Option<Drain> {
    FRAME.with(|frame| {
        let report = frame.report.get();
        report.has(DRAINING).then(|| frame.drain.get()).flatten()
    })
}

impl Drain {
    /// Registers a cancellation in flight: the race will not drop its body
    /// before the registration is dropped.
    pub(crate) fn register(self) -> Registration {
        // SAFETY: `in_flight` was set by `with_draining_report` from an `Arc`
        // that the race holds for the whole poll during which it is set; it
        // is put back (also on unwind) before the race can drop that `Arc`.
        // So the pointee is alive, and its count may be incremented for this
        // clone.
        unsafe {
            Arc::increment_strong_count(self.in_flight);
            Arc::from_raw(self.in_flight)
        }
    }
}

/// What a thing that must finish first (a cleanup, a `shield`, a race with
/// one of those in its body) told the poll that last saw it pending: that
/// poll's number, or 0. Counted once per poll; a thing that ends or is
/// dropped in the same poll (driven to its end by a `block_on` inside
/// `block_in_place`, dropped by a `select!`) takes its count back.
#[derive(Debug, Default)]
pub(crate) struct Busy(u32);

/// A [`Busy`] mark of a thing pending outside any race: busy, counted
/// nowhere. Even, so never a poll's number.
const UNCOUNTED: u32 = u32::MAX - 1;

impl Busy {
    /// Pending, and must finish first.
    #[inline]
    pub(crate) fn pending(&mut self) {
        FRAME.with(|frame| {
            let mut report = frame.report.get();
            if !report.has(INSIDE) {
                self.0 = UNCOUNTED;
                return;
            }
            if report.poll == 0 {
                report.poll = POLLS.fetch_add(2, Ordering::Relaxed) | 1;
            } else if self.0 == report.poll {
                return;
            }
            if report.busy_count() < BUSY_STUCK {
                report.flags += BUSY_ONE;
            }
            self.0 = report.poll;
            frame.report.set(report);
        });
    }

    /// Whether it said it is busy when last polled.
    pub(crate) fn is_marked(&self) -> bool {
        self.0 != 0
    }

    /// Ended, dropped, or no longer busy: takes back its count of this poll.
    #[inline]
    pub(crate) fn done(&mut self) {
        let counted_in = std::mem::take(&mut self.0);
        if counted_in == 0 {
            return;
        }
        update(|report| {
            if report.poll == counted_in && (1..BUSY_STUCK).contains(&report.busy_count()) {
                report.flags -= BUSY_ONE;
            }
        });
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.done();
    }
}

/// A call that starts with its token already cancelled returns from its
/// race: its cleanup, which runs next, counts it as a retry.
#[inline]
pub(crate) fn started_cancelled() {
    update(|r| r.flags |= STARTED_CANCELLED);
}

/// A cleanup starts: whether its fn started with its token already
/// cancelled (see [`started_cancelled`]).
pub(crate) fn take_started_cancelled() -> bool {
    update(|r| {
        let retry = r.has(STARTED_CANCELLED);
        r.flags &= !STARTED_CANCELLED;
        retry
    })
}

/// A cancelled call is about to return `Err(Cancelled)` into the body,
/// `retry` if it started with its token already cancelled: `false` if it must
/// wait a turn first (too many retries returned in this poll of the body, or
/// the task's cooperative budget with Tokio is spent; then the task is woken
/// again).
#[inline]
pub(crate) fn may_return_cancelled(retry: bool, cx: &mut Context<'_>) -> bool {
    let mut report = FRAME.with(|frame| frame.report.get());
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
    FRAME.with(|frame| frame.report.set(report));
    true
}

/// A nested call starts waiting in the body: `true` if it is counted (it is
/// inside a race), and must then call [`alive_end`] when it stops waiting.
#[inline]
pub(crate) fn alive_start() -> bool {
    update(|r| {
        let inside = r.has(INSIDE);
        if inside {
            r.alive = r.alive.saturating_add(1);
        }
        inside
    })
}

/// A counted nested call stops waiting (returns, or is dropped).
#[inline]
pub(crate) fn alive_end() {
    update(|r| r.alive = r.alive.saturating_sub(1));
}

/// An [`Exit`](super::exit::Exit) hands its `Cancelled` to the `Run` around it.
pub(crate) fn set_exit(cancelled: Cancelled) {
    FRAME.with(|frame| frame.exit.set(Some(cancelled)));
}

/// What an `Exit` handed over in this poll, if anything.
pub(crate) fn take_exit() -> Option<Cancelled> {
    FRAME.with(|frame| frame.exit.take())
}
