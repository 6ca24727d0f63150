//! The state a [`Scope`](super::Scope) shares with its tasks, and the
//! wrapper every task runs in.
//!
//! Every task is a plain Tokio task (`tokio::spawn`, `spawn_blocking`),
//! spawned by one path, [`spawn_into`], from its [`TaskBody`]: a future, or
//! a [`Blocking`] closure. A future is wrapped in a [`ScopeTask`]: it polls
//! the user's future under `catch_unwind` with the scope's cause current,
//! and when the future ends (or is dropped: aborted) its [`EndGuard`]
//! (a blocking closure's too) writes the outcome into the
//! scope's [`Ledger`] (`LocalScope` uses it too), under one lock, and wakes
//! the owner only when the owner waits for that. So a reaping scope frees a
//! task as it ends, like `TaskTracker`; an aborted task reports itself, with
//! its key (no `JoinError` to map back); and tasks queued on a limit wait in
//! a FIFO the ledger's lock guards, started by the task whose end frees their
//! permit, in spawn order on every runtime.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

use crate::ledger::{FailureText, Ledger, TaskKey, error_text, outcome_of, poll_caught, result_of};
use crate::reason::{self, Cause};
use crate::report::Tally;
use crate::task::{Payload, TaskOutcome};

/// What the ledger keeps of a running task of a [`Scope`].
pub(super) struct RuntimeTask {
    /// To abort it: for tasks started off the owner's thread (queued,
    /// spawned through a [`Spawner`]); the owner keeps its own.
    pub(super) abort: Option<AbortHandle>,
    /// It holds a permit of the limit (it is not queued).
    pub(super) started: bool,
    pub(super) blocking: bool,
}

/// A task waiting for a permit of the limit, and how to start it on a
/// runtime.
pub(super) struct QueuedTask {
    pub(super) key: TaskKey,
    pub(super) start: Box<dyn FnOnce(&Handle) -> AbortHandle + Send>,
}

/// What the owner waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OwnerWait {
    Nothing,
    /// Any task to end (`join_next`).
    Next,
    /// Every task to end (`join_all`, `shutdown`).
    Empty,
}

pub(super) struct Limit {
    pub(super) max: usize,
    /// Started tasks plus unused [`SpawnPermit`]s.
    pub(super) active: usize,
}

pub(super) struct Locked<T> {
    pub(super) ledger: Ledger<T, RuntimeTask>,
    pub(super) limit: Option<Limit>,
    pub(super) queue: VecDeque<QueuedTask>,
    pub(super) owner: Option<Waker>,
    pub(super) wait: OwnerWait,
}

/// Where a scope is in its life, as its tasks and spawners see it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum Phase {
    /// Spawners and permits are served.
    Open,
    /// A shutdown cancelled the token and waits out its grace period:
    /// spawners are refused, and a task that ends now ended after the cancel.
    Grace,
    /// The grace period ran out and every task is being stopped: one
    /// started meanwhile off the owner's thread is aborted at once.
    Forcing,
    /// The shutdown is over, or the scope was dropped: as `Grace`.
    Closed,
}

/// The tasks of a reaping scope that skip the ledger: the owner's spawns
/// while the scope has no limit and no cancel rule. Their end takes no lock,
/// as in a `TaskTracker`, unless it needs attention, is the last one the
/// owner waits for, or a limit or rule came after their spawn (`JUDGED`):
/// a policy holds for every task.
#[derive(Default)]
pub(super) struct Untracked {
    /// New tasks of the owner skip the ledger.
    pub(super) on: AtomicBool,
    /// Tasks still running, plus `JUDGED` once a limit or rule was set.
    live: AtomicUsize,
    /// Ended after the cancel of a shutdown.
    stopped: AtomicUsize,
    /// Of those, the ones in which a `#[cancellable]` fn was cancelled.
    cleanup_ran: AtomicUsize,
    /// Ended needing attention: holds_place and listed in the ledger's tally.
    noted: AtomicUsize,
}

/// Set in `Untracked::live` once a limit or rule applies to its tasks.
const JUDGED: usize = 1 << (usize::BITS - 1);

impl Untracked {
    /// Untracked tasks still running.
    pub(super) fn running(&self) -> usize {
        self.live.load(Ordering::Acquire) & !JUDGED
    }

