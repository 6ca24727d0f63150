//! [`Subsystem`]: what the daemon runs, how it restarts, the order its
//! nested subsystems stop in, and what its fn may return.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::SubsystemHandle;
use super::tree::Rules;
use crate::Cancelled;
use crate::report::short_duration as short;
use crate::task::TaskOutput;

/// How a subsystem's fn ended, as its runner sees it.
#[derive(Debug)]
#[doc(hidden)]
pub enum Exit {
    Done,
    /// It returned a cancellation, with its text: a normal stop when its
    /// token was cancelled, a failure otherwise.
    Cancelled(String),
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
        match (self.failure(), self) {
            (Some(error), _) => Exit::Failed(error),
            (None, Ok(())) => Exit::Done,
            (None, Err(cancelled)) => Exit::Cancelled(cancelled.to_string()),
        }
    }
}
impl<E: fmt::Display + Send + 'static> SubsystemOutput for Result<(), E> {}

impl<E: fmt::Display + Send + 'static> sealed::Sealed for Result<Result<(), E>, Cancelled> {
    fn exit(self) -> Exit {
        match self {
            Ok(inner) => sealed::Sealed::exit(inner),
            Err(c) => Exit::Cancelled(c.to_string()),
        }
    }
}
impl<E: fmt::Display + Send + 'static> SubsystemOutput for Result<Result<(), E>, Cancelled> {}

