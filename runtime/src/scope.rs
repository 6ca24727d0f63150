//! [`Scope<T>`]: structured spawning where no task outlives the scope that
//! spawned it; [`TaskHandle`], [`Spawner`] and [`SpawnPermit`], to act on one
//! task, to spawn from other tasks, and to wait for room under a limit; and
//! [`TaskError`], why a task of a scope produced no value. What a scope
//! shares with its tasks, and the wrapper they run in, are in `state`.

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;
#[cfg(doc)]
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::id::TaskId;
use crate::ledger::ShutdownStart;
use crate::reason::{CancelReason, Cause};
use crate::report::ShutdownReport;
#[cfg(doc)]
use crate::task::TaskOutcome;
use crate::task::{TaskError, TaskOutput};

mod handle;
mod state;
pub use handle::{SpawnPermit, Spawner, TaskHandle};
use state::{
    Admission, Blocking, Limit, OwnerSpawns, OwnerWait, Phase, ScopeState, TaskBody,
    idle_or_register, spawn_into, wait_empty,
};

/// Structured spawning: every task gets a child token of the scope's token,
/// no task outlives the scope, and the results come back in spawn order
/// ([`join_all`](Self::join_all), [`shutdown`](Self::shutdown)) or in
/// completion order ([`join_next`](Self::join_next)).
///
/// A `Scope` is a `JoinSet` plus a [`CancellationToken`] plus the
/// bookkeeping daemons write by hand around them: cancel everything, give the
/// tasks a grace period to run their cleanups, abort the rest, and say what
/// happened to each task. `#[cancellable]` functions take the token as their
/// first argument, so `scope.spawn(|t| writer_loop(t, rx))` spawns them as
/// they are. All tasks of one scope return the same type `T`.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::{CancellationToken, Scope};
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
/// # A server's accept loop
///
/// A long-lived scope of connections wants three things: a limit that
/// pushes back (at 250 connections, stop accepting until one closes:
/// [`reserve`](Self::reserve) before `accept`), finished connections freed
/// as they close ([`reaping`](Self::reaping): no `join_next` branch in the
/// loop, flat memory, failures still counted and named in the report), and
/// a graceful-then-forced stop ([`shutdown_report`](Self::shutdown_report)).
/// Tasks of one scope share one output type `T`: here `io::Result<()>`.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::{CancellationToken, Scope};
/// use tokio::io::AsyncWriteExt;
/// use tokio::net::{TcpListener, TcpStream};
///
/// async fn serve(token: CancellationToken, mut socket: TcpStream) -> std::io::Result<()> {
///     socket.write_all(b"hello\n").await?;
///     token.cancelled().await; // a real handler reads requests until cancelled
///     socket.shutdown().await
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let listener = TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let client = tokio::spawn(async move { let _ = TcpStream::connect(addr).await; });
/// let shutdown = CancellationToken::new(); // e.g. a ShutdownSignal's token
/// let mut conns: Scope<std::io::Result<()>> =
///     Scope::child_of(&shutdown).reaping().with_limit(250);
/// # let mut n = 0;
/// loop {
///     let permit = conns.reserve().await; // at 250: wait for a connection to close
///     tokio::select! {
///         accepted = listener.accept() => {
///             let (socket, peer) = accepted?;
///             permit.spawn_named(format!("conn {peer}"), |token| serve(token, socket));
/// #           n += 1; if n == 1 { shutdown.cancel(); }
///         }
///         () = shutdown.cancelled() => break,
///     }
/// }
/// let report = conns.shutdown_report(Duration::from_secs(10)).await;
/// println!("{report}"); // counts by outcome; lists only what needs attention
/// # client.await.unwrap();
/// assert!(report.is_clean());
/// # Ok(()) }
/// ```
///
/// # `Scope`, `TaskTracker` or `JoinSet`
///
/// - A bare `JoinSet` when you want the results and nothing else: no
///   tokens, no policy, no grace period.
/// - tokio-util's `TaskTracker` when tasks must only be waited for
///   (`close`, then `wait`): it stores nothing and cancels nothing; pair it
///   with a token by hand.
/// - A `Scope` when the tasks must stop together: each gets a child token,
///   a shutdown cancels, waits a grace period, aborts the rest and says what
///   happened; no task outlives the scope (dropping it aborts them). Plain,
///   for results in spawn or completion order; [`reaping`](Self::reaping),
///   for a long-lived scope such as an accept loop (as cheap as a
///   `TaskTracker`, see BENCHMARKS.md).
///
/// Other tasks spawn into the scope through a [`Spawner`]; one task is
/// cancelled or aborted alone through its [`TaskHandle`].
///
/// # Dropping a scope
///
/// Dropping a `Scope` aborts its tasks, then cancels its token, like
/// dropping a `JoinSet`; it never blocks. An aborted task's future is
/// dropped as soon as it is not being polled, without running the cleanup
/// that follows its `cancelled().await`: the abort comes first, so a task
/// that is not running at that moment never sees the cancel and starts no
/// cleanup it would not finish (a child process is killed by its `Drop`, not
/// asked to stop). Call [`shutdown`](Self::shutdown) first for a graceful
/// stop. The one exception to "no task outlives its scope" is
/// a [`spawn_blocking`](Self::spawn_blocking) closure that is already
/// running: blocking code cannot be aborted, so it runs until it returns (it
/// sees its token cancelled); one that has not started yet never starts.
///
/// # Policies
///
/// Builders set how the scope treats its tasks. A policy holds for every
/// task of the scope, those spawned before it was set included (a task
/// that has already ended is judged too while the scope keeps its result):
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
/// # Task names
///
/// A task spawned with a name ([`spawn_named`](Self::spawn_named),
/// [`spawn_blocking_named`](Self::spawn_blocking_named),
/// [`Spawner::spawn_named`], [`SpawnPermit::spawn_named`]) is named in the
/// [`shutdown_report`](Self::shutdown_report), in the cancel reasons that
/// name it (a fail-fast failure), and, with the `tracing` feature, in its
/// `task` span. Built
/// with `RUSTFLAGS="--cfg tokio_unstable"` as well, it is also the Tokio
/// task's name (through `tokio::task::Builder::name`), which tokio-console
/// shows; the daemon's subsystems are such tasks.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::Scope;
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
    state: Arc<ScopeState<T>>,
    /// The tasks the owner started itself.
    owned: OwnerSpawns,
    /// Set by `with_deadline` and `with_timeout`.
    deadline: Option<Instant>,
    /// The task that cancels the token at the deadline, while it waits.
    deadline_timer: Option<AbortHandle>,
}