    /// Their share of a report, once all have ended: the owner spawned
    /// `spawned` of them; those not holds_place otherwise completed.
    pub(super) fn tally_into(&self, tally: &mut Tally, spawned: usize) {
        let stopped = self.stopped.swap(0, Ordering::Relaxed);
        let cleanup_ran = self.cleanup_ran.swap(0, Ordering::Relaxed);
        let noted = self.noted.swap(0, Ordering::Relaxed);
        tally.count(TaskOutcome::Stopped, stopped, cleanup_ran);
        let completed = spawned.saturating_sub(stopped + noted);
        tally.count(TaskOutcome::Completed, completed, 0);
    }
}

/// The part of a scope its tasks, handles, spawners and permits share.
pub(super) struct ScopeState<T> {
    pub(super) cause: Arc<Cause>,
    pub(super) inner: Mutex<Locked<T>>,
    /// A `Phase`.
    phase: AtomicU8,
    /// Tasks below this sequence number never start any more (the scope
    /// stopped them: end of a grace period, drop): a queued task or a
    /// blocking closure not yet started.
    pub(super) stop_below: AtomicU64,
    /// Wakes [`Scope::reserve`] waiters when a permit frees up.
    pub(super) capacity: Notify,
    /// The sequence number of the next task.
    pub(super) next_seq: AtomicU64,
    pub(super) untracked: Untracked,
    /// The policy's failure text, readable without the lock.
    pub(super) failure: OnceLock<FailureText<T>>,
}

/// The tasks the owner started itself: their join handles, to abort them
/// when the scope stops (so that the owner's spawns take one lock), and how
/// many of them skipped the ledger.
pub(super) struct OwnerSpawns {
    aborts: Vec<JoinHandle<()>>,
    pub(super) untracked: usize,
    /// The length at which `aborts` is pruned next.
    prune_at: usize,
}

impl OwnerSpawns {
    pub(super) fn new() -> Self {
        OwnerSpawns {
            aborts: Vec::new(),
            untracked: 0,
            prune_at: 64,
        }
    }

    /// Keeps the handle of a task the owner started. Prunes those of
    /// finished tasks only once they must be most of the list (it is more
    /// than twice as long as the tasks that run), so a long-lived scope's
    /// list stays about as long as its live tasks, and a burst of spawns is
    /// never scanned.
    pub(super) fn keep<T>(
        &mut self,
        state: &ScopeState<T>,
        key: TaskKey,
        join: Option<JoinHandle<()>>,
    ) {
        if key.slot == UNTRACKED {
            self.untracked += 1;
        }
        let Some(join) = join else { return };
        if self.aborts.len() >= self.prune_at {
            self.aborts.retain(|a| !a.is_finished());
        }
        if self.aborts.len() >= self.prune_at {
            let live = state.untracked.running() + state.lock().ledger.running();
            self.prune_at = 2 * live.max(self.aborts.len() / 2) + 64;
        }
        self.aborts.push(join);
    }

    pub(super) fn abort_all(&self) {
        for join in &self.aborts {
            join.abort();
        }
    }
}

/// The slot of a task that is not in the ledger.
pub(super) const UNTRACKED: usize = usize::MAX;

