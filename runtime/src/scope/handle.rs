//! Acting on a scope's tasks from elsewhere: [`TaskHandle`] (one task),
//! [`Spawner`] (spawning from other tasks) and [`SpawnPermit`] (a place
//! under the limit, from [`Scope::reserve`]).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Weak};

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use super::Scope;
use super::state::{
    Admission, OwnerSpawns, Phase, ScopeState, TaskControl, UNTRACKED, spawn_into, take_permit,
};
use crate::id::TaskId;
use crate::ledger::TaskKey;
#[cfg(doc)]
use crate::task::TaskError;

/// One task of a [`Scope`], to cancel or abort it on its own (a stuck
/// connection), or to ask whether it ended. Returned by
/// [`Scope::spawn_when_ready`], [`SpawnPermit::spawn`] and
/// [`Spawner::spawn`]. It does not own the task: dropping it does nothing,
/// and the task stays the scope's (joined, shut down, reported with it).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// let stuck = scope.spawn_when_ready(|_token| std::future::pending::<u32>()).await;
/// let polite = scope.spawn_when_ready(|token| async move {
///     token.cancelled().await;
///     7
/// }).await;
/// polite.cancel(); // its own token only: the scope and siblings go on
/// stuck.abort(); // no cleanup: dropped at once
/// let results = scope.join_all().await;
/// assert!(results[0].as_ref().unwrap_err().is_aborted());
/// assert_eq!(results[1].as_ref().unwrap(), &7);
/// assert!(stuck.is_finished() && !scope.token().is_cancelled());
/// # }
/// ```
pub struct TaskHandle {
    key: TaskKey,
    token: CancellationToken,
    abort: Option<AbortHandle>,
    control: Weak<dyn TaskControl>,
    name: Option<Cow<'static, str>>,
}

impl TaskHandle {
    /// The task's id, as [`Scope::join_next_with_id`] and the reports
    /// show it.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// let task = scope.spawn_when_ready(|_token| async { 1 }).await;
    /// let (id, _) = scope.join_next_with_id().await.unwrap();
    /// assert_eq!(id, task.id());
    /// # }
    /// ```
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.key.id()
    }

    /// The task's name, if it was spawned with one.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let scope = Scope::new();
    /// let task = scope.spawner().spawn_named("db", |_token| async {}).unwrap();
    /// assert_eq!(task.name(), Some("db"));
    /// # let _ = scope;
    /// # }
    /// ```
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Cancels the task's own token (a child of the scope's): the task sees
    /// it and runs its cleanup; the scope and the other tasks go on.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// let task = scope.spawn_when_ready(|token| async move { token.cancelled().await; "bye" }).await;
    /// task.cancel();
    /// assert_eq!(scope.join_next().await.unwrap().unwrap(), "bye");
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Aborts the task, like [`AbortHandle::abort`]: its future is dropped
    /// at once (as soon as it is not being polled), no cleanup runs, and its
    /// result is a [`TaskError`] with [`is_aborted`](TaskError::is_aborted).
    /// A task still queued on the limit never starts. A blocking closure
    /// that already runs cannot be aborted. Does nothing once it ended.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// let task = scope.spawn_when_ready(|_token| std::future::pending()).await;
    /// task.abort();
    /// assert!(scope.join_next().await.unwrap().unwrap_err().is_aborted());
    /// # }
    /// ```
    pub fn abort(&self) {
        if let Some(control) = self.control.upgrade() {
            control.abort(self.key);
        }
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }

    /// `true` once the task has ended (or its scope is gone).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::Scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// let task = scope.spawn_when_ready(|_token| async {}).await;
    /// scope.join_all().await;
    /// assert!(task.is_finished());
    /// # }
    /// ```
    #[must_use]
    pub fn is_finished(&self) -> bool {
        if self.key.slot == UNTRACKED {
            return self.abort.as_ref().is_none_or(AbortHandle::is_finished);
        }
        self.control
            .upgrade()
            .is_none_or(|control| control.is_finished(self.key))
    }
}

