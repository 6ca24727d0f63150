//! The daemon layer: one entry point for `main` that runs named, nested
//! [`Subsystem`]s; stops them on a signal, a failure, or when all have
//! ended; shuts down gracefully in a declared order within one grace
//! period, then by force; restarts failed subsystems with backoff; and
//! reports each subsystem by its hierarchical name (`/daemon/writer/flush`).
//!
//! ```no_run
//! # extern crate cancel_scope_runtime as cancel_scope;
//! use std::process::ExitCode;
//! use std::time::Duration;
//! use cancel_scope::daemon::{Daemon, Restart, Subsystem};
//!
//! fn main() -> ExitCode {
//!     let daemon = Daemon::new("daemon").grace(Duration::from_secs(5));
//!     # #[cfg(feature = "signal")]
//!     let daemon = daemon.catch_signals(); // Ctrl-C / SIGTERM: graceful; a second one: abort
//!     daemon
//!         .block_on(|daemon| async move {
//!             daemon.start(Subsystem::new("writer", |writer| async move {
//!                 writer.token().cancelled().await;
//!                 writer.note("flushed everything");
//!             }));
//!             daemon.start(Subsystem::supervised("poller", Restart::transient(), |poller| async move {
//!                 poller.token().cancelled().await;
//!                 Ok::<(), std::io::Error>(())
//!             }));
//!         })
//!         .print_and_exit_code() // the report, then 0, 1, 3 or 130
//! }
//! ```
//!
//! How it compares to tokio-graceful-shutdown's `Toplevel`: the same shape
//! (`Toplevel::new(..).catch_signals().handle_shutdown_requests(timeout)`
//! is `Daemon::new(..).catch_signals().grace(timeout).run(..)`; its
//! `NestedSubsystem` is [`NestedSubsystem`], with `stop`, `abort`, `join`
//! and `is_finished`), plus restarts, an ordered shutdown, a live tree, and
//! a report that names what hung and every failure.
//!
//! Built on [`Scope`]: each subsystem is a task of its
//! parent's scope, every subsystem's token descends from the daemon's, and
//! the forced phase is the daemon's scope's shutdown. A failure climbs at
//! once, from any depth, to the first subsystem that contains it (it
//! restarts, or does not escalate) or to the daemon, whose one grace period
//! then bounds the whole shutdown.

#[cfg(feature = "systemd")]
mod activation;
mod drain;
mod handle;
mod notify;
#[cfg(feature = "process")]
mod process;
mod readiness;
mod report;
mod runner;
mod subsystem;
mod tree;

use std::fmt;
use std::future::Future;
use std::pin::pin;
#[cfg(feature = "signal")]
use std::sync::Arc as SignalArc;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "systemd")]
pub use activation::Listeners;
pub use handle::{NestedSubsystem, SubsystemHandle};
pub use readiness::{Readiness, ReadinessHold};
pub use report::{DaemonReport, Failure};
pub use subsystem::{Restart, ShutdownOrder, Subsystem, SubsystemOutput};
pub use tree::{NodeState, TaskTree, TreeNode};

use crate::Scope;
#[cfg(feature = "signal")]
use crate::ShutdownSignal;
use crate::report::short_duration as short;
#[cfg(all(feature = "signal", unix))]
use tokio::signal::unix::{Signal, SignalKind};
use tree::{LiveTree, ROOT};

