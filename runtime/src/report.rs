//! [`ShutdownReport`]: what [`Scope::shutdown_report`] says happened to each
//! task of a scope in a shutdown, for the logs.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

#[cfg(doc)]
use crate::Scope;
use crate::id::TaskId;
use crate::reason::CancelReason;
use crate::reason::Described;
use crate::task::{TaskError, TaskOutcome};

/// One task in a [`ShutdownReport`]: its id, its name, how it ended, and
/// how long its cleanup took.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::{Scope, TaskOutcome};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut scope = Scope::new();
/// let id = scope.spawn_named("flusher", |token| async move {
///     token.cancelled().await;
///     tokio::time::sleep(Duration::from_secs(2)).await; // cleanup
/// });
/// let report = scope.shutdown_report(Duration::from_secs(5)).await;
/// let task = &report.tasks()[0];
/// assert_eq!(task.id(), id);
/// assert_eq!(task.name(), "flusher");
/// assert_eq!(task.outcome(), TaskOutcome::Stopped);
/// assert_eq!(task.cleanup_time(), Some(Duration::from_secs(2)));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskReport {
    id: TaskId,
    name: Cow<'static, str>,
    outcome: TaskOutcome,
    cleanup_time: Option<Duration>,
    error: Option<String>,
    cleanup_ran: bool,
}

impl TaskReport {
    /// Unnamed tasks are named `task #<id>`.
    pub(crate) fn new(
        id: TaskId,
        name: Option<Cow<'static, str>>,
        outcome: TaskOutcome,
        cleanup_time: Option<Duration>,
        error: Option<String>,
        cleanup_ran: bool,
    ) -> Self {
        TaskReport {
            id,
            name: name.unwrap_or_else(|| Cow::Owned(format!("task #{id}"))),
            outcome,
            cleanup_time,
            error,
            cleanup_ran,
        }
    }

    /// `true` when a `#[cancellable]` fn in the task was cancelled while it
    /// ran, and so ran its `on_cancel!` cleanup (if it has one): what a
    /// [`Stopped`](TaskOutcome::Stopped) task did
    /// after the cancel, as far as the scope can see. A task that only
    /// watched its token by hand (`token.cancelled().await`) says `false`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|token| async move { token.cancelled().await });
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert!(!report.tasks()[0].cleanup_ran()); // no `#[cancellable]` fn
    /// # }
    /// ```
    #[must_use]
    pub fn cleanup_ran(&self) -> bool {
        self.cleanup_ran
    }

    /// What went wrong, for a task that did not end on its own: the text of
    /// its `Err` ([`TaskOutcome::Failed`]), or of its [`TaskError`]
    /// (`task panicked: ..`, `task aborted ..`). `None` for a task that
    /// completed or cleaned up.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::{Scope, TaskOutcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope: Scope<Result<(), String>> = Scope::new().track_failures();
    /// scope.spawn_named("bind", |_token| async { Err("address in use".to_string()) });
    /// tokio::task::yield_now().await;
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// let task = &report.tasks()[0];
    /// assert_eq!(task.outcome(), TaskOutcome::Failed);
    /// assert_eq!(task.error(), Some("address in use"));
    /// # }
    /// ```
    #[must_use]
    pub fn error(&self) -> Option<&str> {
        match self.outcome {
            TaskOutcome::Completed | TaskOutcome::Stopped => None,
            _ => self.error.as_deref(),
        }
    }

    /// The task's id, as [`Scope::spawn`] returned it.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// let id = scope.spawn(|_token| async {});
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.tasks()[0].id(), id);
    /// # }
    /// ```
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name: as given to [`Scope::spawn_named`], or `task #<id>`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn_named("ingest", |_token| async {});
    /// scope.spawn(|_token| async {});
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.tasks()[0].name(), "ingest");
    /// assert_eq!(report.tasks()[1].name(), "task #1");
    /// # }
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the task ended.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::{Scope, TaskOutcome};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| std::future::pending());
    /// let report = scope.shutdown_report(Duration::ZERO).await;
    /// assert_eq!(report.tasks()[0].outcome(), TaskOutcome::Aborted);
    /// # }
    /// ```
    #[must_use]
    pub fn outcome(&self) -> TaskOutcome {
        self.outcome
    }

    /// How long the task ran after the shutdown cancelled the scope, that
    /// is, how long its cleanup took: for a task that finished (or
    /// panicked) within the grace period. `None` for a task that had
    /// finished before, or that was aborted or detached.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await;
    ///     tokio::time::sleep(Duration::from_millis(30)).await;
    /// });
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.tasks()[0].cleanup_time(), Some(Duration::from_millis(30)));
    /// # }
    /// ```
    #[must_use]
    pub fn cleanup_time(&self) -> Option<Duration> {
        self.cleanup_time
    }
}

