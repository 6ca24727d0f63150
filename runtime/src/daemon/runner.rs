//! Runs one subsystem as a task of its parent's scope: its runs and
//! restarts ([`supervise`]), and each run ([`run_once`]): its fn and its
//! nested subsystems as the tasks of a [`Scope`] of the run's own, stopped
//! in their order.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handle::{NestedSubsystem, SubsystemHandle};
use super::subsystem::{Exit, ShutdownOrder};
use super::{Shared, Subsystem};
use crate::id::TaskId;
use crate::report::short_duration as short;
use crate::scope::{Scope, Spawner};
use crate::task::TaskError;

// `start` is here, not in handle.rs, because a run makes the handles its fn
// gets: the handle depends on nothing that runs it.
impl SubsystemHandle {
    /// Starts `subsystem` nested in this one, as a task of this one's run:
    /// its name becomes `<this name>/<its name>`; it is stopped (in this
    /// one's [`ShutdownOrder`](super::ShutdownOrder)) and joined before
    /// this one ends. Started while this one is stopping, it takes its
    /// place in that order at once; after this one ended, it is not started
    /// (the log says so, and the returned handle is finished).
    ///
    /// Subsystems are for the long-lived parts of a daemon: the tree keeps
    /// each one it started (until its parent restarts). Work started per
    /// connection or per request belongs in a [`Scope`](crate::Scope)
    /// inside a subsystem, as the HTTP example does.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("writer", |writer| async move {
    ///     let flush = writer.start(Subsystem::new("flush", |_| async {}));
    ///     flush.join().await.map_err(|failures| failures[0].to_string())
    /// });
    /// # drop(s);
    /// ```
    pub fn start(&self, subsystem: Subsystem) -> NestedSubsystem {
        start(&self.shared, Some(self.id), subsystem, &self.spawner)
    }
}

/// Starts `sub` under `parent` (the daemon itself when `None`) as a task
/// of `spawner`'s scope; in the tree at once.
pub(crate) fn start(
    shared: &Arc<Shared>,
    parent: Option<usize>,
    sub: Subsystem,
    spawner: &Spawner<()>,
) -> NestedSubsystem {
    let id = shared.tree.add(parent, sub.rules.clone());
    let (path, name) = (shared.tree.path(id), sub.rules.name.clone());
    if sub.runs_once && (sub.restart.again(true) || sub.restart.again(false)) {
        let why = "Subsystem::new runs its fn once: use Subsystem::supervised";
        shared.log(&format!("{path}: its restart policy is ignored ({why})"));
    }
    // Its runs' scopes are children of its parent's scope, beside its
    // stop token: stopping it does not cancel its nested subsystems at
    // once, its runner stops them in their order. Its stop token is the
    // daemon root's child, not its task's token in its parent's scope: it
    // is cancelled only when it is asked to stop, never by a scope that
    // cancels its token as it drops (a forced shutdown aborts, and a fn
    // must not see a cancel, nor the tasks it spawned with its token).
    let beside = spawner.token().clone();
    let runner = Arc::clone(shared);
    let task = spawner.spawn_named(path, move |_| {
        let stop = runner.root.child_token();
        runner.tree.set_stop(id, stop.clone());
        let gone = TaskGone(Arc::clone(&runner), id);
        async move {
            let _gone = gone;
            supervise(runner, id, sub, stop, beside).await;
        }
    });
    if task.is_none() {
        shared.tree.remove(id);
        let parent = parent.map(|p| shared.tree.path(p)).unwrap_or_default();
        shared.log(&format!("{name}: not started: {parent} has ended"));
    }
    let shared = Arc::clone(shared);
    NestedSubsystem { id, task, shared }
}

/// Tells the tree when a subsystem's task returned or was dropped.
struct TaskGone(Arc<Shared>, usize);

impl Drop for TaskGone {
    fn drop(&mut self) {
        self.0.tree.task_gone(self.1);
    }
}

