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
//! is `Daemon::new(..).catch_signals().grace(timeout).run(..)`), plus
//! restarts, an ordered shutdown, a live tree, and a report that names
//! what hung.

#[cfg(feature = "systemd")]
mod activation;
mod drain;
mod notify;
mod race;
mod readiness;
mod subsystem;
mod tree;

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
#[cfg(feature = "signal")]
use std::sync::Arc as SignalArc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "systemd")]
pub use activation::Listeners;
use race::First4;
pub use readiness::{Readiness, ReadinessHold};
pub use subsystem::{Restart, ShutdownOrder, Subsystem, SubsystemHandle, SubsystemOutput};
pub use tree::{NodeState, TaskTree, TreeNode};

#[cfg(feature = "signal")]
use crate::ShutdownSignal;

type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What the subsystems share: the ledger, the daemon's stop token and why
/// it was cancelled, where the log goes.
pub(crate) struct Shared {
    ledger: tree::Ledger,
    shutdown: CancellationToken,
    reason: OnceLock<StopReason>,
    /// When the shutdown began.
    began: OnceLock<Instant>,
    log: Log,
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
    fn begin_shutdown(&self, reason: StopReason) {
        if !self.shutdown.is_cancelled() {
            let _ = self.began.set(Instant::now());
            self.lifecycle.stopping();
            if self.reason.set(reason.clone()).is_ok() {
                self.log(&format!("shutting down: {reason}"));
            }
            self.shutdown.cancel();
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
    /// [`ShutdownSignal::trigger`](crate::ShutdownSignal::trigger) with this reason.
    Signal(&'static str),
    /// [`SubsystemHandle::request_shutdown`], by the subsystem with this name.
    Requested(String),
    /// The subsystem with this name failed, and its failure escalated to
    /// the daemon.
    Failed(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Finished => f.write_str("every subsystem finished"),
            StopReason::Signal(name) => f.write_str(name),
            StopReason::Requested(by) => write!(f, "requested by {by}"),
            StopReason::Failed(who) => write!(f, "{who} failed"),
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

/// A subsystem that failed for good, in a [`DaemonReport`].
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let report = Daemon::new("d")
///     .quiet()
///     .run(|d| async move { d.start(Subsystem::new("w", |_| async { if true { panic!("bug") } })) })
///     .await;
/// let failure = &report.failures()[0];
/// assert_eq!(failure.name(), "/d/w");
/// assert_eq!(failure.error(), "task panicked: bug");
/// assert_eq!(failure.to_string(), "/d/w failed: task panicked: bug");
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    name: String,
    error: String,
}

impl Failure {
    /// The subsystem's hierarchical name.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |_| async { Err("x") }));
    /// }).await;
    /// assert_eq!(report.failures()[0].name(), "/d/w");
    /// # }
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its error, or its panic's message.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |_| async { Err("disk full") }));
    /// }).await;
    /// assert_eq!(report.failures()[0].error(), "disk full");
    /// # }
    /// ```
    #[must_use]
    pub fn error(&self) -> &str {
        &self.error
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.name, self.error)
    }
}

impl std::error::Error for Failure {}

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
    /// [`catch_signals`](Self::catch_signals)), its log on stderr.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let daemon = cancel_scope::daemon::Daemon::new("daemon");
    /// # let _ = daemon;
    /// ```
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
        }
    }