impl<T> Scope<T> {
    /// A scope with a fresh root token: only [`cancel`](Self::cancel),
    /// [`shutdown`](Self::shutdown) or dropping the scope cancel it.
    ///
    /// Creating a scope does not need a runtime; spawning does.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::{CancellationToken, Scope};
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
            state: Arc::new(ScopeState::new(cause)),
            owned: OwnerSpawns::new(),
            deadline: None,
            deadline_timer: None,
        }
    }

    /// Limits the scope to `n` tasks running at once. A spawn beyond the
    /// limit is accepted at once and queues; queued tasks start in spawn
    /// order (on every runtime flavour), each as a running task ends. To
    /// push back on the caller instead, wait for room before spawning:
    /// [`reserve`](Self::reserve) or [`spawn_when_ready`](Self::spawn_when_ready).
    ///
    /// A queued task is not yet a Tokio task: `f` ran at spawn time to build
    /// its future, which waits in the scope's queue (a
    /// [`spawn_blocking`](Self::spawn_blocking) closure waits there too, not
    /// on a blocking thread). It shows in [`len`](Self::len), and is joined
    /// like any other. Spawns through a [`Spawner`] count as well.
    ///
    /// A task frees its place once it has ended, after a
    /// [`fail_fast`](Self::fail_fast) or [`first_ok`](Self::first_ok) scope
    /// has seen its result: a task queued behind the one that cancelled the
    /// scope starts with its token cancelled.
    ///
    /// The limit also holds while the scope is cancelled: a queued task keeps
    /// its place and starts when a place frees up, with its token already
    /// cancelled, so it can see that and clean up. A
    /// [`shutdown`](Self::shutdown)'s grace period must thus cover the queue;
    /// a task still queued at the end of it never starts (its result is
    /// aborted).
    ///
    /// It holds for every task: set on a scope whose tasks already run, they
    /// count toward it (each gives its place back as it ends), so the next
    /// spawn queues until fewer than `n` run. Called again, it changes `n`.
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    /// use cancel_scope::Scope;
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
    pub fn with_limit(self, n: usize) -> Self {
        assert!(
            n > 0,
            "`Scope::with_limit(0)`: the limit must be at least 1, or no task could ever run"
        );
        let mut inner = self.state.lock();
        let max = n.min(MAX_LIMIT);
        let was = inner.limit.replace(Limit { max, active: 0 });
        // Untracked tasks are judged under the lock from here on, so none
        // ends between the count below and the limit that counts it.
        self.state.refresh_untracked(&inner);
        // The tasks already running hold a place each, and give it back as
        // they end: the limit holds for every task.
        let active = was.map_or_else(
            || inner.ledger.running() + self.state.untracked.running(),
            |was| was.active,
        );
        inner.limit = Some(Limit { max, active });
        drop(inner);
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
            self.state.cause.cancel(CancelReason::Deadline);
            return self;
        }
        // Made here so that a missing timer panics here, not in the task.
        let sleep = tokio::time::sleep_until(deadline);
        let cause = Arc::clone(&self.state.cause);
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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

    /// Makes the scope free each task as it ends, for a long-lived scope
    /// such as an accept loop: its value is dropped at once (a reaping scope
    /// hands out no results), its outcome is counted, and one that needs
    /// attention (a failure, a panic, an abort) is kept in a short log (the
    /// last 32) that [`shutdown_report`](Self::shutdown_report) shows, with
    /// the task's name and what went wrong. So memory stays flat however
    /// many tasks pass through, and the owner needs no `join_next` branch in
    /// its loop. Failures are tracked as with
    /// [`track_failures`](Self::track_failures).
    ///
    /// The join methods then only wait: [`join_next`](Self::join_next)
    /// returns `None` and [`join_all`](Self::join_all) an empty `Vec`, once
    /// every task has ended. [`len`](Self::len) counts the tasks still
    /// running (or queued). Set on a scope that kept results already, it
    /// frees every task that ends from then on; the kept results stay until
    /// a join hands them out.
    ///
    /// A reaping `Scope` is a `TaskTracker` that also cancels, aborts, limits
    /// and reports: use a `TaskTracker` when nothing but "wait for all" is
    /// needed, and a plain `Scope` (or a `JoinSet`) when results matter.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::{Scope, TaskOutcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope: Scope<Result<(), String>> = Scope::new().reaping();
    /// for n in 0..1000 {
    ///     scope.spawn_named(format!("conn-{n}"), move |_token| async move {
    ///         if n == 7 { Err("bad request".to_string()) } else { Ok(()) }
    ///     });
    /// }
    /// scope.join_all().await; // waits; hands out nothing
    /// assert!(scope.is_empty());
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.count(TaskOutcome::Completed), 999);
    /// let failed: Vec<_> = report.needs_attention().map(|t| (t.name(), t.error())).collect();
    /// assert_eq!(failed, [("conn-7", Some("bad request"))]);
    /// # }
    /// ```
    #[must_use]
    pub fn reaping(self) -> Self
    where
        T: TaskOutput,
    {
        let scope = self.track_failures();
        let mut inner = scope.state.lock();
        inner.ledger.policy.reaping = true;
        scope.state.refresh_untracked(&inner);
        drop(inner);
        scope
    }

    /// Makes the reports count a task whose value is a failure (an `Err`,
    /// see [`TaskOutput`]) as [`TaskOutcome::Failed`], with its text, rather
    /// than as completed: [`ShutdownReport::is_clean`] is then `false`.
    /// Without it, a `Scope` does not look inside its tasks' values.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::{Scope, TaskOutcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope: Scope<std::io::Result<()>> = Scope::new().track_failures();
    /// scope.spawn_named("listener", |_token| async {
    ///     Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"))
    /// });
    /// tokio::task::yield_now().await;
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert!(!report.is_clean());
    /// assert_eq!(report.tasks()[0].outcome(), TaskOutcome::Failed);
    /// assert!(report.to_string().contains("listener  failed  address in use"));
    /// # }
    /// ```
    #[must_use]
    pub fn track_failures(self) -> Self
    where
        T: TaskOutput,
    {
        self.state.lock().ledger.policy.failure = Some(T::failure);
        let _ = self.state.failure.set(T::failure);
        self
    }
    /// The scope's token. Clone it to cancel the scope from elsewhere, or
    /// make child tokens of it for work that is not a task of the scope.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// let scope = Scope::<()>::new();
    /// let token = scope.token().clone();
    /// token.cancel();
    /// assert!(scope.token().is_cancelled());
    /// ```
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        self.state.cause.token()
    }
    /// Cancels the scope's token, and so every task's token. Tasks stop as
    /// they see fit; nothing is aborted and nothing is awaited. The token
    /// stays cancelled: tasks spawned afterwards start with a cancelled token
    /// (spawn into a fresh scope instead).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
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
        self.state.cause.cancel(CancelReason::Requested);
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
        self.state.cause.reason()
    }

    /// The number of tasks whose result has not been handed out yet,
    /// running, queued or finished. In a [`reaping`](Self::reaping) scope,
    /// the tasks still running or queued.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
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
        self.state.lock().ledger.len() + self.state.untracked.running()
    }
    /// `true` when every task's result has been handed out (or none was
    /// spawned).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
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

    /// Refuses every spawn from now on ([`Spawner::spawn`] returns `None`),
    /// as a shutdown does, without cancelling anything: for an owner that
    /// has joined every task and is about to end.
    pub(crate) fn close(&self) {
        let _inner = self.state.lock();
        self.state.set_phase(Phase::Closed);
    }

    /// Stops every task now: no queued task or blocking closure starts any
    /// more, started blocking ones are detached (when `detach`), async ones
    /// aborted (dropping the scope: nothing is detached, nothing starts ever
    /// again). Never blocks.
    fn stop_now(&mut self, detach: bool) {
        let below = if detach {
            self.state.next_seq.load(Ordering::Acquire)
        } else {
            u64::MAX // dropped: nothing may start any more
        };
        self.state.stop_below.store(below, Ordering::Release);
        let mut inner = self.state.lock();
        if !detach {
            self.state.set_phase(Phase::Closed);
        }
        let queue = std::mem::take(&mut inner.queue);
        let reason = self.state.cause.described();
        for key in inner.ledger.running_keys() {
            let Some(run) = inner.ledger.running_mut(key) else {
                continue;
            };
            if let Some(abort) = &run.abort {
                abort.abort();
            }
            if detach && run.blocking && run.started {
                let detached = Err(TaskError::detached(reason.clone()));
                if inner.ledger.record_end(key, detached, false).is_some() {
                    let _none_queued = self.state.free_permit(&mut inner);
                }
            }
        }
        drop(inner);
        self.owned.abort_all();
        drop(queue); // their guards report them aborted
    }
}

