//! [`Scope<T>`]: structured spawning over a [`JoinSet`], where no task
//! outlives the scope that spawned it, and [`TaskError`], why a task of a
//! scope produced no value.
//!
//! Which tool to reach for:
//!
//! - a bare [`CancellationToken`] when cancellation has to reach code that
//!   owns its own tasks or loops (a library that takes a token, a blocking
//!   loop that checks [`is_cancelled`](CancellationToken::is_cancelled)), and
//!   nothing needs to be joined;
//! - `#[cancellable]` alone when one `async fn` must stop at an `.await` and
//!   run its async cleanup, and its caller awaits it directly;
//! - a [`Scope`] when you spawn tasks: it hands each one a child token, joins
//!   them (in spawn order or completion order), shuts them down gracefully and
//!   then by force, and aborts them all when it is dropped.
//!
//! Implementation notes. The scope keeps two `JoinSet`s, one for async tasks
//! (which can be aborted) and one for `spawn_blocking` tasks (which cannot
//! once they run, so a shutdown detaches them instead of waiting). Every task
//! is wrapped in [`Task`], a plain future that records the task's spawn
//! sequence number in its output and catches panics, so a result can be put
//! back in spawn order without a lock or a map: a result's index is its
//! sequence number minus the first one, as long as `join_next` has not
//! taken results out of the middle (then [`Slot`]s record what it took).

use std::any::Any;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
// `sync` is a feature of tokio that tokio-util turns on (it needs it for
// `CancellationToken`).
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reason::{self, CancelReason, Cause};
use crate::report::{ShutdownReport, TaskOutcome, TaskReport};

/// A panic payload, as [`std::panic::catch_unwind`] returns it.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// What a task of the scope sends back: its spawn sequence number, and its
/// value or the payload of its panic.
type Output<T> = (u64, Result<T, Payload>);

/// What a `JoinSet` gives back for one task.
type Raw<T> = Result<Output<T>, JoinError>;

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
/// use cancel_scope_runtime::{Scope, TaskError};
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
    Aborted(Option<CancelReason>),
    Detached(Option<CancelReason>),
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
    pub(crate) const fn aborted(reason: Option<CancelReason>) -> Self {
        TaskError {
            repr: Repr::Aborted(reason),
        }
    }

    const fn detached(reason: Option<CancelReason>) -> Self {
        TaskError {
            repr: Repr::Detached(reason),
        }
    }

    /// What the error means for a [`ShutdownReport`].
    fn outcome(&self) -> TaskOutcome {
        match self.repr {
            Repr::Panic(_) => TaskOutcome::Panicked,
            Repr::Aborted(_) => TaskOutcome::Aborted,
            Repr::Detached(_) => TaskOutcome::Detached,
        }
    }

    fn from_join_error(e: JoinError, reason: Option<CancelReason>) -> Self {
        if e.is_panic() {
            TaskError::panic(e.into_panic())
        } else {
            TaskError::aborted(reason)
        }
    }

    /// `true` when the task panicked; [`into_panic`](Self::into_panic) gives
    /// back the payload.
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
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
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
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
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
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
    /// use std::time::Duration;
    /// use cancel_scope_runtime::{CancelReason, Scope};
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
        match self.repr {
            Repr::Panic(_) => None,
            Repr::Aborted(reason) | Repr::Detached(reason) => reason,
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
    /// use cancel_scope_runtime::Scope;
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
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
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
            Repr::Aborted(reason) => f.debug_tuple("TaskError::Aborted").field(reason).finish(),
            Repr::Detached(reason) => f.debug_tuple("TaskError::Detached").field(reason).finish(),
        }
    }
}

/// ` (scope cancelled: <reason>)`, after an abort.
fn write_reason(f: &mut fmt::Formatter<'_>, reason: Option<CancelReason>) -> fmt::Result {
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
/// use std::time::Duration;
/// use cancel_scope_runtime::Scope;
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
                write_reason(f, *reason)
            }
            Repr::Detached(reason) => {
                f.write_str("task detached: still blocking at the end of the grace period")?;
                write_reason(f, *reason)
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// An [`std::io::ErrorKind::Other`] error carrying the `TaskError`, like
/// tokio's `From<JoinError> for io::Error`.
///
/// ```
/// use cancel_scope_runtime::Scope;
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

/// What a task does with its result before handing it back: nothing, or,
/// in a fail-fast or first-ok scope, cancel the scope's token on a failure
/// or a success. A type parameter of [`Task`] so that the plain case costs no
/// space in the task.
trait Check<T> {
    fn check(&self, seq: u64, out: &Result<T, Payload>);
}

impl<T> Check<T> for () {
    fn check(&self, _: u64, _: &Result<T, Payload>) {}
}

/// Which outcomes of a task cancel the scope's token (set by
/// [`Scope::fail_fast`] and [`Scope::first_ok`]).
/// `Some(true)` for a success that cancels, `Some(false)` for a failure
/// that does.
pub(crate) type CancelRule<T> = fn(&Result<T, Payload>) -> Option<bool>;

/// Which outcomes of a `Result` task cancel its scope, for `fail_fast` and
/// `first_ok` (shared by [`Scope`] and `LocalScope`).
pub(crate) fn cancel_rule<U, E>(fail_fast: bool, first_ok: bool) -> CancelRule<Result<U, E>> {
    match (fail_fast, first_ok) {
        (true, true) => |out| Some(matches!(out, Ok(Ok(_)))),
        (true, false) => |out| (!matches!(out, Ok(Ok(_)))).then_some(false),
        (false, _) => |out| matches!(out, Ok(Ok(_))).then_some(true),
    }
}

/// Makes a task whose outcome matches the rule cancel the scope's token,
/// recording itself as the reason.
struct CancelOn<T> {
    cause: Arc<Cause>,
    rule: CancelRule<T>,
}

impl<T> Check<T> for CancelOn<T> {
    fn check(&self, seq: u64, out: &Result<T, Payload>) {
        if let Some(succeeded) = (self.rule)(out) {
            let id = TaskId(seq);
            let reason = if succeeded {
                CancelReason::TaskSucceeded(id)
            } else {
                CancelReason::TaskFailed(id)
            };
            self.cause.cancel(reason);
        }
    }
}

impl<T, C: Check<T>> Check<T> for Option<C> {
    fn check(&self, seq: u64, out: &Result<T, Payload>) {
        if let Some(check) = self {
            check.check(seq, out);
        }
    }
}

pin_project! {
    /// The future a scope spawns for `spawn` (behind a semaphore permit in
    /// a scope with a limit, see [`limited`]): the user's future, plus the
    /// task's sequence number in its output, a panic guard, and the
    /// fail-fast or first-ok check.
    ///
    /// It composes tokio and std primitives only (`catch_unwind`, the token's
    /// `cancel`) and holds no lock: it is polled by the runtime like the
    /// user's future and adds no synchronisation of its own.
    struct Task<F, C> {
        #[pin]
        fut: Option<F>,
        seq: u64,
        check: C,
        // The scope's cause, current while the task is polled, so that a
        // `#[cancellable]` fn cancelled in it can tell why. Moved into the
        // thread-local and back around each poll, never cloned there.
        cause: Option<Arc<Cause>>,
    }
}

impl<F: Future, C: Check<F::Output>> Future for Task<F, C> {
    type Output = Output<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let outer = reason::enter(this.cause.take());
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let Some(fut) = this.fut.as_mut().as_pin_mut() else {
                panic!("cancel-scope task polled after completion");
            };
            let value = ready!(fut.poll(cx));
            // Drop the user's future here, under the panic guard, so that a
            // panicking `Drop` is reported as this task's panic.
            this.fut.set(None);
            Poll::Ready(value)
        }));
        *this.cause = reason::leave(outer);
        let out = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(value)) => Ok(value),
            Err(payload) => {
                // The future is unusable after a panic: drop it now. A second
                // panic from its `Drop` is ignored; the first one is reported.
                let _ = catch_unwind(AssertUnwindSafe(|| this.fut.set(None)));
                Err(payload)
            }
        };
        this.check.check(*this.seq, &out);
        Poll::Ready((*this.seq, out))
    }
}

