//! [`Subsystem`]: what the daemon runs, how it restarts, the order its
//! nested subsystems stop in; [`SubsystemHandle`], what its fn is given; and
//! the driver that runs one.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::race::{First4, first4};
use super::tree::{NodeState, TaskTree};
use super::{Shared, StopReason};
use crate::{Cancelled, Scope, TaskId};

/// How a subsystem's fn ended, as the driver sees it.
#[derive(Debug)]
#[doc(hidden)]
pub enum Exit {
    Done,
    Cancelled(Cancelled),
    Failed(String),
}

pub(super) mod sealed {
    /// Turns what a subsystem's fn returned into an [`Exit`](super::Exit).
    pub trait Sealed {
        fn exit(self) -> super::Exit;
    }
}

/// What a subsystem's fn may return: `()`, `Result<(), E>` with `E:
/// Display` (an `Err` is a failure, logged by name), or what a
/// `#[cancellable]` fn returns, `Result<Result<(), E>, Cancelled>` or
/// `Result<(), Cancelled>`.
///
/// A [`Cancelled`] (also inside an `std::io::Error`, as `flatten` makes
/// it) is a normal stop when the subsystem's token was cancelled, and a
/// failure otherwise (a `timeout` of its own).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
/// use cancel_scope::Cancelled;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let report = Daemon::new("app")
///     .quiet()
///     .run(|app| async move {
///         app.start(Subsystem::new("unit", |_| async {}));
///         app.start(Subsystem::new("ok", |_| async { Ok::<(), String>(()) }));
///         app.start(Subsystem::new("cancellable", |_| async {
///             Ok::<Result<(), std::io::Error>, Cancelled>(Ok(()))
///         }));
///     })
///     .await;
/// assert!(report.is_clean());
/// # }
/// ```
pub trait SubsystemOutput: sealed::Sealed + Send + 'static {}

impl sealed::Sealed for () {
    fn exit(self) -> Exit {
        Exit::Done
    }
}
impl SubsystemOutput for () {}

impl<E: fmt::Display + Send + 'static> sealed::Sealed for Result<(), E> {
    fn exit(self) -> Exit {
        match self {
            Ok(()) => Exit::Done,
            Err(e) => match as_cancelled(&e) {
                Some(c) => Exit::Cancelled(c),
                None => Exit::Failed(e.to_string()),
            },
        }
    }
}
impl<E: fmt::Display + Send + 'static> SubsystemOutput for Result<(), E> {}

impl<E: fmt::Display + Send + 'static> sealed::Sealed for Result<Result<(), E>, Cancelled> {
    fn exit(self) -> Exit {
        match self {
            Ok(inner) => sealed::Sealed::exit(inner),
            Err(c) => Exit::Cancelled(c),
        }
    }
}
impl<E: fmt::Display + Send + 'static> SubsystemOutput for Result<Result<(), E>, Cancelled> {}

/// The `Cancelled` in an error, if it is one (or an `io::Error` made from one).
fn as_cancelled<E: 'static>(e: &E) -> Option<Cancelled> {
    let any: &dyn std::any::Any = e;
    if let Some(c) = any.downcast_ref::<Cancelled>() {
        return Some(*c);
    }
    any.downcast_ref::<std::io::Error>()
        .and_then(|e| e.get_ref())
        .and_then(|e| e.downcast_ref::<Cancelled>())
        .copied()
}

type Body = Pin<Box<dyn Future<Output = Exit> + Send>>;
type Factory = Box<dyn FnMut(SubsystemHandle) -> Option<Body> + Send>;

