//! The daemon's live tree of subsystems ([`LiveTree`]): what each one is
//! doing, why it failed, and every failure of the run; and [`TaskTree`], a
//! snapshot of it.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::report::short_duration as short;
use crate::scope::TaskHandle;
use crate::task::TaskOutcome;

/// What an abort leaves a subsystem in; nothing of it runs again.
const ABORTED: NodeState = NodeState::Ended(TaskOutcome::Aborted);

/// Where a subsystem is in its life, in a [`TaskTree`]: a live phase, or how
/// it ended, as a [`TaskOutcome`].
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::NodeState;
/// use cancel_scope::TaskOutcome;
///
/// assert_eq!(NodeState::Stopping.to_string(), "cleaning up");
/// assert!(NodeState::Stopping.in_cleanup());
/// assert!(NodeState::Ended(TaskOutcome::Failed).is_final());
/// assert_eq!(NodeState::Ended(TaskOutcome::Aborted).to_string(), "ABORTED");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// Its fn is running, and nothing has asked it to stop.
    Running,
    /// Its fn has returned; its nested subsystems still run, and it ends
    /// when they have.
    AwaitingChildren,
    /// It was asked to stop (a shutdown, its parent, a failure in it or
    /// next to it) and is still running: its cleanup, or its nested
    /// subsystems' cleanups.
    Stopping,
    /// It ended and waits out its backoff before it is started again.
    Restarting,
    /// It has ended for good: [`Completed`](TaskOutcome::Completed) on its
    /// own, [`Stopped`](TaskOutcome::Stopped) when asked to (it cleaned
    /// up), [`Failed`](TaskOutcome::Failed) (an `Err`, or a nested
    /// subsystem's failure it took on), [`Panicked`](TaskOutcome::Panicked),
    /// or [`Aborted`](TaskOutcome::Aborted) by a forced shutdown or
    /// [`NestedSubsystem::abort`](super::NestedSubsystem::abort).
    Ended(TaskOutcome),
}

impl NodeState {
    /// `true` while the subsystem runs its cleanup ([`Stopping`](Self::Stopping)).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// assert!(!cancel_scope::daemon::NodeState::Running.in_cleanup());
    /// ```
    #[must_use]
    pub fn in_cleanup(self) -> bool {
        self == NodeState::Stopping
    }

    /// `true` once the subsystem has ended for good.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::{daemon::NodeState, TaskOutcome};
    /// assert!(NodeState::Ended(TaskOutcome::Stopped).is_final());
    /// assert!(!NodeState::Restarting.is_final());
    /// ```
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, NodeState::Ended(_))
    }

    /// For the report's summary line.
    pub(crate) fn short_label(self) -> Cow<'static, str> {
        match self {
            NodeState::Ended(outcome) => outcome.short_label().into(),
            live => live.label(),
        }
    }

    /// Live phases in lower case; an outcome that needs attention in upper
    /// case, to stand out in a table.
    fn label(self) -> Cow<'static, str> {
        match self {
            NodeState::Running => "running".into(),
            NodeState::AwaitingChildren => "awaiting children".into(),
            NodeState::Stopping => "cleaning up".into(),
            NodeState::Restarting => "restarting".into(),
            NodeState::Ended(o) if o.needs_attention() => o.label().to_uppercase().into(),
            NodeState::Ended(o) => o.label().into(),
        }
    }
}

/// `running`, `awaiting children`, `cleaning up`, `restarting`, or the
/// outcome's label (`completed`, `cancelled, cleaned up`, `FAILED`,
/// `PANICKED`, `ABORTED`).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::{daemon::NodeState, TaskOutcome};
/// assert_eq!(NodeState::Ended(TaskOutcome::Completed).to_string(), "completed");
/// ```
impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.label())
    }
}

/// What a subsystem's spec says that the tree needs: how its failures
/// climb, and how its parent stops it.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub(crate) name: Cow<'static, str>,
    pub(crate) escalate: bool,
    pub(crate) restarts_on_failure: bool,
    pub(crate) detached: bool,
    pub(crate) stop_timeout: Option<Duration>,
}

/// One subsystem in the live tree.
struct Record {
    path: String,
    depth: usize,
    parent: Option<usize>,
    children: Vec<usize>,
    rules: Rules,
    state: NodeState,
    /// When this run of it (the first, or the latest restart) began.
    started: Instant,
    /// Its stop token: its task's token in its parent's scope.
    stop: Option<CancellationToken>,
    restarts: u32,
    note: Option<String>,
    run: RunRecord,
    /// Its task has returned or was dropped (an abort is done only then).
    task_gone: bool,
}

