//! [`ShutdownReport`]: what [`Scope::shutdown_report`] says happened to each
//! task of a scope in a shutdown, for the logs.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::CancelReason;
#[cfg(doc)]
use crate::Scope;
use crate::scope::{TaskError, TaskId};

/// How a task of a [`Scope`] ended in a shutdown, in a [`ShutdownReport`].
///
/// ```
/// use std::time::Duration;
/// use cancel_scope_runtime::{Scope, TaskOutcome};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// scope.spawn(|token| async move { token.cancelled().await });
/// let report = scope.shutdown_report(Duration::from_secs(5)).await;
/// assert_eq!(report.tasks()[0].outcome(), TaskOutcome::CancelledCleanedUp);
/// assert_eq!(TaskOutcome::CancelledCleanedUp.to_string(), "cancelled, cleaned up");
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskOutcome {
    /// The task had finished before the shutdown cancelled the scope: it did
    /// not need the grace period.
    Completed,
    /// The task finished within the grace period, after the shutdown
    /// cancelled the scope: it saw its token cancelled and ran its cleanup.
    CancelledCleanedUp,
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
}

impl TaskOutcome {
    /// The label in the report's table.
    fn label(self) -> &'static str {
        match self {
            TaskOutcome::Completed => "completed",
            TaskOutcome::CancelledCleanedUp => "cancelled, cleaned up",
            TaskOutcome::Aborted => "aborted",
            TaskOutcome::Panicked => "panicked",
            TaskOutcome::Detached => "detached",
        }
    }

    /// The label in the report's summary line.
    fn short_label(self) -> &'static str {
        match self {
            TaskOutcome::CancelledCleanedUp => "cleaned up",
            other => other.label(),
        }
    }

    const ALL: [TaskOutcome; 5] = [
        TaskOutcome::Completed,
        TaskOutcome::CancelledCleanedUp,
        TaskOutcome::Aborted,
        TaskOutcome::Panicked,
        TaskOutcome::Detached,
    ];

    /// The widest label.
    const WIDTH: usize = 21;
}

/// `completed`, `cancelled, cleaned up`, `aborted`, `panicked` or
/// `detached`.
///
/// ```
/// assert_eq!(cancel_scope_runtime::TaskOutcome::Aborted.to_string(), "aborted");
/// ```
impl fmt::Display for TaskOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// One task in a [`ShutdownReport`]: its id, its name, how it ended, and
/// how long its cleanup took.
///
/// ```
/// use std::time::Duration;
/// use cancel_scope_runtime::{Scope, TaskOutcome};
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
/// assert_eq!(task.outcome(), TaskOutcome::CancelledCleanedUp);
/// assert_eq!(task.cleanup_time(), Some(Duration::from_secs(2)));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskReport {
    id: TaskId,
    name: Cow<'static, str>,
    outcome: TaskOutcome,
    cleanup_time: Option<Duration>,
}

impl TaskReport {
    pub(crate) fn new(
        id: TaskId,
        name: Cow<'static, str>,
        outcome: TaskOutcome,
        cleanup_time: Option<Duration>,
    ) -> Self {
        TaskReport {
            id,
            name,
            outcome,
            cleanup_time,
        }
    }

    /// The task's id, as [`Scope::spawn`] returned it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::{Scope, TaskOutcome};
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
/// Its `Display` is a fixed-width table, one task a line (name, outcome,
/// cleanup time, and a panic's message), and a summary line:
///
/// ```text
/// TASK     OUTCOME                  CLEANUP
/// ingest   cancelled, cleaned up      3.2ms
/// writer   cancelled, cleaned up    250.0ms
/// task #2  panicked                   120µs  task panicked: disk full
/// metrics  aborted                        -
/// shutdown of 4 tasks took 5.000s (grace 5.000s): 2 cleaned up, 1 aborted, 1 panicked
/// ```
///
/// ```
/// use std::time::Duration;
/// use cancel_scope_runtime::{Scope, TaskOutcome};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// scope.spawn_named("worker", |token| async move {
///     token.cancelled().await;
///     7
/// });
/// let report = scope.shutdown_report(Duration::from_secs(5)).await;
/// assert!(report.is_clean());
/// assert_eq!(report.count(TaskOutcome::CancelledCleanedUp), 1);
/// println!("{report}"); // or `tracing::info!("{report}")`
/// let values: Vec<u32> = report.into_results().into_iter().map(Result::unwrap).collect();
/// assert_eq!(values, [7]);
/// # }
/// ```
#[derive(Debug)]
pub struct ShutdownReport<T> {
    tasks: Vec<TaskReport>,
    results: Vec<Result<T, TaskError>>,
    grace: Duration,
    elapsed: Duration,
    /// Why the token was already cancelled as the shutdown began.
    cancelled_before: Option<CancelReason>,
}

impl<T> ShutdownReport<T> {
    pub(crate) fn new(
        tasks: Vec<TaskReport>,
        results: Vec<Result<T, TaskError>>,
        grace: Duration,
        elapsed: Duration,
        cancelled_before: Option<CancelReason>,
    ) -> Self {
        debug_assert_eq!(tasks.len(), results.len());
        ShutdownReport {
            tasks,
            results,
            grace,
            elapsed,
            cancelled_before,
        }
    }