type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What the subsystems share: the live tree, why the daemon is stopping
/// and since when, where the log goes.
pub(crate) struct Shared {
    /// The daemon's root token: every token descends from it; never
    /// cancelled itself.
    root: CancellationToken,
    tree: LiveTree,
    reason: OnceLock<StopReason>,
    began: OnceLock<Instant>,
    log: Log,
    /// Readiness, the drain, and what systemd is told.
    lifecycle: Arc<readiness::Lifecycle>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether the daemon's shutdown has begun.
    fn is_stopping(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Begins the shutdown, once: says why, and stops the root subsystem,
    /// which stops the others in their order.
    fn begin_shutdown(&self, reason: StopReason) {
        if self.reason.set(reason.clone()).is_ok() {
            let _ = self.began.set(Instant::now());
            self.lifecycle.stopping();
            self.log(&format!("shutting down: {reason}"));
            self.tree.request_stop(ROOT);
            self.tree.stop_orphans();
        }
    }

    /// Records and logs a failure of `id` (its panic, or its giving up
    /// restarting); one that reaches the daemon shuts it down.
    fn fail(&self, id: usize, error: &str, panicked: bool, giving_up: bool) {
        let path = self.tree.path(id);
        let failed = if giving_up { "" } else { "failed: " };
        self.log(&format!("{path} {failed}{error}"));
        let stopping = self.is_stopping();
        if self.tree.fail(id, error, panicked, stopping, giving_up) {
            self.begin_shutdown(StopReason::Failed(path));
        }
    }

    fn log(&self, line: &str) {
        #[cfg(feature = "tracing")]
        tracing::info!(target: "cancel_scope::daemon", "{line}");
        (self.log)(line);
    }
}

/// Why a daemon stopped.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::StopReason;
/// assert_eq!(StopReason::Signal("SIGTERM").to_string(), "SIGTERM");
/// assert_eq!(StopReason::Failed("/d/w".into()).to_string(), "/d/w failed");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Every subsystem ended on its own.
    Finished,
    /// A signal (`"Ctrl-C"`, `"SIGTERM"`), or a
    /// [`ShutdownSignal::trigger`] with this reason.
    ///
    // `ShutdownSignal` needs the `signal` feature; without it, the link goes
    // to the facade's docs.
    #[cfg_attr(
        feature = "signal",
        doc = "[`ShutdownSignal::trigger`]: crate::ShutdownSignal::trigger"
    )]
    #[cfg_attr(
        not(feature = "signal"),
        doc = "[`ShutdownSignal::trigger`]: https://docs.rs/cancel-scope/latest/cancel_scope/struct.ShutdownSignal.html#method.trigger"
    )]
    Signal(&'static str),
    /// [`SubsystemHandle::request_shutdown`], by the subsystem with this name.
    Requested(String),
    /// The subsystem with this name failed, and its failure escalated to
    /// the daemon.
    Failed(String),
    /// The token given to [`Daemon::child_of`] was cancelled.
    OutsideToken,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Finished => f.write_str("every subsystem finished"),
            StopReason::Signal(name) => f.write_str(name),
            StopReason::Requested(by) => write!(f, "requested by {by}"),
            StopReason::Failed(who) => write!(f, "{who} failed"),
            StopReason::OutsideToken => f.write_str("the outside token was cancelled"),
        }
    }
}

/// Why a shutdown was cut short.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::Forced;
/// assert_eq!(Forced::SecondSignal.to_string(), "a second signal");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Forced {
    /// The grace period ran out.
    GraceElapsed,
    /// A signal arrived during the shutdown (the second one, when a signal
    /// started it).
    SecondSignal,
}

impl fmt::Display for Forced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forced::GraceElapsed => "the grace period elapsed",
            Forced::SecondSignal => "a second signal",
        })
    }
}

/// The entry point for `main`: runs a tree of named [`Subsystem`]s until a
/// signal, a failure that escalates to it, or the end of them all; then
/// shuts them down (in their [`ShutdownOrder`]) within the grace period,
/// aborts what is left past it or on a second signal, and returns a
/// [`DaemonReport`] whose [`code`](DaemonReport::code) `main` can exit with.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::daemon::{Daemon, StopReason, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let report = Daemon::new("daemon")
///     .grace(Duration::from_secs(2))
///     .quiet()
///     .run(|daemon| async move {
///         daemon.start(Subsystem::new("ingest", |ingest| async move {
///             tokio::time::sleep(Duration::from_secs(1)).await;
///             Err::<(), _>("upstream closed")
///         }));
///         daemon.start(Subsystem::new("writer", |writer| async move {
///             writer.token().cancelled().await; // stopped because ingest failed
///             writer.note("flushed 3 records");
///         }));
///     })
///     .await;
/// assert_eq!(report.reason(), &StopReason::Failed("/daemon/ingest".into()));
/// assert_eq!(report.code(), 1);
/// println!("{report}");
/// # }
/// ```
pub struct Daemon {
    name: String,
    grace: Duration,
    exit_timeout: Duration,
    order: ShutdownOrder,
    log: Log,
    drain: Duration,
    #[cfg(feature = "signal")]
    signal: Option<SignalSource>,
    #[cfg(feature = "signal")]
    tree_on_sigusr1: bool,
    outside: Option<CancellationToken>,
}