impl<T> ScopeState<T> {
    pub(super) fn new(cause: Arc<Cause>) -> Self {
        ScopeState {
            cause: Arc::clone(&cause),
            inner: Mutex::new(Locked {
                ledger: Ledger::new(cause),
                limit: None,
                queue: VecDeque::new(),
                owner: None,
                wait: OwnerWait::Nothing,
            }),
            phase: AtomicU8::new(Phase::Open as u8),
            stop_below: AtomicU64::new(0),
            capacity: Notify::new(),
            next_seq: AtomicU64::new(0),
            untracked: Untracked::default(),
            failure: OnceLock::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Locked<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Open,
            1 => Phase::Grace,
            2 => Phase::Forcing,
            _ => Phase::Closed,
        }
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// No task runs or waits.
    pub(super) fn idle(&self, inner: &Locked<T>) -> bool {
        inner.ledger.running() == 0 && self.untracked.running() == 0
    }

    /// A task not in the ledger ended: holds_place without a lock, unless it
    /// needs attention, was the last one the owner waits for, or is judged
    /// by a limit or rule set after its spawn.
    pub(super) fn report_untracked(
        &self,
        key: TaskKey,
        name: Option<Cow<'static, str>>,
        out: Option<Result<T, Payload>>,
        cleanup_ran: bool,
    ) {
        let ended = out.is_some();
        let result = result_of(out, &self.cause);
        let failure = self.failure.get().copied();
        let outcome = outcome_of(&result, failure, self.phase() > Phase::Open);
        let counts = &self.untracked;
        if outcome.needs_attention() {
            let error = error_text(&result, failure);
            let mut inner = self.lock();
            counts.noted.fetch_add(1, Ordering::Relaxed);
            inner
                .ledger
                .reap(key.id(), name.clone(), outcome, cleanup_ran, || error);
        } else if outcome == TaskOutcome::Stopped {
            counts.stopped.fetch_add(1, Ordering::Relaxed);
            counts
                .cleanup_ran
                .fetch_add(usize::from(cleanup_ran), Ordering::Relaxed);
        }
        // Not judged: counted down without the lock.
        let unjudged = |live: usize| (live & JUDGED == 0).then(|| live - 1);
        let live = &counts.live;
        if let Ok(before) = live.fetch_update(Ordering::AcqRel, Ordering::Acquire, unjudged) {
            if before == 1 {
                self.wake_owner_if_idle(None);
            }
            return;
        }
        // Judged: under the lock, as a tracked task would be.
        let mut inner = self.lock();
        if let Some(rule) = inner.ledger.policy.cancel.filter(|_| ended) {
            rule.apply(&self.cause, key.id(), name.as_ref(), result.as_ref().ok());
        }
        let next = inner.limit.is_some().then(|| self.free_permit(&mut inner));
        counts.live.fetch_sub(1, Ordering::AcqRel);
        drop(inner);
        drop(result);
        self.wake_owner_if_idle(next.flatten());
    }

    /// Wakes the owner if it waits and no task runs; starts `next`.
    fn wake_owner_if_idle(&self, next: Option<QueuedTask>) {
        let mut inner = self.lock();
        let wake = inner.wait != OwnerWait::Nothing && self.idle(&inner);
        let owner = if wake { inner.owner.take() } else { None };
        drop(inner);
        self.wake_and_start(owner, next);
    }

    /// Wakes the owner, then starts the next queued task (both outside the lock).
    pub(super) fn wake_and_start(&self, owner: Option<Waker>, next: Option<QueuedTask>) {
        if let Some(owner) = owner {
            owner.wake();
        }
        if let Some(next) = next {
            self.start(next);
        }
    }

    /// Which tasks of the owner skip the ledger, after a builder. Once a
    /// limit or rule is set, the untracked tasks still running end under
    /// the lock (so `untracked.running()` is exact under it).
    pub(super) fn refresh_untracked(&self, inner: &Locked<T>) {
        let policy = &inner.ledger.policy;
        let on = policy.reaping && policy.cancel.is_none() && inner.limit.is_none();
        self.untracked.on.store(on, Ordering::Release);
        if !on {
            self.untracked.live.fetch_or(JUDGED, Ordering::AcqRel);
        }
    }

    /// A task ended with `out` (`None`: aborted, or never started). Frees
    /// its permit, or passes it to the first queued task, which it starts.
    pub(super) fn report(&self, key: TaskKey, out: Option<Result<T, Payload>>, cleanup_ran: bool) {
        let mut inner = self.lock();
        let Some((run, value)) = inner.ledger.record(key, out, cleanup_ran) else {
            return;
        };
        let next = run.started.then(|| self.free_permit(&mut inner)).flatten();
        let wake = match inner.wait {
            OwnerWait::Next => true,
            OwnerWait::Empty => self.idle(&inner),
            OwnerWait::Nothing => false,
        };
        let owner = if wake { inner.owner.take() } else { None };
        drop(inner);
        drop((run, value));
        self.wake_and_start(owner, next);
    }

    /// A permit frees up: the first queued task gets it (and is marked
    /// started, so that it frees the permit in turn), else the limit. Not
    /// while more tasks hold one than the limit allows (it was set, or
    /// lowered, while they ran): the place is then gone.
    pub(super) fn free_permit(&self, inner: &mut Locked<T>) -> Option<QueuedTask> {
        let limit = inner.limit.as_mut()?;
        if limit.active > limit.max {
            limit.active -= 1;
            return None;
        }
        let Some(next) = inner.queue.pop_front() else {
            limit.active = limit.active.saturating_sub(1);
            self.capacity.notify_one();
            return None;
        };
        if let Some(run) = inner.ledger.running_mut(next.key) {
            run.started = true;
        }
        Some(next)
    }

    /// Whether the scope stopped the task at `key`.
    pub(super) fn is_stopped(&self, key: TaskKey) -> bool {
        key.seq < self.stop_below.load(Ordering::Acquire)
    }

    /// Starts a task that got its permit, outside the lock.
    pub(super) fn start(&self, q: QueuedTask) {
        let key = q.key;
        // Stopped, or no runtime to start on: `q` is dropped, and its guard
        // reports it aborted.
        if self.is_stopped(key) {
            return;
        }
        if let Ok(handle) = Handle::try_current() {
            self.keep_abort(key, (q.start)(&handle));
        }
    }

    /// Keeps the abort handle of a task started off the owner's thread, for
    /// the scope's shutdown and drop (and aborts it if that came first, or
    /// if a shutdown is stopping every task now).
    pub(super) fn keep_abort(&self, key: TaskKey, abort: AbortHandle) {
        let mut inner = self.lock();
        if let Some(run) = inner.ledger.running_mut(key) {
            if self.is_stopped(key) || self.phase() == Phase::Forcing {
                abort.abort();
            } else {
                run.abort = Some(abort);
            }
        }
    }
}

/// What a [`TaskHandle`] reaches through, whatever the scope's `T`.
pub(super) trait TaskControl: Send + Sync {
    fn abort(&self, key: TaskKey);
    fn is_finished(&self, key: TaskKey) -> bool;
}

impl<T: Send> TaskControl for ScopeState<T> {
    /// Aborts the task at `key`: a queued one is dropped, a started one
    /// aborted through its handle (if the scope keeps it).
    fn abort(&self, key: TaskKey) {
        let mut inner = self.lock();
        if let Some(i) = inner.queue.iter().position(|q| q.key == key) {
            let q = inner.queue.remove(i);
            drop(inner);
            drop(q); // its guard reports the abort
            return;
        }
        if let Some(abort) = inner.ledger.running_mut(key).and_then(|r| r.abort.as_ref()) {
            abort.abort();
        }
    }