    /// Each task, in spawn order: the tasks whose results the shutdown
    /// returned (not those already handed out by a join).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::{Scope, TaskOutcome};
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
        self.tasks.iter().filter(|t| t.outcome == outcome).count()
    }

    /// `true` when every task ended on its own: completed, or cancelled and
    /// cleaned up. `false` when one was aborted, detached, or panicked.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawn(|_token| async { panic!("boom") });
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert!(!report.is_clean());
    /// # }
    /// ```
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.tasks.iter().all(|t| {
            matches!(
                t.outcome,
                TaskOutcome::Completed | TaskOutcome::CancelledCleanedUp
            )
        })
    }

    /// The grace period the shutdown was given.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::Scope;
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
    /// # use std::time::Duration;
    /// # use cancel_scope_runtime::{CancelReason, Scope};
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

/// Names wider than this are cut in the table.
const MAX_NAME_WIDTH: usize = 40;

/// A duration with a few significant digits: `850µs`, `12.5ms`, `3.000s`.
fn short_duration(d: Duration) -> String {
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
    let fits = name.chars().count() <= MAX_NAME_WIDTH;
    if fits && !name.chars().any(char::is_control) {
        return Cow::Borrowed(name);
    }
    let mut cell: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(if fits {
            MAX_NAME_WIDTH
        } else {
            MAX_NAME_WIDTH - 1
        })
        .collect();
    if !fits {
        cell.push('…');
    }
    Cow::Owned(cell)
}

/// A fixed-width table, one task a line, then a summary line:
///
/// ```
/// use std::time::Duration;
/// use cancel_scope_runtime::Scope;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut scope = Scope::new();
/// scope.spawn_named("writer", |token| async move {
///     token.cancelled().await;
///     tokio::time::sleep(Duration::from_millis(250)).await;
/// });
/// scope.spawn(|_token| std::future::pending());
/// let report = scope.shutdown_report(Duration::from_secs(1)).await;
/// assert_eq!(
///     report.to_string(),
///     "\
/// TASK     OUTCOME                  CLEANUP
/// writer   cancelled, cleaned up    250.0ms
/// task #1  aborted                        -
/// shutdown of 2 tasks took 1.000s (grace 1.000s): 1 cleaned up, 1 aborted",
/// );
/// # }
/// ```
impl<T> fmt::Display for ShutdownReport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells: Vec<Cow<'_, str>> = self.tasks.iter().map(|t| cell(&t.name)).collect();
        let name_width = cells
            .iter()
            .map(|c| c.chars().count())
            .chain([4])
            .max()
            .unwrap_or(4);
        let outcome_width = TaskOutcome::WIDTH;
        writeln!(
            f,
            "{:<name_width$}  {:<outcome_width$}  {:>9}",
            "TASK", "OUTCOME", "CLEANUP"
        )?;
        for ((task, name), result) in self.tasks.iter().zip(&cells).zip(&self.results) {
            let cleanup = task
                .cleanup_time
                .map_or_else(|| "-".to_owned(), short_duration);
            write!(
                f,
                "{name:<name_width$}  {:<outcome_width$}  {cleanup:>9}",
                task.outcome.label()
            )?;
            if let Err(e) = result {
                if e.is_panic() {
                    write!(f, "  {e}")?;
                }
            }
            writeln!(f)?;
        }
        let n = self.tasks.len();
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
                sep = ", ";
            }
        }
        if let Some(reason) = self.cancelled_before {
            write!(
                f,
                "; the token was already cancelled as it began ({reason})"
            )?;
        }
        Ok(())
    }
}
