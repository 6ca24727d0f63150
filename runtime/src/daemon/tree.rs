//! The daemon's ledger of subsystems, and [`TaskTree`], a snapshot of it.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Where a subsystem is in its life, in a [`TaskTree`].
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::NodeState;
///
/// assert_eq!(NodeState::Stopping.to_string(), "cleaning up");
/// assert!(NodeState::Stopping.in_cleanup());
/// assert!(NodeState::Failed.is_final());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// Its fn (or one of its nested subsystems) is running, and nothing has
    /// asked it to stop.
    Running,
    /// Its token was cancelled (a shutdown, or a failure next to it) and it
    /// is still running: its cleanup, or its nested subsystems' cleanups.
    Stopping,
    /// It failed and waits out its backoff before it is started again.
    Restarting,
    /// It ended on its own, before anything asked it to stop.
    Finished,
    /// It was asked to stop and ended within the grace period: it cleaned up.
    Stopped,
    /// It returned an error or panicked (after its restarts, if any).
    Failed,
    /// It was still running when the shutdown was forced (grace period
    /// elapsed, or a second signal) and was aborted: its cleanup did not
    /// finish, or never began.
    Aborted,
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
    /// use cancel_scope::daemon::NodeState;
    /// assert!(NodeState::Stopped.is_final());
    /// assert!(!NodeState::Restarting.is_final());
    /// ```
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            NodeState::Finished | NodeState::Stopped | NodeState::Failed | NodeState::Aborted
        )
    }

    /// For the report's summary line.
    pub(crate) fn short_label(self) -> &'static str {
        match self {
            NodeState::Stopped => "cleaned up",
            NodeState::Failed => "failed",
            NodeState::Aborted => "aborted",
            other => other.label(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            NodeState::Running => "running",
            NodeState::Stopping => "cleaning up",
            NodeState::Restarting => "restarting",
            NodeState::Finished => "finished",
            NodeState::Stopped => "stopped, cleaned up",
            NodeState::Failed => "FAILED",
            NodeState::Aborted => "ABORTED",
        }
    }
}

/// `running`, `cleaning up`, `restarting`, `finished`, `stopped, cleaned
/// up`, `FAILED` or `ABORTED`.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// assert_eq!(cancel_scope::daemon::NodeState::Aborted.to_string(), "ABORTED");
/// ```
impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// One subsystem in the daemon's ledger.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) path: String,
    depth: usize,
    children: Vec<usize>,
    pub(crate) state: NodeState,
    /// When this run of it (the first, or the latest restart) began.
    started: Instant,
    /// When its token was cancelled.
    stop_requested: Option<Instant>,
    ended: Option<Instant>,
    restarts: u32,
    note: Option<String>,
    error: Option<String>,
    /// The failure began here, not in a nested subsystem.
    origin: bool,
}