/// When a failed (or finished) subsystem is started again, how often at
/// most, and how long to wait first: Erlang/OTP's restart strategies.
///
/// - [`permanent`](Self::permanent): restarted whenever it ends (fails or
///   returns), until the daemon stops;
/// - [`transient`](Self::transient): restarted when it fails;
/// - [`temporary`](Self::temporary): never restarted.
///
/// At most [`intensity`](Self::intensity) `max` restarts within `within`
/// (default 3 in 10 s): one more failure and the subsystem fails for good,
/// and its failure escalates. Before each restart it waits a
/// [`backoff`](Self::backoff) that doubles from `first` to `max`
/// (default 100 ms to 5 s).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::daemon::{Daemon, NodeState, Restart, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let policy = Restart::transient()
///     .intensity(2, Duration::from_secs(60))
///     .backoff(Duration::from_secs(1), Duration::from_secs(30));
/// let report = Daemon::new("app")
///     .quiet()
///     .run(move |app| async move {
///         app.start(Subsystem::supervised("flaky", policy, |_| async { Err("no route") }));
///     })
///     .await;
/// let flaky = report.tree().get("/app/flaky").unwrap();
/// assert_eq!((flaky.state(), flaky.restarts()), (NodeState::Failed, 2));
/// assert_eq!(report.code(), 1);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    on_failure: bool,
    on_return: bool,
    max: u32,
    within: Duration,
    first: Duration,
    max_backoff: Duration,
}