    fn is_finished(&self, key: TaskKey) -> bool {
        self.lock().ledger.running_mut(key).is_none()
    }
}

/// Reports a task's end to its scope: with its value, or, when dropped
/// first, as aborted.
pub(super) struct EndGuard<T> {
    state: Arc<ScopeState<T>>,
    key: TaskKey,
    /// The name of an untracked task (a tracked one's is in the ledger).
    name: Option<Cow<'static, str>>,
    ended: bool,
}

impl<T> EndGuard<T> {
    fn new(state: &Arc<ScopeState<T>>, key: TaskKey, name: Option<Cow<'static, str>>) -> Self {
        EndGuard {
            state: Arc::clone(state),
            key,
            name,
            ended: false,
        }
    }

    fn report(&mut self, out: Option<Result<T, Payload>>, cleanup_ran: bool) {
        self.ended = true;
        if self.key.slot == UNTRACKED {
            let name = self.name.take();
            self.state
                .report_untracked(self.key, name, out, cleanup_ran);
        } else {
            self.state.report(self.key, out, cleanup_ran);
        }
    }
}

impl<T> Drop for EndGuard<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.report(None, false);
        }
    }
}

pin_project! {
    /// The future a scope spawns: the user's future, polled under
    /// `catch_unwind` with the scope's cause current (so a `#[cancellable]`
    /// fn cancelled in it can tell why), and the guard that reports its end.
    struct ScopeTask<F: Future> {
        #[pin]
        fut: Option<F>,
        guard: EndGuard<F::Output>,
        // Moved into the thread-local and back around each poll.
        cause: Option<Arc<Cause>>,
        // A `#[cancellable]` fn in it took its cancellation path.
        cleanup_ran: bool,
    }
}

impl<F: Future> ScopeTask<F> {
    fn new(fut: F, guard: EndGuard<F::Output>) -> Self {
        let cause = Some(Arc::clone(&guard.state.cause));
        ScopeTask {
            fut: Some(fut),
            guard,
            cause,
            cleanup_ran: false,
        }
    }
}

impl<F: Future> Future for ScopeTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let outer = reason::enter(this.cause.take());
        let polled = poll_caught(this.fut, cx);
        let current = reason::leave(outer);
        *this.cause = current.cause;
        *this.cleanup_ran |= current.cancel_seen;
        let Poll::Ready(out) = polled else {
            return Poll::Pending;
        };
        this.guard.report(Some(out), *this.cleanup_ran);
        Poll::Ready(())
    }
}

