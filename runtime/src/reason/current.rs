//! The thread's current cause: while a scope polls one of its tasks, its
//! cause; what a `#[cancellable]` fn cancelled during that poll asks why
//! ([`of_current_task`]), and what a scope made in the task links to
//! ([`Cause::child_of`]).

use std::cell::Cell;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::CancelReason;
use super::cause::Cause;

/// The scope task this thread is polling: its scope's cause, and whether a
/// `#[cancellable]` fn in it took its cancellation path during the poll
/// (it asked [`of_current_task`] why), for the shutdown report.
#[derive(Default)]
pub(crate) struct Current {
    pub(crate) cause: Option<Arc<Cause>>,
    pub(crate) cancel_seen: bool,
}

thread_local! {
    static CURRENT: Cell<Current> = const {
        Cell::new(Current { cause: None, cancel_seen: false })
    };
}

/// Makes `cause` the current one, returning what it replaces; give that
/// back to [`leave`] after the poll. Moves the `Arc`s, never clones them.
pub(crate) fn enter(cause: Option<Arc<Cause>>) -> Current {
    CURRENT.replace(Current {
        cause,
        cancel_seen: false,
    })
}

/// Restores what [`enter`] replaced; returns the task's own.
pub(crate) fn leave(outer: Current) -> Current {
    CURRENT.replace(outer)
}

/// Why a `#[cancellable]` fn whose token was cancelled was: the reason of
/// the scope whose task is running it, when that scope's token is cancelled,
/// else [`CancelReason::Token`]. (Called on the fn's cancellation path, so
/// it also records that the task ran one.)
pub(crate) fn of_current_task() -> CancelReason {
    let mut current = CURRENT.take();
    current.cancel_seen = true;
    let reason = current.cause.as_ref().and_then(|cause| cause.reason());
    CURRENT.set(current);
    reason.unwrap_or(CancelReason::Token)
}

impl Cause {
    /// The cause of a new child of `parent`. Why `parent` was cancelled is
    /// looked up when asked: a `ShutdownSignal` whose token it is (compared
    /// by identity), or else the scope whose task made this one (the usual
    /// way to nest scopes is to make one, inside a task, from the task's
    /// token). That scope's reason is taken only while its token is
    /// cancelled too: a scope made from an unrelated token that was
    /// cancelled alone reports [`CancelReason::Parent`]. (If both were
    /// cancelled, it reports the scope's reason.)
    pub(crate) fn child_of(parent: &CancellationToken) -> Arc<Self> {
        let current = CURRENT.take();
        let scope = current.cause.clone();
        CURRENT.set(current);
        Cause::new(parent.child_token(), Some(parent.clone()), scope)
    }
}