/// The highest limit (tokio's semaphore maximum, as before).
const MAX_LIMIT: usize = usize::MAX >> 3;

impl<T: Send + 'static> Scope<T> {
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
    /// task's result (it can be ignored). Beyond a
    /// [`with_limit`](Self::with_limit) limit the task queues; to act on one
    /// task later, spawn it with [`spawn_when_ready`](Self::spawn_when_ready)
    /// or a [`SpawnPermit`], which return a [`TaskHandle`].
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn`].
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::{CancellationToken, Scope};
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
    {
        self.spawn_owned(None, f(self.token().child_token()))
    }
    /// [`spawn`](Self::spawn), with a name for
    /// [`shutdown_report`](Self::shutdown_report): a `&'static str` or a
    /// `String`, kept as it is (not copied) until the task's result is handed
    /// out. Only named tasks keep a name; unnamed ones are named `task #<id>`
    /// (see [`TaskId`]) when a report is made.
    ///
    ///
    /// Built with `--cfg tokio_unstable` and the `tracing` feature, the name
    /// is also the Tokio task's name, as tokio-console shows it (see
    /// [Task names](Scope#task-names)).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn`].
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
    {
        self.spawn_owned(Some(name.into()), f(self.token().child_token()))
    }

    /// Spawns `body` as the owner: it takes a place under the limit or
    /// queues, and the owner keeps what aborts it.
    #[track_caller]
    fn spawn_owned(&mut self, name: Option<Cow<'static, str>>, body: impl TaskBody<T>) -> TaskId {
        let permit = Admission::TakeOrQueue;
        let Some((key, join)) = spawn_into(&self.state, name, body, permit, true) else {
            unreachable!("an owner's spawn is never refused")
        };
        self.owned.keep(&self.state, key, join);
        key.id()
    }

    /// Runs `f(token)` on Tokio's blocking thread pool as a task of the
    /// scope, with `token` a fresh child of the scope's token. Blocking code
    /// cannot be interrupted: `f` should check
    /// [`token.is_cancelled()`](CancellationToken::is_cancelled) often
    /// enough for [`shutdown`](Self::shutdown) to be graceful. A closure
    /// still running at the end of the grace period is detached (see
    /// [`TaskError::is_detached`]). A closure that has not started when the
    /// scope stops (the end of a grace period, a drop) never runs. While it
    /// runs, a `#[cancellable]` fn it drives (with `Handle::block_on`) sees
    /// the scope's [`CancelReason`]. Returns the task's [`TaskId`], as
    /// [`spawn`](Self::spawn) does.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn_blocking`].
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
    {
        self.spawn_blocking_owned(None, f)
    }
    /// [`spawn_blocking`](Self::spawn_blocking), with a name for
    /// [`shutdown_report`](Self::shutdown_report) (see
    /// [`spawn_named`](Self::spawn_named)).
    ///
    ///
    /// Built with `--cfg tokio_unstable` and the `tracing` feature, the name
    /// is also the Tokio task's name, as tokio-console shows it (see
    /// [Task names](Scope#task-names)).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`JoinSet::spawn_blocking`].
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::{Scope, TaskOutcome};
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
    {
        self.spawn_blocking_owned(Some(name.into()), f)
    }

    #[track_caller]
    fn spawn_blocking_owned<F>(&mut self, name: Option<Cow<'static, str>>, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> T + Send + 'static,
    {
        let token = self.token().child_token();
        self.spawn_owned(name, Blocking(move || f(token), Handle::current()))
    }

    /// Waits until a task can start at once under the
    /// [`with_limit`](Self::with_limit) limit (no other task queued, fewer
    /// than `n` running), and holds that place: spawn with the
    /// [`SpawnPermit`] it returns, or drop it to give the place back. Like
    /// `mpsc::Sender::reserve`: an accept loop reserves *before* it accepts,
    /// so that at its limit it stops accepting (the connections wait in the
    /// listener's backlog, where the kernel pushes back), rather than
    /// accepting and queueing sockets. Without a limit it returns at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes takes no place.
    /// Waiters are served in no set order.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
    /// use tokio::net::TcpListener;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let listener = TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    /// let mut conns = Scope::<()>::new().reaping().with_limit(250);
    /// # tokio::spawn(async move { let _c = tokio::net::TcpStream::connect(addr).await; });
    /// # let mut accepted = 0;
    /// loop {
    ///     let permit = conns.reserve().await; // at the limit: wait for a close
    ///     let (socket, _peer) = tokio::select! {
    ///         accepted = listener.accept() => accepted?,
    ///         () = conns.token().cancelled() => break,
    ///     };
    ///     permit.spawn(move |token| async move {
    ///         let _ = token.run_until_cancelled(socket.readable()).await;
    ///     });
    /// #   accepted += 1; if accepted == 1 { conns.cancel(); }
    /// }
    /// let report = conns.shutdown_report(Duration::from_secs(5)).await;
    /// assert!(report.is_clean());
    /// # Ok(()) }
    /// ```
    pub async fn reserve(&self) -> SpawnPermit<T> {
        SpawnPermit::reserve(&self.state).await
    }

    /// [`reserve`](Self::reserve), then [`spawn`](Self::spawn): waits until
    /// the task can start at once under the limit, spawns it, and returns
    /// its [`TaskHandle`]. `f` is called only then.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it spawned nothing.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    /// let mut scope = Scope::new().with_limit(2);
    /// for n in 0..10 {
    ///     // Waits while 2 tasks run: never a queue.
    ///     let done = done.clone();
    ///     scope.spawn_when_ready(move |_token| async move { done.send(n).unwrap() }).await;
    /// }
    /// drop(done);
    /// assert_eq!(scope.join_all().await.len(), 10);
    /// let mut order = Vec::new();
    /// while let Some(n) = finished.recv().await {
    ///     order.push(n);
    /// }
    /// assert_eq!(order, (0..10).collect::<Vec<_>>());
    /// # }
    /// ```
    pub async fn spawn_when_ready<F, Fut>(&mut self, f: F) -> TaskHandle
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let permit = SpawnPermit::reserve(&self.state).await;
        permit.spawn_inner(None, f, Some(&mut self.owned))
    }

    /// A cloneable, `Send + Sync` handle that spawns into this scope from
    /// anywhere (a connection handler that spawns a sub-task, a supervisor):
    /// see [`Spawner`].
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// let spawner = scope.spawner();
    /// scope.spawn(move |_token| async move {
    ///     // A task spawns a sibling: it is a task of the same scope.
    ///     spawner.spawn(|_token| async { "sub-task" }).expect("scope is open");
    ///     "handler"
    /// });
    /// let mut results = Vec::new();
    /// while let Some(r) = scope.join_next().await {
    ///     results.push(r.unwrap());
    /// }
    /// results.sort();
    /// assert_eq!(results, ["handler", "sub-task"]);
    /// # }
    /// ```
    #[must_use]
    pub fn spawner(&self) -> Spawner<T> {
        Spawner {
            state: Arc::clone(&self.state),
        }
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
        self.join_next_with_id().await.map(|(_, result)| result)
    }

    /// [`join_next`](Self::join_next), with the id of the task the result
    /// belongs to: the [`TaskId`] that [`spawn`](Self::spawn) returned. A
    /// task that panicked, or was aborted, carries its id as well.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like `join_next`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
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
        let state = &self.state;
        poll_fn(|cx| {
            let mut inner = state.lock();
            if let Some(next) = inner.ledger.take_next() {
                inner.wait = OwnerWait::Nothing;
                return Poll::Ready(Some(next));
            }
            idle_or_register(state, &mut inner, OwnerWait::Next, cx, None)
        })
        .await
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
        wait_empty(&self.state).await;
        self.state.lock().ledger.finish()
    }
    /// Graceful, then forced shutdown: cancels the scope's token, waits up to
    /// `grace` for the tasks to finish (so they run their cleanups), then
    /// aborts the tasks still running and returns the results of all tasks
    /// not already returned by [`join_next`](Self::join_next), in spawn
    /// order. It returns as soon as every task has finished, not at the end
    /// of `grace`. Give cleanups time: a `#[cancellable]` fn whose body polls
    /// a nested call on an unrelated token starts its cleanup up to 50 ms
    /// after the cancellation (the crate docs' "Cancellation semantics",
    /// "Across threads").
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
        self.stop(grace, false).await;
        self.state.lock().ledger.finish()
    }
    /// [`shutdown`](Self::shutdown), and a [`ShutdownReport`] of what
    /// happened to each task, for the logs: its name (see
    /// [`spawn_named`](Self::spawn_named)), its [`TaskOutcome`], and how long
    /// its cleanup took; the results themselves come with
    /// [`ShutdownReport::into_results`]. Its `Display` is one line of counts
    /// by outcome, then one line per task that needs attention.
    ///
    /// The outcomes are counted from the moment the shutdown cancels the
    /// token:
    ///
    /// - [`Completed`](TaskOutcome::Completed): the task had finished before;
    /// - [`Stopped`](TaskOutcome::Stopped): it
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
    /// report's first line.
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::{Scope, TaskOutcome};
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
    /// assert_eq!(report.to_string(), "\
    /// shutdown of 3 tasks took 1.000s (grace 1.000s): 1 completed, 1 cleaned up (ended after the cancel), 1 aborted
    ///   stuck  aborted  task aborted (scope cancelled: shut down)");
    /// let tasks = report.tasks();
    /// assert_eq!(tasks[0].outcome(), TaskOutcome::Stopped);
    /// assert_eq!(tasks[0].cleanup_time(), Some(Duration::from_millis(250)));
    /// assert_eq!(tasks[1].outcome(), TaskOutcome::Aborted);
    /// assert_eq!((tasks[2].name(), tasks[2].outcome()), ("task #2", TaskOutcome::Completed));
    /// assert!(!report.is_clean());
    /// let results = report.into_results();
    /// assert_eq!(results[0].as_ref().unwrap(), &"flushed");
    /// # }
    /// ```
    pub async fn shutdown_report(&mut self, grace: Duration) -> ShutdownReport<T> {
        let cancelled_before = self.cancel_reason();
        let start = self.stop(grace, true).await;
        let elapsed = start.elapsed();
        let spawned = std::mem::take(&mut self.owned.untracked);
        let mut inner = self.state.lock();
        let mut reaped = std::mem::take(&mut inner.ledger.reaped);
        // The owner's untracked tasks all ended (the shutdown waited).
        self.state.untracked.tally_into(&mut reaped, spawned);
        let (tasks, results) = inner.ledger.finish_reports();
        drop(inner);
        ShutdownReport {
            tasks,
            results,
            grace,
            elapsed,
            cancelled_before,
            reason: self.state.cause.described(),
            reaped,
        }
    }

    /// Cancels the token, waits up to `grace` for the tasks, then stops the
    /// rest: queued ones are dropped, blocking ones still running detached,
    /// the others aborted; and waits for those. Returns when it began.
    async fn stop(&mut self, grace: Duration, timed: bool) -> Instant {
        let at = Instant::now();
        self.state.set_phase(Phase::Grace);
        self.state.lock().ledger.shutdown = Some(ShutdownStart { at, timed });
        self.state.cause.cancel(CancelReason::Shutdown);
        if let Some(timer) = self.deadline_timer.take() {
            timer.abort();
        }
        if tokio::time::timeout(grace, wait_empty(&self.state))
            .await
            .is_err()
        {
            self.state.set_phase(Phase::Forcing);
            self.stop_now(true);
            wait_empty(&self.state).await;
        }
        self.state.set_phase(Phase::Closed);
        at
    }
}