/// What a task runs: a future, polled on the runtime's workers, or a
/// [`Blocking`] closure, run on a blocking thread. Either reports its end
/// through the [`EndGuard`] it is spawned with.
pub(super) trait TaskBody<T>: Send + 'static {
    /// A blocking closure: never untracked, and detached rather than
    /// aborted once it started.
    const BLOCKING: bool;

    /// With the `tracing` feature: in task `seq`'s span (a future; a
    /// blocking closure has none).
    #[cfg(feature = "tracing")]
    fn in_span(self, seq: u64, name: Option<&str>) -> impl TaskBody<T>;

    /// Spawns it on `on`, or on the current runtime, named `name` in
    /// tokio-console.
    fn spawn(self, guard: EndGuard<T>, on: Option<&Handle>, name: ConsoleName) -> JoinHandle<()>;
}

impl<T: Send + 'static, F: Future<Output = T> + Send + 'static> TaskBody<T> for F {
    const BLOCKING: bool = false;

    #[cfg(feature = "tracing")]
    fn in_span(self, seq: u64, name: Option<&str>) -> impl TaskBody<T> {
        tracing::Instrument::instrument(self, crate::ledger::task_span(seq, name))
    }

    #[track_caller]
    fn spawn(self, guard: EndGuard<T>, on: Option<&Handle>, name: ConsoleName) -> JoinHandle<()> {
        let task = ScopeTask::new(self, guard);
        #[cfg(all(tokio_unstable, feature = "tracing"))]
        if let Some(name) = &name {
            let builder = tokio::task::Builder::new().name(name);
            let spawned = match on {
                Some(handle) => builder.spawn_on(task, handle),
                None => builder.spawn(task),
            };
            // Tokio's builder returns `Ok` on every path (its `Result` is for
            // future use); a spawn outside a runtime panics, as `tokio::spawn`.
            return spawned.expect("tokio::task::Builder::spawn");
        }
        let _ = &name;
        match on {
            Some(handle) => handle.spawn(task),
            None => tokio::spawn(task),
        }
    }
}

/// A blocking closure (given its token already), and the runtime it was
/// spawned on: it runs there unless a queue starts it elsewhere.
pub(super) struct Blocking<F>(pub(super) F, pub(super) Handle);

impl<T: Send + 'static, F: FnOnce() -> T + Send + 'static> TaskBody<T> for Blocking<F> {
    const BLOCKING: bool = true;

    #[cfg(feature = "tracing")]
    fn in_span(self, _seq: u64, _name: Option<&str>) -> impl TaskBody<T> {
        self
    }

    #[track_caller]
    fn spawn(self, guard: EndGuard<T>, on: Option<&Handle>, name: ConsoleName) -> JoinHandle<()> {
        let Blocking(f, handle) = self;
        let task = move || {
            let mut guard = guard;
            if guard.state.is_stopped(guard.key) {
                return; // too late: the guard reports it as aborted
            }
            let outer = reason::enter(Some(Arc::clone(&guard.state.cause)));
            let out = catch_unwind(AssertUnwindSafe(f));
            let cleanup_ran = reason::leave(outer).cancel_seen;
            guard.report(Some(out), cleanup_ran);
        };
        let on = on.unwrap_or(&handle);
        #[cfg(all(tokio_unstable, feature = "tracing"))]
        if let Some(name) = &name {
            let builder = tokio::task::Builder::new().name(name);
            return builder
                .spawn_blocking_on(task, on)
                .expect("tokio::task::Builder::spawn_blocking_on");
        }
        let _ = &name;
        on.spawn_blocking(task)
    }
}

/// How a new task gets its permit.
pub(super) enum Admission {
    /// From a [`SpawnPermit`]: it holds a place under the limit
    /// (`holds_place`), or was made while there was no limit: it takes a place
    /// now, over the limit if it must, as it was let in before the limit.
    Reserved { holds_place: bool },
    /// Take one now if free, else queue.
    TakeOrQueue,
    /// As `TakeOrQueue`, but refused once the scope is closed ([`Spawner`]).
    UnlessClosed,
}