impl Restart {
    fn with(on_failure: bool, on_return: bool) -> Self {
        Restart {
            on_failure,
            on_return,
            max: 3,
            within: Duration::from_secs(10),
            first: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Restarted whenever it ends, by failing or by returning, until the
    /// daemon stops.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let policy = cancel_scope::daemon::Restart::permanent();
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn permanent() -> Self {
        Restart::with(true, true)
    }

    /// Restarted when it fails (returns `Err` or panics); a subsystem that
    /// returns `Ok` is done.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let policy = cancel_scope::daemon::Restart::transient();
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn transient() -> Self {
        Restart::with(true, false)
    }

    /// Never restarted: what [`Subsystem::new`] gives.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let policy = cancel_scope::daemon::Restart::temporary();
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn temporary() -> Self {
        Restart::with(false, false)
    }

    /// At most `max` restarts within any `within`; past that the subsystem
    /// fails for good.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// let policy = cancel_scope::daemon::Restart::permanent().intensity(5, Duration::from_secs(60));
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn intensity(mut self, max: u32, within: Duration) -> Self {
        self.max = max;
        self.within = within;
        self
    }

    /// Waits `first` before the first restart, twice as long before each
    /// next one within the intensity window, at most `max`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// let policy = cancel_scope::daemon::Restart::transient()
    ///     .backoff(Duration::from_millis(10), Duration::from_secs(1));
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first = first;
        self.max_backoff = max;
        self
    }

    /// The wait before the restart that follows `recent` restarts.
    fn delay(&self, recent: usize) -> Duration {
        let factor = 1u32 << recent.min(20);
        self.first.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The order in which a subsystem's nested subsystems (or the daemon's
/// subsystems) are asked to stop: each one is cancelled when the ones
/// before it have ended, within the daemon's one grace period. A
/// subsystem's own fn is cancelled first, at once.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, ShutdownOrder};
///
/// // The ingest that feeds the writer stops first; the others after them.
/// let daemon = Daemon::new("app").shutdown_order(ShutdownOrder::declared(["ingest", "writer"]));
/// # let _ = daemon;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownOrder {
    /// The last one started stops first (the default), as a stack unwinds:
    /// start what consumes before what produces for it.
    #[default]
    ReverseStart,
    /// All at once.
    Concurrent,
    /// Those with these names (not paths) first, one after the other, in
    /// this order; then the rest in reverse start order.
    Declared(Vec<Cow<'static, str>>),
}

impl ShutdownOrder {
    /// [`ShutdownOrder::Declared`] from a list of names.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::ShutdownOrder;
    /// assert_eq!(
    ///     ShutdownOrder::declared(["ingest"]),
    ///     ShutdownOrder::Declared(vec!["ingest".into()]),
    /// );
    /// ```
    pub fn declared<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Cow<'static, str>>,
    {
        ShutdownOrder::Declared(names.into_iter().map(Into::into).collect())
    }

    /// The stages in which to cancel `children` (names, in start order).
    fn stages(&self, children: &[&str]) -> VecDeque<Vec<usize>> {
        let reverse = |taken: &[bool]| {
            (0..children.len())
                .rev()
                .filter(|&i| !taken[i])
                .map(|i| vec![i])
                .collect::<Vec<_>>()
        };
        match self {
            ShutdownOrder::ReverseStart => reverse(&vec![false; children.len()]).into(),
            ShutdownOrder::Concurrent => VecDeque::from([(0..children.len()).collect()]),
            ShutdownOrder::Declared(names) => {
                let mut taken = vec![false; children.len()];
                let mut stages = VecDeque::new();
                for name in names {
                    let stage: Vec<usize> = (0..children.len())
                        .filter(|&i| !taken[i] && children[i] == name.as_ref())
                        .collect();
                    for &i in &stage {
                        taken[i] = true;
                    }
                    if !stage.is_empty() {
                        stages.push_back(stage);
                    }
                }
                stages.extend(reverse(&taken));
                stages
            }
        }
    }
}

/// A named part of a daemon: an async fn of a [`SubsystemHandle`], run as a
/// task, with the subsystems it starts nested under it
/// (`/daemon/writer/flush`).
///
/// - **Failure:** an `Err` or a panic is logged with the subsystem's name,
///   cancels its nested subsystems, and escalates to its parent, which then
///   fails the same way, up to the daemon, which shuts down. A
///   [`supervised`](Self::supervised) subsystem is restarted instead, within
///   its limits. [`escalate(false)`](Self::escalate) keeps the failure to
///   the subsystem itself.
/// - **Stopping:** its fn's token is cancelled; its nested subsystems are
///   cancelled in its [`ShutdownOrder`] and joined, never cut short, until
///   the daemon's grace period runs out.
/// - **Ending:** a subsystem is done when its fn has returned and its nested
///   subsystems have ended (as a Trio nursery): a fn may start subsystems
///   and return.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let report = Daemon::new("daemon")
///     .quiet()
///     .run(|daemon| async move {
///         daemon.start(Subsystem::new("writer", |writer| async move {
///             writer.start(Subsystem::new("flush", |flush| async move {
///                 Err::<(), _>(format!("{}: disk full", flush.name()))
///             }));
///             writer.token().cancelled().await;
///             Ok::<(), String>(())
///         }));
///     })
///     .await;
/// assert_eq!(report.failures()[0].name(), "/daemon/writer/flush");
/// assert_eq!(report.failures()[0].error(), "/daemon/writer/flush: disk full");
/// assert_eq!(report.code(), 1);
/// # }
/// ```
pub struct Subsystem {
    name: Cow<'static, str>,
    factory: Factory,
    restart: Restart,
    escalate: bool,
    order: ShutdownOrder,
    stop_timeout: Option<Duration>,
}

impl fmt::Debug for Subsystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subsystem")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("escalate", &self.escalate)
            .field("order", &self.order)
            .field("stop_timeout", &self.stop_timeout)
            .finish_non_exhaustive()
    }
}

impl Subsystem {
    /// A subsystem that runs `f` once.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::Subsystem;
    /// let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
    /// let writer = Subsystem::new("writer", move |handle| async move {
    ///     while let Some(Some(n)) = handle.token().run_until_cancelled(rx.recv()).await {
    ///         println!("{n}");
    ///     }
    /// });
    /// # drop((tx, writer));
    /// ```
    pub fn new<F, Fut>(name: impl Into<Cow<'static, str>>, f: F) -> Self
    where
        F: FnOnce(SubsystemHandle) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: SubsystemOutput,
    {
        let mut f = Some(f);
        Subsystem::from_factory(name, Restart::temporary(), move |handle| {
            let f = f.take()?;
            let body: Body = Box::pin(async move { sealed::Sealed::exit(f(handle).await) });
            Some(body)
        })
    }

    /// A subsystem that calls `f` again for each restart, as `restart` says.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{Restart, Subsystem};
    /// let poller = Subsystem::supervised("poller", Restart::permanent(), |handle| async move {
    ///     handle.token().cancelled().await;
    /// });
    /// # drop(poller);
    /// ```
    pub fn supervised<F, Fut>(
        name: impl Into<Cow<'static, str>>,
        restart: Restart,
        mut f: F,
    ) -> Self
    where
        F: FnMut(SubsystemHandle) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: SubsystemOutput,
    {
        Subsystem::from_factory(name, restart, move |handle| {
            let fut = f(handle);
            let body: Body = Box::pin(async move { sealed::Sealed::exit(fut.await) });
            Some(body)
        })
    }

    fn from_factory(
        name: impl Into<Cow<'static, str>>,
        restart: Restart,
        factory: impl FnMut(SubsystemHandle) -> Option<Body> + Send + 'static,
    ) -> Self {
        Subsystem {
            name: name.into(),
            factory: Box::new(factory),
            restart,
            escalate: true,
            order: ShutdownOrder::default(),
            stop_timeout: None,
        }
    }

    /// Whether its failure (once its restarts are used up) makes its parent
    /// fail too: `true` by default. With `false` the failure is logged and
    /// reported, and its siblings and parent go on.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{Daemon, NodeState, Subsystem};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("app")
    ///     .quiet()
    ///     .run(|app| async move {
    ///         app.start(Subsystem::new("optional", |_| async { Err("no cache") }).escalate(false));
    ///     })
    ///     .await;
    /// assert_eq!(report.tree().get("/app").unwrap().state(), NodeState::Finished);
    /// assert_eq!(report.failures().len(), 1); // still reported
    /// # }
    /// ```
    #[must_use]
    pub fn escalate(mut self, escalate: bool) -> Self {
        self.escalate = escalate;
        self
    }

    /// The order its nested subsystems stop in ([`ShutdownOrder::ReverseStart`]
    /// by default).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{ShutdownOrder, Subsystem};
    /// let pipeline = Subsystem::new("pipeline", |_| async {})
    ///     .shutdown_order(ShutdownOrder::declared(["ingest", "writer"]));
    /// # drop(pipeline);
    /// ```
    #[must_use]
    pub fn shutdown_order(mut self, order: ShutdownOrder) -> Self {
        self.order = order;
        self
    }

    /// How long its turn in its parent's [`ShutdownOrder`] lasts at most:
    /// once it has been cancelled this long and is still cleaning up, the
    /// next ones in the order are cancelled too (it goes on, until it ends
    /// or the grace period does). Without it, a subsystem that hangs in its
    /// cleanup holds back those after it until the grace period ends.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::daemon::{Daemon, NodeState, ShutdownOrder, Subsystem};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d")
    ///     .quiet()
    ///     .grace(Duration::from_secs(10))
    ///     .shutdown_order(ShutdownOrder::declared(["ingest", "writer"]))
    ///     .run(|d| async move {
    ///         d.start(
    ///             Subsystem::new("ingest", |_| std::future::pending::<()>()) // hangs
    ///                 .stop_timeout(Duration::from_secs(1)),
    ///         );
    ///         d.start(Subsystem::new("writer", |w| async move {
    ///             w.token().cancelled().await;
    ///             w.note("flushed");
    ///         }));
    ///         d.request_shutdown();
    ///     })
    ///     .await;
    /// let writer = report.tree().get("/d/writer").unwrap();
    /// assert_eq!((writer.state(), writer.note()), (NodeState::Stopped, Some("flushed")));
    /// assert_eq!(report.tree().get("/d/ingest").unwrap().state(), NodeState::Aborted);
    /// # }
    /// ```
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = Some(timeout);
        self
    }