    /// How long the subsystems' cleanups may take, all together, from the
    /// moment the shutdown begins; then what is left is aborted.
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
            ledger: tree::Ledger::default(),
            shutdown: CancellationToken::new(),
            reason: OnceLock::new(),
            began: OnceLock::new(),
            log: Arc::clone(&self.log),
            lifecycle: readiness::Lifecycle::new(),
        });
        let setup = readiness::ready_after(&shared.lifecycle, setup);
        let _notifier = notify::start(
            &shared,
            notify::Timing {
                grace: self.grace,
                exit_timeout: self.exit_timeout,
            },
        );
        let root = shared.ledger.add(None, &self.name);
        let spec = Subsystem::new(self.name.clone(), setup).shutdown_order(self.order.clone());
        let (alive, mut gone) = mpsc::channel::<()>(1);
        let mut driver = Some(subsystem::supervise(
            Arc::clone(&shared),
            root,
            spec,
            shared.shutdown.clone(),
            alive,
        ));

        #[cfg(feature = "signal")]
        let signals = Signals::start(&self, &shared);
        #[cfg(feature = "signal")]
        let signal_token = signals.signal.as_ref().map(|s| s.token().clone());
        #[cfg(not(feature = "signal"))]
        let signal_token: Option<CancellationToken> = None;

        let first_signal = async {
            match &signal_token {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
            #[cfg(feature = "signal")]
            drain::after_signal(&shared, self.drain, signals.signal.as_deref()).await;
        };
        let ended = match race::first4(
            driver.as_mut().expect("not taken yet"),
            shared.shutdown.cancelled(),
            first_signal,
            std::future::pending::<()>(),
        )
        .await
        {
            First4::A(_) => true,
            First4::B(()) | First4::D(()) => false,
            First4::C(()) => {
                #[cfg(feature = "signal")]
                let name = signals
                    .signal
                    .as_ref()
                    .and_then(|s| s.reason())
                    .unwrap_or("a signal");
                #[cfg(not(feature = "signal"))]
                let name = "a signal";
                shared.begin_shutdown(StopReason::Signal(name));
                false
            }
        };
        let mut forced = None;
        if !ended {
            let began = *shared.began.get_or_init(Instant::now);
            // A signal after the one that began the shutdown (or cut its
            // drain short) forces it.
            #[cfg(feature = "signal")]
            let force = drain::forcing_signal(&shared, signals.signal.as_deref());
            #[cfg(not(feature = "signal"))]
            let force = std::future::pending::<()>();
            forced = match race::first4(
                driver.as_mut().expect("not taken yet"),
                tokio::time::sleep_until(began + self.grace),
                force,
                std::future::pending::<()>(),
            )
            .await
            {
                First4::A(_) => None,
                First4::B(()) => Some(Forced::GraceElapsed),
                First4::C(()) | First4::D(()) => Some(Forced::SecondSignal),
            };
            if let Some(why) = forced {
                let aborted = shared.ledger.abort_all();
                shared.log(&format!(
                    "shutdown forced after {} ({why}): aborting {}",
                    tree::short(began.elapsed()),
                    aborted.join(", ")
                ));
                // Dropping the root's driver drops its scope, which aborts
                // the subsystems' tasks, whose scopes abort theirs.
                drop(driver.take());
                // Each driver holds a sender; wait (briefly: a worker thread
                // stuck in blocking code would hold an aborted task) until
                // the aborted ones are gone, so that what they wrote is all
                // there is to read.
                let _ = tokio::time::timeout(Duration::from_secs(1), gone.recv()).await;
            }
        }
        let shutdown_took = shared.began.get().map(Instant::elapsed);
        drop(driver);
        let reason = shared.reason.get().cloned().unwrap_or(StopReason::Finished);
        let failures = shared
            .ledger
            .failures()
            .into_iter()
            .map(|(name, error)| Failure { name, error })
            .collect();
        DaemonReport {
            name: self.name,
            reason,
            forced,
            grace: self.grace,
            shutdown_took,
            tree: shared.ledger.snapshot(),
            failures,
            drained: shared.lifecycle.drained(),
        }
    }
}

/// The daemon's signal handling, for the length of `run`.
#[cfg(feature = "signal")]
struct Signals {
    signal: Option<SignalArc<ShutdownSignal>>,
    tree_printer: Option<tokio::task::JoinHandle<()>>,
}

#[cfg(feature = "signal")]
impl Signals {
    fn start(daemon: &Daemon, shared: &Arc<Shared>) -> Self {
        let signal = match &daemon.signal {
            None => None,
            Some(SignalSource::Given(signal)) => Some(SignalArc::clone(signal)),
            Some(SignalSource::Install) => match ShutdownSignal::install() {
                Ok(signal) => Some(SignalArc::new(signal)),
                Err(e) => {
                    shared.log(&format!("cannot listen for signals: {e}"));
                    None
                }
            },
        };
        #[cfg(unix)]
        let tree_printer = daemon.tree_on_sigusr1.then(|| {
            use tokio::signal::unix::{SignalKind, signal};
            let shared = Arc::clone(shared);
            let stream = signal(SignalKind::user_defined1());
            tokio::spawn(async move {
                let mut stream = match stream {
                    Ok(stream) => stream,
                    Err(e) => return shared.log(&format!("cannot listen for SIGUSR1: {e}")),
                };
                while stream.recv().await.is_some() {
                    shared.log(&format!(
                        "SIGUSR1: the task tree\n{}",
                        shared.ledger.snapshot()
                    ));
                }
            })
        });
        #[cfg(not(unix))]
        let tree_printer = None;
        Signals {
            signal,
            tree_printer,
        }
    }
}

