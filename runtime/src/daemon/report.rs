//! [`DaemonReport`], what a daemon's run says happened, and [`Failure`], a
//! failure in it.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use super::tree::{NodeState, TaskTree, TreeNode};
use super::{Forced, StopReason};
use crate::report::short_duration as short;
use crate::task::TaskOutcome;

/// A subsystem that failed for good, in a [`DaemonReport`].
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let report = Daemon::new("d")
///     .quiet()
///     .run(|d| async move { d.start(Subsystem::new("w", |_| async { if true { panic!("bug") } })); })
///     .await;
/// let failure = &report.failures()[0];
/// assert_eq!(failure.name(), "/d/w");
/// assert_eq!(failure.error(), "task panicked: bug");
/// assert_eq!(failure.to_string(), "/d/w failed: task panicked: bug");
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub(crate) name: String,
    pub(crate) error: String,
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

/// What [`Daemon::run`](super::Daemon::run) says happened: why it stopped, whether the
/// shutdown was forced, each subsystem's end, and an exit code.
///
/// Its `Display` is a table, one subsystem a line, and a summary line:
///
/// ```text
/// SUBSYSTEM        OUTCOME              CLEANUP  NOTE
/// /daemon          stopped, cleaned up    2.000s
///   /daemon/ingest stopped, cleaned up    0.2ms  sent 8000 records
///   /daemon/writer ABORTED                2.000s
/// daemon: shutdown (Ctrl-C) FORCED after 2.000s (the grace period elapsed; grace 2.000s): 2 cleaned up, 1 aborted -> exit 3
/// ```
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// # use cancel_scope::TaskOutcome;
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
/// assert_eq!(report.tree().get("/d/hung").unwrap().state(), NodeState::Ended(TaskOutcome::Aborted));
/// assert_eq!(report.shutdown_took(), Some(Duration::from_secs(1)));
/// assert_eq!(report.code(), 3);
/// assert!(!report.is_clean());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DaemonReport {
    pub(crate) name: String,
    pub(crate) reason: StopReason,
    pub(crate) forced: Option<Forced>,
    pub(crate) grace: Duration,
    pub(crate) shutdown_took: Option<Duration>,
    pub(crate) tree: TaskTree,
    pub(crate) failures: Vec<Failure>,
    pub(super) drained: Option<super::drain::Drained>,
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

    /// Every failure of the run, where it began (not the parents it
    /// escalated to), in the order they happened: all but those a restart
    /// made good and those a parent caught
    /// ([`NestedSubsystem::join`](super::NestedSubsystem::join)).
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
    /// assert_eq!(report.summary(), "d: shutdown (requested by /d) took 0µs (grace 5.000s): 2 cleaned up -> exit 0");
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
            (Some(took), forced) => {
                let (how, why) = forced.map_or(("took", String::new()), |why| {
                    ("FORCED after", format!("{why}; "))
                });
                let (reason, grace) = (&self.reason, short(self.grace));
                format!(
                    "shutdown ({reason}) {how} {} ({why}grace {grace})",
                    short(took)
                )
            }
        };
        format!(
            "{}: {}{how}: {} -> exit {}",
            self.name,
            super::drain::describe(self.drained),
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
            let cleanup = n.cleanup_time().map_or("-".to_owned(), short);
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
            if n.state() == NodeState::Ended(TaskOutcome::Aborted) && n.cleanup_time().is_none() {
                line += "  (aborted before its turn to stop)";
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        f.write_str(&self.summary())
    }
}
