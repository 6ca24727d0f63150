//! Why something was cancelled: [`CancelReason`], and how a reason travels
//! from the scope (or signal) that cancelled a token to the `Cancelled` of a
//! `#[cancellable]` fn that saw it.
//!
//! A [`CancellationToken`] carries no payload, so the reason is kept beside
//! it, in a [`Cause`]: the token, the first reason it was cancelled for, and
//! the cause of its parent when that is known. Every [`Scope`] and
//! [`LocalScope`] has one, and so has a
//! [`ShutdownSignal`](crate::ShutdownSignal). While a scope polls one of its
//! tasks it makes its cause the thread's current one; a `#[cancellable]` fn
//! cancelled during that poll asks it why. What it costs before anything is
//! cancelled: an `Arc` per scope and its clone per task (one reference-count
//! increment), two thread-local writes around each poll of a `Scope`'s task,
//! and a clone per batch of polls of a `LocalScope`'s tasks.
//!
//! [`Scope`]: crate::Scope
//! [`LocalScope`]: crate::LocalScope

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::id::TaskId;

/// Why something was cancelled: what [`Cancelled::reason`],
/// [`Scope::cancel_reason`], [`LocalScope::cancel_reason`] and
/// [`TaskError::cancel_reason`] report. The first cause wins: once a token is
/// cancelled, later causes do not change its reason.
///
/// A `#[cancellable]` fn learns the reason from the scope whose task runs it
/// (a [`Scope`] or [`LocalScope`] task, or a fn called from one, however
/// deeply): when that scope's token is cancelled, the fn's `Cancelled`
/// carries the scope's reason. Called anywhere else, or when its token was
/// cancelled while the scope's was not, a fn reports
/// [`Token`](Self::Token), or [`Timeout`](Self::Timeout) for its own
/// `timeout`. (So a fn awaited directly with a `ShutdownSignal`'s token,
/// outside any scope, reports `Token`; run it in a task of a scope made with
/// `child_of(signal.token())` to see [`Signal`](Self::Signal).)
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::{CancelReason, Scope};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope: Scope<Result<(), &str>> = Scope::new().fail_fast();
/// let bad = scope.spawn(|_token| async { Err("disk full") });
/// scope.spawn(|token| async move { token.cancelled().await; Ok(()) });
/// scope.join_all().await;
/// assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
/// assert_eq!(scope.cancel_reason().unwrap().to_string(), format!("task #{bad} failed"));
/// # }
/// ```
///
/// [`Cancelled::reason`]: crate::Cancelled::reason
/// [`Scope`]: crate::Scope
/// [`Scope::cancel_reason`]: crate::Scope::cancel_reason
/// [`LocalScope`]: crate::LocalScope
/// [`LocalScope::cancel_reason`]: crate::LocalScope::cancel_reason
/// [`TaskError::cancel_reason`]: crate::TaskError::cancel_reason
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The fn's token was cancelled, and nothing more is known: it was not
    /// running in a task of a scope that was cancelled too (for example, it
    /// was called with a token its caller cancelled by hand).
    Token,
    /// The fn's own `#[cancellable(timeout = ..)]` elapsed, or that of an
    /// enclosing `#[cancellable]` fn it was called from.
    Timeout,
    /// The scope's owner called `cancel` ([`Scope::cancel`](crate::Scope::cancel),
    /// [`LocalScope::cancel`](crate::LocalScope::cancel)).
    Requested,
    /// The scope's `shutdown` (or `shutdown_report`) began.
    Shutdown,
    /// Under `fail_fast`, this task of the scope returned `Err` or panicked.
    TaskFailed(TaskId),
    /// Under `first_ok` (or in `join_first_ok`), this task of the scope
    /// succeeded first.
    TaskSucceeded(TaskId),
    /// The scope's deadline ([`with_deadline`](crate::Scope::with_deadline),
    /// [`with_timeout`](crate::Scope::with_timeout)) passed.
    Deadline,
    /// A [`ShutdownSignal`] received this signal
    /// (`"Ctrl-C"`, `"SIGTERM"`) or was triggered with this reason: the
    /// scope was made with `child_of(signal.token())`, or is nested in one
    /// that was.
    ///
    // `ShutdownSignal` needs the `signal` feature; without it, the link goes
    // to the facade's docs.
    #[cfg_attr(feature = "signal", doc = "[`ShutdownSignal`]: crate::ShutdownSignal")]
    #[cfg_attr(
        not(feature = "signal"),
        doc = "[`ShutdownSignal`]: https://docs.rs/cancel-scope/latest/cancel_scope/struct.ShutdownSignal.html"
    )]
    Signal(&'static str),
    /// The scope was dropped (which cancels its token): what the tasks of a
    /// scope nested in one of its tasks see.
    Dropped,
    /// The parent token given to `child_of` was cancelled by something that
    /// is not a scope or a signal: by hand, or by the `timeout` of the
    /// `#[cancellable]` fn whose token it is.
    Parent,
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Token => f.write_str("its token was cancelled"),
            CancelReason::Timeout => f.write_str("timed out"),
            CancelReason::Requested => f.write_str("cancelled by the scope's owner"),
            CancelReason::Shutdown => f.write_str("shut down"),
            CancelReason::TaskFailed(id) => write!(f, "task #{id} failed"),
            CancelReason::TaskSucceeded(id) => write!(f, "task #{id} succeeded first"),
            CancelReason::Deadline => f.write_str("the scope's deadline passed"),
            CancelReason::Signal(name) => write!(f, "shutdown signal: {name}"),
            CancelReason::Dropped => f.write_str("the scope was dropped"),
            CancelReason::Parent => f.write_str("the parent token was cancelled"),
        }
    }
}