#[cfg(feature = "signal")]
enum SignalSource {
    Install,
    Given(SignalArc<ShutdownSignal>),
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("name", &self.name)
            .field("grace", &self.grace)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon named `name` (its subsystems' names begin `/name/`), with a
    /// grace period of 5 s, no signal handling (see
    /// [`catch_signals`]), its log on stderr.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let daemon = cancel_scope::daemon::Daemon::new("daemon");
    /// # let _ = daemon;
    /// ```
    ///
    // `catch_signals` needs the `signal` feature; without it, the link goes
    // to the facade's docs.
    #[cfg_attr(feature = "signal", doc = "[`catch_signals`]: Self::catch_signals")]
    #[cfg_attr(
        not(feature = "signal"),
        doc = "[`catch_signals`]: https://docs.rs/cancel-scope/latest/cancel_scope/daemon/struct.Daemon.html#method.catch_signals"
    )]
    pub fn new(name: impl Into<String>) -> Self {
        Daemon {
            name: name.into(),
            grace: Duration::from_secs(5),
            exit_timeout: Duration::from_millis(500),
            order: ShutdownOrder::default(),
            log: Arc::new(|line| eprintln!("{line}")),
            drain: Duration::ZERO,
            #[cfg(feature = "signal")]
            signal: None,
            #[cfg(feature = "signal")]
            tree_on_sigusr1: false,
            outside: None,
        }
    }

    /// Also shuts down, in order, when `token` is cancelled: a daemon
    /// embedded in a larger program, or in a test. The daemon's own tokens
    /// do not descend from `token`, so that its shutdown keeps its order.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::CancellationToken;
    /// use cancel_scope::daemon::{Daemon, StopReason, Subsystem};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let outside = CancellationToken::new();
    /// let stop = outside.clone();
    /// let report = Daemon::new("d")
    ///     .child_of(&outside)
    ///     .quiet()
    ///     .run(|d| async move {
    ///         d.start(Subsystem::new("w", |w| async move { w.token().cancelled().await }));
    ///         stop.cancel();
    ///     })
    ///     .await;
    /// assert_eq!(report.reason(), &StopReason::OutsideToken);
    /// assert!(report.is_clean());
    /// # }
    /// ```
    #[must_use]
    pub fn child_of(mut self, token: &CancellationToken) -> Self {
        self.outside = Some(token.clone());
        self
    }

    /// How long the subsystems' cleanups may take, all together, from the
    /// moment the shutdown begins; then what is left is aborted. An aborted
    /// subsystem's fn is dropped where it waits, without seeing its token
    /// cancelled if it had not had its turn to stop (so a child process it
    /// holds is killed, not asked to stop and then killed), and so are the
    /// tasks it spawned into a [`Scope`] of its own; then its token is
    /// cancelled (a blocking thread that polls it sees it). A fn stuck in a
    /// loop that never yields cannot be dropped: its token is cancelled
    /// when `run` returns.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// let daemon = cancel_scope::daemon::Daemon::new("d").grace(Duration::from_secs(10));
    /// # let _ = daemon;
    /// ```
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The order in which the top-level subsystems stop.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{Daemon, ShutdownOrder};
    /// let daemon = Daemon::new("d").shutdown_order(ShutdownOrder::Concurrent);
    /// # let _ = daemon;
    /// ```
    #[must_use]
    pub fn shutdown_order(mut self, order: ShutdownOrder) -> Self {
        self.order = order;
        self
    }

    /// Sends the daemon's log (failures by name, restarts, the shutdown's
    /// progress) to `log`, one line a call, instead of stderr. With the
    /// `tracing` feature every line is also an `info` event.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let daemon = cancel_scope::daemon::Daemon::new("d").log_with(|line| println!("[daemon] {line}"));
    /// # let _ = daemon;
    /// ```
    #[must_use]
    pub fn log_with(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.log = Arc::new(log);
        self
    }

    /// No log lines (the report still says everything).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let daemon = cancel_scope::daemon::Daemon::new("d").quiet();
    /// # let _ = daemon;
    /// ```
    #[must_use]
    pub fn quiet(self) -> Self {
        self.log_with(|_| {})
    }

    /// For [`block_on`](Self::block_on): how long, after the daemon has
    /// stopped, the runtime waits for threads it cannot stop (a
    /// `spawn_blocking` closure stuck in a syscall) before the process
    /// goes on without them. 500 ms by default.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// let daemon = cancel_scope::daemon::Daemon::new("d").exit_timeout(Duration::from_secs(1));
    /// # let _ = daemon;
    /// ```
    #[must_use]
    pub fn exit_timeout(mut self, timeout: Duration) -> Self {
        self.exit_timeout = timeout;
        self
    }

    /// Shuts down on the first Ctrl-C or SIGTERM, and aborts at once on
    /// the next ([`ShutdownSignal`]).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let daemon = cancel_scope::daemon::Daemon::new("d").catch_signals();
    /// # let _ = daemon;
    /// ```
    #[cfg(feature = "signal")]
    #[must_use]
    pub fn catch_signals(mut self) -> Self {
        self.signal = Some(SignalSource::Install);
        self
    }

    /// Like [`catch_signals`](Self::catch_signals), with a signal installed
    /// already: to [`trigger`](ShutdownSignal::trigger) it from a test or an
    /// admin command.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::sync::Arc;
    /// use cancel_scope::daemon::{Daemon, StopReason, Subsystem};
    /// use cancel_scope::ShutdownSignal;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let signal = Arc::new(ShutdownSignal::install()?);
    /// let report = Daemon::new("d")
    ///     .quiet()
    ///     .signal(Arc::clone(&signal))
    ///     .run(move |d| async move {
    ///         d.start(Subsystem::new("w", |w| async move { w.token().cancelled().await }));
    ///         signal.trigger("SIGTERM");
    ///     })
    ///     .await;
    /// assert_eq!(report.reason(), &StopReason::Signal("SIGTERM"));
    /// assert_eq!(report.code(), 0);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "signal")]
    #[must_use]
    pub fn signal(mut self, signal: SignalArc<ShutdownSignal>) -> Self {
        self.signal = Some(SignalSource::Given(signal));
        self
    }

    /// On Unix, prints the [`TaskTree`] to the log on each SIGUSR1
    /// (`kill -USR1 <pid>`): what runs, what is cleaning up, for how long.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let daemon = cancel_scope::daemon::Daemon::new("d").print_tree_on_sigusr1();
    /// # let _ = daemon;
    /// ```
    #[cfg(feature = "signal")]
    #[must_use]
    pub fn print_tree_on_sigusr1(mut self) -> Self {
        self.tree_on_sigusr1 = true;
        self
    }

    /// Builds a multi-threaded Tokio runtime, [`run`](Self::run)s the
    /// daemon on it, and shuts the runtime down with
    /// [`shutdown_timeout`](tokio::runtime::Runtime::shutdown_timeout)
    /// ([`exit_timeout`](Self::exit_timeout)), so that the process exits on
    /// time even when a blocking thread is stuck. (A `#[tokio::main]`
    /// runtime, dropped at the end of `main`, waits for such threads
    /// forever; with it, end `main` with `std::process::exit`.)
    ///
    /// # Panics
    /// When the runtime cannot be built, or inside a runtime.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{Daemon, Subsystem};
    ///
    /// let report = Daemon::new("d").quiet().block_on(|d| async move {
    ///     d.start(Subsystem::new("stuck", |_| async {
    ///         // A blocking thread that never ends does not hold the process.
    ///         tokio::task::spawn_blocking(|| std::thread::sleep(std::time::Duration::from_secs(3600)));
    ///     }));
    /// });
    /// assert_eq!(report.code(), 0);
    /// ```
    pub fn block_on<F, Fut>(self, setup: F) -> DaemonReport
    where
        F: FnOnce(SubsystemHandle) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: SubsystemOutput,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("cannot build the Tokio runtime");
        let exit_timeout = self.exit_timeout;
        let report = runtime.block_on(self.run(setup));
        runtime.shutdown_timeout(exit_timeout);
        report
    }

    /// Runs the daemon: `setup` is its root subsystem (`/name`), which
    /// starts the others. Returns when every subsystem has ended, or after
    /// the shutdown, graceful or forced.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{Daemon, StopReason, Subsystem};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("batch")
    ///     .quiet()
    ///     .run(|batch| async move {
    ///         for n in 0..3 {
    ///             batch.start(Subsystem::new(format!("job-{n}"), |_| async {}));
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(report.reason(), &StopReason::Finished);
    /// assert_eq!(report.tree().nodes().len(), 4);
    /// # }
    /// ```
    pub async fn run<F, Fut>(self, setup: F) -> DaemonReport
    where
        F: FnOnce(SubsystemHandle) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: SubsystemOutput,
    {
        let shared = Arc::new(Shared {
            root: CancellationToken::new(),
            tree: LiveTree::default(),
            reason: OnceLock::new(),
            began: OnceLock::new(),
            log: Arc::clone(&self.log),
            lifecycle: readiness::Lifecycle::new(),
        });
        let setup = readiness::ready_after(&shared.lifecycle, setup);
        let timing = notify::Timing {
            grace: self.grace,
            exit_timeout: self.exit_timeout,
        };
        // Says the last word to systemd when it is dropped, as `run` returns.
        let _notifier = notify::start(&shared, timing);
        let mut daemon = Scope::<()>::child_of(&shared.root);
        let spec = Subsystem::new(self.name.clone(), setup).shutdown_order(self.order.clone());
        // Signals are listened for before the setup runs: a signal that
        // comes once the setup has said it is up must not kill the process.
        let watchers = Watchers::start(&self, &shared);
        let root = runner::start(&shared, None, spec, &daemon.spawner());
        // Cancelled when the shutdown begins.
        let stop = shared.tree.stop_token(ROOT);
        let stop = stop.unwrap_or_else(|| shared.root.child_token());
        let forced = match stop.run_until_cancelled(daemon.join_next()).await {
            Some(_ended) => None,
            None => self.shut_down(&shared, &mut daemon, &root, &watchers).await,
        };
        drop(watchers);
        // A fn stuck in a loop that polls its token (an abort cannot drop
        // it) sees it cancelled.
        shared.tree.cancel_stuck();
        DaemonReport {
            name: self.name,
            reason: shared.reason.get().cloned().unwrap_or(StopReason::Finished),
            forced,
            grace: self.grace,
            shutdown_took: shared.began.get().map(Instant::elapsed),
            tree: shared.tree.snapshot(),
            failures: shared.tree.failures(),
            drained: shared.lifecycle.drained(),
        }
    }

    /// The shutdown, once begun: waits for the subsystems within the grace
    /// period, until a second signal (or a first one, when the shutdown
    /// did not begin with one); then the daemon's scope aborts what is
    /// left. Returns why it was forced, if it was.
    async fn shut_down(
        &self,
        shared: &Shared,
        daemon: &mut Scope<()>,
        root: &NestedSubsystem,
        watchers: &Watchers,
    ) -> Option<Forced> {
        let began = *shared.began.get_or_init(Instant::now);
        let forced = {
            let mut in_grace = pin!(tokio::time::timeout_at(
                began + self.grace,
                daemon.join_next()
            ));
            let mut force = pin!(watchers.forcing_signal(shared));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(in_grace) = in_grace.as_mut().poll(cx) {
                    return Poll::Ready(in_grace.err().map(|_| Forced::GraceElapsed));
                }
                force.as_mut().poll(cx).map(|()| Some(Forced::SecondSignal))
            })
            .await?
        };
        let aborted = shared.tree.abort(ROOT);
        shared.log(&format!(
            "shutdown forced after {} ({forced}): aborting {}",
            short(began.elapsed()),
            aborted.join(", ")
        ));
        // `abort` aborted every subsystem's fn task: none is polled again,
        // so none starts a cleanup (a child process's graceful stop) that
        // would be cut; each cancels its token as it is dropped. Then the
        // root's task, whose scope aborts the runners as it drops.
        root.abort();
        let _ = daemon.join_next().await;
        // A subsystem started while the abort ran is aborted too (its fn's
        // task, if it has one yet, at once). Its runner is dropped with the
        // scope it is in; not waited for: a fn stuck in a loop on the
        // worker holding it would hold `run` with it.
        shared.tree.abort(ROOT);
        daemon.shutdown(Duration::ZERO).await;
        Some(forced)
    }
}