/// What a record says of the current run; a restart begins a fresh one.
#[derive(Default)]
struct RunRecord {
    /// Its token: a child of the stop token, cancelled by a failure in it.
    token: Option<CancellationToken>,
    /// When it was asked to stop (or its run was cancelled).
    stop_requested: Option<Instant>,
    ended: Option<Instant>,
    /// Its turn in its parent's shutdown order is over (logged once).
    passed: bool,
    fn_returned: bool,
    /// While it stops: cancelled when a nested subsystem is started.
    replan: Option<CancellationToken>,
    /// Its fn's task, for an abort to reach before any token does, and
    /// whether that task is inside a poll.
    body: Option<(TaskHandle, Arc<AtomicBool>)>,
    /// Its own failure, and whether it was a panic.
    error: Option<String>,
    panicked: bool,
    /// The first failure of a nested subsystem it took on.
    took_on: Option<String>,
}

/// A failure as it happened: where it began, and where it stopped climbing
/// (`None`: it reached the daemon).
struct FailureEntry {
    id: usize,
    failure: Failure,
    contained_at: Option<usize>,
    caught: bool,
}

#[derive(Default)]
struct Books {
    records: Vec<Option<Record>>,
    failures: Vec<FailureEntry>,
}

impl Books {
    fn get(&mut self, id: usize) -> Option<&mut Record> {
        self.records.get_mut(id).and_then(Option::as_mut)
    }

    /// Whether `id` is `ancestor` or below it.
    fn is_within(&self, id: usize, ancestor: usize) -> bool {
        let parent = |&i: &usize| self.records.get(i)?.as_ref()?.parent;
        std::iter::successors(Some(id), parent).any(|i| i == ancestor)
    }

    /// `id` and its descendants.
    fn subtree(&self, id: usize) -> Vec<usize> {
        (0..self.records.len())
            .filter(|&i| self.is_within(i, id))
            .collect()
    }
}

/// The daemon's subsystems, the root at 0, and the failures of the run; a
/// restart removes the previous run's nested subsystems, so a long-lived
/// daemon does not grow. `ended` ticks whenever a subsystem ends, for those
/// who wait for one.
#[derive(Default)]
pub(crate) struct LiveTree {
    books: Mutex<Books>,
    ended: watch::Sender<()>,
}

/// The daemon itself, in the tree.
pub(crate) const ROOT: usize = 0;