/// Shows the task's id and name.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// # use cancel_scope::Scope;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// let task = scope.spawn_when_ready(|_token| async {}).await;
/// assert_eq!(format!("{task:?}"), "TaskHandle { id: TaskId(0), name: None, .. }");
/// # }
/// ```
impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Spawns into a [`Scope`] from other tasks: `Clone + Send + Sync`, and
/// `spawn` takes `&self` (made by [`Scope::spawner`]). Its tasks are the
/// scope's like any other: they get a child token of the scope's token,
/// count toward its limit (queueing when it is reached), and are joined,
/// shut down, reported, and aborted with the scope.
///
/// No task outlives the scope: once the scope's
/// [`shutdown`](Scope::shutdown) has begun, or the scope was dropped, a
/// spawn is refused: it returns `None` and `f` is not called (or, for a
/// spawn the shutdown overtook while it ran, `f`'s future is dropped
/// unpolled). While the scope is merely cancelled, a spawn is accepted, and
/// the task starts with its token cancelled.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// let spawner = scope.spawner();
/// let again = spawner.clone();
/// std::thread::spawn(move || assert!(spawner.is_open())).join().unwrap();
/// scope.shutdown(Duration::from_secs(1)).await;
/// assert!(again.spawn(|_token| async { 1 }).is_none()); // refused
/// # }
/// ```
pub struct Spawner<T> {
    pub(super) state: Arc<ScopeState<T>>,
}

impl<T> Clone for Spawner<T> {
    fn clone(&self) -> Self {
        Spawner {
            state: Arc::clone(&self.state),
        }
    }
}

/// Shows whether the scope still takes spawns.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// let scope = cancel_scope::Scope::<()>::new();
/// assert_eq!(format!("{:?}", scope.spawner()), "Spawner { open: true }");
/// ```
impl<T> fmt::Debug for Spawner<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("open", &self.is_open())
            .finish()
    }
}

impl<T> Spawner<T> {
    /// `false` once the scope's shutdown has begun or the scope was
    /// dropped: spawns are refused.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let scope = cancel_scope::Scope::<()>::new();
    /// let spawner = scope.spawner();
    /// assert!(spawner.is_open());
    /// drop(scope);
    /// assert!(!spawner.is_open());
    /// ```
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state.phase() == Phase::Open
    }

    /// The scope's token.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let scope = cancel_scope::Scope::<()>::new();
    /// scope.cancel();
    /// assert!(scope.spawner().token().is_cancelled());
    /// ```
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        self.state.cause.token()
    }
}

impl<T: Send + 'static> Spawner<T> {
    /// Spawns `f(token)` as a task of the scope, as [`Scope::spawn`] does,
    /// and returns its [`TaskHandle`]; `None`, without calling `f`, when the
    /// scope is shutting down or gone.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new();
    /// let spawner = scope.spawner();
    /// let task = spawner.spawn(|_token| async { 2 }).unwrap();
    /// assert_eq!(scope.join_next_with_id().await.unwrap().0, task.id());
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(&self, f: F) -> Option<TaskHandle>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        spawn_handle(&self.state, None, f, Admission::UnlessClosed, None)
    }

    /// [`spawn`](Self::spawn), with a name for the reports.
    /// Built with `--cfg tokio_unstable` and the `tracing` feature, the name
    /// is also the Tokio task's name, as tokio-console shows it (see
    /// [Task names](Scope#task-names)).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::<()>::new();
    /// scope.spawner().spawn_named("flush", |_token| async {});
    /// let report = scope.shutdown_report(Duration::from_secs(1)).await;
    /// assert_eq!(report.tasks()[0].name(), "flush");
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_named<F, Fut>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: F,
    ) -> Option<TaskHandle>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let name = Some(name.into());
        spawn_handle(&self.state, name, f, Admission::UnlessClosed, None)
    }
}

/// Spawns `f(token)` through [`spawn_into`] and hands back its
/// [`TaskHandle`]; an `owner`'s spawn is kept in its [`OwnerSpawns`]. With
/// `UnlessClosed`, refused before `f` runs once the scope is closed.
#[track_caller]
fn spawn_handle<T, F, Fut>(
    state: &Arc<ScopeState<T>>,
    name: Option<Cow<'static, str>>,
    f: F,
    permit: Admission,
    owner: Option<&mut OwnerSpawns>,
) -> Option<TaskHandle>
where
    T: Send + 'static,
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    if matches!(permit, Admission::UnlessClosed) && state.phase() != Phase::Open {
        return None;
    }
    let token = state.cause.token().child_token();
    let fut = f(token.clone());
    let (key, join) = spawn_into(state, name.clone(), fut, permit, owner.is_some())?;
    let abort = join.as_ref().map(JoinHandle::abort_handle);
    if let Some(owner) = owner {
        owner.keep(state, key, join);
    }
    Some(TaskHandle {
        key,
        token,
        abort,
        control: Arc::<ScopeState<T>>::downgrade(state),
        name,
    })
}