/// A task behind a semaphore permit, in a scope with a limit (see
/// [`Scope::with_limit`]): waits for a permit, then runs the [`Task`], and
/// releases the permit once the task is done, after its check (so a task
/// queued behind a failing fail-fast task starts with its token cancelled),
/// or when it is aborted.
async fn limited<F: Future>(permits: Arc<Semaphore>, task: F) -> F::Output {
    // The scope never closes its semaphore, so `acquire` never fails.
    let _permit = permits.acquire().await.ok();
    task.await
}

/// The concurrency limit of a scope (see [`Scope::with_limit`]).
struct Limit {
    permits: Arc<Semaphore>,
    max: usize,
}

/// Identifies a task of a [`Scope`]: [`spawn`](Scope::spawn) returns it, and
/// [`join_next_with_id`](Scope::join_next_with_id) hands it back with the
/// task's result, so a result (or a panic) can be traced to its task.
///
/// An id is unique within its scope: ids are never reused, not even after
/// the scope was emptied and spawned into again (ids of different scopes may
/// be equal). Ids compare in spawn order: a task spawned later has a greater
/// id. A `TaskId` displays as its number; a [`ShutdownReport`] names an
/// unnamed task `task #<id>`.
///
/// ```
/// use cancel_scope_runtime::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// let parse = scope.spawn(|_token| async { "42".parse::<u32>() });
/// let fetch = scope.spawn(|_token| async { "x".parse::<u32>() });
/// assert!(parse < fetch);
/// while let Some((id, result)) = scope.join_next_with_id().await {
///     let value = result.unwrap(); // no panic here
///     if id == fetch {
///         assert!(value.is_err());
///     } else {
///         assert_eq!(value, Ok(42));
///     }
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl TaskId {
    /// The id of the task with sequence number `seq`, for
    /// [`LocalScope`](crate::LocalScope).
    pub(crate) const fn from_seq(seq: u64) -> Self {
        TaskId(seq)
    }
}

/// The task's number, as in `task #3`.
///
/// ```
/// use cancel_scope_runtime::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// let id = scope.spawn(|_token| async {});
/// assert_eq!(format!("task #{id}"), "task #0");
/// # }
/// ```
impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A task that `join_next` had to record: its sequence number, and whether
/// its result was handed out (the low bit), packed in one word.
#[derive(Clone, Copy)]
struct Slot(u64);

impl Slot {
    fn pending(seq: u64) -> Self {
        Slot(seq << 1)
    }

    fn seq(self) -> u64 {
        self.0 >> 1
    }

    fn is_taken(self) -> bool {
        self.0 & 1 == 1
    }

    fn take(&mut self) {
        self.0 |= 1;
    }
}

/// Structured spawning: every task gets a child token of the scope's token,
/// no task outlives the scope, and the results come back in spawn order
/// ([`join_all`](Self::join_all), [`shutdown`](Self::shutdown)) or in
/// completion order ([`join_next`](Self::join_next)).
///
/// A `Scope` is a [`JoinSet`] plus a [`CancellationToken`] plus the
/// bookkeeping daemons write by hand around them: cancel everything, give the
/// tasks a grace period to run their cleanups, abort the rest, and say what
/// happened to each task.
///
/// - Reach for a bare [`CancellationToken`] when cancellation must reach code
///   that owns its own tasks or loops and there is nothing to join.
/// - Reach for `#[cancellable]` alone when one `async fn` must stop at an
///   `.await` and run async cleanup, and its caller awaits it directly.
/// - Reach for a `Scope` when you spawn: `#[cancellable]` functions take the
///   token as their first argument, so `scope.spawn(worker)` or
///   `scope.spawn(|t| writer_loop(t, rx))` spawns them as they are.
///
/// ```
/// use std::time::Duration;
/// use cancel_scope_runtime::{CancellationToken, Scope};
///
/// async fn worker(id: u32, token: CancellationToken) -> u32 {
///     token.cancelled().await; // work until told to stop...
///     id * 10 // ...then clean up and report
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// for id in 0..3 {
///     scope.spawn(move |token| worker(id, token));
/// }
/// let results = scope.shutdown(Duration::from_secs(5)).await;
/// let values: Vec<u32> = results.into_iter().map(Result::unwrap).collect();
/// assert_eq!(values, [0, 10, 20]); // spawn order
/// # }
/// ```
///
/// # Dropping a scope
///
/// Dropping a `Scope` cancels its token and aborts its tasks, like dropping
/// a `JoinSet`; it never blocks. An aborted task's future is dropped as soon
/// as it is not being polled, without running the cleanup that follows its
/// `cancelled().await`; call [`shutdown`](Self::shutdown) first for a
/// graceful stop. The one exception to "no task outlives its scope" is
/// a [`spawn_blocking`](Self::spawn_blocking) closure that is already
/// running: blocking code cannot be aborted, so it runs until it returns (it
/// sees its token cancelled); one that has not started yet never starts.
///
/// # Policies
///
/// Builders set how the scope treats its tasks; call them when building the
/// scope, as they apply to the tasks spawned afterwards:
///
/// - [`fail_fast`](Self::fail_fast): the first failure cancels the scope;
/// - [`first_ok`](Self::first_ok) and [`join_first_ok`](Self::join_first_ok):
///   the first success wins and cancels the rest;
/// - [`with_limit`](Self::with_limit): at most `n` tasks run at once, the
///   others queue;
/// - [`with_deadline`](Self::with_deadline) and
///   [`with_timeout`](Self::with_timeout): the scope cancels itself at a
///   deadline.
///
/// [`spawn_named`](Self::spawn_named) and
/// [`shutdown_report`](Self::shutdown_report) say, for the logs, what
/// happened to each task in a shutdown.
///
/// ```
/// use std::time::Duration;
/// use cancel_scope_runtime::Scope;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // Ask three mirrors, two at a time, for at most 10 seconds; keep the
/// // first answer.
/// let mut scope = Scope::new()
///     .first_ok()
///     .with_limit(2)
///     .with_timeout(Duration::from_secs(10));
/// for (mirror, secs) in [("eu", 3), ("us", 1), ("asia", 2)] {
///     scope.spawn_named(mirror, move |token| async move {
///         tokio::select! {
///             () = tokio::time::sleep(Duration::from_secs(secs)) => Ok(mirror),
///             () = token.cancelled() => Err("cancelled"),
///         }
///     });
/// }
/// assert_eq!(scope.join_first_ok().await.unwrap(), "us");
/// # }
/// ```
///
/// # Reusing a scope
///
/// When every result has been handed out, the scope is empty and can be
/// spawned into again, as long as its token is not cancelled. Its token is
/// never reset: after [`cancel`](Self::cancel), [`shutdown`](Self::shutdown),
/// [`shutdown_report`](Self::shutdown_report),
/// [`join_first_ok`](Self::join_first_ok) found a winner, a deadline, a
/// fail-fast or first-ok task, or the parent token, tasks spawned into it
/// start with a cancelled token. Spawn into a fresh scope instead.
pub struct Scope<T> {
    /// Tasks from `spawn`.
    tasks: JoinSet<Output<T>>,
    /// Tasks from `spawn_blocking`.
    blocking: JoinSet<Output<T>>,
    // Bookkeeping. Every task not yet handed out has an index, in spawn
    // order: first the `slots`, then one per sequence number from
    // `implicit_from` to `next_seq`. Spawning only counts; `join_next` turns
    // the implicit indices up to the task it hands out into `slots` (it must
    // remember which tasks it took), and drops the taken slots when they are
    // most of the list. Everything is forgotten when nothing is left.
    /// Recorded tasks, sorted by sequence number.
    slots: Vec<Slot>,
    /// The sequence number of the first task without a slot.
    implicit_from: u64,
    /// The sequence number of the next task.
    next_seq: u64,
    /// Results joined but not handed out, by index; `None` for the others.
    /// Grown by the drains; `finish` hands it out.
    results: Vec<Option<Result<T, TaskError>>>,
    /// `(seq, id)` of each `spawn_blocking` task in its `JoinSet`: a blocking
    /// task can end in a `JoinError` (aborted before it started), found by
    /// its id, and a shutdown detaches the ones still running.
    blocking_ids: Vec<(u64, Id)>,
    /// `Some` entries in `results`.
    done: usize,
    /// Taken slots.
    taken: usize,
    /// `spawn` tasks whose result was neither stored nor handed out: in the
    /// set, or "orphans", joined as a `JoinError` (aborted), which carries no
    /// sequence number, so they are found as the indices that never got a
    /// result, and reported as aborted.
    running_async: usize,
    /// Aborted results `join_next` handed out for orphans it could not place;
    /// that many orphans count as taken. All aborted results look alike, so
    /// which ones does not matter.
    handed_aborts: usize,
    /// Set by `fail_fast` and `first_ok`: which outcomes cancel the token
    /// from inside the task. `None` costs the tasks nothing.
    cancel_on: Option<CancelRule<T>>,
    /// `fail_fast` was called.
    fail_fast: bool,
    /// `first_ok` was called.
    first_ok: bool,
    /// Set by `with_limit`. `None` costs the tasks nothing.
    limit: Option<Limit>,
    /// Set by `with_deadline` and `with_timeout`.
    deadline: Option<Instant>,
    /// The task that cancels the token at the deadline, while it waits.
    deadline_timer: Option<AbortHandle>,
    /// The scope's token and why it was cancelled, set by the first of the
    /// scope's own causes (shared with the tasks, which make it current
    /// while they are polled, and with the deadline timer).
    cause: Arc<Cause>,
    /// The names of the named tasks not yet handed out, by sequence number.
    /// Unnamed tasks get their default name when a report needs it.
    names: BTreeMap<u64, Cow<'static, str>>,
    /// The sequence number of the first `Ok` that `join_first_ok` found and
    /// kept in `results`, should it be interrupted before returning it.
    winner: Option<u64>,
}