/// What [`Scope::shutdown_report`] says happened to each task, in spawn
/// order, with the tasks' results.
///
/// Its `Display` scales to any number of tasks: one line of counts by
/// outcome, then one line per task that needs attention (name, outcome,
/// what went wrong); tasks that completed or cleaned up are only counted:
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::{Scope, TaskOutcome};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut scope = Scope::new();
/// scope.spawn_named("worker", |token| async move {
///     token.cancelled().await;
///     7
/// });
/// scope.spawn_named("ingest", |_token| async { panic!("disk full") });
/// tokio::task::yield_now().await; // "ingest" panics
/// let report = scope.shutdown_report(Duration::from_secs(5)).await;
/// assert!(!report.is_clean());
/// assert_eq!(report.count(TaskOutcome::Stopped), 1);
/// println!("{report}"); // or `tracing::info!("{report}")`
/// assert_eq!(report.to_string(), "\
/// shutdown of 2 tasks took 0µs (grace 5.000s): 1 cleaned up (ended after the cancel), 1 panicked
///   ingest  panicked  task panicked: disk full");
/// let results = report.into_results();
/// assert_eq!(results[0].as_ref().unwrap(), &7);
/// # }
/// ```
#[derive(Debug)]
pub struct ShutdownReport<T> {
    /// Each task the scope kept, in spawn order; `results` in the same order.
    pub(crate) tasks: Vec<TaskReport>,
    pub(crate) results: Vec<Result<T, TaskError>>,
    pub(crate) grace: Duration,
    pub(crate) elapsed: Duration,
    /// Why the token was already cancelled as the shutdown began.
    pub(crate) cancelled_before: Option<CancelReason>,
    /// Why it was cancelled, with the name of the task it names.
    pub(crate) reason: Option<Described>,
    /// The tasks a reaping scope freed as they ended.
    pub(crate) reaped: Tally,
}

/// How many reaped tasks that need attention a reaping scope remembers.
const ATTENTION_LOG: usize = 32;

/// What became of the tasks a reaping scope freed as they ended: counts by
/// outcome, how many of those that stopped ran a `#[cancellable]` cleanup,
/// and the last few that need attention.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: [usize; TaskOutcome::COUNT],
    cleanup_ran: usize,
    attention: VecDeque<TaskReport>,
}

impl Tally {
    /// Counts `n` tasks that ended with `outcome`, `cleanup_ran` of which
    /// ran a `#[cancellable]` cleanup.
    pub(crate) fn count(&mut self, outcome: TaskOutcome, n: usize, cleanup_ran: usize) {
        self.counts[outcome.index()] += n;
        self.cleanup_ran += cleanup_ran;
    }

    /// Counts a task that needs attention, and keeps it in the log.
    pub(crate) fn note(&mut self, task: TaskReport) {
        self.count(task.outcome, 1, 0);
        if self.attention.len() == ATTENTION_LOG {
            self.attention.pop_front();
        }
        self.attention.push_back(task);
    }

    fn get(&self, outcome: TaskOutcome) -> usize {
        self.counts[outcome.index()]
    }
}

