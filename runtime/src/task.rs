//! What identifies a task of a scope ([`TaskId`]), why it produced no value
//! ([`TaskError`]), and what its value says of its success ([`TaskOutput`]).

use std::any::Any;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use crate::Cancelled;
use crate::reason::{CancelReason, Described};
#[cfg(doc)]
use crate::{Scope, ShutdownReport};

/// Why a task of a [`Scope`] produced no value: it panicked, or it was
/// aborted (by [`Scope::shutdown`] at the end of its grace period), or it was
/// a `spawn_blocking` task still running then, which cannot be aborted and was
/// detached.
///
/// `TaskError` is `Send + Sync + 'static`, implements
/// [`std::error::Error`], and converts into [`std::io::Error`], so `?` works
/// with the usual error types.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::{Scope, TaskError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// scope.spawn(|_token| async { panic!("boom") });
/// let err: TaskError = scope.join_next().await.unwrap().unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.to_string(), "task panicked: boom");
/// assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "boom");
/// # let _: Scope<()> = scope;
/// # }
/// ```
pub struct TaskError {
    repr: Repr,
}

enum Repr {
    /// The mutex only makes the payload `Sync`; it is locked to read the
    /// message in `Display`, never held across anything else.
    Panic(Box<Mutex<Payload>>),
    /// With the scope's reason for cancelling, when it was cancelled.
    Aborted(Option<Described>),
    Detached(Option<Described>),
}

impl TaskError {
    /// A panic of a task, with its payload (also for
    /// [`LocalScope`](crate::LocalScope)).
    pub(crate) fn panic(payload: Payload) -> Self {
        TaskError {
            repr: Repr::Panic(Box::new(Mutex::new(payload))),
        }
    }

    /// A task aborted by a scope cancelled for `reason` (also for
    /// [`LocalScope`](crate::LocalScope)).
    pub(crate) const fn aborted(reason: Option<Described>) -> Self {
        TaskError {
            repr: Repr::Aborted(reason),
        }
    }

    pub(crate) const fn detached(reason: Option<Described>) -> Self {
        TaskError {
            repr: Repr::Detached(reason),
        }
    }

    /// What the error means for a [`ShutdownReport`].
    pub(crate) fn outcome(&self) -> TaskOutcome {
        match self.repr {
            Repr::Panic(_) => TaskOutcome::Panicked,
            Repr::Aborted(_) => TaskOutcome::Aborted,
            Repr::Detached(_) => TaskOutcome::Detached,
        }
    }