impl<T> Scope<T> {
    /// A scope with a fresh root token: only [`cancel`](Self::cancel),
    /// [`shutdown`](Self::shutdown) or dropping the scope cancel it.
    ///
    /// Creating a scope does not need a runtime; spawning does.
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// let scope = Scope::<()>::new();
    /// assert!(scope.is_empty());
    /// assert!(!scope.token().is_cancelled());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Scope::with_cause(Cause::root(CancellationToken::new()))
    }

    /// A scope whose token is a child of `parent`: cancelling `parent`
    /// cancels the scope and its tasks; cancelling the scope never cancels
    /// `parent`.
    ///
    /// ```
    /// use cancel_scope_runtime::{CancellationToken, Scope};
    ///
    /// let shutdown = CancellationToken::new();
    /// let workers = Scope::<()>::child_of(&shutdown);
    /// workers.cancel();
    /// assert!(!shutdown.is_cancelled());
    ///
    /// let workers = Scope::<()>::child_of(&shutdown);
    /// shutdown.cancel();
    /// assert!(workers.token().is_cancelled());
    /// ```
    #[must_use]
    pub fn child_of(parent: &CancellationToken) -> Self {
        Scope::with_cause(Cause::child_of(parent))
    }

    fn with_cause(cause: Arc<Cause>) -> Self {
        Scope {
            tasks: JoinSet::new(),
            blocking: JoinSet::new(),
            slots: Vec::new(),
            implicit_from: 0,
            next_seq: 0,
            results: Vec::new(),
            blocking_ids: Vec::new(),
            done: 0,
            taken: 0,
            running_async: 0,
            handed_aborts: 0,
            cancel_on: None,
            fail_fast: false,
            first_ok: false,
            limit: None,
            deadline: None,
            deadline_timer: None,
            cause,
            names: BTreeMap::new(),
            winner: None,
        }
    }

    /// Limits the scope to `n` tasks running at once: further spawns are
    /// accepted at once and queue, in spawn order, until a running task
    /// finishes.
    ///
    /// Each task waits for a permit of a [`Semaphore`] inside the task,
    /// before its future is first polled. `f` still runs at spawn time to
    /// build the future (build it cheaply; do the work in the future). A
    /// [`spawn_blocking`](Self::spawn_blocking) task counts as well: it waits
    /// for its permit on its blocking thread before calling its closure. A
    /// task queued for a long time still shows in [`len`](Self::len) and is
    /// joined like any other.
    ///
    /// A task frees its permit once it has ended, after a
    /// [`fail_fast`](Self::fail_fast) or [`first_ok`](Self::first_ok) scope
    /// has seen its result: a task queued behind the one that cancelled the
    /// scope starts with its token cancelled.
    ///
    /// The limit also holds while the scope is cancelled: a task still queued
    /// when the scope is cancelled keeps its place and runs when a permit
    /// frees up, with its token already cancelled, so it can see that and
    /// clean up (a `#[cancellable]` fn then runs its cleanup without polling
    /// its body). A [`shutdown`](Self::shutdown)'s grace period must thus
    /// cover the queue; a task still queued at the end of it is aborted
    /// without having run.
    ///
    /// Applies to the tasks spawned after it; call it when building the
    /// scope. A scope without a limit pays nothing for this feature.
    ///
    /// # Panics
    ///
    /// When `n` is 0. An `n` above [`Semaphore::MAX_PERMITS`] counts as
    /// `MAX_PERMITS`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let running = Arc::new(AtomicUsize::new(0));
    /// let mut scope = Scope::new().with_limit(2);
    /// for _ in 0..10 {
    ///     let running = running.clone();
    ///     scope.spawn(move |_token| async move {
    ///         let now = running.fetch_add(1, SeqCst) + 1;
    ///         tokio::task::yield_now().await;
    ///         running.fetch_sub(1, SeqCst);
    ///         now
    ///     });
    /// }
    /// let peak = scope.join_all().await.into_iter().map(Result::unwrap).max();
    /// assert!(peak <= Some(2));
    /// # }
    /// ```
    #[must_use]
    #[track_caller]
    pub fn with_limit(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "`Scope::with_limit(0)`: the limit must be at least 1, or no task could ever run"
        );
        let max = n.min(Semaphore::MAX_PERMITS);
        self.limit = Some(Limit {
            permits: Arc::new(Semaphore::new(max)),
            max,
        });
        self
    }

    /// Cancels the scope's token at `deadline`, as if [`cancel`](Self::cancel)
    /// were called then: the tasks see their tokens cancelled and clean up.
    /// Nothing is aborted: a deadline bounds how long the tasks run, not how
    /// long a join waits for tasks that ignore their token; for that, follow
    /// it with [`shutdown`](Self::shutdown).
    ///
    /// A small timer task, spawned with [`tokio::spawn`] and not a task of the
    /// scope (it is never among the results), waits for the deadline; it
    /// ends when the token is cancelled, and is aborted when the scope is
    /// shut down or dropped. A deadline already past cancels the token at
    /// once. Calling it again replaces the deadline.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, or when the runtime has no timer
    /// (`enable_time`), like [`tokio::time::sleep_until`] (unless the
    /// deadline is already past).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let deadline = Instant::now() + Duration::from_secs(30);
    /// let mut scope = Scope::new().with_deadline(deadline);
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await; // works until the deadline
    ///     Instant::now()
    /// });
    /// let stopped_at = scope.join_all().await.pop().unwrap().unwrap();
    /// assert_eq!(stopped_at, deadline);
    /// assert!(scope.token().is_cancelled());
    /// # }
    /// ```
    #[must_use]
    #[track_caller]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        if let Some(timer) = self.deadline_timer.take() {
            timer.abort();
        }
        self.deadline = Some(deadline);
        if deadline <= Instant::now() {
            self.cause.cancel(CancelReason::Deadline);
            return self;
        }
        // Made here so that a missing timer panics here, not in the task.
        let sleep = tokio::time::sleep_until(deadline);
        let cause = Arc::clone(&self.cause);
        let timer = tokio::spawn(async move {
            if cause.token().run_until_cancelled(sleep).await.is_some() {
                cause.cancel(CancelReason::Deadline);
            }
        });
        self.deadline_timer = Some(timer.abort_handle());
        self
    }

    /// Cancels the scope's token `timeout` from now; see
    /// [`with_deadline`](Self::with_deadline).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, or when the runtime has no timer
    /// (`enable_time`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut scope = Scope::new().with_timeout(Duration::from_secs(5));
    /// scope.spawn(|token| async move {
    ///     let mut rounds = 0;
    ///     while token.run_until_cancelled(tokio::time::sleep(Duration::from_secs(1))).await.is_some() {
    ///         rounds += 1;
    ///     }
    ///     rounds
    /// });
    /// let rounds = scope.join_all().await.pop().unwrap().unwrap();
    /// assert!(rounds <= 5);
    /// # }
    /// ```
    #[must_use]
    #[track_caller]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let deadline = Instant::now() + timeout;
        self.with_deadline(deadline)
    }

    /// The deadline set by [`with_deadline`](Self::with_deadline) or
    /// [`with_timeout`](Self::with_timeout), if any, to bound other waits by
    /// it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// assert_eq!(Scope::<()>::new().deadline(), None);
    /// let scope = Scope::<()>::new().with_timeout(Duration::from_secs(5));
    /// assert_eq!(scope.deadline(), Some(Instant::now() + Duration::from_secs(5)));
    /// # }
    /// ```
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The scope's token. Clone it to cancel the scope from elsewhere, or
    /// make child tokens of it for work that is not a task of the scope.
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// let scope = Scope::<()>::new();
    /// let token = scope.token().clone();
    /// token.cancel();
    /// assert!(scope.token().is_cancelled());
    /// ```
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        self.cause.token()
    }

    /// Cancels the scope's token, and so every task's token. Tasks stop as
    /// they see fit; nothing is aborted and nothing is awaited. The token
    /// stays cancelled: tasks spawned afterwards start with a cancelled token
    /// (spawn into a fresh scope instead).
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await;
    ///     "stopped"
    /// });
    /// scope.cancel();
    /// assert_eq!(scope.join_next().await.unwrap().unwrap(), "stopped");
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.cause.cancel(CancelReason::Requested);
    }

    /// Why the scope's token was cancelled, `None` while it is not: the
    /// first cause wins.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::{CancelReason, CancellationToken, Scope};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let scope: Scope<()> = Scope::new().with_timeout(Duration::from_secs(1));
    /// assert_eq!(scope.cancel_reason(), None);
    /// scope.token().cancelled().await;
    /// assert_eq!(scope.cancel_reason(), Some(CancelReason::Deadline));
    ///
    /// let parent = CancellationToken::new();
    /// let child: Scope<()> = Scope::child_of(&parent);
    /// parent.cancel();
    /// assert_eq!(child.cancel_reason(), Some(CancelReason::Parent));
    /// # }
    /// ```
    #[must_use]
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cause.reason()
    }

    /// The number of tasks whose result has not been handed out yet,
    /// running or finished.
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|_token| async { 1 });
    /// scope.spawn(|_token| async { 2 });
    /// assert_eq!(scope.len(), 2);
    /// scope.join_next().await;
    /// assert_eq!(scope.len(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.blocking.len() + self.done + self.running_async - self.handed_aborts
    }

    /// `true` when every task's result has been handed out (or none was
    /// spawned).
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// assert!(scope.is_empty());
    /// scope.spawn(|_token| async {});
    /// assert!(!scope.is_empty());
    /// scope.join_all().await;
    /// assert!(scope.is_empty());
    /// # }
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: 'static> Scope<T> {
    /// Spawns `f(token)` as a task of the scope, where `token` is a fresh
    /// child of the scope's token: it is cancelled when the scope is, and the
    /// task may cancel it (or hand it on) without cancelling the scope or its
    /// siblings.
    ///
    /// `f` runs right away, on the caller's thread, to build the future; the
    /// future runs on the runtime. A `#[cancellable]` fn (or any
    /// `async fn(CancellationToken, ..)`) fits as it is:
    /// `scope.spawn(metrics_loop)`, `scope.spawn(|t| writer_loop(t, rx))`.
    ///
    /// A panic in the task is caught and reported as a [`TaskError`] by the
    /// join methods.
    ///
    /// Returns the task's [`TaskId`], unique within the scope, which
    /// [`join_next_with_id`](Self::join_next_with_id) hands back with the
    /// task's result. (Like [`JoinSet::spawn`]'s `AbortHandle`, it can be
    /// ignored.)
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn`].
    ///
    /// ```
    /// use cancel_scope_runtime::{CancellationToken, Scope};
    ///
    /// async fn metrics_loop(token: CancellationToken) -> u64 {
    ///     let mut ticks = 0;
    ///     while !token.is_cancelled() {
    ///         ticks += 1;
    ///         tokio::task::yield_now().await;
    ///     }
    ///     ticks
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(metrics_loop);
    /// scope.spawn(|token| async move {
    ///     token.cancel(); // cancels this task's token only
    ///     0
    /// });
    /// assert_eq!(scope.len(), 2);
    /// scope.cancel();
    /// let results = scope.join_all().await;
    /// assert_eq!(results.len(), 2);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(&mut self, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_task(f, None)
    }

    /// `spawn`, with the task's name for its `tracing` span.
    #[track_caller]
    fn spawn_task<F, Fut>(&mut self, f: F, _name: Option<&str>) -> TaskId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let fut = f(self.cause.token().child_token());
        #[cfg(feature = "tracing")]
        let fut = tracing::Instrument::instrument(fut, task_span(self.next_seq, _name));
        let fut = Some(fut);
        let seq = self.next_seq;
        let cause = Some(Arc::clone(&self.cause));
        match (self.cancel_guard(), &self.limit) {
            (None, None) => self.tasks.spawn(Task {
                fut,
                seq,
                check: (),
                cause,
            }),
            (Some(check), None) => self.tasks.spawn(Task {
                fut,
                seq,
                check,
                cause,
            }),
            (None, Some(limit)) => self.tasks.spawn(limited(
                limit.permits.clone(),
                Task {
                    fut,
                    seq,
                    check: (),
                    cause,
                },
            )),
            (Some(check), Some(limit)) => self.tasks.spawn(limited(
                limit.permits.clone(),
                Task {
                    fut,
                    seq,
                    check,
                    cause,
                },
            )),
        };
        self.next_seq += 1;
        self.running_async += 1;
        TaskId(seq)
    }

    /// [`spawn`](Self::spawn), with a name for
    /// [`shutdown_report`](Self::shutdown_report): a `&'static str` or a
    /// `String`, kept as it is (not copied) until the task's result is handed
    /// out. Only named tasks keep a name; unnamed ones are named `task #<id>`
    /// (see [`TaskId`]) when a report is made.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn_named("metrics", |token| async move { token.cancelled().await });
    /// for shard in 0..2 {
    ///     scope.spawn_named(format!("shard-{shard}"), |token| async move {
    ///         token.cancelled().await
    ///     });
    /// }
    /// let report = scope.shutdown_report(Duration::from_secs(5)).await;
    /// let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    /// assert_eq!(names, ["metrics", "shard-0", "shard-1"]);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_named<F, Fut>(&mut self, name: impl Into<Cow<'static, str>>, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let name = name.into();
        let id = self.spawn_task(f, Some(&name));
        self.names.insert(id.0, name);
        id
    }

    /// Runs `f(token)` on Tokio's blocking thread pool as a task of the
    /// scope, with `token` a fresh child of the scope's token. Blocking code
    /// cannot be interrupted: `f` should check
    /// [`token.is_cancelled()`](CancellationToken::is_cancelled) often
    /// enough for [`shutdown`](Self::shutdown) to be graceful. A closure
    /// still running at the end of the grace period is detached (see
    /// [`TaskError::is_detached`]). Returns the task's [`TaskId`], as
    /// [`spawn`](Self::spawn) does.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn_blocking`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn_blocking(|token| {
    ///     let mut rounds = 0u32;
    ///     while !token.is_cancelled() {
    ///         rounds += 1; // a slice of CPU-bound work
    ///         std::thread::sleep(Duration::from_millis(1));
    ///     }
    ///     rounds
    /// });
    /// let results = scope.shutdown(Duration::from_secs(5)).await;
    /// assert!(results[0].is_ok());
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_blocking<F>(&mut self, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let token = self.cause.token().child_token();
        let seq = self.next_seq;
        let check = self.cancel_guard();
        let permits = self.limit.as_ref().map(|limit| limit.permits.clone());
        let handle = self.blocking.spawn_blocking(move || {
            // A blocking thread is not an async context: it may block on the
            // runtime to wait for its permit.
            let permit = permits
                .as_ref()
                .map(|permits| tokio::runtime::Handle::current().block_on(permits.acquire()));
            let out = catch_unwind(AssertUnwindSafe(move || f(token)));
            check.check(seq, &out);
            drop(permit);
            (seq, out)
        });
        self.blocking_ids.push((seq, handle.id()));
        self.next_seq += 1;
        TaskId(seq)
    }

    /// [`spawn_blocking`](Self::spawn_blocking), with a name for
    /// [`shutdown_report`](Self::shutdown_report) (see
    /// [`spawn_named`](Self::spawn_named)).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn_blocking`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::{Scope, TaskOutcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn_blocking_named("checksum", |_token| 0xbeef_u32);
    /// let report = scope.shutdown_report(Duration::from_secs(5)).await;
    /// assert_eq!(report.tasks()[0].name(), "checksum");
    /// assert!(report.is_clean());
    /// assert_eq!(report.into_results()[0].as_ref().unwrap(), &0xbeef);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_blocking_named<F>(&mut self, name: impl Into<Cow<'static, str>>, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let id = self.spawn_blocking(f);
        self.names.insert(id.0, name.into());
        id
    }

    /// Waits for the next task to finish and returns its result, in
    /// completion order; `None` when the scope is empty.
    ///
    /// Results that an interrupted [`join_all`](Self::join_all) or
    /// [`shutdown`](Self::shutdown) had already collected come first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like [`JoinSet::join_next`]: if the future is dropped
    /// before it completes (say, in a `tokio::select!` whose other branch won),
    /// no result is lost; it stays in the scope for the next call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// for ms in [30, 10, 20] {
    ///     scope.spawn(move |_token| async move {
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         ms
    ///     });
    /// }
    /// let mut order = Vec::new();
    /// while let Some(result) = scope.join_next().await {
    ///     order.push(result.unwrap());
    /// }
    /// assert_eq!(order, [10, 20, 30]);
    /// # }
    /// ```
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        let next = self.next(false).await;
        next.map(|(_, result)| result)
    }

    /// [`join_next`](Self::join_next), with the id of the task the result
    /// belongs to: the [`TaskId`] that [`spawn`](Self::spawn) returned. A
    /// task that panicked carries its id as well.
    ///
    /// The one result it may hand out later than `join_next` would is that
    /// of a task aborted by a [`shutdown`](Self::shutdown) that was itself
    /// interrupted after its grace period (a rare case): an abort does not
    /// say which task it was, so such results come once no other task of
    /// the scope is left running.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like `join_next`.
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// let mut inputs = std::collections::HashMap::new();
    /// for path in ["a.toml", "b.toml"] {
    ///     let id = scope.spawn(move |_token| async move {
    ///         if path == "b.toml" {
    ///             panic!("corrupt file");
    ///         }
    ///         path.len()
    ///     });
    ///     inputs.insert(id, path);
    /// }
    /// let mut failed = Vec::new();
    /// while let Some((id, result)) = scope.join_next_with_id().await {
    ///     if let Err(err) = result {
    ///         failed.push((inputs[&id], err.to_string()));
    ///     }
    /// }
    /// assert_eq!(failed, [("b.toml", "task panicked: corrupt file".to_string())]);
    /// # }
    /// ```
    pub async fn join_next_with_id(&mut self) -> Option<(TaskId, Result<T, TaskError>)> {
        let next = self.next(true).await?;
        match next {
            (Some(seq), result) => Some((TaskId(seq), result)),
            // `next(true)` places every result it hands out.
            (None, _) => unreachable!("cancel-scope: a result without a task id"),
        }
    }

    /// The next result, with its task's sequence number when it is known:
    /// always with `ids`, which for that keeps the aborted tasks that an
    /// interrupted shutdown left (their `JoinError` says nothing of the task)
    /// until both sets are empty, when they are the indices left.
    async fn next(&mut self, ids: bool) -> Option<(Option<u64>, Result<T, TaskError>)> {
        let next = if self.done > 0 {
            self.take_first_done()
        } else {
            let joined = poll_fn(|cx| {
                loop {
                    match ready!(self.poll_raw(cx)) {
                        Some((false, Err(_))) if ids => {
                            // An orphan, placed by `take_orphan` below.
                        }
                        Some((blocking, raw)) => {
                            return Poll::Ready(Some(self.hand_out(blocking, raw)));
                        }
                        None => return Poll::Ready(None),
                    }
                }
            })
            .await;
            joined.or_else(|| self.take_orphan())
        };
        if let Some((Some(seq), _)) = &next {
            self.forget_name(*seq);
        }
        self.tidy();
        next
    }

    /// Waits for every task and returns the results of all tasks not already
    /// returned by [`join_next`](Self::join_next), in spawn order, so that
    /// results map to the tasks as they were spawned. The scope is empty
    /// afterwards; it can be spawned into again as long as its token is not
    /// cancelled (see [Reusing a scope](Self#reusing-a-scope)).
    ///
    /// It waits as long as it takes: cancel first ([`cancel`](Self::cancel))
    /// to stop tasks that run until cancelled, or use
    /// [`shutdown`](Self::shutdown) to bound the wait.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the results
    /// it already collected stay in the scope and are returned by the next
    /// `join_next`, `join_all` or `shutdown`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// for ms in [30, 10, 20] {
    ///     scope.spawn(move |_token| async move {
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         ms
    ///     });
    /// }
    /// let results: Vec<u64> = scope.join_all().await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(results, [30, 10, 20]);
    /// # }
    /// ```
    pub async fn join_all(&mut self) -> Vec<Result<T, TaskError>> {
        self.drain().await;
        self.finish()
    }

    /// Graceful, then forced shutdown: cancels the scope's token, waits up to
    /// `grace` for the tasks to finish (so they run their cleanups), then
    /// aborts the tasks still running and returns the results of all tasks
    /// not already returned by [`join_next`](Self::join_next), in spawn
    /// order. It returns as soon as every task has finished, not at the end
    /// of `grace`.
    ///
    /// An aborted task's result is a [`TaskError`] whose
    /// [`is_aborted`](TaskError::is_aborted) is `true`. A
    /// [`spawn_blocking`](Self::spawn_blocking) closure still running at the
    /// end of `grace` cannot be aborted; `shutdown` does not wait for it: it is
    /// detached ([`TaskError::is_detached`]) and its thread runs it to the
    /// end. A blocking task that has not started by then never starts.
    ///
    /// After `grace`, `shutdown` still waits for the aborted tasks to be
    /// dropped (as soon as each is not being polled), so when it returns no
    /// async task of the scope is left.
    ///
    /// The token stays cancelled afterwards: tasks spawned into the scope
    /// then start with a cancelled token. Spawn into a fresh scope instead.
    /// [`shutdown_report`](Self::shutdown_report) also says what happened to
    /// each task.
    ///
    /// # Panics
    ///
    /// When the runtime has no timer (`enable_time`), like
    /// [`tokio::time::timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that no result is lost: if the future is
    /// dropped before it completes, the results it collected stay in the
    /// scope for the next `join_next`, `join_all` or `shutdown` (the token
    /// stays cancelled; a new call starts a new grace period).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await;
    ///     "cleaned up" // runs its cleanup when cancelled
    /// });
    /// scope.spawn(|_token| async {
    ///     std::future::pending::<()>().await; // ignores its token
    ///     "never"
    /// });
    /// let results = scope.shutdown(Duration::from_millis(50)).await;
    /// assert_eq!(results[0].as_ref().unwrap(), &"cleaned up");
    /// assert!(results[1].as_ref().unwrap_err().is_aborted());
    /// # }
    /// ```
    pub async fn shutdown(&mut self, grace: Duration) -> Vec<Result<T, TaskError>> {
        self.stop(grace, |_| {}).await;
        self.finish()
    }

    /// [`shutdown`](Self::shutdown), and a [`ShutdownReport`] of what
    /// happened to each task, for the logs: its name (see
    /// [`spawn_named`](Self::spawn_named)), its [`TaskOutcome`], and how long
    /// its cleanup took; the results themselves come with
    /// [`ShutdownReport::into_results`]. Its `Display` is a table.
    ///
    /// The outcomes are counted from the moment the shutdown cancels the
    /// token:
    ///
    /// - [`Completed`](TaskOutcome::Completed): the task had finished before;
    /// - [`CancelledCleanedUp`](TaskOutcome::CancelledCleanedUp): it
    ///   finished within the grace period, so it saw its token cancelled and
    ///   ran its cleanup; its cleanup time runs from the cancellation to its
    ///   end;
    /// - [`Aborted`](TaskOutcome::Aborted), [`Detached`](TaskOutcome::Detached)
    ///   or [`Panicked`](TaskOutcome::Panicked), as its [`TaskError`] says.
    ///
    /// A task's end is seen when the shutdown collects its result (the
    /// tasks themselves record nothing, to cost nothing when no report is
    /// asked for), so a cleanup time is late by the time the shutdown takes
    /// to get to it, usually microseconds; on a paused clock it is exact.
    ///
    /// When the token was already cancelled as the shutdown began (by
    /// [`cancel`](Self::cancel), a parent token, a deadline, a fail-fast or
    /// first-ok task), the scope cannot know when the tasks that had
    /// finished by then did: they count as `Completed`, and cleanup times
    /// count from the start of the shutdown.
    /// [`ShutdownReport::was_cancelled_before`] says so, and so does the
    /// table.
    ///
    /// # Panics
    ///
    /// When the runtime has no timer (`enable_time`), like
    /// [`tokio::time::timeout`].
    ///
    /// # Cancel safety
    ///
    /// As for `shutdown`, no result is lost if the future is dropped before
    /// it completes: they stay in the scope. What it measured is lost; a new
    /// call counts the tasks the first one collected as `Completed`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::{Scope, TaskOutcome};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn_named("writer", |token| async move {
    ///     token.cancelled().await;
    ///     tokio::time::sleep(Duration::from_millis(250)).await; // flush
    ///     "flushed"
    /// });
    /// scope.spawn_named("stuck", |_token| async move {
    ///     std::future::pending::<()>().await; // ignores its token
    ///     "never"
    /// });
    /// scope.spawn(|_token| async { "done" });
    /// tokio::task::yield_now().await; // "done" finishes
    ///
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// println!("{report}");
    /// let tasks = report.tasks();
    /// assert_eq!(tasks[0].outcome(), TaskOutcome::CancelledCleanedUp);
    /// assert_eq!(tasks[0].cleanup_time(), Some(Duration::from_millis(250)));
    /// assert_eq!(tasks[1].outcome(), TaskOutcome::Aborted);
    /// assert_eq!((tasks[2].name(), tasks[2].outcome()), ("task #2", TaskOutcome::Completed));
    /// assert!(!report.is_clean());
    /// let results = report.into_results();
    /// assert_eq!(results[0].as_ref().unwrap(), &"flushed");
    /// # }
    /// ```
    ///
    /// prints
    ///
    /// ```text
    /// TASK     OUTCOME                  CLEANUP
    /// writer   cancelled, cleaned up    250.0ms
    /// stuck    aborted                        -
    /// task #2  completed                      -
    /// shutdown of 3 tasks took 1.000s (grace 1.000s): 1 completed, 1 cleaned up, 1 aborted
    /// ```
    pub async fn shutdown_report(&mut self, grace: Duration) -> ShutdownReport<T> {
        let cancelled_before = self.cancel_reason();
        // What has finished did not need the shutdown.
        while let Some(raw) = self.tasks.try_join_next() {
            self.store(false, raw);
        }
        while let Some(raw) = self.blocking.try_join_next() {
            self.store(true, raw);
        }
        let start = Instant::now();
        let mut finished_at: Vec<Option<Instant>> = vec![None; self.indices()];
        self.stop(grace, |i| {
            if let Some(at) = finished_at.get_mut(i) {
                *at = Some(Instant::now());
            }
        })
        .await;
        let elapsed = start.elapsed();
        let mut names = std::mem::take(&mut self.names);
        let mut tasks = Vec::with_capacity(finished_at.len());
        let results = self.finish_with(|i, seq, result| {
            let finished = finished_at.get(i).copied().flatten();
            let outcome = match &result {
                Ok(_) if finished.is_some() => TaskOutcome::CancelledCleanedUp,
                Ok(_) => TaskOutcome::Completed,
                Err(e) => e.outcome(),
            };
            let cleanup_time = match outcome {
                TaskOutcome::Aborted | TaskOutcome::Detached => None,
                _ => finished.map(|at| at.saturating_duration_since(start)),
            };
            let name = names
                .remove(&seq)
                .unwrap_or_else(|| Cow::Owned(format!("task #{seq}")));
            tasks.push(TaskReport::new(TaskId(seq), name, outcome, cleanup_time));
            result
        });
        ShutdownReport::new(tasks, results, grace, elapsed, cancelled_before)
    }

    /// Cancels the token, waits up to `grace` for the tasks, then detaches
    /// the blocking ones still running and aborts the async ones, and waits
    /// for those. `on_store` sees the index of each result it collects.
    async fn stop(&mut self, grace: Duration, mut on_store: impl FnMut(usize)) {
        self.cause.cancel(CancelReason::Shutdown);
        if let Some(timer) = self.deadline_timer.take() {
            timer.abort();
        }
        // `drain` keeps every result it collects in the scope, so dropping it
        // when the grace period ends loses nothing.
        if tokio::time::timeout(grace, self.drain_with(&mut on_store))
            .await
            .is_err()
        {
            if !self.blocking.is_empty() {
                // Queued blocking tasks never start; running ones can't be
                // stopped: take what finished, detach the rest.
                self.blocking.abort_all();
                while let Some(raw) = self.blocking.try_join_next() {
                    if let Some(i) = self.store(true, raw) {
                        on_store(i);
                    }
                }
                let reason = self.cause.reason();
                for (seq, _) in std::mem::take(&mut self.blocking_ids) {
                    if let Some(i) = self.index(seq) {
                        self.put(i, Err(TaskError::detached(reason)));
                    }
                }
                self.blocking.detach_all();
            }
            self.tasks.abort_all();
            self.drain_with(&mut on_store).await;
        }
    }

    /// The fail-fast or first-ok check for a new task, when the scope has
    /// one.
    fn cancel_guard(&self) -> Option<CancelOn<T>> {
        self.cancel_on.map(|rule| CancelOn {
            cause: Arc::clone(&self.cause),
            rule,
        })
    }

    /// The sequence number of the task at index `i`.
    fn seq_at(&self, i: usize) -> u64 {
        seq_at(&self.slots, self.implicit_from, i)
    }

    /// Forgets the name of task `seq`, which was handed out.
    fn forget_name(&mut self, seq: u64) {
        if !self.names.is_empty() {
            self.names.remove(&seq);
        }
    }

    /// How many tasks have an index.
    fn indices(&self) -> usize {
        // Each implicit index is a task that exists, so the count fits.
        let implicit = usize::try_from(self.next_seq - self.implicit_from).unwrap_or(usize::MAX);
        self.slots.len() + implicit
    }

    /// The index of task `seq`. Implicit indices are one subtraction away;
    /// so are slots until `join_next` drops taken ones.
    fn index(&self, seq: u64) -> Option<usize> {
        if seq >= self.implicit_from {
            let offset = usize::try_from(seq - self.implicit_from).ok()?;
            return Some(self.slots.len() + offset);
        }
        let first = self.slots.first()?.seq();
        let guess = usize::try_from(seq.checked_sub(first)?).ok()?;
        if self.slots.get(guess).is_some_and(|s| s.seq() == seq) {
            return Some(guess);
        }
        self.slots.binary_search_by_key(&seq, |s| s.seq()).ok()
    }

    fn is_taken(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.is_taken())
    }

    /// Records that the task at index `i` was handed out.
    fn take(&mut self, i: usize) {
        while self.slots.len() <= i {
            self.slots.push(Slot::pending(self.implicit_from));
            self.implicit_from += 1;
        }
        self.slots[i].take();
        self.taken += 1;
    }

    /// Keeps the result of the task at index `i` until it is handed out.
    fn put(&mut self, i: usize, result: Result<T, TaskError>) {
        match i.cmp(&self.results.len()) {
            // Tasks mostly finish in about the order they were spawned.
            Ordering::Equal => self.results.push(Some(result)),
            Ordering::Less => self.results[i] = Some(result),
            Ordering::Greater => {
                self.results.resize_with(i, || None);
                self.results.push(Some(result));
            }
        }
        self.done += 1;
    }

    /// The sequence number of the blocking task `id`, which leaves the
    /// blocking set; for the rare results that carry no sequence number.
    fn blocking_seq(&mut self, id: Id) -> Option<u64> {
        let k = self.blocking_ids.iter().position(|&(_, i)| i == id)?;
        Some(self.blocking_ids.swap_remove(k).0)
    }

    /// A task left its set with a result.
    fn joined(&mut self, blocking: bool, seq: u64) {
        if blocking {
            if let Some(k) = self.blocking_ids.iter().position(|&(s, _)| s == seq) {
                self.blocking_ids.swap_remove(k);
            }
        } else {
            self.running_async -= 1;
        }
    }

    /// Polls both sets for the next finished task; `true` with it when it
    /// was a blocking one. `None` when both sets are empty.
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<(bool, Raw<T>)>> {
        let tasks_empty = match self.tasks.poll_join_next(cx) {
            Poll::Ready(Some(raw)) => return Poll::Ready(Some((false, raw))),
            Poll::Ready(None) => true,
            Poll::Pending => false,
        };
        match self.blocking.poll_join_next(cx) {
            Poll::Ready(Some(raw)) => Poll::Ready(Some((true, raw))),
            Poll::Ready(None) if tasks_empty => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }

    /// Waits until both sets are empty, keeping every result in `results`.
    /// Cancel safe: each result is stored in the poll that joins it.
    async fn drain(&mut self) {
        self.drain_with(|_| {}).await;
    }

    /// `drain`, calling `on_store` with the index of each result it keeps.
    async fn drain_with(&mut self, mut on_store: impl FnMut(usize)) {
        // Room for every result, so that `put` never grows the vector.
        self.results
            .reserve(self.indices().saturating_sub(self.results.len()));
        poll_fn(|cx| {
            loop {
                match self.poll_raw(cx) {
                    Poll::Ready(Some((blocking, raw))) => {
                        if let Some(i) = self.store(blocking, raw) {
                            on_store(i);
                        }
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
    }

    /// Keeps a joined result, for `finish` (or `join_next`); its index.
    fn store(&mut self, blocking: bool, raw: Raw<T>) -> Option<usize> {
        let (seq, result) = match raw {
            Ok((seq, out)) => {
                self.joined(blocking, seq);
                (seq, out.map_err(TaskError::panic))
            }
            Err(e) if blocking => (
                self.blocking_seq(e.id())?,
                Err(TaskError::from_join_error(e, self.cause.reason())),
            ),
            // An aborted async task: an orphan, reported as aborted. (Finding
            // its index by id would cost a scan per task, and aborts come by
            // the thousand in a shutdown. A panic raised while dropping an
            // aborted task is reported as the abort.)
            Err(_) => return None,
        };
        let i = self.index(seq)?;
        self.put(i, result);
        Some(i)
    }

    /// Hands a joined result to the user (`join_next`), with its task's
    /// sequence number unless it is an orphan.
    fn hand_out(&mut self, blocking: bool, raw: Raw<T>) -> (Option<u64>, Result<T, TaskError>) {
        let (seq, result) = match raw {
            Ok((seq, out)) => {
                self.joined(blocking, seq);
                (Some(seq), out.map_err(TaskError::panic))
            }
            Err(e) if blocking => (
                self.blocking_seq(e.id()),
                Err(TaskError::from_join_error(e, self.cause.reason())),
            ),
            Err(e) => {
                self.handed_aborts += 1;
                (
                    None,
                    Err(TaskError::from_join_error(e, self.cause.reason())),
                )
            }
        };
        if let Some(i) = seq.and_then(|seq| self.index(seq)) {
            self.take(i);
        }
        (seq, result)
    }

    /// Hands out the first result an interrupted drain collected.
    fn take_first_done(&mut self) -> Option<(Option<u64>, Result<T, TaskError>)> {
        let i = self.results.iter().position(Option::is_some)?;
        self.take_stored(i)
    }

    /// Hands out the result kept at index `i`.
    fn take_stored(&mut self, i: usize) -> Option<(Option<u64>, Result<T, TaskError>)> {
        let result = self.results.get_mut(i)?.take()?;
        self.done -= 1;
        self.take(i);
        Some((Some(self.seq_at(i)), result))
    }

    /// Both sets are empty: hands out an orphan (an aborted task joined by
    /// an interrupted drain), if one is owed.
    fn take_orphan(&mut self) -> Option<(Option<u64>, Result<T, TaskError>)> {
        if self.running_async == self.handed_aborts {
            return None;
        }
        // With both sets empty and no result kept, every index not taken is
        // an orphan.
        let i = (0..self.indices()).find(|&i| !self.is_taken(i))?;
        self.take(i);
        self.running_async -= 1;
        Some((
            Some(self.seq_at(i)),
            Err(TaskError::aborted(self.cause.reason())),
        ))
    }

    /// After `join_next`: forgets everything when nothing is left to hand
    /// out, or drops the taken slots when they are most of the list (and no
    /// result is kept, so `results` holds no information).
    fn tidy(&mut self) {
        if self.is_empty() {
            self.reset();
        } else if self.taken > 64 && self.taken * 2 > self.slots.len() && self.done == 0 {
            self.results.clear();
            self.slots.retain(|s| !s.is_taken());
            self.taken = 0;
        }
    }

    /// Both sets are empty: hands out every result not yet handed out, in
    /// spawn order, and empties the scope.
    fn finish(&mut self) -> Vec<Result<T, TaskError>> {
        self.finish_with(|_, _, result| result)
    }

    /// `finish`, passing each result through `each` with its index and its
    /// task's sequence number.
    fn finish_with<R>(
        &mut self,
        mut each: impl FnMut(usize, u64, Result<T, TaskError>) -> R,
    ) -> Vec<R> {
        debug_assert!(self.tasks.is_empty() && self.blocking.is_empty());
        let indices = self.indices();
        self.results.resize_with(indices, || None);
        let results = std::mem::take(&mut self.results);
        let mut skip = self.handed_aborts;
        let (slots, implicit_from) = (&self.slots, self.implicit_from);
        let reason = self.cause.reason();
        // Reuses the allocation when `Option<Result<T, TaskError>>` and `R`
        // have the same layout, as they usually do in `finish`.
        let results = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, result)| {
                let result = match result {
                    Some(result) => result,
                    None if slots.get(i).is_some_and(|s| s.is_taken()) => return None,
                    // An orphan: aborted.
                    None if skip > 0 => {
                        skip -= 1;
                        return None;
                    }
                    None => Err(TaskError::aborted(reason)),
                };
                Some(each(i, seq_at(slots, implicit_from, i), result))
            })
            .collect();
        self.reset();
        results
    }

    fn reset(&mut self) {
        self.slots.clear();
        self.implicit_from = self.next_seq;
        self.results.clear();
        self.blocking_ids.clear();
        self.done = 0;
        self.taken = 0;
        self.running_async = 0;
        self.handed_aborts = 0;
        self.names.clear();
        self.winner = None;
    }
}

/// The sequence number of the task at index `i`, given the scope's slots and
/// its first implicit sequence number.
fn seq_at(slots: &[Slot], implicit_from: u64, i: usize) -> u64 {
    match slots.get(i) {
        Some(slot) => slot.seq(),
        // Indices fit in a `u64`.
        None => implicit_from + (i - slots.len()) as u64,
    }
}

impl<U, E> Scope<Result<U, E>> {
    /// Makes the scope fail fast: the first task that returns `Err` or
    /// panics cancels the scope's token at once, from inside the task, so its
    /// siblings see their tokens cancelled and run their cleanups without
    /// waiting for the owner to join anything.
    ///
    /// Applies to the tasks spawned after it; call it when building the
    /// scope. The failing task's own result is returned as usual by the join
    /// methods.
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new().fail_fast();
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await; // a sibling failed
    ///     Ok("cleaned up")
    /// });
    /// scope.spawn(|_token| async { Err("disk full") });
    /// let results = scope.join_all().await;
    /// assert_eq!(results[0].as_ref().unwrap(), &Ok("cleaned up"));
    /// assert_eq!(results[1].as_ref().unwrap(), &Err("disk full"));
    /// assert!(scope.token().is_cancelled());
    /// # }
    /// ```
    #[must_use]
    pub fn fail_fast(mut self) -> Self {
        self.fail_fast = true;
        self.cancel_on = Some(cancel_rule(self.fail_fast, self.first_ok));
        self
    }

    /// Makes the first success win: the first task that returns `Ok` cancels
    /// the scope's token at once, from inside the task, so its siblings see
    /// their tokens cancelled and run their cleanups without waiting for the
    /// owner to join anything. The mirror of [`fail_fast`](Self::fail_fast);
    /// with both, the first task to end in any way cancels the scope.
    ///
    /// An `Err` or a panic cancels nothing: the other tasks may still
    /// succeed. [`join_first_ok`](Self::join_first_ok) returns the winner
    /// (and works without `first_ok`, cancelling the rest itself when it
    /// sees the first `Ok`; `first_ok` does it without waiting for the owner
    /// to poll).
    ///
    /// Applies to the tasks spawned after it; call it when building the
    /// scope.
    ///
    /// ```
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new().first_ok();
    /// scope.spawn(|_token| async { Err("replica down") });
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await; // a sibling succeeded
    ///     Err("cancelled")
    /// });
    /// scope.spawn(|_token| async { Ok(42) });
    /// let results = scope.join_all().await;
    /// assert_eq!(results[0].as_ref().unwrap(), &Err("replica down"));
    /// assert_eq!(results[1].as_ref().unwrap(), &Err("cancelled"));
    /// assert_eq!(results[2].as_ref().unwrap(), &Ok(42));
    /// # }
    /// ```
    #[must_use]
    pub fn first_ok(mut self) -> Self {
        self.first_ok = true;
        self.cancel_on = Some(cancel_rule(self.fail_fast, self.first_ok));
        self
    }
}

impl<U: 'static, E: 'static> Scope<Result<U, E>> {
    /// Waits for the first task that returns `Ok`, cancels the scope's
    /// token, waits for the other tasks (so their cleanups run and no task
    /// is left), and returns the winner's value; the others' results are
    /// dropped. When no task succeeds, it returns every result not already
    /// handed out, in spawn order, as [`join_all`](Self::join_all) would.
    ///
    /// The first `Ok` is the first one the scope collects, in completion
    /// order; an `Ok` that a task returns from its cleanup, once the scope
    /// was cancelled, counts as well (return an `Err` from cleanups when it
    /// should not). Like `join_all`, it waits as long as the tasks take;
    /// [`with_timeout`](Self::with_timeout) bounds how long they run.
    /// With [`first_ok`](Self::first_ok), the winner cancels its siblings
    /// itself, without waiting for this call to see it.
    ///
    /// Named after [`first_ok`](Self::first_ok) and the `join_*` methods:
    /// like `futures::future::select_ok`, but it waits for the losers, as a
    /// scope lets no task outlive it, and hands back every failure rather
    /// than the last one.
    ///
    /// # Errors
    ///
    /// When no task returns `Ok` (or the scope is empty): every result, each
    /// an `Ok(Err(e))` or a [`TaskError`], in spawn order.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no result
    /// is lost; the results it collected stay in the scope for the next
    /// join. Once it has found the winner (the token is then cancelled), the
    /// next `join_first_ok` returns that same winner.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancel_scope_runtime::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut scope = Scope::new();
    /// for (replica, ms) in [("a", 300), ("b", 100), ("c", 200)] {
    ///     scope.spawn(move |token| async move {
    ///         let query = tokio::time::sleep(Duration::from_millis(ms));
    ///         match token.run_until_cancelled(query).await {
    ///             Some(()) => Ok(replica),
    ///             None => Err("cancelled"),
    ///         }
    ///     });
    /// }
    /// assert_eq!(scope.join_first_ok().await.unwrap(), "b");
    /// assert!(scope.is_empty()); // the others were cancelled and joined
    ///
    /// let mut scope = Scope::new();
    /// scope.spawn(|_token| async { Err::<(), _>("refused") });
    /// scope.spawn(|_token| async { panic!("bug") });
    /// let failures = scope.join_first_ok().await.unwrap_err();
    /// assert_eq!(failures[0].as_ref().unwrap(), &Err("refused"));
    /// assert!(failures[1].as_ref().unwrap_err().is_panic());
    /// # }
    /// ```
    pub async fn join_first_ok(&mut self) -> Result<U, Vec<Result<Result<U, E>, TaskError>>> {
        let found = match self.kept_winner() {
            Some(seq) => Some(seq),
            None => {
                poll_fn(|cx| {
                    loop {
                        let Some((blocking, raw)) = ready!(self.poll_raw(cx)) else {
                            return Poll::Ready(None);
                        };
                        let Some(i) = self.store(blocking, raw) else {
                            continue;
                        };
                        if matches!(self.results[i], Some(Ok(Ok(_)))) {
                            let seq = self.seq_at(i);
                            self.winner = Some(seq);
                            return Poll::Ready(Some(seq));
                        }
                    }
                })
                .await
            }
        };
        if let Some(seq) = found {
            // Without `first_ok`, this call is what cancels: the winner is
            // the reason (with it, the winner's task recorded that already).
            self.cause.cancel(CancelReason::TaskSucceeded(TaskId(seq)));
            self.drain().await;
            let won = self.index(seq).and_then(|i| self.take_stored(i));
            let rest = self.finish();
            if let Some((_, Ok(Ok(value)))) = won {
                return Ok(value);
            }
            // Unreachable: the scope was borrowed all along.
            return Err(rest);
        }
        Err(self.finish())
    }

    /// The winner a previous `join_first_ok` found, or else the first `Ok`
    /// among the results an interrupted drain kept (in spawn order).
    fn kept_winner(&mut self) -> Option<u64> {
        let is_ok = |r: &Option<Result<Result<U, E>, TaskError>>| matches!(r, Some(Ok(Ok(_))));
        if let Some(seq) = self.winner.take() {
            if self
                .index(seq)
                .and_then(|i| self.results.get(i))
                .is_some_and(is_ok)
            {
                self.winner = Some(seq);
                return Some(seq);
            }
        }
        if self.done == 0 {
            return None;
        }
        let i = self.results.iter().position(is_ok)?;
        let seq = self.seq_at(i);
        self.winner = Some(seq);
        Some(seq)
    }
}

impl<T> Default for Scope<T> {
    /// Same as [`Scope::new`].
    ///
    /// ```
    /// let scope: cancel_scope_runtime::Scope<u8> = Default::default();
    /// assert!(scope.is_empty());
    /// ```
    fn default() -> Self {
        Scope::new()
    }
}

/// Shows the number of tasks, whether the token is cancelled, whether the
/// scope fails fast, and the other policies when they are set.
///
/// ```
/// let scope = cancel_scope_runtime::Scope::<u8>::new();
/// assert_eq!(
///     format!("{scope:?}"),
///     "Scope { len: 0, cancelled: false, fail_fast: false, .. }",
/// );
/// let scope = cancel_scope_runtime::Scope::<Result<u8, ()>>::new()
///     .first_ok()
///     .with_limit(4);
/// assert_eq!(
///     format!("{scope:?}"),
///     "Scope { len: 0, cancelled: false, fail_fast: false, first_ok: true, limit: 4, .. }",
/// );
/// ```
impl<T> fmt::Debug for Scope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Scope");
        d.field("len", &self.len())
            .field("cancelled", &self.cause.token().is_cancelled())
            .field("fail_fast", &self.fail_fast);
        if self.first_ok {
            d.field("first_ok", &true);
        }
        if let Some(limit) = &self.limit {
            d.field("limit", &limit.max);
        }
        d.finish_non_exhaustive()
    }
}

/// Cancels the token, then aborts the tasks (dropping the `JoinSet`s does)
/// and the deadline's timer; never blocks. See [`Scope`] for blocking tasks.
impl<T> Drop for Scope<T> {
    fn drop(&mut self) {
        self.cause.cancel(CancelReason::Dropped);
        if let Some(timer) = &self.deadline_timer {
            timer.abort();
        }
    }
}

/// The span a scope task runs in, with the `tracing` feature: target
/// `cancel_scope`, name `task`, fields `id` and (for named tasks) `name`.
#[cfg(feature = "tracing")]
fn task_span(seq: u64, name: Option<&str>) -> tracing::Span {
    match name {
        Some(name) => tracing::debug_span!(target: "cancel_scope", "task", id = seq, name),
        None => tracing::debug_span!(target: "cancel_scope", "task", id = seq),
    }
}
