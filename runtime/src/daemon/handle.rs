//! [`SubsystemHandle`], what a subsystem's fn is given, and
//! [`NestedSubsystem`], what starting a nested subsystem returns.

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::tree::{LiveTree, TaskTree};
use super::{Failure, Shared, StopReason};
use crate::scope::{Spawner, TaskHandle};

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
#[derive(Clone)]
pub struct SubsystemHandle {
    pub(crate) token: CancellationToken,
    pub(crate) id: usize,
    pub(crate) name: Arc<str>,
    pub(crate) shared: Arc<Shared>,
    /// Spawns into this run's scope: its nested subsystems are its tasks.
    pub(crate) spawner: Spawner<()>,
}

impl fmt::Debug for SubsystemHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubsystemHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SubsystemHandle {
    /// What the daemon's subsystems share (for readiness).
    pub(super) fn daemon(&self) -> &Arc<Shared> {
        &self.shared
    }

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

    /// Waits until every nested subsystem this one has started (and those
    /// they start meanwhile) has ended: stopped, finished, or failed.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::{Daemon, Subsystem};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move {
    ///     for n in 0..3 {
    ///         d.start(Subsystem::new(format!("job-{n}"), |_| async {}));
    ///     }
    ///     d.wait_for_children().await;
    ///     d.note("all 3 jobs done");
    /// }).await;
    /// assert_eq!(report.tree().get("/d").unwrap().note(), Some("all 3 jobs done"));
    /// # }
    /// ```
    pub async fn wait_for_children(&self) {
        let id = self.id;
        let no_children = |tree: &LiveTree| tree.live_children(id).is_empty();
        self.shared.tree.wait_until(no_children).await;
    }

    /// `true` as soon as the daemon's shutdown has begun (a
    /// [`request_shutdown`](Self::request_shutdown), a signal, a failure
    /// that reached the daemon), in every subsystem, while the shutdown
    /// order may keep this one's own [`token`](Self::token) uncancelled
    /// until its turn.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// Daemon::new("d").quiet().run(|d| async move {
    ///     assert!(!d.is_shutdown_requested());
    ///     d.request_shutdown();
    ///     assert!(d.is_shutdown_requested());
    /// }).await;
    /// # }
    /// ```
    #[must_use]
    pub fn is_shutdown_requested(&self) -> bool {
        self.shared.is_stopping()
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
        self.shared.tree.note(self.id, note.into());
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
        self.shared.tree.snapshot()
    }
}

/// A nested subsystem, as [`SubsystemHandle::start`] returns it: to stop it
/// (and its subtree) while the rest runs on, to abort it, to wait for it
/// and catch its failures, or to ask whether it ended. Dropping it does
/// nothing: the subsystem stays its parent's, stopped and joined with it.
///
/// [`join`](Self::join) returns the failures that began in the subsystem or
/// below it. Those that did not climb past it (it was started with
/// [`escalate(false)`](super::Subsystem::escalate)) are then caught: they stay in
/// the tree and the report's table, but no longer fail the daemon or its
/// exit code.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let report = Daemon::new("d")
///     .quiet()
///     .run(|d| async move {
///         let cache = d.start(Subsystem::new("cache", |c| async move {
///             c.token().cancelled().await;
///             Err::<(), _>("lost 3 entries")
///         }).escalate(false));
///         cache.stop(); // the cache only: the daemon runs on
///         let failures = cache.join().await.unwrap_err();
///         assert_eq!(failures[0].to_string(), "/d/cache failed: lost 3 entries");
///         assert!(cache.is_finished() && !d.is_shutdown_requested());
///     })
///     .await;
/// assert!(report.is_clean()); // caught by its parent
/// # }
/// ```
pub struct NestedSubsystem {
    pub(crate) id: usize,
    pub(crate) task: Option<TaskHandle>,
    pub(crate) shared: Arc<Shared>,
}

impl NestedSubsystem {
    /// Stops it gracefully, with its nested subsystems in its order, while
    /// the rest of the daemon runs on: its token is cancelled.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let parent = Subsystem::new("parent", |p| async move {
    ///     let child = p.start(Subsystem::new("child", |c| async move { c.token().cancelled().await }));
    ///     child.stop();
    ///     child.join().await.map_err(|failures| failures[0].to_string())
    /// });
    /// # drop(parent);
    /// ```
    pub fn stop(&self) {
        self.shared.tree.request_stop(self.id);
        self.task.iter().for_each(TaskHandle::cancel);
    }

    /// Aborts it and its subtree at once: no cleanup runs; the tree says
    /// `ABORTED`. It is not a failure.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let parent = Subsystem::new("parent", |p| async move {
    ///     let stuck = p.start(Subsystem::new("stuck", |_| std::future::pending::<()>()));
    ///     stuck.abort();
    ///     stuck.join().await.map_err(|failures| failures[0].to_string())
    /// });
    /// # drop(parent);
    /// ```
    pub fn abort(&self) {
        // Every fn's task below first, before the runner's scope cancels
        // their tokens as it drops; a runner that sees its fn's task end
        // meanwhile does not restart it (it is aborted).
        self.shared.tree.abort(self.id);
        self.task.iter().for_each(TaskHandle::abort);
    }

    /// Waits until it has ended, with its nested subsystems, and returns
    /// the failures that began there, in the order they happened; those
    /// that stopped climbing at it or below are now caught (see
    /// [`NestedSubsystem`]).
    ///
    /// # Errors
    /// The failures, when there were any.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits; a later call returns the same failures.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let parent = Subsystem::new("parent", |p| async move {
    ///     let job = p.start(Subsystem::new("job", |_| async { Err("bad input") }).escalate(false));
    ///     if let Err(failures) = job.join().await {
    ///         p.note(format!("job: {}", failures[0].error()));
    ///     }
    /// });
    /// # drop(parent);
    /// ```
    pub async fn join(&self) -> Result<(), Vec<Failure>> {
        let id = self.id;
        self.shared.tree.wait_until(|tree| tree.is_over(id)).await;
        let failures = self.shared.tree.catch(self.id);
        failures.is_empty().then_some(()).ok_or(failures)
    }

    /// `true` once it has ended with all its nested subsystems: not while
    /// its fn has returned and its children still run.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let parent = Subsystem::new("parent", |p| async move {
    ///     let job = p.start(Subsystem::new("job", |_| async {}));
    ///     assert!(!job.is_finished());
    ///     job.join().await.unwrap();
    ///     assert!(job.is_finished());
    /// });
    /// # drop(parent);
    /// ```
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.shared.tree.is_over(self.id)
    }
}

/// Shows its path.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// # use cancel_scope::daemon::{Daemon, Subsystem};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// Daemon::new("d").quiet().run(|d| async move {
///     let w = d.start(Subsystem::new("w", |_| async {}));
///     assert_eq!(format!("{w:?}"), "NestedSubsystem { name: \"/d/w\", .. }");
/// }).await;
/// # }
/// ```
impl fmt::Debug for NestedSubsystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NestedSubsystem")
            .field("name", &self.shared.tree.path(self.id))
            .finish_non_exhaustive()
    }
}