    /// `true` when the task panicked; [`into_panic`](Self::into_panic) gives
    /// back the payload.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| async { panic!("boom") });
    /// let err = scope.join_next().await.unwrap().unwrap_err();
    /// assert!(err.is_panic());
    /// assert!(!err.is_aborted());
    /// # }
    /// ```
    #[must_use]
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// `true` when the task did not finish: [`Scope::shutdown`] aborted it at
    /// the end of its grace period. Also `true` for a detached blocking task
    /// (see [`is_detached`](Self::is_detached)).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// // Ignores its token: only an abort stops it.
    /// scope.spawn(|_token| std::future::pending());
    /// let results = scope.shutdown(Duration::from_millis(10)).await;
    /// assert!(results[0].as_ref().unwrap_err().is_aborted());
    /// # }
    /// ```
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        matches!(self.repr, Repr::Aborted(_) | Repr::Detached(_))
    }

    /// `true` for a [`Scope::spawn_blocking`] task that was still running
    /// when the grace period of [`Scope::shutdown`] ended. Blocking code
    /// cannot be aborted, so the scope stopped waiting for it: the thread
    /// keeps running the closure until it returns, and its value is dropped.
    /// [`is_aborted`](Self::is_aborted) is `true` as well.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let mut scope = Scope::new();
    /// // Ignores its token and blocks until released.
    /// scope.spawn_blocking(move |_token| wait.recv().is_ok());
    /// let results = scope.shutdown(Duration::from_millis(10)).await;
    /// let err = results[0].as_ref().unwrap_err();
    /// assert!(err.is_detached() && err.is_aborted());
    /// release.send(()).unwrap(); // let the thread finish
    /// # }
    /// ```
    #[must_use]
    pub fn is_detached(&self) -> bool {
        matches!(self.repr, Repr::Detached(_))
    }

    /// Why the scope of an aborted (or detached) task was cancelled: the
    /// first cause, which may have come before the shutdown that aborted it
    /// (a task that failed under [`fail_fast`](Scope::fail_fast), the
    /// deadline, a shutdown signal). `None` for a panic.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::{CancelReason, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope: Scope<Result<(), &str>> = Scope::new().fail_fast();
    /// let bad = scope.spawn(|_token| async { Err("disk full") });
    /// // Ignores its token: only an abort stops it.
    /// scope.spawn(|_token| std::future::pending());
    /// scope.token().cancelled().await; // the first task failed
    /// let results = scope.shutdown(Duration::from_millis(10)).await;
    /// let err = results[1].as_ref().unwrap_err();
    /// assert!(err.is_aborted());
    /// assert_eq!(err.cancel_reason(), Some(CancelReason::TaskFailed(bad)));
    /// assert_eq!(err.to_string(), format!("task aborted (scope cancelled: task #{bad} failed)"));
    /// # }
    /// ```
    #[must_use]
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        match &self.repr {
            Repr::Panic(_) => None,
            Repr::Aborted(reason) | Repr::Detached(reason) => reason.as_ref().map(|r| r.reason),
        }
    }

    /// The payload the task panicked with, to inspect or to
    /// [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// When the error is not a panic ([`is_panic`](Self::is_panic) is
    /// `false`); [`try_into_panic`](Self::try_into_panic) does not panic.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| async {
    ///     let disk = 3;
    ///     panic!("disk {disk} full") // a formatted message: a `String`
    /// });
    /// let err = scope.join_next().await.unwrap().unwrap_err();
    /// let payload = err.into_panic();
    /// assert_eq!(payload.downcast_ref::<String>().unwrap(), "disk 3 full");
    /// # }
    /// ```
    #[must_use]
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.try_into_panic() {
            Ok(payload) => payload,
            Err(e) => panic!("`TaskError::into_panic` called on an error that is not a panic: {e}"),
        }
    }

    /// The payload the task panicked with, or the error itself when it is
    /// not a panic.
    ///
    /// # Errors
    ///
    /// `Err(self)` when [`is_panic`](Self::is_panic) is `false`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| std::future::pending());
    /// let mut results = scope.shutdown(Duration::ZERO).await;
    /// let err = results.pop().unwrap().unwrap_err();
    /// let err = err.try_into_panic().unwrap_err(); // aborted, not a panic
    /// assert!(err.is_aborted());
    /// # }
    /// ```
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, TaskError> {
        match self.repr {
            Repr::Panic(payload) => {
                Ok(payload.into_inner().unwrap_or_else(PoisonError::into_inner))
            }
            _ => Err(self),
        }
    }
}

/// The message of a panic payload, when it is a string (as `panic!` makes it).
fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Some(s)
    } else {
        payload.downcast_ref::<String>().map(String::as_str)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panic(payload) => {
                let payload = payload.lock().unwrap_or_else(PoisonError::into_inner);
                match panic_message(&**payload) {
                    Some(msg) => f.debug_tuple("TaskError::Panic").field(&msg).finish(),
                    None => f.write_str("TaskError::Panic(..)"),
                }
            }
            Repr::Aborted(r) => f
                .debug_tuple("TaskError::Aborted")
                .field(&r.as_ref().map(|r| r.reason))
                .finish(),
            Repr::Detached(r) => f
                .debug_tuple("TaskError::Detached")
                .field(&r.as_ref().map(|r| r.reason))
                .finish(),
        }
    }
}