impl<U, E> Scope<Result<U, E>> {
    /// Turns on `fail_fast` and/or `first_ok`, for every task.
    fn cancel_when(self, fail_fast: bool, first_ok: bool) -> Self {
        let mut inner = self.state.lock();
        inner.ledger.cancel_when(fail_fast, first_ok);
        self.state.refresh_untracked(&inner);
        drop(inner);
        self
    }

    /// Makes the scope fail fast: the first task that returns `Err` or
    /// panics cancels the scope's token at once, from inside the task, so its
    /// siblings see their tokens cancelled and run their cleanups without
    /// waiting for the owner to join anything.
    ///
    /// It holds for every task, those spawned before it included; set on a
    /// scope that holds a failed result not yet handed out, it cancels at
    /// once. The failing task's own result is returned as usual by the join
    /// methods.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
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
    pub fn fail_fast(self) -> Self {
        self.cancel_when(true, false)
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
    /// It holds for every task, those spawned before it included; set on a
    /// scope that holds a success not yet handed out, it cancels at once.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
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
    pub fn first_ok(self) -> Self {
        self.cancel_when(false, true)
    }
}

impl<U: Send + 'static, E: Send + 'static> Scope<Result<U, E>> {
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
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
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
        // The first `Ok` in completion order: after an interrupted call, the
        // same winner (results only join the end of that order).
        let found = poll_fn(|cx| {
            let mut inner = self.state.lock();
            if let Some(key) = inner.ledger.find_done(|r| matches!(r, Ok(Ok(_)))) {
                return Poll::Ready(Some(key));
            }
            idle_or_register(&self.state, &mut inner, OwnerWait::Next, cx, None)
        })
        .await;
        let Some(key) = found else {
            return Err(self.state.lock().ledger.finish());
        };
        // Without `first_ok`, this call is what cancels: the winner is the
        // reason (with it, the winner's task recorded that already).
        let name = self.state.lock().ledger.name(key).cloned();
        let reason = CancelReason::TaskSucceeded(key.id());
        self.state.cause.cancel_by(reason, name.as_ref());
        wait_empty(&self.state).await;
        let mut inner = self.state.lock();
        let won = inner.ledger.take(key);
        let rest = inner.ledger.finish();
        drop(inner);
        match won {
            Ok(Ok(value)) => Ok(value),
            // Unreachable: the scope was borrowed all along.
            _ => Err(rest),
        }
    }
}