    /// Its name, as given (not its path).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// assert_eq!(cancel_scope::daemon::Subsystem::new("w", |_| async {}).name(), "w");
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a subsystem's fn is given: its token, its name, and a way to start
/// nested subsystems, to say what it did, to ask the daemon to stop, and to
/// see the whole tree. Cheap to clone.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let report = Daemon::new("app")
///     .quiet()
///     .run(|app| async move {
///         app.start(Subsystem::new("writer", |writer| async move {
///             assert_eq!(writer.name(), "/app/writer");
///             writer.request_shutdown(); // the whole daemon
///             writer.token().cancelled().await;
///             writer.note("flushed 12 records"); // shows in the report
///         }));
///     })
///     .await;
/// assert_eq!(report.tree().get("/app/writer").unwrap().note(), Some("flushed 12 records"));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SubsystemHandle {
    token: CancellationToken,
    id: usize,
    name: Arc<str>,
    shared: Arc<Shared>,
    /// Subsystems started and their ids in the ledger, for this one's run.
    starts: mpsc::UnboundedSender<(usize, Subsystem)>,
}

impl SubsystemHandle {
    /// Cancelled when this subsystem is asked to stop: the daemon shuts
    /// down, its parent stops, or something in it failed. Hand it (or
    /// children of it) to `#[cancellable]` fns.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("w", |handle| async move { handle.token().cancelled().await });
    /// # drop(s);
    /// ```
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Its hierarchical name: `/daemon/writer/flush`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("w", |handle| async move { println!("{} up", handle.name()) });
    /// # drop(s);
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts `subsystem` nested in this one: its name becomes
    /// `<this name>/<its name>`; it is stopped (in this one's
    /// [`ShutdownOrder`]) and joined before this one ends. Started while
    /// this one is stopping, it takes its place in that order at once
    /// (and is cancelled when its turn comes); after this one ended, it is
    /// not started (and the log says so).
    ///
    /// Subsystems are for the long-lived parts of a daemon: the tree keeps
    /// each one it started (until its parent restarts). Work started per
    /// connection or per request belongs in a [`Scope`] inside a subsystem,
    /// as the HTTP example does.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("writer", |writer| async move {
    ///     writer.start(Subsystem::new("flush", |_| async {}));
    /// });
    /// # drop(s);
    /// ```
    pub fn start(&self, subsystem: Subsystem) {
        // In the tree at once; its run starts it in a moment.
        let child = self.shared.ledger.add(Some(self.id), &subsystem.name);
        if let Err(refused) = self.starts.send((child, subsystem)) {
            self.shared.ledger.remove(child);
            self.shared.log(&format!(
                "{}: not started: {} has ended",
                (refused.0).1.name,
                self.name
            ));
        }
    }