/// ` (scope cancelled: <reason>)`, after an abort.
fn write_reason(f: &mut fmt::Formatter<'_>, reason: Option<&Described>) -> fmt::Result {
    match reason {
        Some(reason) => write!(f, " (scope cancelled: {reason})"),
        None => Ok(()),
    }
}

/// `task panicked: <message>` (the message when the payload is a string),
/// `task aborted`, or, for a detached blocking task,
/// `task detached: still blocking at the end of the grace period`; an
/// aborted or detached task adds why its scope was cancelled
/// ([`cancel_reason`](TaskError::cancel_reason)).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::<()>::new();
/// scope.spawn(|_token| std::future::pending());
/// let results = scope.shutdown(Duration::ZERO).await;
/// assert_eq!(results[0].as_ref().unwrap_err().to_string(), "task aborted (scope cancelled: shut down)");
/// # }
/// ```
impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panic(payload) => {
                let payload = payload.lock().unwrap_or_else(PoisonError::into_inner);
                match panic_message(&**payload) {
                    Some(msg) => write!(f, "task panicked: {msg}"),
                    None => f.write_str("task panicked"),
                }
            }
            Repr::Aborted(reason) => {
                f.write_str("task aborted")?;
                write_reason(f, reason.as_ref())
            }
            Repr::Detached(reason) => {
                f.write_str("task detached: still blocking at the end of the grace period")?;
                write_reason(f, reason.as_ref())
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// An [`std::io::ErrorKind::Other`] error carrying the `TaskError`, like
/// tokio's `From<JoinError> for io::Error`.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::Scope;
///
/// async fn run() -> std::io::Result<u32> {
///     let mut scope = Scope::new();
///     scope.spawn(|_token| async { 7 });
///     let value = scope.join_next().await.expect("one task")?;
///     Ok(value)
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(run().await.unwrap(), 7);
/// # }
/// ```
impl From<TaskError> for std::io::Error {
    fn from(e: TaskError) -> Self {
        std::io::Error::other(e)
    }
}

/// What a task's value says about its success, for the scopes that track
/// failures ([`Scope::track_failures`], [`Scope::reaping`]): `Some(text)`
/// for a failure. Implemented for `()` (never a failure) and for
/// `Result<U, E>` with `E: Display` (an `Err`, with its text), except that
/// an `Err` that is the cancellation itself (a [`Cancelled`], or an
/// `io::Error` made from one) is not a failure: a `#[cancellable]` task
/// that returns it stopped as asked. Only the outer `Result` is looked at:
/// for a `#[cancellable]` fn returning `io::Result<()>` (so
/// `Result<io::Result<()>, Cancelled>`), spawn
/// `|t| async move { serve(t, s).await.unwrap_or(Ok(())) }` to have its
/// `io::Error`s counted. Implement it for your own task outputs.
///
/// It is called as a task ends, while the scope's bookkeeping is locked:
/// keep it a plain function of the value (no spawning into the scope).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::TaskOutput;
///
/// enum Exit { Done, Refused(u16) }
///
/// impl TaskOutput for Exit {
///     fn failure(&self) -> Option<String> {
///         match self {
///             Exit::Done => None,
///             Exit::Refused(code) => Some(format!("refused with {code}")),
///         }
///     }
/// }
/// assert_eq!(Exit::Refused(503).failure().as_deref(), Some("refused with 503"));
/// assert_eq!(Exit::Done.failure(), None);
/// assert_eq!(Err::<(), _>("disk full").failure().as_deref(), Some("disk full"));
/// // The cancellation itself is not a failure.
/// assert_eq!(Err::<(), _>(cancel_scope::Cancelled::new()).failure(), None);
/// ```
pub trait TaskOutput {
    /// The text of the failure this value is, or `None` for a success.
    fn failure(&self) -> Option<String>;
}

impl TaskOutput for () {
    fn failure(&self) -> Option<String> {
        None
    }
}

impl<U, E: fmt::Display + 'static> TaskOutput for Result<U, E> {
    fn failure(&self) -> Option<String> {
        let err = self.as_ref().err()?;
        (!is_cancellation(err)).then(|| err.to_string())
    }
}