impl<T> Default for Scope<T> {
    /// Same as [`Scope::new`].
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let scope: cancel_scope::Scope<u8> = Default::default();
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
/// # extern crate cancel_scope_runtime as cancel_scope;
/// let scope = cancel_scope::Scope::<u8>::new();
/// assert_eq!(
///     format!("{scope:?}"),
///     "Scope { len: 0, cancelled: false, fail_fast: false, .. }",
/// );
/// let scope = cancel_scope::Scope::<Result<u8, ()>>::new()
///     .first_ok()
///     .with_limit(4);
/// assert_eq!(
///     format!("{scope:?}"),
///     "Scope { len: 0, cancelled: false, fail_fast: false, first_ok: true, limit: 4, .. }",
/// );
/// ```
impl<T> fmt::Debug for Scope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.state.lock();
        let len = inner.ledger.len() + self.state.untracked.running();
        let mut d = inner.ledger.debug_struct(f, "Scope", len);
        if let Some(limit) = &inner.limit {
            d.field("limit", &limit.max);
        }
        d.finish_non_exhaustive()
    }
}

/// Aborts the tasks and the deadline's timer, then cancels the token (for
/// running blocking tasks, and tokens handed out); never blocks. See
/// [`Scope`] for blocking tasks.
impl<T> Drop for Scope<T> {
    fn drop(&mut self) {
        if let Some(timer) = &self.deadline_timer {
            timer.abort();
        }
        self.stop_now(false);
        self.state.cause.cancel(CancelReason::Dropped);
    }
}