/// Runs subsystem `id` until it ends for good: its runs, and its restarts.
async fn supervise(
    shared: Arc<Shared>,
    id: usize,
    mut spec: Subsystem,
    stop: CancellationToken,
    beside: CancellationToken,
) {
    let path: Arc<str> = shared.tree.path(id).into();
    let mut recent: VecDeque<Instant> = VecDeque::new();
    loop {
        let run = stop.child_token();
        shared.tree.begin_run(id, run.clone());
        let once = run_once(&shared, id, &path, &mut spec, &run, &beside);
        #[cfg(feature = "tracing")]
        let once =
            tracing::Instrument::instrument(once, tracing::info_span!("subsystem", name = %path));
        once.await;
        let failure = shared.tree.run_failure(id);
        // Aborted: its fn's task may end before its own is dropped.
        let stopping = stop.is_cancelled() || shared.is_stopping() || shared.tree.is_aborted(id);
        if stopping || spec.runs_once || !spec.restart.again(failure.is_some()) {
            return shared.tree.end(id, run.is_cancelled());
        }
        let what = failure.map_or("returned".to_owned(), |e| format!("failed ({e})"));
        let Some(delay) = spec.restart.next_delay(&mut recent) else {
            let error = format!("{what}; {}", spec.restart.describe(recent.len(), true));
            shared.fail(id, &error, false, true);
            return shared.tree.end(id, false);
        };
        shared.tree.restarting(id);
        let policy = spec.restart.describe(recent.len(), false);
        shared.log(&format!("{path} {what}; {policy} in {}", short(delay)));
        let waited = stop.run_until_cancelled(tokio::time::sleep(delay)).await;
        if waited.is_none() || shared.is_stopping() {
            return shared.tree.end(id, true);
        }
    }
}

/// One run of subsystem `id`: its fn and its nested subsystems, as tasks
/// of a scope of its own, until all have ended. Once `run` is cancelled
/// (it is asked to stop, or something in it failed), its fn's token is
/// cancelled, and its nested subsystems are stopped in their order.
async fn run_once(
    shared: &Arc<Shared>,
    id: usize,
    path: &Arc<str>,
    spec: &mut Subsystem,
    run: &CancellationToken,
    beside: &CancellationToken,
) {
    let mut scope: Scope<()> = Scope::child_of(beside);
    let token = run.child_token();
    let handle = SubsystemHandle {
        token: token.clone(),
        id,
        name: Arc::clone(path),
        shared: Arc::clone(shared),
        spawner: scope.spawner(),
    };
    let body = start_fn(shared, &mut scope, handle, spec);
    loop {
        // What ends the wait but a task's end: the run's cancellation;
        // once it stops, a start, or the end of a turn in its order.
        let (wake, turn_ends) = match run.is_cancelled() {
            false => (run.clone(), None),
            true => {
                // Of the root's: a forced shutdown does not cancel it (a
                // token born cancelled would spin this loop past its abort).
                let replan = shared.root.child_token();
                shared.tree.stopping(id, replan.clone());
                (replan, plan_stop(shared, id, &spec.order))
            }
        };
        let next = scope.join_next_with_id();
        let next = async {
            match turn_ends {
                Some(turn_ends) => tokio::time::timeout_at(turn_ends, next).await.ok(),
                None => Some(next.await),
            }
        };
        let ended = wake.run_until_cancelled(next).await.flatten();
        match ended {
            None => {} // woken
            Some(Some((task, result))) if task == body => {
                on_fn_end(shared, id, result, &scope);
            }
            Some(Some((_, Err(e)))) if e.is_panic() => {
                shared.log(&format!("{path}: a nested subsystem's runner: {e}"));
            }
            Some(Some(_)) => {} // a nested subsystem's runner recorded its end
            Some(None) => {
                // A start may have come in before the scope was closed.
                scope.close();
                if scope.is_empty() {
                    break;
                }
            }
        }
    }
}