/// An error that is the task's cancellation itself: a [`Cancelled`], or an
/// `io::Error` made from one (`#[cancellable(flatten)]`).
fn is_cancellation(err: &dyn Any) -> bool {
    err.is::<Cancelled>()
        || err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<Cancelled>())
}

/// A panic's payload, as `catch_unwind` and tokio's `JoinError::into_panic`
/// hand it over.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// How a task of a [`Scope`] ended in a shutdown, in a [`ShutdownReport`].
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::{Scope, TaskOutcome};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// scope.spawn(|token| async move { token.cancelled().await });
/// let report = scope.shutdown_report(Duration::from_secs(5)).await;
/// assert_eq!(report.tasks()[0].outcome(), TaskOutcome::Stopped);
/// assert_eq!(TaskOutcome::Stopped.to_string(), "cancelled, cleaned up");
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskOutcome {
    /// The task had finished before the shutdown cancelled the scope: it did
    /// not need the grace period.
    Completed,
    /// The task ended within the grace period, after the shutdown cancelled
    /// the scope: it stopped when asked. Whether a `#[cancellable]` cleanup
    /// ran is [`TaskReport::cleanup_ran`](crate::TaskReport::cleanup_ran).
    Stopped,
    /// The task was still running at the end of the grace period and was
    /// aborted ([`TaskError::is_aborted`]); its cleanup, if it had one, did
    /// not finish.
    Aborted,
    /// The task panicked ([`TaskError::is_panic`]), before or during the
    /// shutdown.
    Panicked,
    /// A blocking task still running at the end of the grace period, left
    /// to run on its thread ([`TaskError::is_detached`]).
    Detached,
    /// The task returned a failure: an `Err`, in a scope that tracks
    /// failures ([`Scope::track_failures`], [`Scope::reaping`]). Its text is
    /// [`TaskReport::error`](crate::TaskReport::error).
    Failed,
}

impl TaskOutcome {
    /// The old name of [`TaskOutcome::Stopped`]: the task ended after the
    /// cancel, whether or not it had a cleanup to run.
    #[deprecated(since = "0.1.0", note = "renamed to `TaskOutcome::Stopped`")]
    #[allow(non_upper_case_globals)] // it stands for an enum variant
    pub const CancelledCleanedUp: TaskOutcome = TaskOutcome::Stopped;

    /// The label in the report's table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            TaskOutcome::Completed => "completed",
            TaskOutcome::Stopped => "cancelled, cleaned up",
            TaskOutcome::Aborted => "aborted",
            TaskOutcome::Panicked => "panicked",
            TaskOutcome::Detached => "detached",
            TaskOutcome::Failed => "failed",
        }
    }

    /// Its place in a tally.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether a report lists the task: it did not end on its own.
    pub(crate) fn needs_attention(self) -> bool {
        !matches!(self, TaskOutcome::Completed | TaskOutcome::Stopped)
    }

    pub(crate) const COUNT: usize = 6;

    /// The label in the report's summary line.
    pub(crate) fn short_label(self) -> &'static str {
        match self {
            TaskOutcome::Stopped => "cleaned up",
            other => other.label(),
        }
    }

    pub(crate) const ALL: [TaskOutcome; Self::COUNT] = [
        TaskOutcome::Completed,
        TaskOutcome::Stopped,
        TaskOutcome::Failed,
        TaskOutcome::Panicked,
        TaskOutcome::Aborted,
        TaskOutcome::Detached,
    ];
}

/// `completed`, `cancelled, cleaned up`, `failed`, `aborted`, `panicked`
/// or `detached`.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// assert_eq!(cancel_scope::TaskOutcome::Aborted.to_string(), "aborted");
/// ```
impl fmt::Display for TaskOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}