#[cfg(feature = "signal")]
impl Drop for Signals {
    fn drop(&mut self) {
        if let Some(printer) = &self.tree_printer {
            printer.abort();
        }
    }
}

/// What [`Daemon::run`] says happened: why it stopped, whether the
/// shutdown was forced, each subsystem's end, and an exit code.
///
/// Its `Display` is a table, one subsystem a line, and a summary line:
///
/// ```text
/// SUBSYSTEM        OUTCOME              CLEANUP  NOTE
/// /daemon          stopped, cleaned up    2.00s
///   /daemon/ingest stopped, cleaned up    0.2ms  sent 8000 records
///   /daemon/writer ABORTED                2.00s
/// daemon: shutdown (Ctrl-C) FORCED after 2.00s (the grace period elapsed; grace 2.00s): 2 cleaned up, 1 aborted -> exit 3
/// ```
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::daemon::{Daemon, Forced, NodeState, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let report = Daemon::new("d")
///     .grace(Duration::from_secs(1))
///     .quiet()
///     .run(|d| async move {
///         d.start(Subsystem::new("hung", |_| std::future::pending::<()>()));
///         d.request_shutdown();
///     })
///     .await;
/// assert_eq!(report.forced(), Some(Forced::GraceElapsed));
/// assert_eq!(report.tree().get("/d/hung").unwrap().state(), NodeState::Aborted);
/// assert_eq!(report.shutdown_took(), Some(Duration::from_secs(1)));
/// assert_eq!(report.code(), 3);
/// assert!(!report.is_clean());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DaemonReport {
    name: String,
    reason: StopReason,
    forced: Option<Forced>,
    grace: Duration,
    shutdown_took: Option<Duration>,
    tree: TaskTree,
    failures: Vec<Failure>,
    drained: Option<drain::Drained>,
}

impl DaemonReport {
    /// Why the daemon stopped.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, StopReason};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move { d.request_shutdown() }).await;
    /// assert_eq!(report.reason(), &StopReason::Requested("/d".into()));
    /// # }
    /// ```
    #[must_use]
    pub fn reason(&self) -> &StopReason {
        &self.reason
    }

    /// Why the shutdown was cut short, if it was.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|_| async {}).await;
    /// assert_eq!(report.forced(), None);
    /// # }
    /// ```
    #[must_use]
    pub fn forced(&self) -> Option<Forced> {
        self.forced
    }

    /// From the start of the shutdown to its end; `None` when every
    /// subsystem ended on its own first.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|_| async {}).await;
    /// assert_eq!(report.shutdown_took(), None);
    /// # }
    /// ```
    #[must_use]
    pub fn shutdown_took(&self) -> Option<Duration> {
        self.shutdown_took
    }