/// The ledger: a slab of records, the root at 0; a restart removes the
/// previous run's nested subsystems, so a long-lived daemon does not grow.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    records: Mutex<Vec<Option<Record>>>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Vec<Option<Record>>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a running subsystem named `name` under `parent`; returns its id.
    pub(crate) fn add(&self, parent: Option<usize>, name: &str) -> usize {
        let mut records = self.lock();
        let (path, depth) = match parent.and_then(|p| records[p].as_ref()) {
            Some(p) => (format!("{}/{name}", p.path), p.depth + 1),
            None => (format!("/{name}"), 0),
        };
        let id = records.len();
        records.push(Some(Record {
            path,
            depth,
            children: Vec::new(),
            state: NodeState::Running,
            started: Instant::now(),
            stop_requested: None,
            ended: None,
            restarts: 0,
            note: None,
            error: None,
            origin: false,
        }));
        if let Some(Some(p)) = parent.map(|p| &mut records[p]) {
            p.children.push(id);
        }
        id
    }

    /// Forgets `id`, a subsystem that was never started.
    pub(crate) fn remove(&self, id: usize) {
        let mut records = self.lock();
        records[id] = None;
        for r in records.iter_mut().flatten() {
            r.children.retain(|&c| c != id);
        }
    }

    pub(crate) fn path(&self, id: usize) -> String {
        self.lock()[id]
            .as_ref()
            .map(|r| r.path.clone())
            .unwrap_or_default()
    }

    /// Changes the record of `id`, unless the shutdown was forced (then the
    /// ledger says what it was at that moment).
    pub(crate) fn update(&self, id: usize, f: impl FnOnce(&mut Record)) {
        if let Some(Some(record)) = self.lock().get_mut(id) {
            if record.state != NodeState::Aborted {
                f(record);
            }
        }
    }

    pub(crate) fn set_state(&self, id: usize, state: NodeState) {
        self.update(id, |r| {
            let now = Instant::now();
            match state {
                NodeState::Stopping => {
                    r.stop_requested.get_or_insert(now);
                }
                NodeState::Running => {
                    r.started = now;
                    r.stop_requested = None;
                    r.ended = None;
                }
                s if s.is_final() => r.ended = Some(now),
                _ => {}
            }
            r.state = state;
        });
    }

    pub(crate) fn note(&self, id: usize, note: String) {
        self.update(id, |r| r.note = Some(note));
    }

    /// Records why `id` failed; `origin` when the failure began there (not
    /// in a nested subsystem). A later failure of the same run replaces an
    /// earlier one only when it gives up restarting.
    pub(crate) fn fail(&self, id: usize, error: String, origin: bool) {
        self.update(id, |r| {
            r.error = Some(error);
            r.origin = origin;
        });
    }

    /// The subsystems that failed for good where the failure began: path
    /// and error, in tree order.
    pub(crate) fn failures(&self) -> Vec<(String, String)> {
        self.snapshot()
            .nodes
            .into_iter()
            .filter(|n| n.state == NodeState::Failed && n.origin)
            .map(|n| (n.path, n.error.unwrap_or_default()))
            .collect()
    }

    /// Before a restart: one more restart, and the last run's nested
    /// subsystems and error forgotten.
    pub(crate) fn restarting(&self, id: usize) {
        let mut records = self.lock();
        let mut stale = match records[id].as_mut() {
            Some(r) => {
                r.restarts += 1;
                r.state = NodeState::Restarting;
                r.error = None;
                r.origin = false;
                std::mem::take(&mut r.children)
            }
            None => return,
        };
        while let Some(child) = stale.pop() {
            if let Some(r) = records[child].take() {
                stale.extend(r.children);
            }
        }
    }

    /// The forced shutdown: everything not ended yet is aborted, now.
    pub(crate) fn abort_all(&self) -> Vec<String> {
        let now = Instant::now();
        let mut aborted = Vec::new();
        for r in self.lock().iter_mut().flatten() {
            if !r.state.is_final() {
                r.state = NodeState::Aborted;
                r.ended = Some(now);
                aborted.push(r.path.clone());
            }
        }
        aborted
    }

    /// The tree as it is now, parents before their children, children in
    /// start order.
    pub(crate) fn snapshot(&self) -> TaskTree {
        let now = Instant::now();
        let records = self.lock();
        let mut nodes = Vec::new();
        let mut stack = if records.first().is_some_and(Option::is_some) {
            vec![0]
        } else {
            vec![]
        };
        while let Some(id) = stack.pop() {
            let Some(r) = records[id].as_ref() else {
                continue;
            };
            let end = r.ended.unwrap_or(now);
            nodes.push(TreeNode {
                path: r.path.clone(),
                depth: r.depth,
                state: r.state,
                age: end.saturating_duration_since(r.started),
                cleanup: r.stop_requested.map(|s| end.saturating_duration_since(s)),
                restarts: r.restarts,
                note: r.note.clone(),
                error: r.error.clone(),
                origin: r.origin,
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
/// assert_eq!(job.state(), NodeState::Finished);
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
    /// The failure began here.
    origin: bool,
}

impl TreeNode {
    /// Its hierarchical name: `/daemon/writer/flush`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, NodeState, Subsystem}; use std::time::Duration;
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
    /// assert_eq!(w.state(), NodeState::Stopped);
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

/// `850µs`, `12.5ms`, `3.02s`.
pub(crate) fn short(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}