/// A reason with the name of the task it names: `task #3 "db" failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Described {
    pub(crate) reason: CancelReason,
    pub(crate) culprit: Option<Cow<'static, str>>,
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.reason, &self.culprit) {
            (CancelReason::TaskFailed(id), Some(name)) => write!(f, "task #{id} {name:?} failed"),
            (CancelReason::TaskSucceeded(id), Some(name)) => {
                write!(f, "task #{id} {name:?} succeeded first")
            }
            (reason, _) => fmt::Display::fmt(reason, f),
        }
    }
}

/// A token, why it was cancelled, and what is known of its parent.
#[derive(Debug)]
pub(crate) struct Cause {
    token: CancellationToken,
    reason: OnceLock<CancelReason>,
    /// `reason` is final: set once the token is known to be cancelled, so
    /// that the many fns of a cancelled scope read it without the token's
    /// lock.
    settled: AtomicBool,
    /// The token given to `child_of`, to find the `ShutdownSignal` it may
    /// belong to (only when asked why, so that making a scope takes no
    /// lock).
    parent_token: Option<CancellationToken>,
    /// The cause of the scope whose task made this one, if any.
    parent: Option<Arc<Cause>>,
    /// The name of the task a `TaskFailed` or `TaskSucceeded` reason names.
    culprit: OnceLock<Cow<'static, str>>,
}

impl Cause {
    /// The cause of a root token.
    pub(crate) fn root(token: CancellationToken) -> Arc<Self> {
        Arc::new(Cause {
            token,
            reason: OnceLock::new(),
            settled: AtomicBool::new(false),
            parent_token: None,
            parent: None,
            culprit: OnceLock::new(),
        })
    }