/// Spawns a task into `state`: records it, then starts it at once or
/// queues it on the limit (the owner's untracked tasks are only counted).
/// Returns its key and, when it started here, its join handle.
#[track_caller]
pub(super) fn spawn_into<T: Send + 'static, B: TaskBody<T>>(
    state: &Arc<ScopeState<T>>,
    name: Option<Cow<'static, str>>,
    body: B,
    permit: Admission,
    owner: bool,
) -> Option<(TaskKey, Option<JoinHandle<()>>)> {
    let seq = state.next_seq.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "tracing")]
    let body = body.in_span(seq, name.as_deref());
    let console = console_name(name.as_ref());
    if owner && !B::BLOCKING && state.untracked.on.load(Ordering::Acquire) {
        // Outside the ledger while untracked tasks are on: counted only,
        // under the key `UNTRACKED`.
        state.untracked.live.fetch_add(1, Ordering::AcqRel);
        let key = TaskKey {
            slot: UNTRACKED,
            seq,
        };
        let guard = EndGuard::new(state, key, name);
        return Some((key, Some(body.spawn(guard, None, console))));
    }
    let mut inner = state.lock();
    if matches!(permit, Admission::UnlessClosed) && state.phase() != Phase::Open {
        // Checked again under the lock: a shutdown that began since the
        // spawner's first check must not find a task it did not stop.
        drop(inner);
        return None;
    }
    let started = !admit(&mut inner, permit);
    let run = RuntimeTask {
        abort: None,
        started,
        blocking: B::BLOCKING,
    };
    let key = inner.ledger.insert(seq, name, run);
    let guard = EndGuard::new(state, key, None);
    if !started {
        // Started by whoever frees its place, on that one's runtime. Never
        // started, it is dropped before its guard reports it aborted.
        let parts = (body, guard);
        let start = Box::new(move |on: &Handle| {
            let (body, guard) = parts;
            body.spawn(guard, Some(on), console).abort_handle()
        });
        inner.queue.push_back(QueuedTask { key, start });
        return Some((key, None));
    }
    drop(inner);
    let join = body.spawn(guard, None, console);
    if !owner {
        state.keep_abort(key, join.abort_handle());
    }
    Some((key, Some(join)))
}

/// Whether a new task admitted by `permit` must queue (`true`) or starts
/// now, holding a place under the limit.
fn admit<T>(inner: &mut Locked<T>, permit: Admission) -> bool {
    match (permit, &mut inner.limit) {
        (Admission::Reserved { holds_place: false }, Some(limit)) => {
            limit.active += 1;
            false
        }
        (Admission::Reserved { .. }, _) => false,
        _ => take_permit(inner),
    }
}

/// A task's name for tokio-console: kept only when built with
/// `--cfg tokio_unstable` and the `tracing` feature, where Tokio's task
/// builder takes it.
type ConsoleName = Option<Cow<'static, str>>;

fn console_name(name: Option<&Cow<'static, str>>) -> ConsoleName {
    #[cfg(all(tokio_unstable, feature = "tracing"))]
    return name.cloned();
    #[cfg(not(all(tokio_unstable, feature = "tracing")))]
    {
        let _ = name;
        None
    }
}

/// Takes a permit of the limit if one is free (and none queued before);
/// `true` when the task must queue.
pub(super) fn take_permit<T>(inner: &mut Locked<T>) -> bool {
    match &mut inner.limit {
        Some(limit) if limit.active >= limit.max || !inner.queue.is_empty() => true,
        Some(limit) => {
            limit.active += 1;
            false
        }
        None => false,
    }
}

/// Ends the owner's wait with `done` when no task runs (none is queued
/// either); otherwise registers its waker for `wait`.
pub(super) fn idle_or_register<T, R>(
    state: &ScopeState<T>,
    inner: &mut Locked<T>,
    wait: OwnerWait,
    cx: &Context<'_>,
    done: R,
) -> Poll<R> {
    if state.idle(inner) {
        inner.wait = OwnerWait::Nothing;
        return Poll::Ready(done);
    }
    inner.wait = wait;
    match &mut inner.owner {
        Some(w) if w.will_wake(cx.waker()) => {}
        slot => *slot = Some(cx.waker().clone()),
    }
    Poll::Pending
}

/// Waits until no task runs (none is queued either).
pub(super) async fn wait_empty<T>(state: &ScopeState<T>) {
    poll_fn(|cx| {
        let mut inner = state.lock();
        idle_or_register(state, &mut inner, OwnerWait::Empty, cx, ())
    })
    .await;
}