/// A place under a [`Scope`]'s limit, held for one task: from
/// [`Scope::reserve`]. [`spawn`](Self::spawn) starts the task at once;
/// dropping the permit unused gives the place back.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new().with_limit(1);
/// let permit = scope.reserve().await;
/// drop(permit); // the place is free again
/// let permit = scope.reserve().await;
/// permit.spawn(|_token| async { 1 });
/// assert_eq!(scope.join_all().await.len(), 1);
/// # }
/// ```
#[must_use = "a permit holds a place under the limit until it spawns or is dropped"]
pub struct SpawnPermit<T> {
    state: Arc<ScopeState<T>>,
    /// It holds a place of the limit (`false` without a limit).
    holds_place: bool,
}

impl<T> SpawnPermit<T> {
    /// Waits for a place under the limit (see [`Scope::reserve`]).
    pub(super) async fn reserve(state: &Arc<ScopeState<T>>) -> Self {
        loop {
            let mut notified = pin!(state.capacity.notified());
            notified.as_mut().enable();
            let (queue, holds_place) = {
                let mut inner = state.lock();
                (take_permit(&mut inner), inner.limit.is_some())
            };
            if !queue {
                let state = Arc::clone(state);
                return SpawnPermit { state, holds_place };
            }
            notified.await;
        }
    }
}

impl<T: Send + 'static> SpawnPermit<T> {
    /// Spawns `f(token)` as a task of the scope, started at once in the
    /// place the permit held, and returns its [`TaskHandle`]. Once the
    /// scope's shutdown began, the task still starts, with its token
    /// cancelled (and is aborted at once if the shutdown is past its grace
    /// period, stopping every task).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = Scope::new().with_limit(8);
    /// let task = scope.reserve().await.spawn(|_token| async { "hi" });
    /// assert_eq!(scope.join_next_with_id().await.unwrap().0, task.id());
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, Fut>(self, f: F) -> TaskHandle
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.spawn_inner(None, f, None)
    }

    /// [`spawn`](Self::spawn), with a name for the reports.
    /// Built with `--cfg tokio_unstable` and the `tracing` feature, the name
    /// is also the Tokio task's name, as tokio-console shows it (see
    /// [Task names](Scope#task-names)).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::Scope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let scope = Scope::<()>::new().with_limit(8);
    /// let task = scope.reserve().await.spawn_named("conn 10.0.0.7", |_token| async {});
    /// assert_eq!(task.name(), Some("conn 10.0.0.7"));
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_named<F, Fut>(self, name: impl Into<Cow<'static, str>>, f: F) -> TaskHandle
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.spawn_inner(Some(name.into()), f, None)
    }

    #[track_caller]
    pub(super) fn spawn_inner<F, Fut>(
        mut self,
        name: Option<Cow<'static, str>>,
        f: F,
        owner: Option<&mut OwnerSpawns>,
    ) -> TaskHandle
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let holds_place = std::mem::replace(&mut self.holds_place, false); // the task holds it now
        let permit = Admission::Reserved { holds_place };
        let Some(handle) = spawn_handle(&self.state, name, f, permit, owner) else {
            unreachable!("a permit's spawn is never refused")
        };
        handle
    }
}

/// Gives the place back when it was not used.
impl<T> Drop for SpawnPermit<T> {
    fn drop(&mut self) {
        if self.holds_place {
            let next = self.state.free_permit(&mut self.state.lock());
            self.state.wake_and_start(None, next);
        }
    }
}

/// Shows whether the permit holds a place under a limit.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let scope = cancel_scope::Scope::<()>::new().with_limit(1);
/// assert_eq!(format!("{:?}", scope.reserve().await), "SpawnPermit { limited: true }");
/// # }
/// ```
impl<T> fmt::Debug for SpawnPermit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnPermit")
            .field("limited", &self.holds_place)
            .finish()
    }
}