impl LiveTree {
    fn lock(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the record of `id`, unless it was aborted (then it says
    /// what it was at that moment).
    fn update<R>(&self, id: usize, f: impl FnOnce(&mut Record) -> R) -> Option<R> {
        let mut books = self.lock();
        let record = books.get(id)?;
        (record.state != ABORTED).then(|| f(record))
    }

    /// Adds a subsystem under `parent`, in the tree at once; returns its id.
    pub(crate) fn add(&self, parent: Option<usize>, rules: Rules) -> usize {
        let mut books = self.lock();
        let id = books.records.len();
        let (path, depth) = match parent.and_then(|p| books.get(p)) {
            Some(p) => {
                p.children.push(id);
                p.run
                    .replan
                    .take()
                    .iter()
                    .for_each(CancellationToken::cancel);
                (format!("{}/{}", p.path, rules.name), p.depth + 1)
            }
            None => (format!("/{}", rules.name), 0),
        };
        books.records.push(Some(Record {
            path,
            depth,
            parent,
            children: Vec::new(),
            rules,
            state: NodeState::Running,
            started: Instant::now(),
            stop: None,
            restarts: 0,
            note: None,
            run: RunRecord::default(),
            task_gone: false,
        }));
        id
    }

    /// The task of `id` has returned or was dropped.
    pub(crate) fn task_gone(&self, id: usize) {
        if let Some(r) = self.lock().get(id) {
            r.task_gone = true;
            // Dropped before it ended (its parent's scope aborted it).
            if !r.state.is_final() {
                (r.state, r.run.ended) = (ABORTED, Some(Instant::now()));
            }
        }
        self.ended.send_replace(());
    }

    /// Whether `id` and every subsystem below it have ended and their tasks
    /// are gone: nothing of it runs any more, after an abort too.
    pub(crate) fn is_over(&self, id: usize) -> bool {
        let mut books = self.lock();
        books.subtree(id).into_iter().all(|i| {
            books
                .get(i)
                .is_none_or(|r| r.state.is_final() && r.task_gone)
        })
    }

    /// Forgets `id`, a subsystem that was never started.
    pub(crate) fn remove(&self, id: usize) {
        let mut books = self.lock();
        books.records[id] = None;
        let records = books.records.iter_mut().flatten();
        records.for_each(|r| r.children.retain(|&c| c != id));
    }

    pub(crate) fn path(&self, id: usize) -> String {
        let mut books = self.lock();
        books.get(id).map_or_else(String::new, |r| r.path.clone())
    }

    pub(crate) fn stop_token(&self, id: usize) -> Option<CancellationToken> {
        self.lock().get(id).and_then(|r| r.stop.clone())
    }

    pub(crate) fn set_stop(&self, id: usize, stop: CancellationToken) {
        self.update(id, |r| r.stop = Some(stop));
    }

    /// A new run of `id` begins, with `run` as its token.
    pub(crate) fn begin_run(&self, id: usize, run: CancellationToken) {
        self.update(id, |r| {
            (r.state, r.started) = (NodeState::Running, Instant::now());
            r.run = RunRecord {
                token: Some(run),
                ..RunRecord::default()
            };
        });
    }

    /// Whether `id` was aborted (then nothing of it runs again).
    pub(crate) fn is_aborted(&self, id: usize) -> bool {
        self.lock().get(id).is_some_and(|r| r.state == ABORTED)
    }

    /// Cancels the token of every fn whose aborted task is stuck inside a
    /// poll (a loop that waits for its token): it is never dropped, so
    /// nothing else would. A fn's task that is dropped cancels its token
    /// itself, after its own scopes aborted their tasks.
    pub(crate) fn cancel_stuck(&self) {
        let books = self.lock();
        for r in books.records.iter().flatten() {
            if let Some((body, polling)) = &r.run.body {
                if polling.load(Ordering::Acquire) && !body.is_finished() {
                    r.run.token.iter().for_each(CancellationToken::cancel);
                }
            }
        }
    }

    /// `body` is the task of `id`'s fn, in this run (`polling`: whether it
    /// is inside a poll); aborted at once if `id` was aborted before its
    /// fn's task was known.
    pub(crate) fn set_body(&self, id: usize, body: TaskHandle, polling: Arc<AtomicBool>) {
        let mut books = self.lock();
        match books.get(id) {
            Some(r) if r.state != ABORTED => {
                r.run.body = Some((body, polling));
            }
            _ => body.abort(),
        }
    }

    /// `id`'s run is stopping; `replan` is cancelled when a nested
    /// subsystem is started meanwhile, to give it its turn.
    pub(crate) fn stopping(&self, id: usize, replan: CancellationToken) {
        self.update(id, |r| {
            r.run.stop_requested.get_or_insert_with(Instant::now);
            (r.state, r.run.replan) = (NodeState::Stopping, Some(replan));
        });
    }

    /// Asks `id` to stop (its stop token); returns when it was first asked.
    pub(crate) fn request_stop(&self, id: usize) -> Option<Instant> {
        self.update(id, |r| {
            if let Some(stop) = &r.stop {
                stop.cancel();
            }
            *r.run.stop_requested.get_or_insert_with(Instant::now)
        })
    }

    /// `id`'s fn has returned; it is `awaiting` its children, unless it
    /// is stopping.
    pub(crate) fn fn_returned(&self, id: usize, awaiting: bool) {
        self.update(id, |r| {
            r.run.fn_returned = true;
            if awaiting && r.state == NodeState::Running {
                r.state = NodeState::AwaitingChildren;
            }
        });
    }

    /// The daemon is stopping: stops each detached subsystem whose parent's
    /// fn has returned, as nobody is left to stop it.
    pub(crate) fn stop_orphans(&self) {
        let mut books = self.lock();
        let now = Instant::now();
        let done = |r: &Option<Record>| r.as_ref().is_some_and(|r| r.run.fn_returned);
        let parents_done: Vec<bool> = books.records.iter().map(done).collect();
        for r in books.records.iter_mut().flatten() {
            let orphan = r.rules.detached && r.parent.is_some_and(|p| parents_done[p]);
            if orphan && !r.state.is_final() {
                r.run.stop_requested.get_or_insert(now);
                r.stop.iter().for_each(CancellationToken::cancel);
            }
        }
    }

    /// `true` the first time it is called for `id`: its turn to stop is over.
    pub(crate) fn pass(&self, id: usize) -> bool {
        self.update(id, |r| !std::mem::replace(&mut r.run.passed, true)) == Some(true)
    }

    pub(crate) fn note(&self, id: usize, note: String) {
        self.update(id, |r| r.note = Some(note));
    }

    /// The nested subsystems of `id` that have not ended, in start order.
    pub(crate) fn live_children(&self, id: usize) -> Vec<(usize, Rules)> {
        let books = self.lock();
        let records = books.records.iter().enumerate();
        let live = records.filter_map(|(i, r)| Some((i, r.as_ref()?)));
        live.filter(|(_, r)| r.parent == Some(id) && !r.state.is_final())
            .map(|(i, r)| (i, r.rules.clone()))
            .collect()
    }

    /// Waits until `done` says so of the tree, checked each time a
    /// subsystem ends.
    pub(crate) async fn wait_until(&self, done: impl Fn(&LiveTree) -> bool) {
        let mut ended = self.ended.subscribe();
        while !done(self) {
            if ended.changed().await.is_err() {
                return;
            }
        }
    }

    /// Records that `id` failed with `error`, then climbs: each subsystem
    /// on the way stops its run, and the parent of one that escalates takes
    /// the failure on, until one contains it (it restarts on failure, the
    /// daemon is not `stopping`, and `id` is not `giving_up` restarting) or
    /// does not escalate. Returns `true` when it reached the daemon.
    pub(crate) fn fail(
        &self,
        id: usize,
        error: &str,
        panicked: bool,
        stopping: bool,
        giving_up: bool,
    ) -> bool {
        let mut books = self.lock();
        let Some(r) = books.get(id) else { return false };
        if r.state == ABORTED {
            return false;
        }
        (r.run.error, r.run.panicked) = (Some(error.to_owned()), panicked);
        let failure = Failure {
            name: r.path.clone(),
            error: error.to_owned(),
        };
        if giving_up {
            // Its last run's failure, kept for a restart that is not coming.
            books.failures.retain(|f| f.contained_at != Some(id));
        }
        let took_on = failure.to_string();
        let (mut at, mut contained_at) = (id, None);
        while let Some(r) = books.get(at) {
            if let Some(run) = &r.run.token {
                run.cancel();
            }
            let restarts = r.rules.restarts_on_failure && !stopping;
            if (restarts && !(at == id && giving_up)) || !r.rules.escalate {
                contained_at = Some(at);
                break;
            }
            let Some(parent) = r.parent else { break };
            if let Some(p) = books.get(parent) {
                p.run.took_on.get_or_insert_with(|| took_on.clone());
            }
            at = parent;
        }
        books.failures.push(FailureEntry {
            id,
            failure,
            contained_at,
            caught: false,
        });
        contained_at.is_none()
    }

    /// The error text of `id`'s run: its own failure, or the one it took on.
    pub(crate) fn run_failure(&self, id: usize) -> Option<String> {
        let mut books = self.lock();
        let r = books.get(id)?;
        r.run.error.clone().or_else(|| r.run.took_on.clone())
    }

    /// Before a restart: one more restart; the last run's nested
    /// subsystems, errors, and the failures it contained forgotten.
    pub(crate) fn restarting(&self, id: usize) {
        let mut books = self.lock();
        let Some(r) = books.get(id) else { return };
        r.restarts += 1;
        (r.state, r.run) = (NodeState::Restarting, RunRecord::default());
        r.children.clear();
        let mut gone = books.subtree(id);
        gone.retain(|&c| c != id);
        books
            .failures
            .retain(|f| f.contained_at != Some(id) && !gone.contains(&f.id));
        for c in gone {
            books.records[c] = None;
        }
    }

    /// `id` has ended for good; `stopped` when it was asked to stop.
    pub(crate) fn end(&self, id: usize, stopped: bool) {
        self.update(id, |r| {
            let failed = r.run.error.is_some() || r.run.took_on.is_some();
            r.state = NodeState::Ended(match (r.run.panicked, failed, stopped) {
                (true, ..) => TaskOutcome::Panicked,
                (_, true, _) => TaskOutcome::Failed,
                (.., true) => TaskOutcome::Stopped,
                _ => TaskOutcome::Completed,
            });
            r.run.ended = Some(Instant::now());
        });
        self.ended.send_replace(());
    }

    /// Aborts `id` and what runs below it (all when `id` is the root): each
    /// is `Aborted`, and its record says what it was then. Returns their
    /// names.
    pub(crate) fn abort(&self, id: usize) -> Vec<String> {
        let now = Instant::now();
        let mut aborted = Vec::new();
        let mut books = self.lock();
        let subtree = books.subtree(id);
        // Every fn's task first, before the tasks above them are dropped:
        // an aborted fn is not polled again, so nothing wakes it into a
        // graceful stop that the abort would cut.
        for &i in &subtree {
            if let Some((body, _)) = books.get(i).and_then(|r| r.run.body.as_ref()) {
                body.abort();
            }
        }
        for i in subtree {
            if let Some(r) = books.get(i).filter(|r| !r.state.is_final()) {
                (r.state, r.run.ended) = (ABORTED, Some(now));
                aborted.push(r.path.clone());
            }
        }
        self.ended.send_replace(());
        aborted
    }

    /// The failures that began at `id` or below it, for its parent's
    /// `join`; those that did not climb past `id` are caught by it now.
    pub(crate) fn catch(&self, id: usize) -> Vec<Failure> {
        let mut books = self.lock();
        let mut failures = std::mem::take(&mut books.failures);
        let mut caught = Vec::new();
        for f in &mut failures {
            if books.is_within(f.id, id) {
                f.caught |= f.contained_at.is_some_and(|at| books.is_within(at, id));
                caught.push(f.failure.clone());
            }
        }
        books.failures = failures;
        caught
    }

    /// The failures of the run nobody caught, in the order they happened.
    pub(crate) fn failures(&self) -> Vec<Failure> {
        let books = self.lock();
        let uncaught = books.failures.iter().filter(|f| !f.caught);
        uncaught.map(|f| f.failure.clone()).collect()
    }

    /// The tree as it is now, parents before their children, children in
    /// start order.
    pub(crate) fn snapshot(&self) -> TaskTree {
        let now = Instant::now();
        let books = self.lock();
        let mut nodes = Vec::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            let Some(r) = books.records.get(id).and_then(Option::as_ref) else {
                continue;
            };
            let end = r.run.ended.unwrap_or(now);
            nodes.push(TreeNode {
                path: r.path.clone(),
                depth: r.depth,
                state: r.state,
                age: end.saturating_duration_since(r.started),
                cleanup: r
                    .run
                    .stop_requested
                    .map(|s| end.saturating_duration_since(s)),
                restarts: r.restarts,
                note: r.note.clone(),
                error: r.run.error.clone().or_else(|| r.run.took_on.clone()),
            });
            stack.extend(r.children.iter().rev());
        }
        TaskTree { nodes }
    }
}

/// One subsystem in a [`TaskTree`]: its hierarchical name, state, age,
/// and what it said.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, NodeState, Subsystem};
/// use cancel_scope::TaskOutcome;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let report = Daemon::new("app")
///     .quiet()
///     .run(|app| async move {
///         app.start(Subsystem::new("job", |job| async move {
///             job.note("did 3 things");
///         }));
///     })
///     .await;
/// let job = report.tree().get("/app/job").unwrap();
/// assert_eq!(job.name(), "/app/job");
/// assert_eq!(job.state(), NodeState::Ended(TaskOutcome::Completed));
/// assert_eq!(job.note(), Some("did 3 things"));
/// assert_eq!((job.depth(), job.restarts(), job.error()), (1, 0, None));
/// assert!(job.cleanup_time().is_none() && !job.in_cleanup());
/// # let _ = job.age();
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    path: String,
    depth: usize,
    state: NodeState,
    age: Duration,
    cleanup: Option<Duration>,
    restarts: u32,
    note: Option<String>,
    error: Option<String>,
}