pub(crate) type Body = Pin<Box<dyn Future<Output = Exit> + Send>>;
pub(crate) type Factory = Box<dyn FnMut(SubsystemHandle) -> Option<Body> + Send>;

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
/// # use cancel_scope::TaskOutcome;
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
/// assert_eq!((flaky.state(), flaky.restarts()), (NodeState::Ended(TaskOutcome::Failed), 2));
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

    /// Whether a run that ended this way (`failed` or returned) is followed
    /// by another.
    pub(crate) fn again(&self, failed: bool) -> bool {
        if failed {
            self.on_failure
        } else {
            self.on_return
        }
    }

    /// The wait before the next restart, given the times of the `recent`
    /// ones (forgotten once out of the window); `None` past the intensity.
    pub(crate) fn next_delay(&self, recent: &mut VecDeque<Instant>) -> Option<Duration> {
        let now = Instant::now();
        recent.retain(|t| now.saturating_duration_since(*t) < self.within);
        if recent.len() >= self.max as usize {
            return None;
        }
        let factor = 1u32 << recent.len().min(20);
        recent.push_back(now);
        Some(self.first.saturating_mul(factor).min(self.max_backoff))
    }

    /// `restart 2 of 3 within 10.000s`, `restarted 3 times within 10.000s`.
    pub(crate) fn describe(&self, recent: usize, giving_up: bool) -> String {
        let within = short(self.within);
        match giving_up {
            false => format!("restart {recent} of {} within {within}", self.max),
            true => format!("restarted {recent} times within {within}, giving up"),
        }
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
    pub(crate) fn stages(&self, children: &[&str]) -> VecDeque<Vec<usize>> {
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
/// task of its parent's [`Scope`](crate::Scope), with the subsystems it
/// starts nested under it (`/daemon/writer/flush`).
///
/// - **Failure:** an `Err` or a panic is logged with the subsystem's name
///   and climbs at once: the subsystem stops its nested subsystems, and its
///   parent takes the failure on (its error says
///   `<where> failed: <error>`) and stops too, and so on up to the daemon,
///   which shuts down, whatever still cleans up beside the failure. A
///   [`supervised`](Self::supervised) subsystem is restarted instead, within
///   its limits (not once the daemon is stopping), and
///   [`escalate(false)`](Self::escalate) keeps the failure to the
///   subsystem: either stops the climb.
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
    pub(crate) factory: Factory,
    pub(crate) restart: Restart,
    /// Made by [`Subsystem::new`]: its fn cannot be called again.
    pub(crate) runs_once: bool,
    pub(crate) order: ShutdownOrder,
    pub(crate) rules: Rules,
}

impl fmt::Debug for Subsystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subsystem")
            .field("restart", &self.restart)
            .field("order", &self.order)
            .field("rules", &self.rules)
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
        let mut once = Subsystem::from_factory(name, move |handle| {
            let f = f.take()?;
            let body: Body = Box::pin(async move { sealed::Sealed::exit(f(handle).await) });
            Some(body)
        });
        (once.runs_once, once.rules.restarts_on_failure) = (true, false);
        once
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
        Subsystem::from_factory(name, move |handle| {
            let fut = f(handle);
            let body: Body = Box::pin(async move { sealed::Sealed::exit(fut.await) });
            Some(body)
        })
        .restart(restart)
    }

    fn from_factory(
        name: impl Into<Cow<'static, str>>,
        factory: impl FnMut(SubsystemHandle) -> Option<Body> + Send + 'static,
    ) -> Self {
        Subsystem {
            factory: Box::new(factory),
            restart: Restart::temporary(),
            runs_once: false,
            order: ShutdownOrder::default(),
            rules: Rules {
                name: name.into(),
                escalate: true,
                restarts_on_failure: false,
                detached: false,
                stop_timeout: None,
            },
        }
    }

    /// When it is started again, as `restart` says:
    /// `Subsystem::supervised(name, policy, f)` is
    /// `Subsystem::supervised(name, Restart::temporary(), f).restart(policy)`.
    /// A restart calls the fn again, so it takes a fn that can be called
    /// more than once: the fn of [`Subsystem::new`] is called once, so a
    /// `new` subsystem is never restarted, whatever its policy (the daemon's
    /// log says so when it starts one with a policy that would restart).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{Daemon, NodeState, Restart, Subsystem};
    /// use cancel_scope::TaskOutcome;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("app")
    ///     .quiet()
    ///     .run(|app| async move {
    ///         let flaky = Subsystem::supervised("flaky", Restart::temporary(), |_| async { Err("no route") });
    ///         app.start(flaky.restart(Restart::transient().intensity(1, std::time::Duration::from_secs(60))));
    ///     })
    ///     .await;
    /// let flaky = report.tree().get("/app/flaky").unwrap();
    /// assert_eq!((flaky.state(), flaky.restarts()), (NodeState::Ended(TaskOutcome::Failed), 1));
    /// # }
    /// ```
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.rules.restarts_on_failure = restart.on_failure && !self.runs_once;
        self.restart = restart;
        self
    }

    /// Not stopped when its parent stops: its parent stops it with
    /// [`NestedSubsystem::stop`](super::NestedSubsystem::stop), and waits
    /// for it before it ends. The daemon's shutdown still reaches it: once
    /// its parent's fn has returned during the shutdown, it is stopped, and
    /// past the grace period it is aborted with the rest.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::daemon::{Daemon, Subsystem};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d")
    ///     .quiet()
    ///     .run(|d| async move {
    ///         d.start(Subsystem::new("parent", |parent| async move {
    ///             let uploads = parent.start(
    ///                 Subsystem::new("uploads", |u| async move { u.token().cancelled().await }).detached(),
    ///             );
    ///             parent.token().cancelled().await; // the shutdown: uploads go on
    ///             assert!(!uploads.is_finished());
    ///             uploads.stop(); // until the parent stops them
    ///             uploads.join().await.unwrap();
    ///         }));
    ///         d.request_shutdown();
    ///     })
    ///     .await;
    /// assert!(report.is_clean());
    /// # }
    /// ```
    #[must_use]
    pub fn detached(mut self) -> Self {
        self.rules.detached = true;
        self
    }

    /// Whether its failure (once its restarts are used up) makes its parent
    /// fail too: `true` by default. With `false` the failure is logged and
    /// reported, and its siblings and parent go on.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::TaskOutcome;
    /// use cancel_scope::daemon::{Daemon, NodeState, Subsystem};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("app")
    ///     .quiet()
    ///     .run(|app| async move {
    ///         app.start(Subsystem::new("optional", |_| async { Err("no cache") }).escalate(false));
    ///     })
    ///     .await;
    /// assert_eq!(report.tree().get("/app").unwrap().state(), NodeState::Ended(TaskOutcome::Completed));
    /// assert_eq!(report.failures().len(), 1); // still reported
    /// # }
    /// ```
    #[must_use]
    pub fn escalate(mut self, escalate: bool) -> Self {
        self.rules.escalate = escalate;
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
    /// # use cancel_scope::TaskOutcome;
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
    /// assert_eq!((writer.state(), writer.note()), (NodeState::Ended(TaskOutcome::Stopped), Some("flushed")));
    /// assert_eq!(report.tree().get("/d/ingest").unwrap().state(), NodeState::Ended(TaskOutcome::Aborted));
    /// # }
    /// ```
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.rules.stop_timeout = Some(timeout);
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
        &self.rules.name
    }
}