    /// Asks the whole daemon to shut down, gracefully.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("admin", |handle| async move { handle.request_shutdown() });
    /// # drop(s);
    /// ```
    pub fn request_shutdown(&self) {
        self.shared
            .begin_shutdown(StopReason::Requested(self.name.to_string()));
    }

    /// Says what this subsystem did, for the report and the tree: what its
    /// cleanup flushed, how many requests it served. The last note stands.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("w", |handle| async move { handle.note("wrote 7 records") });
    /// # drop(s);
    /// ```
    pub fn note(&self, note: impl Into<String>) {
        self.shared.ledger.note(self.id, note.into());
    }

    /// A snapshot of the daemon's whole tree of subsystems, now.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("w", |handle| async move { println!("{}", handle.tree()) });
    /// # drop(s);
    /// ```
    #[must_use]
    pub fn tree(&self) -> TaskTree {
        self.shared.ledger.snapshot()
    }

    /// What the daemon's subsystems share (for readiness).
    pub(super) fn daemon(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// What a panic said, as `TaskError`'s `Display` shows it.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(not a string)"
    }
}

/// How a subsystem ended, for its parent.
#[derive(Debug)]
pub(crate) enum NodeEnd {
    Ok,
    /// It failed for good: where the failure began, and the error.
    Failed {
        origin: String,
        error: String,
        escalate: bool,
    },
}

/// What a task of a subsystem's scope returns: its fn's exit, or a nested
/// subsystem's end.
enum Piece {
    Body(Exit),
    Child(NodeEnd),
}

/// Runs subsystem `id` until it ends for good: its runs, and its restarts.
/// `stop` is cancelled by its parent (or the daemon) to stop it; `alive`
/// is dropped only when this future is, so the daemon can wait for aborted
/// subsystems to be gone.
pub(crate) fn supervise(
    shared: Arc<Shared>,
    id: usize,
    mut spec: Subsystem,
    stop: CancellationToken,
    alive: mpsc::Sender<()>,
) -> Pin<Box<dyn Future<Output = NodeEnd> + Send>> {
    Box::pin(async move {
        let path: Arc<str> = shared.ledger.path(id).into();
        let mut recent: VecDeque<Instant> = VecDeque::new();
        loop {
            shared.ledger.set_state(id, NodeState::Running);
            let run = run_once(&shared, id, &path, &mut spec, &stop, &alive);
            #[cfg(feature = "tracing")]
            let run = tracing::Instrument::instrument(
                run,
                tracing::info_span!("subsystem", name = %path),
            );
            let failure = run.await;
            let stopping = stop.is_cancelled();
            let again = !stopping
                && match failure {
                    Some(_) => spec.restart.on_failure,
                    None => spec.restart.on_return,
                };
            if !again {
                return finish(&shared, id, failure, stopping, spec.escalate);
            }
            let now = Instant::now();
            recent.retain(|t| now.saturating_duration_since(*t) < spec.restart.within);
            let what = failure
                .as_ref()
                .map_or("returned".to_owned(), |(_, e)| format!("failed ({e})"));
            if recent.len() >= spec.restart.max as usize {
                let error = format!(
                    "{what}; restarted {} times within {}, giving up",
                    recent.len(),
                    super::tree::short(spec.restart.within)
                );
                shared.log(&format!("{path} {error}"));
                shared.ledger.fail(id, error.clone(), true);
                return finish(
                    &shared,
                    id,
                    Some((path.to_string(), error)),
                    false,
                    spec.escalate,
                );
            }
            let delay = spec.restart.delay(recent.len());
            recent.push_back(now);
            shared.ledger.restarting(id);
            shared.log(&format!(
                "{path} {what}; restart {} of {} within {} in {}",
                recent.len(),
                spec.restart.max,
                super::tree::short(spec.restart.within),
                super::tree::short(delay)
            ));
            if stop
                .run_until_cancelled(tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return finish(&shared, id, None, true, spec.escalate);
            }
        }
    })
}

fn finish(
    shared: &Shared,
    id: usize,
    failure: Option<(String, String)>,
    stopped: bool,
    escalate: bool,
) -> NodeEnd {
    match failure {
        Some((origin, error)) => {
            shared.ledger.set_state(id, NodeState::Failed);
            NodeEnd::Failed {
                origin,
                error,
                escalate,
            }
        }
        None => {
            let state = if stopped {
                NodeState::Stopped
            } else {
                NodeState::Finished
            };
            shared.ledger.set_state(id, state);
            NodeEnd::Ok
        }
    }
}

/// A nested subsystem, as its parent's run sees it.
struct Child {
    id: usize,
    name: Cow<'static, str>,
    path: String,
    stop: CancellationToken,
    done: bool,
    /// How long its turn in the shutdown order lasts, at most.
    stop_timeout: Option<Duration>,
    /// When its turn to stop came.
    cancelled_at: Option<Instant>,
    /// Its turn is over (its `stop_timeout` passed) though it still runs.
    passed: bool,
}

impl Child {
    /// Whether the next ones in the shutdown order may be cancelled.
    fn let_through(&self) -> bool {
        self.done || self.passed
    }
}

/// The stages in which `children` that have not ended yet are to stop.
fn plan(order: &ShutdownOrder, children: &[Child]) -> VecDeque<Vec<usize>> {
    let names: Vec<&str> = children.iter().map(|c| c.name.as_ref()).collect();
    let mut stages = order.stages(&names);
    stages.retain(|stage| stage.iter().any(|&i| !children[i].let_through()));
    stages
}

/// Starts `sub`, whose record in the ledger is `child`, as a task of its
/// parent's run.
fn start_child(
    shared: &Arc<Shared>,
    alive: &mpsc::Sender<()>,
    scope: &mut Scope<Piece>,
    by_task: &mut HashMap<TaskId, usize>,
    children: &mut Vec<Child>,
    (child, sub): (usize, Subsystem),
) {
    let stop = CancellationToken::new();
    let (name, path, stop_timeout) = (
        sub.name.clone(),
        shared.ledger.path(child),
        sub.stop_timeout,
    );
    let driver = supervise(Arc::clone(shared), child, sub, stop.clone(), alive.clone());
    let task = scope.spawn_named(path.clone(), |_| async move { Piece::Child(driver.await) });
    by_task.insert(task, children.len());
    children.push(Child {
        id: child,
        name,
        path,
        stop,
        done: false,
        stop_timeout,
        cancelled_at: None,
        passed: false,
    });
}

/// One run of subsystem `id`: its fn and its nested subsystems, until all
/// have ended. Returns the failure (where it began, and the error) that
/// ended it, if one did.
async fn run_once(
    shared: &Arc<Shared>,
    id: usize,
    path: &Arc<str>,
    spec: &mut Subsystem,
    stop: &CancellationToken,
    alive: &mpsc::Sender<()>,
) -> Option<(String, String)> {
    let token = stop.child_token();
    let (starts, mut started) = mpsc::unbounded_channel();
    let mut scope: Scope<Piece> = Scope::child_of(&token);
    let factory = &mut spec.factory;
    let body = scope.spawn_named(path.to_string(), |task_token| {
        let handle = SubsystemHandle {
            token: task_token,
            id,
            name: Arc::clone(path),
            shared: Arc::clone(shared),
            starts,
        };
        // A `supervised` fn is called here, to make its future: a panic in
        // it is the subsystem's, as a panic in the future is.
        let body = catch_unwind(AssertUnwindSafe(|| factory(handle)));
        async move {
            Piece::Body(match body {
                Ok(Some(body)) => body.await,
                Ok(None) => Exit::Done,
                Err(panic) => Exit::Failed(format!("task panicked: {}", panic_message(&*panic))),
            })
        }
    });
    let mut children: Vec<Child> = Vec::new();
    let mut by_task: HashMap<TaskId, usize> = HashMap::new();
    let mut failure: Option<(String, String)> = None;
    let mut stages: Option<VecDeque<Vec<usize>>> = None;
    let fail = |failure: &mut Option<_>, origin: String, error: String| {
        if failure.is_none() {
            shared.ledger.fail(id, error.clone(), origin == **path);
            *failure = Some((origin.clone(), error));
            token.cancel();
            if id == 0 {
                shared.begin_shutdown(StopReason::Failed(origin));
            }
        }
    };
    loop {
        if token.is_cancelled() && stages.is_none() {
            // Those started before the cancellation stop in order too.
            while let Ok(sub) = started.try_recv() {
                start_child(shared, alive, &mut scope, &mut by_task, &mut children, sub);
            }
            shared.ledger.set_state(id, NodeState::Stopping);
            stages = Some(plan(&spec.order, &children));
        }
        // The end of the current stage's turn, if its subsystems have a
        // `stop_timeout`.
        let mut turn_ends: Option<Instant> = None;
        if let Some(stages) = stages.as_mut() {
            while let Some(stage) = stages.front() {
                for &i in stage {
                    let child = &mut children[i];
                    child.stop.cancel();
                    child.cancelled_at.get_or_insert_with(Instant::now);
                }
                if stage.iter().all(|&i| children[i].let_through()) {
                    stages.pop_front();
                } else {
                    turn_ends = stage
                        .iter()
                        .filter(|&&i| !children[i].let_through())
                        .filter_map(|&i| {
                            Some(children[i].cancelled_at? + children[i].stop_timeout?)
                        })
                        .min();
                    break;
                }
            }
        }
        let turn_over = async {
            match turn_ends {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let stopping = stages.is_some();
        let event = first4(
            async {
                match started.recv().await {
                    Some(sub) => sub,
                    None => std::future::pending().await,
                }
            },
            async {
                if stopping {
                    std::future::pending().await
                } else {
                    token.cancelled().await;
                }
            },
            turn_over,
            scope.join_next_with_id(),
        )
        .await;
        match event {
            First4::A(sub) => {
                start_child(shared, alive, &mut scope, &mut by_task, &mut children, sub);
                while let Ok(sub) = started.try_recv() {
                    start_child(shared, alive, &mut scope, &mut by_task, &mut children, sub);
                }
                if stages.is_some() {
                    // Started while this one stops: they stop in order too,
                    // with those not done yet.
                    stages = Some(plan(&spec.order, &children));
                }
            }
            // Seen at the top of the loop.
            First4::B(()) => {}
            First4::C(()) => {
                let now = Instant::now();
                for child in &mut children {
                    let over = child
                        .cancelled_at
                        .zip(child.stop_timeout)
                        .is_some_and(|(at, timeout)| at + timeout <= now);
                    if over && !child.let_through() {
                        child.passed = true;
                        shared.log(&format!(
                            "{} still stopping after {}: stopping the next ones",
                            child.path,
                            super::tree::short(child.stop_timeout.unwrap_or_default())
                        ));
                    }
                }
            }
            // Everything has ended, but for a start that came meanwhile.
            First4::D(None) => match started.try_recv() {
                Ok(sub) => {
                    start_child(shared, alive, &mut scope, &mut by_task, &mut children, sub);
                    if stages.is_some() {
                        stages = Some(plan(&spec.order, &children));
                    }
                }
                Err(_) => break,
            },
            First4::D(Some((task, result))) => {
                if task == body {
                    match result {
                        Ok(Piece::Body(Exit::Done) | Piece::Child(_)) => {}
                        Ok(Piece::Body(Exit::Cancelled(_))) if token.is_cancelled() => {}
                        Ok(Piece::Body(Exit::Cancelled(c))) => {
                            shared.log(&format!("{path} failed: {c}"));
                            fail(&mut failure, path.to_string(), c.to_string());
                        }
                        Ok(Piece::Body(Exit::Failed(e))) => {
                            shared.log(&format!("{path} failed: {e}"));
                            fail(&mut failure, path.to_string(), e);
                        }
                        Err(e) => {
                            shared.log(&format!("{path} failed: {e}"));
                            fail(&mut failure, path.to_string(), e.to_string());
                        }
                    }
                } else if let Some(&i) = by_task.get(&task) {
                    children[i].done = true;
                    match result {
                        Ok(Piece::Child(NodeEnd::Failed {
                            origin,
                            error,
                            escalate: true,
                        })) => {
                            let error = format!("{origin} failed: {error}");
                            fail(&mut failure, origin, error);
                        }
                        Ok(_) => {}
                        // The driver itself panicked: a bug here, reported
                        // as the nested subsystem's failure.
                        Err(e) => {
                            let child = &children[i];
                            shared.ledger.fail(child.id, e.to_string(), true);
                            shared.ledger.set_state(child.id, NodeState::Failed);
                            let error = format!("{} failed: {e}", child.path);
                            fail(&mut failure, child.path.clone(), error);
                        }
                    }
                }
            }
        }
    }
    // A start from a handle still held somewhere comes too late now.
    started.close();
    while let Ok((child, sub)) = started.try_recv() {
        shared.ledger.remove(child);
        shared.log(&format!("{}: not started: {path} has ended", sub.name));
    }
    failure
}