impl TreeNode {
    /// Its hierarchical name: `/daemon/writer/flush`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.name(), "/d/w");
    /// # }
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.path
    }

    /// How deep it is: 0 for the daemon itself.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.depth(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Where it is in its life.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.state(), NodeState::Ended(TaskOutcome::Stopped));
    /// # }
    /// ```
    #[must_use]
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// `true` while it runs its cleanup.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert!(!w.in_cleanup()); // done by now
    /// # }
    /// ```
    #[must_use]
    pub fn in_cleanup(&self) -> bool {
        self.state.in_cleanup()
    }

    /// How long it has run (since its latest restart), or ran, if it ended.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.age(), Duration::from_secs(3));
    /// # }
    /// ```
    #[must_use]
    pub fn age(&self) -> Duration {
        self.age
    }

    /// How long it has been (or was) cleaning up: from its token's
    /// cancellation to now, or to its end. `None` if it was never asked to
    /// stop.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.cleanup_time(), Some(Duration::from_secs(1)));
    /// # }
    /// ```
    #[must_use]
    pub fn cleanup_time(&self) -> Option<Duration> {
        self.cleanup
    }

    /// How many times it was restarted.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.restarts(), 0);
    /// # }
    /// ```
    #[must_use]
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// What it last said with [`SubsystemHandle::note`](super::SubsystemHandle::note):
    /// what its cleanup did, say.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.note(), Some("flushed"));
    /// # }
    /// ```
    #[must_use]
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Why it failed: its error or panic, or the nested subsystem whose
    /// failure it took on.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
    /// # use cancel_scope::TaskOutcome;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |w| async move {
    ///         w.token().cancelled().await;
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         w.note("flushed");
    ///     }));
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     d.request_shutdown();
    /// }).await;
    /// let w = report.tree().get("/d/w").unwrap();
    /// assert_eq!(w.error(), None);
    /// # }
    /// ```
    #[must_use]
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// A snapshot of a daemon's subsystems: [`SubsystemHandle::tree`] while it
/// runs (on SIGUSR1, say), [`DaemonReport::tree`] after.
///
/// Its `Display` is one line a subsystem, indented by depth:
///
/// ```text
/// /daemon                running        3.02s
///   /daemon/ingest       cleaning up    3.02s  cleanup 1.2ms
///   /daemon/writer       running        3.01s                 wrote 4096 records
/// ```
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, NodeState, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// Daemon::new("app")
///     .quiet()
///     .run(|app| async move {
///         app.start(Subsystem::new("worker", |w| async move {
///             w.token().cancelled().await; // stays until the shutdown
///         }));
///         tokio::task::yield_now().await;
///         let tree = app.tree();
///         println!("{tree}");
///         assert_eq!(tree.get("/app/worker").unwrap().state(), NodeState::Running);
///         assert_eq!(tree.nodes().len(), 2);
///         app.request_shutdown();
///     })
///     .await;
/// # }
/// ```
///
/// [`SubsystemHandle::tree`]: super::SubsystemHandle::tree
/// [`DaemonReport::tree`]: super::DaemonReport::tree
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskTree {
    nodes: Vec<TreeNode>,
}

