//! Why something was cancelled: [`CancelReason`], and how a reason travels
//! from the scope (or signal) that cancelled a token to the `Cancelled` of a
//! `#[cancellable]` fn that saw it.
//!
//! A `CancellationToken` carries no payload, so the reason is kept beside
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
//! - `reason.rs`: [`CancelReason`], and [`Described`] (with a task's name).
//! - `cause.rs`: the [`Cause`] kept beside a token; `cause/signals.rs`: the
//!   causes of the live `ShutdownSignal`s, which a cause looks its parent
//!   token up in.
//! - `current.rs`: the thread's current cause, and [`Cause::child_of`],
//!   which links a new cause to it.
//!
//! [`Scope`]: crate::Scope
//! [`LocalScope`]: crate::LocalScope

use std::borrow::Cow;
use std::fmt;

use crate::id::TaskId;

mod cause;
mod current;

pub(crate) use cause::Cause;
#[cfg(feature = "signal")]
pub(crate) use cause::register_signal;
pub(crate) use current::{enter, leave, of_current_task};

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