    /// The cause of a new child of `parent`. Why `parent` was cancelled is
    /// looked up when asked: a `ShutdownSignal` whose token it is (compared
    /// by identity), or else the scope whose task made this one (the usual
    /// way to nest scopes is to make one, inside a task, from the task's
    /// token). That scope's reason is taken only while its token is
    /// cancelled too: a scope made from an unrelated token that was
    /// cancelled alone reports [`CancelReason::Parent`]. (If both were
    /// cancelled, it reports the scope's reason.)
    pub(crate) fn child_of(parent: &CancellationToken) -> Arc<Self> {
        Arc::new(Cause {
            token: parent.child_token(),
            reason: OnceLock::new(),
            settled: AtomicBool::new(false),
            parent_token: Some(parent.clone()),
            parent: current(),
            culprit: OnceLock::new(),
        })
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Cancels the token, recording `reason` unless it was cancelled
    /// already (then the earlier cause stands).
    pub(crate) fn cancel(&self, reason: CancelReason) {
        self.try_cancel(reason);
    }

    /// [`cancel`](Self::cancel); `true` if `reason` is the one that stands.
    fn try_cancel(&self, reason: CancelReason) -> bool {
        let set = !self.token.is_cancelled() && self.reason.set(reason).is_ok();
        self.token.cancel();
        if set {
            self.settled.store(true, Ordering::Release);
        }
        set
    }

    /// [`cancel`](Self::cancel) for a task's outcome, with the task's name
    /// for the messages that show the reason.
    pub(crate) fn cancel_by(&self, reason: CancelReason, name: Option<&Cow<'static, str>>) {
        if self.try_cancel(reason) {
            if let Some(name) = name {
                let _ = self.culprit.set(name.clone());
            }
        }
    }

    /// The reason, and the name of the task it names, if any.
    pub(crate) fn described(&self) -> Option<Described> {
        let reason = self.reason()?;
        let culprit = match reason {
            CancelReason::TaskFailed(_) | CancelReason::TaskSucceeded(_) => {
                self.culprit.get().cloned()
            }
            _ => None,
        };
        Some(Described { reason, culprit })
    }

    /// Why the token was cancelled; `None` while it is not.
    pub(crate) fn reason(&self) -> Option<CancelReason> {
        // Final: read without the token's lock (every fn of a cancelled
        // scope asks, at once).
        if self.settled.load(Ordering::Acquire) {
            return self.reason.get().copied();
        }
        // The token first: `cancel` records the reason before it cancels, so
        // once the token is seen cancelled, a reason it was cancelled for is
        // there to read (read the other way round, a `cancel` on another
        // thread could land in between and pass for the parent's).
        if !self.token.is_cancelled() {
            return None;
        }
        if let Some(reason) = self.reason.get() {
            self.settled.store(true, Ordering::Release);
            return Some(*reason);
        }
        // Cancelled, and none of its own causes recorded: it came from above.
        let from_signal = self.parent_token.as_ref().and_then(signal_cause);
        let reason = from_signal
            .as_deref()
            .or(self.parent.as_deref())
            .and_then(Cause::reason)
            .unwrap_or(CancelReason::Parent);
        // Final now that the token is cancelled: later calls (one per
        // cancelled fn in the scope's tasks) read it at once.
        let reason = *self.reason.get_or_init(|| reason);
        self.settled.store(true, Ordering::Release);
        Some(reason)
    }
}

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

/// The cause of the scope whose task is running, if any.
fn current() -> Option<Arc<Cause>> {
    let current = CURRENT.take();
    let copy = current.cause.clone();
    CURRENT.set(current);
    copy
}

/// Why a `#[cancellable]` fn whose token was cancelled was: the reason of
/// the scope whose task is running it, when that scope's token is cancelled,
/// else [`CancelReason::Token`]. (Called on the fn's cancellation path, so
/// it also records that the task ran one.)
#[inline]
pub(crate) fn of_current_task() -> CancelReason {
    // Outside a scope's task there is no cause to ask: one exchange, which
    // the race's cancellation path inlines.
    let seen = Current {
        cause: None,
        cancel_seen: true,
    };
    match CURRENT.replace(seen).cause {
        None => CancelReason::Token,
        Some(cause) => of_scope_task(cause),
    }
}

/// [`of_current_task`] in a scope's task: asks the scope's cause (which does
/// not look at `CURRENT`), then puts it back.
#[inline(never)]
fn of_scope_task(cause: Arc<Cause>) -> CancelReason {
    let reason = cause.reason();
    CURRENT.set(Current {
        cause: Some(cause),
        cancel_seen: true,
    });
    reason.unwrap_or(CancelReason::Token)
}

#[cfg(feature = "signal")]
mod signals {
    use std::sync::{Arc, Mutex, PoisonError, Weak};

    use tokio_util::sync::CancellationToken;

    use super::Cause;

    /// The causes of the live `ShutdownSignal`s, to link a scope made with
    /// `child_of(signal.token())` to its signal. Read when a scope is made
    /// with `child_of`, written when a signal is installed.
    static SIGNALS: Mutex<Vec<Weak<Cause>>> = Mutex::new(Vec::new());

    pub(crate) fn register(cause: &Arc<Cause>) {
        let mut signals = SIGNALS.lock().unwrap_or_else(PoisonError::into_inner);
        signals.retain(|s| s.strong_count() > 0);
        signals.push(Arc::downgrade(cause));
    }

    pub(super) fn find(token: &CancellationToken) -> Option<Arc<Cause>> {
        let signals = SIGNALS.lock().unwrap_or_else(PoisonError::into_inner);
        signals
            .iter()
            .filter_map(Weak::upgrade)
            .find(|cause| cause.token == *token)
    }
}

#[cfg(feature = "signal")]
pub(crate) use signals::register as register_signal;

/// The cause of the `ShutdownSignal` whose token is `token`, if any.
fn signal_cause(token: &CancellationToken) -> Option<Arc<Cause>> {
    #[cfg(feature = "signal")]
    return signals::find(token);
    #[cfg(not(feature = "signal"))]
    {
        let _ = token;
        None
    }
}