impl<T> ShutdownReport<T> {
    /// How many of the tasks that ended after the cancel
    /// ([`Stopped`](TaskOutcome::Stopped)) ran a
    /// `#[cancellable]` cleanup (see [`TaskReport::cleanup_ran`]).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|token| async move { token.cancelled().await });
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.cleanups_ran(), 0);
    /// # }
    /// ```
    #[must_use]
    pub fn cleanups_ran(&self) -> usize {
        self.reaped.cleanup_ran
            + self
                .tasks
                .iter()
                .filter(|t| t.cleanup_ran && t.outcome == TaskOutcome::Stopped)
                .count()
    }

    /// How many tasks the report covers: those whose results it holds, and
    /// those a reaping scope freed as they ended.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new().reaping();
    /// for _ in 0..3 {
    ///     scope.spawn(|_token| async {});
    /// }
    /// scope.join_all().await; // reaped: nothing to hand out
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.len(), 3);
    /// assert!(report.tasks().is_empty());
    /// # }
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.tasks.len() + self.reaped.counts.iter().sum::<usize>()
    }

    /// `true` when the report covers no task.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Scope::<()>::new().shutdown_report(Duration::from_secs(1)).await;
    /// assert!(report.is_empty());
    /// # }
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tasks that did not end on their own (failed, panicked, aborted,
    /// detached), in spawn order; for a reaping scope, the last
    /// few of those it freed as they ended come first.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn_named("ok", |_token| async {});
    /// scope.spawn_named("stuck", |_token| std::future::pending());
    /// let report = scope.shutdown_report(Duration::ZERO).await;
    /// let names: Vec<&str> = report.needs_attention().map(|t| t.name()).collect();
    /// assert_eq!(names, ["stuck"]);
    /// # }
    /// ```
    pub fn needs_attention(&self) -> impl Iterator<Item = &TaskReport> {
        self.reaped
            .attention
            .iter()
            .chain(self.tasks.iter().filter(|t| t.outcome.needs_attention()))
    }

    /// Each task, in spawn order: the tasks whose results the shutdown
    /// returned (not those already handed out by a join).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn_named("a", |_token| async {});
    /// scope.spawn_named("b", |_token| async {});
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// let names: Vec<_> = report.tasks().iter().map(|t| t.name()).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// # }
    /// ```
    #[must_use]
    pub fn tasks(&self) -> &[TaskReport] {
        &self.tasks
    }

    /// The tasks' results, in the order of [`tasks`](Self::tasks): what
    /// [`Scope::shutdown`] returns.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|_token| async { 1 });
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.results()[0].as_ref().unwrap(), &1);
    /// # }
    /// ```
    pub fn results(&self) -> &[Result<T, TaskError>] {
        &self.results
    }

    /// The tasks' results, in the order of [`tasks`](Self::tasks): what
    /// [`Scope::shutdown`] returns.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn(|_token| async { String::from("kept") });
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// let results = report.into_results();
    /// assert_eq!(results[0].as_ref().unwrap(), "kept");
    /// # }
    /// ```
    #[must_use]
    pub fn into_results(self) -> Vec<Result<T, TaskError>> {
        self.results
    }

    /// The tasks and their results, in the same order.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// scope.spawn_named("a", |_token| async { 1 });
    /// let (tasks, results) = scope.shutdown_report(Duration::from_secs(1)).await.into_parts();
    /// for (task, result) in tasks.iter().zip(results) {
    ///     assert_eq!((task.name(), result.unwrap()), ("a", 1));
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn into_parts(self) -> (Vec<TaskReport>, Vec<Result<T, TaskError>>) {
        (self.tasks, self.results)
    }

    /// How many tasks ended with `outcome`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::{Scope, TaskOutcome};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| std::future::pending());
    /// scope.spawn(|_token| std::future::pending());
    /// let report = scope.shutdown_report(Duration::ZERO).await;
    /// assert_eq!(report.count(TaskOutcome::Aborted), 2);
    /// # }
    /// ```
    #[must_use]
    pub fn count(&self, outcome: TaskOutcome) -> usize {
        self.reaped.get(outcome) + self.tasks.iter().filter(|t| t.outcome == outcome).count()
    }

    /// `true` when every task ended on its own: completed, or cancelled and
    /// cleaned up. `false` when one failed, was aborted or detached, or
    /// panicked (also among the tasks a reaping scope freed).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| async { panic!("boom") });
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert!(!report.is_clean());
    /// # }
    /// ```
    #[must_use]
    pub fn is_clean(&self) -> bool {
        // A reaped task that needs attention is always in the log.
        self.needs_attention().next().is_none()
    }

    /// The grace period the shutdown was given.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Scope::<()>::new().shutdown_report(Duration::from_secs(3)).await;
    /// assert_eq!(report.grace(), Duration::from_secs(3));
    /// # }
    /// ```
    #[must_use]
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// How long the shutdown took, from cancelling the token to the last
    /// task gone.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| std::future::pending());
    /// let report = scope.shutdown_report(Duration::from_secs(3)).await;
    /// assert_eq!(report.elapsed(), Duration::from_secs(3));
    /// # }
    /// ```
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// `true` when the scope's token was already cancelled as the shutdown
    /// began (by [`Scope::cancel`], a parent token, a deadline, a fail-fast
    /// or first-ok task). The scope does not know when that happened: the
    /// tasks that had finished by then count as
    /// [`Completed`](TaskOutcome::Completed), and cleanup times count from
    /// the start of the shutdown.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.cancel();
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert!(report.was_cancelled_before());
    /// # }
    /// ```
    #[must_use]
    pub fn was_cancelled_before(&self) -> bool {
        self.cancelled_before.is_some()
    }

    /// Why the scope's token was cancelled: the cause recorded before the
    /// shutdown began (see [`was_cancelled_before`](Self::was_cancelled_before)),
    /// or [`CancelReason::Shutdown`] when the shutdown cancelled it.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use std::time::Duration;
    /// # use cancel_scope::{CancelReason, Scope};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.cancel_reason(), CancelReason::Shutdown);
    /// # }
    /// ```
    #[must_use]
    pub fn cancel_reason(&self) -> CancelReason {
        self.cancelled_before.unwrap_or(CancelReason::Shutdown)
    }
}