    /// The grace period the shutdown was given.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon; use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").grace(Duration::from_secs(7)).quiet().run(|_| async {}).await;
    /// assert_eq!(report.grace(), Duration::from_secs(7));
    /// # }
    /// ```
    #[must_use]
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Every subsystem as it ended.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |_| async {}));
    /// }).await;
    /// assert_eq!(report.tree().nodes().len(), 2);
    /// # }
    /// ```
    #[must_use]
    pub fn tree(&self) -> &TaskTree {
        &self.tree
    }

    /// The subsystems that failed for good, where each failure began (not
    /// the parents it escalated to), in tree order.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("a", |a| async move {
    ///         a.start(Subsystem::new("b", |_| async { Err("x") }));
    ///     }));
    /// }).await;
    /// let names: Vec<_> = report.failures().iter().map(|f| f.name()).collect();
    /// assert_eq!(names, ["/d/a/b"]); // not /d/a, nor /d
    /// # }
    /// ```
    #[must_use]
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// `true` when nothing failed and nothing was aborted.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|_| async {}).await;
    /// assert!(report.is_clean());
    /// # }
    /// ```
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.forced.is_none()
    }

    /// The exit code that says what happened:
    ///
    /// | code | when |
    /// | --- | --- |
    /// | 0 | every subsystem ended on its own or cleaned up |
    /// | 1 | a subsystem failed for good (the others may have cleaned up) |
    /// | 3 | the grace period elapsed: something was aborted |
    /// | 130 | a second signal aborted the shutdown |
    ///
    /// A failure wins over a forced shutdown.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |_| async { Err("x") }));
    /// }).await;
    /// assert_eq!(report.code(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn code(&self) -> u8 {
        match (self.failures.is_empty(), self.forced) {
            (false, _) => 1,
            (true, Some(Forced::GraceElapsed)) => 3,
            (true, Some(Forced::SecondSignal)) => 130,
            (true, None) => 0,
        }
    }

    /// [`code`](Self::code) as what `main` returns.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|_| async {}).await;
    /// assert_eq!(report.exit_code(), std::process::ExitCode::SUCCESS);
    /// # }
    /// ```
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// Prints the report on stderr and returns its [`exit_code`](Self::exit_code):
    /// the last line of a daemon's `main`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let code = Daemon::new("d").quiet().run(|_| async {}).await.print_and_exit_code();
    /// assert_eq!(code, std::process::ExitCode::SUCCESS);
    /// # }
    /// ```
    #[must_use]
    pub fn print_and_exit_code(&self) -> ExitCode {
        eprintln!("{self}");
        self.exit_code()
    }

    /// `Ok` when [`is_clean`](Self::is_clean), else the first failure (or
    /// the forced shutdown) as an error, for a `main` that returns a
    /// `Result`.
    ///
    /// # Errors
    /// When a subsystem failed, or the shutdown was forced.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |_| async { Err("disk full") }));
    /// }).await;
    /// assert_eq!(report.into_result().unwrap_err().to_string(), "/d/w failed: disk full");
    /// # }
    /// ```
    pub fn into_result(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(failure) = self.failures.into_iter().next() {
            return Err(failure.into());
        }
        match self.forced {
            Some(why) => Err(format!("shutdown forced by {why}").into()),
            None => Ok(()),
        }
    }

    /// The last line: why it stopped, how the shutdown went, the count of
    /// each outcome, the exit code.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move { w.token().cancelled().await }));
    ///     d.request_shutdown();
    /// }).await;
    /// assert_eq!(report.summary(), "d: shutdown (requested by /d) took 0µs (grace 5.00s): 2 cleaned up -> exit 0");
    /// # }
    /// ```
    #[must_use]
    pub fn summary(&self) -> String {
        let mut counts: Vec<(NodeState, usize)> = Vec::new();
        for node in self.tree.nodes() {
            match counts.iter_mut().find(|(s, _)| *s == node.state()) {
                Some((_, n)) => *n += 1,
                None => counts.push((node.state(), 1)),
            }
        }
        let counts: Vec<String> = counts
            .iter()
            .map(|(state, n)| format!("{n} {}", state.short_label()))
            .collect();
        let how = match (self.shutdown_took, self.forced) {
            (None, _) => "every subsystem ended".to_owned(),
            (Some(took), None) => format!(
                "shutdown ({}) took {} (grace {})",
                self.reason,
                tree::short(took),
                tree::short(self.grace)
            ),
            (Some(took), Some(why)) => format!(
                "shutdown ({}) FORCED after {} ({why}; grace {})",
                self.reason,
                tree::short(took),
                tree::short(self.grace)
            ),
        };
        format!(
            "{}: {}{how}: {} -> exit {}",
            self.name,
            drain::describe(self.drained),
            counts.join(", "),
            self.code()
        )
    }
}

impl fmt::Display for DaemonReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = self.tree.nodes();
        let name = |n: &TreeNode| format!("{:indent$}{}", "", n.name(), indent = n.depth() * 2);
        let width = nodes
            .iter()
            .map(|n| name(n).chars().count())
            .chain([9])
            .max()
            .unwrap_or(9);
        writeln!(
            f,
            "{:<width$}  {:<19}  {:>8}  NOTE",
            "SUBSYSTEM", "OUTCOME", "CLEANUP"
        )?;
        for n in nodes {
            let cleanup = n.cleanup_time().map_or("-".to_owned(), tree::short);
            let mut line = format!("{:<width$}  {:<19}  {cleanup:>8}", name(n), n.state());
            if n.restarts() > 0 {
                line += &format!("  restarted {}x", n.restarts());
            }
            if let Some(note) = n.note() {
                line += &format!("  {note}");
            }
            if let Some(error) = n.error() {
                line += &format!("  error: {error}");
            }
            if n.state() == NodeState::Aborted && n.cleanup_time().is_none() {
                line += "  (aborted before its turn to stop)";
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        f.write_str(&self.summary())
    }
}