impl TaskTree {
    /// Every subsystem, parents before their children, children in start
    /// order.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |_| async {}));
    /// }).await;
    /// let names: Vec<_> = report.tree().nodes().iter().map(|n| n.name()).collect();
    /// assert_eq!(names, ["/d", "/d/w"]);
    /// # }
    /// ```
    #[must_use]
    pub fn nodes(&self) -> &[TreeNode] {
        &self.nodes
    }

    /// The subsystem with this hierarchical name.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     d.start(Subsystem::new("w", |_| async {}));
    /// }).await;
    /// assert!(report.tree().get("/d/w").is_some());
    /// assert!(report.tree().get("w").is_none());
    /// # }
    /// ```
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&TreeNode> {
        self.nodes.iter().find(|n| n.path == name)
    }
}

impl fmt::Display for TaskTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .nodes
            .iter()
            .map(|n| n.depth * 2 + n.path.chars().count())
            .max()
            .unwrap_or(0);
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let name = format!("{:indent$}{}", "", n.path, indent = n.depth * 2);
            write!(f, "{name:<width$}  {:<19}  {:>8}", n.state, short(n.age))?;
            match n.cleanup {
                Some(c) => write!(f, "  cleanup {:>8}", short(c))?,
                None => write!(f, "  {:16}", "")?,
            }
            if n.restarts > 0 {
                write!(f, "  restarts {}", n.restarts)?;
            }
            if let Some(note) = &n.note {
                write!(f, "  {note}")?;
            }
            if let Some(error) = &n.error {
                write!(f, "  error: {error}")?;
            }
        }
        Ok(())
    }
}