/// Names wider than this are cut in the list.
const MAX_NAME_WIDTH: usize = 40;

/// A duration with a few significant digits: `850µs`, `12.5ms`, `3.000s`.
pub(crate) fn short_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// A name fit for one cell: control characters become spaces, and a name
/// wider than `MAX_NAME_WIDTH` is cut, ending in `…`.
fn cell(name: &str) -> Cow<'_, str> {
    if name.chars().count() <= MAX_NAME_WIDTH {
        return cell_line(name);
    }
    let mut cell: String = cell_line(name).chars().take(MAX_NAME_WIDTH - 1).collect();
    cell.push('…');
    Cow::Owned(cell)
}

/// A summary that scales to any number of tasks: one line with the counts
/// by outcome and why the scope was cancelled, then one line per task that
/// needs attention (failed, panicked, aborted, detached), with what went
/// wrong. Tasks that completed or cleaned up are only counted. "cleaned up"
/// counts the tasks that ended within the grace period, after the cancel:
/// they ran whatever cleanup they have; the line says so.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::Scope;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut scope = Scope::new();
/// for _ in 0..250 {
///     scope.spawn(|token| async move { token.cancelled().await });
/// }
/// scope.spawn_named("stuck", |_token| std::future::pending());
/// let report = scope.shutdown_report(Duration::from_secs(1)).await;
/// assert_eq!(
///     report.to_string(),
///     "\
/// shutdown of 251 tasks took 1.000s (grace 1.000s): 250 cleaned up (ended after the cancel), 1 aborted
///   stuck  aborted  task aborted (scope cancelled: shut down)",
/// );
/// # }
/// ```
impl<T> fmt::Display for ShutdownReport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_summary(f)?;
        self.write_attention(f)
    }
}

impl<T> ShutdownReport<T> {
    /// The first line: how many tasks, how long, each outcome's count.
    fn write_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.len();
        write!(
            f,
            "shutdown of {n} task{} took {} (grace {})",
            if n == 1 { "" } else { "s" },
            short_duration(self.elapsed),
            short_duration(self.grace),
        )?;
        let mut sep = ": ";
        for outcome in TaskOutcome::ALL {
            let count = self.count(outcome);
            if count > 0 {
                write!(f, "{sep}{count} {}", outcome.short_label())?;
                if outcome == TaskOutcome::Stopped {
                    let ran = self.cleanups_ran();
                    f.write_str(" (ended after the cancel")?;
                    if ran > 0 {
                        write!(f, "; {ran} ran a `#[cancellable]` cleanup")?;
                    }
                    f.write_str(")")?;
                }
                sep = ", ";
            }
        }
        if self.cancelled_before.is_some() {
            let reason = self.reason.as_ref().map(ToString::to_string);
            write!(
                f,
                "; the token was already cancelled as it began ({})",
                reason.as_deref().unwrap_or("unknown")
            )?;
        }
        Ok(())
    }

    /// A line for each task that did not end on its own.
    fn write_attention(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attention: Vec<&TaskReport> = self.needs_attention().collect();
        let cells: Vec<Cow<'_, str>> = attention.iter().map(|t| cell(&t.name)).collect();
        let name_width = cells.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        let outcome_width = attention
            .iter()
            .map(|t| t.outcome.label().len())
            .max()
            .unwrap_or(0);
        for (task, name) in attention.iter().zip(&cells) {
            write!(
                f,
                "\n  {name:<name_width$}  {:<outcome_width$}",
                task.outcome.label()
            )?;
            if let Some(t) = task.cleanup_time {
                write!(f, "  after {}", short_duration(t))?;
            }
            if let Some(e) = task.error() {
                write!(f, "  {}", cell_line(e))?;
            }
        }
        let listed = self.reaped.attention.len();
        let reaped_attention: usize = TaskOutcome::ALL
            .iter()
            .filter(|o| o.needs_attention())
            .map(|o| self.reaped.get(*o))
            .sum();
        if reaped_attention > listed {
            write!(f, "\n  (and {} more not listed)", reaped_attention - listed)?;
        }
        Ok(())
    }
}

/// An error text on one line.
fn cell_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace(char::is_control, " "))
}