/// What the daemon listens to for the length of `run`, as tasks of a
/// scope of their own (dropped with it): signals, the outside token,
/// SIGUSR1.
struct Watchers {
    #[cfg(feature = "signal")]
    signal: Option<SignalArc<ShutdownSignal>>,
    _tasks: Scope<()>,
}

impl Watchers {
    fn start(daemon: &Daemon, shared: &Arc<Shared>) -> Self {
        let mut tasks = Scope::child_of(&shared.root);
        if let Some(outside) = daemon.outside.clone() {
            let shared = Arc::clone(shared);
            tasks.spawn(|_| async move {
                outside.cancelled().await;
                shared.begin_shutdown(StopReason::OutsideToken);
            });
        }
        Watchers {
            #[cfg(feature = "signal")]
            signal: Watchers::signal(daemon, shared, &mut tasks),
            _tasks: tasks,
        }
    }

    /// What forces the shutdown: the signal after those the daemon acted
    /// on (a second one, or a first one when the shutdown did not begin
    /// with a signal; a third when a second cut the drain short).
    fn forcing_signal(&self, shared: &Shared) -> impl Future<Output = ()> + Send + 'static {
        #[cfg(feature = "signal")]
        return drain::forcing_signal(shared, self.signal.as_deref());
        #[cfg(not(feature = "signal"))]
        {
            let _ = shared;
            std::future::pending()
        }
    }

    #[cfg(feature = "signal")]
    fn signal(
        daemon: &Daemon,
        shared: &Arc<Shared>,
        tasks: &mut Scope<()>,
    ) -> Option<SignalArc<ShutdownSignal>> {
        #[cfg(unix)]
        if daemon.tree_on_sigusr1 {
            // Listening from now on, before the setup runs.
            let sigusr1 = tokio::signal::unix::signal(SignalKind::user_defined1());
            tasks.spawn(|_| print_tree_on_sigusr1(sigusr1, Arc::clone(shared)));
        }
        let signal = match &daemon.signal {
            None => return None,
            Some(SignalSource::Given(signal)) => SignalArc::clone(signal),
            Some(SignalSource::Install) => match ShutdownSignal::install() {
                Ok(signal) => SignalArc::new(signal),
                Err(e) => {
                    shared.log(&format!("cannot listen for signals: {e}"));
                    return None;
                }
            },
        };
        let (first, shared, drain) = (SignalArc::clone(&signal), Arc::clone(shared), daemon.drain);
        tasks.spawn(|_| async move {
            first.token().cancelled().await;
            // The drain, unless the shutdown begins meanwhile (a failure).
            let stop = shared.tree.stop_token(ROOT);
            let stop = stop.unwrap_or_else(|| shared.root.child_token());
            let draining = drain::after_signal(&shared, drain, Some(&first));
            stop.run_until_cancelled(draining).await;
            let name = first.reason().unwrap_or("a signal");
            shared.begin_shutdown(StopReason::Signal(name));
        });
        Some(signal)
    }
}

/// Logs the task tree on each SIGUSR1.
#[cfg(all(feature = "signal", unix))]
async fn print_tree_on_sigusr1(sigusr1: std::io::Result<Signal>, shared: Arc<Shared>) {
    let mut sigusr1 = match sigusr1 {
        Ok(stream) => stream,
        Err(e) => return shared.log(&format!("cannot listen for SIGUSR1: {e}")),
    };
    while sigusr1.recv().await.is_some() {
        let tree = shared.tree.snapshot();
        shared.log(&format!("SIGUSR1: the task tree\n{tree}"));
    }
}
