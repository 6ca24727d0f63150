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
use std::cmp::Ordering;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// A panic payload, as [`std::panic::catch_unwind`] returns it.
type Payload = Box<dyn Any + Send + 'static>;

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
    Aborted,
    Detached,
}

impl TaskError {
    fn panic(payload: Payload) -> Self {
        TaskError {
            repr: Repr::Panic(Box::new(Mutex::new(payload))),
        }
    }

    const fn aborted() -> Self {
        TaskError {
            repr: Repr::Aborted,
        }
    }

    const fn detached() -> Self {
        TaskError {
            repr: Repr::Detached,
        }
    }

    fn from_join_error(e: JoinError) -> Self {
        if e.is_panic() {
            TaskError::panic(e.into_panic())
        } else {
            TaskError::aborted()
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
        matches!(self.repr, Repr::Aborted | Repr::Detached)
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
        matches!(self.repr, Repr::Detached)
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
            Repr::Aborted => f.write_str("TaskError::Aborted"),
            Repr::Detached => f.write_str("TaskError::Detached"),
        }
    }
}

/// `task panicked: <message>` (the message when the payload is a string),
/// `task aborted`, or, for a detached blocking task,
/// `task detached: still blocking at the end of the grace period`.
///
/// ```
/// use std::time::Duration;
/// use cancel_scope_runtime::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::<()>::new();
/// scope.spawn(|_token| std::future::pending());
/// let results = scope.shutdown(Duration::ZERO).await;
/// assert_eq!(results[0].as_ref().unwrap_err().to_string(), "task aborted");
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
            Repr::Aborted => f.write_str("task aborted"),
            Repr::Detached => {
                f.write_str("task detached: still blocking at the end of the grace period")
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
/// in a fail-fast scope, cancel the scope's token on a failure. A type
/// parameter of [`Task`] so that the plain case costs no space in the task.
trait Check<T> {
    fn check(&self, out: &Result<T, Payload>);
}

impl<T> Check<T> for () {
    fn check(&self, _: &Result<T, Payload>) {}
}

/// Makes a failing task cancel the scope's token (see [`Scope::fail_fast`]).
struct FailFast<T> {
    token: CancellationToken,
    is_failure: fn(&T) -> bool,
}

impl<T> Check<T> for FailFast<T> {
    fn check(&self, out: &Result<T, Payload>) {
        if out.as_ref().map_or(true, |value| (self.is_failure)(value)) {
            self.token.cancel();
        }
    }
}

impl<T, C: Check<T>> Check<T> for Option<C> {
    fn check(&self, out: &Result<T, Payload>) {
        if let Some(check) = self {
            check.check(out);
        }
    }
}

pin_project! {
    /// The future a scope spawns for `spawn`: the user's future, plus the
    /// task's sequence number in its output, a panic guard, and the
    /// fail-fast check.
    ///
    /// It composes tokio and std primitives only (`catch_unwind`, the token's
    /// `cancel`) and holds no lock: it is polled by the runtime like the
    /// user's future and adds no synchronisation of its own.
    struct Task<F, C> {
        #[pin]
        fut: Option<F>,
        seq: u64,
        check: C,
    }
}

impl<F: Future, C: Check<F::Output>> Future for Task<F, C> {
    type Output = Output<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
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
        this.check.check(&out);
        Poll::Ready((*this.seq, out))
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
pub struct Scope<T> {
    token: CancellationToken,
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
    /// Set by `fail_fast`: which values are failures.
    fail_fast: Option<fn(&T) -> bool>,
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
        Scope::with_token(CancellationToken::new())
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
        Scope::with_token(parent.child_token())
    }

    fn with_token(token: CancellationToken) -> Self {
        Scope {
            token,
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
            fail_fast: None,
        }
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
        &self.token
    }

    /// Cancels the scope's token, and so every task's token. Tasks stop as
    /// they see fit; nothing is aborted and nothing is awaited. Tasks spawned
    /// afterwards start with a cancelled token.
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
        self.token.cancel();
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
    pub fn spawn<F, Fut>(&mut self, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let fut = Some(f(self.token.child_token()));
        let seq = self.next_seq;
        match self.fail_fast_guard() {
            None => self.tasks.spawn(Task {
                fut,
                seq,
                check: (),
            }),
            Some(check) => self.tasks.spawn(Task { fut, seq, check }),
        };
        self.next_seq += 1;
        self.running_async += 1;
    }

    /// Runs `f(token)` on Tokio's blocking thread pool as a task of the
    /// scope, with `token` a fresh child of the scope's token. Blocking code
    /// cannot be interrupted: `f` should check
    /// [`token.is_cancelled()`](CancellationToken::is_cancelled) often
    /// enough for [`shutdown`](Self::shutdown) to be graceful. A closure
    /// still running at the end of the grace period is detached (see
    /// [`TaskError::is_detached`]).
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
    pub fn spawn_blocking<F>(&mut self, f: F)
    where
        F: FnOnce(CancellationToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let token = self.token.child_token();
        let seq = self.next_seq;
        let fail_fast = self.fail_fast_guard();
        let handle = self.blocking.spawn_blocking(move || {
            let out = catch_unwind(AssertUnwindSafe(move || f(token)));
            fail_fast.check(&out);
            (seq, out)
        });
        self.blocking_ids.push((seq, handle.id()));
        self.next_seq += 1;
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
        let result = if self.done > 0 {
            self.take_first_done()
        } else {
            match poll_fn(|cx| self.poll_raw(cx)).await {
                Some((blocking, raw)) => Some(self.hand_out(blocking, raw)),
                None => self.take_orphan(),
            }
        };
        self.tidy();
        result
    }

    /// Waits for every task and returns the results of all tasks not already
    /// returned by [`join_next`](Self::join_next), in spawn order, so that
    /// results map to the tasks as they were spawned. The scope is empty
    /// afterwards and can be reused.
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
        self.token.cancel();
        // `drain` keeps every result it collects in the scope, so dropping it
        // when the grace period ends loses nothing.
        if tokio::time::timeout(grace, self.drain()).await.is_err() {
            if !self.blocking.is_empty() {
                // Queued blocking tasks never start; running ones can't be
                // stopped: take what finished, detach the rest.
                self.blocking.abort_all();
                while let Some(raw) = self.blocking.try_join_next() {
                    self.store(true, raw);
                }
                for (seq, _) in std::mem::take(&mut self.blocking_ids) {
                    if let Some(i) = self.index(seq) {
                        self.put(i, Err(TaskError::detached()));
                    }
                }
                self.blocking.detach_all();
            }
            self.tasks.abort_all();
            self.drain().await;
        }
        self.finish()
    }

    /// The fail-fast check for a new task, when the scope has one.
    fn fail_fast_guard(&self) -> Option<FailFast<T>> {
        self.fail_fast.map(|is_failure| FailFast {
            token: self.token.clone(),
            is_failure,
        })
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
        // Room for every result, so that `put` never grows the vector.
        self.results
            .reserve(self.indices().saturating_sub(self.results.len()));
        poll_fn(|cx| {
            loop {
                match self.poll_raw(cx) {
                    Poll::Ready(Some((blocking, raw))) => self.store(blocking, raw),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
    }

    /// Keeps a joined result, for `finish` (or `join_next`).
    fn store(&mut self, blocking: bool, raw: Raw<T>) {
        let (seq, result) = match raw {
            Ok((seq, out)) => {
                self.joined(blocking, seq);
                (seq, out.map_err(TaskError::panic))
            }
            Err(e) if blocking => match self.blocking_seq(e.id()) {
                Some(seq) => (seq, Err(TaskError::from_join_error(e))),
                None => return,
            },
            // An aborted async task: an orphan, reported as aborted. (Finding
            // its index by id would cost a scan per task, and aborts come by
            // the thousand in a shutdown. A panic raised while dropping an
            // aborted task is reported as the abort.)
            Err(_) => return,
        };
        if let Some(i) = self.index(seq) {
            self.put(i, result);
        }
    }

    /// Hands a joined result to the user (`join_next`).
    fn hand_out(&mut self, blocking: bool, raw: Raw<T>) -> Result<T, TaskError> {
        let (seq, result) = match raw {
            Ok((seq, out)) => {
                self.joined(blocking, seq);
                (Some(seq), out.map_err(TaskError::panic))
            }
            Err(e) if blocking => (
                self.blocking_seq(e.id()),
                Err(TaskError::from_join_error(e)),
            ),
            Err(e) => {
                self.handed_aborts += 1;
                (None, Err(TaskError::from_join_error(e)))
            }
        };
        if let Some(i) = seq.and_then(|seq| self.index(seq)) {
            self.take(i);
        }
        result
    }

    /// Hands out the first result an interrupted drain collected.
    fn take_first_done(&mut self) -> Option<Result<T, TaskError>> {
        let i = self.results.iter().position(Option::is_some)?;
        let result = self.results[i].take()?;
        self.done -= 1;
        self.take(i);
        Some(result)
    }

    /// Both sets are empty: hands out an orphan (an aborted task joined by
    /// an interrupted drain), if one is owed.
    fn take_orphan(&mut self) -> Option<Result<T, TaskError>> {
        if self.running_async == self.handed_aborts {
            return None;
        }
        // With both sets empty and no result kept, every index not taken is
        // an orphan.
        let i = (0..self.indices()).find(|&i| !self.is_taken(i))?;
        self.take(i);
        self.running_async -= 1;
        Some(Err(TaskError::aborted()))
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
        debug_assert!(self.tasks.is_empty() && self.blocking.is_empty());
        let indices = self.indices();
        self.results.resize_with(indices, || None);
        let results = std::mem::take(&mut self.results);
        let mut skip = self.handed_aborts;
        let slots = &self.slots;
        // Reuses the allocation when `Option<Result<T, TaskError>>` and
        // `Result<T, TaskError>` have the same layout, as they usually do.
        let results = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, result)| match result {
                Some(result) => Some(result),
                None if slots.get(i).is_some_and(|s| s.is_taken()) => None,
                // An orphan: aborted.
                None if skip > 0 => {
                    skip -= 1;
                    None
                }
                None => Some(Err(TaskError::aborted())),
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
        self.fail_fast = Some(Result::is_err);
        self
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

/// Shows the number of tasks, whether the token is cancelled, and whether
/// the scope fails fast.
///
/// ```
/// let scope = cancel_scope_runtime::Scope::<u8>::new();
/// assert_eq!(
///     format!("{scope:?}"),
///     "Scope { len: 0, cancelled: false, fail_fast: false, .. }",
/// );
/// ```
impl<T> fmt::Debug for Scope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("len", &self.len())
            .field("cancelled", &self.token.is_cancelled())
            .field("fail_fast", &self.fail_fast.is_some())
            .finish_non_exhaustive()
    }
}

/// Cancels the token, then aborts the tasks (dropping the `JoinSet`s does);
/// never blocks. See [`Scope`] for blocking tasks.
impl<T> Drop for Scope<T> {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