/// Spawns the subsystem's fn as a task of the run's scope. The fn is called
/// here, to make its future: a panic in it is the task's, as a panic in
/// the future is. An `Exit` is the runner's to record.
fn start_fn(
    shared: &Arc<Shared>,
    scope: &mut Scope<()>,
    handle: SubsystemHandle,
    spec: &mut Subsystem,
) -> TaskId {
    let (runner, id, token) = (Arc::clone(shared), handle.id, handle.token.clone());
    let name = handle.name.to_string();
    let body = catch_unwind(AssertUnwindSafe(|| (spec.factory)(handle)));
    let (fn_token, polling) = (token.clone(), Arc::new(AtomicBool::new(false)));
    let in_poll = Arc::clone(&polling);
    let task = scope.spawner().spawn_named(name, move |_| {
        CancelIfAborted::new(fn_token, in_poll, async move {
            let exit = match body {
                Ok(Some(body)) => body.await,
                Ok(None) => Exit::Done,
                Err(panic) => resume_unwind(panic),
            };
            match exit {
                Exit::Done => {}
                Exit::Cancelled(_) if token.is_cancelled() => {}
                Exit::Cancelled(error) | Exit::Failed(error) => {
                    runner.fail(id, &error, false, false);
                }
            }
        })
    });
    let task = task.expect("a run's scope closes only after its fn has ended");
    let task_id = task.id();
    shared.tree.set_body(id, task, polling);
    task_id
}

/// A fn's future that, dropped before it ended (its task aborted), cancels
/// the fn's token once the future is gone: what the fn spawned with it (a
/// blocking thread that polls it) sees the cancel, and nothing the fn's own
/// scopes held sees it before they aborted it. `polling` says whether it is
/// inside a poll (a fn stuck in a loop is).
struct CancelIfAborted<F> {
    fut: Option<Pin<Box<F>>>,
    token: CancellationToken,
    polling: Arc<AtomicBool>,
}

impl<F: Future> CancelIfAborted<F> {
    fn new(token: CancellationToken, polling: Arc<AtomicBool>, fut: F) -> Self {
        let fut = Some(Box::pin(fut));
        CancelIfAborted {
            fut,
            token,
            polling,
        }
    }
}

impl<F: Future> Future for CancelIfAborted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(fut) = this.fut.as_mut() else {
            panic!("a subsystem's fn polled after it ended")
        };
        let output = {
            let _polling = Polling::enter(&this.polling);
            std::task::ready!(fut.as_mut().poll(cx))
        };
        this.fut = None;
        Poll::Ready(output)
    }
}

/// Says a fn's task is inside a poll until dropped, a panic included.
struct Polling<'a>(&'a AtomicBool);

impl<'a> Polling<'a> {
    fn enter(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Polling(flag)
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<F> Drop for CancelIfAborted<F> {
    fn drop(&mut self) {
        if self.fut.take().is_some() {
            self.token.cancel();
        }
    }
}

/// The fn's task ended: a panic is its failure; once it has returned, a
/// subsystem that still runs is awaiting its children.
fn on_fn_end(shared: &Shared, id: usize, result: Result<(), TaskError>, scope: &Scope<()>) {
    if let Some(panic) = result.err().filter(TaskError::is_panic) {
        shared.fail(id, &panic.to_string(), true, false);
    }
    shared.tree.fn_returned(id, !scope.is_empty());
    if shared.is_stopping() {
        shared.tree.stop_orphans();
    }
}

/// Once `id` is stopping, stops its nested subsystems (but detached ones)
/// in `order`: each stage when those before it have ended or had their
/// turn (their `stop_timeout`). Returns when the current stage's turn is
/// over, if it has a `stop_timeout`.
fn plan_stop(shared: &Shared, id: usize, order: &ShutdownOrder) -> Option<Instant> {
    let mut children = shared.tree.live_children(id);
    children.retain(|(_, rules)| !rules.detached);
    let names: Vec<&str> = children.iter().map(|(_, r)| r.name.as_ref()).collect();
    let now = Instant::now();
    for stage in order.stages(&names) {
        let mut holding: Vec<Option<Instant>> = Vec::new();
        for (child, rules) in stage.iter().map(|&i| &children[i]) {
            let asked = shared.tree.request_stop(*child).unwrap_or(now);
            match rules.stop_timeout.map(|timeout| asked + timeout) {
                Some(end) if end <= now => {
                    if shared.tree.pass(*child) {
                        let (path, after) = (shared.tree.path(*child), short(end - asked));
                        let line =
                            format!("{path} still stopping after {after}: stopping the next ones");
                        shared.log(&line);
                    }
                }
                end => holding.push(end),
            }
        }
        if !holding.is_empty() {
            return holding.into_iter().flatten().min();
        }
    }
    None
}
