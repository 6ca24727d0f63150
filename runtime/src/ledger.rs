//! The one bookkeeping core of [`Scope`](crate::Scope) and
//! [`LocalScope`](crate::LocalScope): which tasks exist, what became of
//! them, and the policies that act on an outcome (`fail_fast`, `first_ok`,
//! failure detection, reaping).
//!
//! Tasks live in a slab (`Vec` plus free list), so a long-lived scope reuses
//! the slots of the results it handed out and never grows past its peak.
//! Each task is addressed by a [`TaskKey`]: its slot and its sequence number
//! (which doubles as the slot's generation, so a late report from a detached
//! task never lands in a reused slot). Finished tasks queue in completion
//! order for `join_next`; `finish` hands the rest out in spawn order.
//! A reaping ledger keeps no result: it counts outcomes and keeps the last
//! few that need attention.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::time::Instant;

use crate::id::TaskId;
use crate::reason::{CancelReason, Cause, Described};
use crate::report::{Tally, TaskReport};
use crate::task::{Payload, TaskError, TaskOutcome};

/// Polls a task's future under `catch_unwind`, for both scopes. The future
/// is dropped as soon as it ends, under the guard too, so that a panicking
/// `Drop` is the task's panic (a second panic, from the `Drop` of a future
/// that panicked, is ignored: the first is reported).
pub(crate) fn poll_caught<F: Future>(
    mut fut: Pin<&mut Option<F>>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Payload>> {
    let polled = catch_unwind(AssertUnwindSafe(|| {
        let Some(running) = fut.as_mut().as_pin_mut() else {
            panic!("cancel-scope task polled after completion");
        };
        let value = ready!(running.poll(cx));
        fut.set(None);
        Poll::Ready(value)
    }));
    match polled {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
        Err(payload) => {
            let _ = catch_unwind(AssertUnwindSafe(|| fut.set(None)));
            Poll::Ready(Err(payload))
        }
    }
}

/// `fail_fast` and `first_ok`: which ends of a task cancel the scope.
pub(crate) struct CancelRule<T> {
    pub(crate) fail_fast: bool,
    pub(crate) first_ok: bool,
    /// Whether a task's value is a success (an `Ok`).
    is_ok: fn(&T) -> bool,
}

impl<T> Clone for CancelRule<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for CancelRule<T> {}

impl<T> CancelRule<T> {
    /// Cancels `cause` when the end of task `id` with `value` (`None`: it
    /// panicked) decides it; `true` if it did.
    pub(crate) fn apply(
        self,
        cause: &Cause,
        id: TaskId,
        name: Option<&Cow<'static, str>>,
        value: Option<&T>,
    ) -> bool {
        let reason = match value.is_some_and(self.is_ok) {
            true if self.first_ok => CancelReason::TaskSucceeded(id),
            false if self.fail_fast => CancelReason::TaskFailed(id),
            _ => return false,
        };
        cause.cancel_by(reason, name);
        true
    }
}

/// The text of a task's failure, when its value is one (an `Err`).
pub(crate) type FailureText<T> = fn(&T) -> Option<String>;

/// What ran an ended task, and its result when it was not kept (reaping).
pub(crate) type Ended<T, R> = (R, Option<Result<T, TaskError>>);

/// A task's address: its slot and its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskKey {
    pub(crate) slot: usize,
    pub(crate) seq: u64,
}

impl TaskKey {
    pub(crate) fn id(self) -> TaskId {
        TaskId::from_seq(self.seq)
    }
}

/// The policies of a scope, set by its builders. Each applies to every
/// task of the scope, whenever it was spawned: it judges each task as it
/// ends, and, when set, the results the scope still keeps.
pub(crate) struct Policy<T> {
    pub(crate) cancel: Option<CancelRule<T>>,
    pub(crate) failure: Option<FailureText<T>>,
    pub(crate) reaping: bool,
}

impl<T> Policy<T> {
    /// Whether `fail_fast` and `first_ok` are on.
    fn rules(&self) -> (bool, bool) {
        self.cancel
            .map_or((false, false), |r| (r.fail_fast, r.first_ok))
    }
}

pub(crate) enum TaskState<T, R> {
    /// Spawned, not ended: `R` is what the scope needs to run or abort it.
    Running(R),
    /// Ended; the result waits to be handed out.
    Done(Result<T, TaskError>),
}

impl<T, R> TaskState<T, R> {
    /// The task's result; one still running is aborted (it cannot run any
    /// more, and is not reported back).
    fn into_result(self, reason: &Option<Described>) -> Result<T, TaskError> {
        match self {
            TaskState::Done(result) => result,
            TaskState::Running(_) => Err(TaskError::aborted(reason.clone())),
        }
    }
}

struct Entry<T, R> {
    seq: u64,
    name: Option<Cow<'static, str>>,
    state: TaskState<T, R>,
    /// When it ended, if a shutdown report was being made.
    ended_at: Option<Instant>,
    /// A `#[cancellable]` fn in it took its cancellation path.
    cleanup_ran: bool,
}

/// When a shutdown began, and whether it times the tasks' ends (for a
/// report).
#[derive(Clone, Copy)]
pub(crate) struct ShutdownStart {
    pub(crate) at: Instant,
    pub(crate) timed: bool,
}

pub(crate) struct Ledger<T, R> {
    /// The tasks, each in a slot a later task may reuse once it is free.
    slots: Vec<Option<Entry<T, R>>>,
    /// The free slots.
    free: Vec<usize>,
    running: usize,
    /// Ended tasks not handed out, in completion order.
    done: VecDeque<TaskKey>,
    pub(crate) cause: Arc<Cause>,
    pub(crate) policy: Policy<T>,
    /// Set once a shutdown began: tasks that end now stopped because of it.
    pub(crate) shutdown: Option<ShutdownStart>,
    /// The tasks freed as they ended (reaping).
    pub(crate) reaped: Tally,
}

impl<T, R> Ledger<T, R> {
    pub(crate) fn new(cause: Arc<Cause>) -> Self {
        Ledger {
            slots: Vec::new(),
            free: Vec::new(),
            running: 0,
            done: VecDeque::new(),
            cause,
            policy: Policy {
                cancel: None,
                failure: None,
                reaping: false,
            },
            shutdown: None,
            reaped: Tally::default(),
        }
    }

    /// Tasks not handed out (running or ended).
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    pub(crate) fn has_done(&self) -> bool {
        !self.done.is_empty()
    }

    /// The `Debug` of scope `name` with `len` tasks: the fields both scopes
    /// show, more to add.
    pub(crate) fn debug_struct<'a, 'b>(
        &self,
        f: &'a mut fmt::Formatter<'b>,
        name: &str,
        len: usize,
    ) -> fmt::DebugStruct<'a, 'b> {
        let (fail_fast, first_ok) = self.policy.rules();
        let mut d = f.debug_struct(name);
        d.field("len", &len)
            .field("cancelled", &self.cause.token().is_cancelled())
            .field("fail_fast", &fail_fast);
        if first_ok {
            d.field("first_ok", &true);
        }
        if self.policy.reaping {
            d.field("reaping", &true);
        }
        d
    }

    /// Records a running task, with the sequence number its scope gave it
    /// (a `Scope` counts some tasks it keeps out of the ledger).
    pub(crate) fn insert(&mut self, seq: u64, name: Option<Cow<'static, str>>, run: R) -> TaskKey {
        let entry = Some(Entry {
            seq,
            name,
            state: TaskState::Running(run),
            ended_at: None,
            cleanup_ran: false,
        });
        let slot = self.free.pop().unwrap_or(self.slots.len());
        if slot == self.slots.len() {
            self.slots.push(entry);
        } else {
            self.slots[slot] = entry;
        }
        self.running += 1;
        TaskKey { slot, seq }
    }

    fn entry(&self, key: TaskKey) -> Option<&Entry<T, R>> {
        let entry = self.slots.get(key.slot)?.as_ref();
        entry.filter(|e| e.seq == key.seq)
    }

    fn entry_mut(&mut self, key: TaskKey) -> Option<&mut Entry<T, R>> {
        let entry = self.slots.get_mut(key.slot)?.as_mut();
        entry.filter(|e| e.seq == key.seq)
    }

    /// The running task at `key`, if it still runs.
    pub(crate) fn running_mut(&mut self, key: TaskKey) -> Option<&mut R> {
        match self.entry_mut(key).map(|e| &mut e.state) {
            Some(TaskState::Running(run)) => Some(run),
            _ => None,
        }
    }

    pub(crate) fn name(&self, key: TaskKey) -> Option<&Cow<'static, str>> {
        self.entry(key).and_then(|e| e.name.as_ref())
    }

    /// The keys of the running tasks, in spawn order.
    pub(crate) fn running_keys(&self) -> Vec<TaskKey> {
        let mut keys = Vec::new();
        let running = |e: &&Entry<T, R>| matches!(e.state, TaskState::Running(_));
        for (slot, entry) in self.slots.iter().enumerate() {
            if let Some(e) = entry.as_ref().filter(running) {
                keys.push(TaskKey { slot, seq: e.seq });
            }
        }
        keys.sort_unstable_by_key(|k| k.seq);
        keys
    }

    /// The task at `key` ended with `out`: its value or the payload of its
    /// panic (`None`: it was aborted). Applies the policies (to a task that
    /// returned or panicked), then keeps the result (or, reaping, counts
    /// it). Returns what ran it and, reaping, the result, for the caller to
    /// drop outside any lock (user `Drop`s run there); `None` when the task
    /// had already ended (a detached blocking task reporting late).
    pub(crate) fn record(
        &mut self,
        key: TaskKey,
        out: Option<Result<T, Payload>>,
        cleanup_ran: bool,
    ) -> Option<Ended<T, R>> {
        self.running_mut(key)?;
        if let (Some(rule), Some(out)) = (self.policy.cancel, &out) {
            rule.apply(&self.cause, key.id(), self.name(key), out.as_ref().ok());
        }
        self.record_end(key, result_of(out, &self.cause), cleanup_ran)
    }

    /// The task at `key` ended with `result` (detached: the one that
    /// [`record`](Self::record) does not make); see there.
    /// `cleanup_ran`: a `#[cancellable]` fn in it took its cancellation path.
    pub(crate) fn record_end(
        &mut self,
        key: TaskKey,
        result: Result<T, TaskError>,
        cleanup_ran: bool,
    ) -> Option<Ended<T, R>> {
        let stopping = self.shutdown;
        let reaping = self.policy.reaping;
        let failure = self.policy.failure;
        let entry = self
            .entry_mut(key)
            .filter(|e| matches!(e.state, TaskState::Running(_)))?;
        if stopping.is_some_and(|s| s.timed) {
            entry.ended_at = Some(Instant::now());
        }
        entry.cleanup_ran = cleanup_ran;
        if !reaping {
            let done = TaskState::Done(result);
            let TaskState::Running(run) = std::mem::replace(&mut entry.state, done) else {
                unreachable!()
            };
            self.running -= 1;
            self.done.push_back(key);
            return Some((run, None));
        }
        self.running -= 1;
        let entry = self.remove(key);
        let outcome = outcome_of(&result, failure, stopping.is_some());
        let error = || error_text(&result, failure);
        self.reap(key.id(), entry.name, outcome, cleanup_ran, error);
        let TaskState::Running(run) = entry.state else {
            unreachable!()
        };
        Some((run, Some(result)))
    }

    /// Counts a task freed as it ended (`cleanup_ran`: it ran a `#[cancellable]`
    /// cleanup); keeps it in the log when it needs attention.
    pub(crate) fn reap(
        &mut self,
        id: TaskId,
        name: Option<Cow<'static, str>>,
        outcome: TaskOutcome,
        cleanup_ran: bool,
        error: impl FnOnce() -> Option<String>,
    ) {
        if outcome.needs_attention() {
            let task = TaskReport::new(id, name, outcome, None, error(), false);
            self.reaped.note(task);
        } else {
            let ran = usize::from(cleanup_ran && outcome == TaskOutcome::Stopped);
            self.reaped.count(outcome, 1, ran);
        }
    }

    /// Frees the slot of `key`, which holds its entry; returns the entry.
    fn remove(&mut self, key: TaskKey) -> Entry<T, R> {
        let entry = self.slots[key.slot].take();
        self.free.push(key.slot);
        if self.free.len() == self.slots.len() {
            // Forget the slots: a scope emptied between bursts gives back
            // its peak.
            self.slots.clear();
            self.free.clear();
        }
        entry.expect("cancel-scope: a ledger entry removed twice")
    }

    /// Hands out the first result in completion order.
    pub(crate) fn take_next(&mut self) -> Option<(TaskId, Result<T, TaskError>)> {
        while let Some(key) = self.done.pop_front() {
            if self
                .entry(key)
                .is_some_and(|e| matches!(e.state, TaskState::Done(_)))
            {
                return Some((key.id(), self.take(key)));
            }
        }
        None
    }

    /// Hands out the ended task at `key`.
    pub(crate) fn take(&mut self, key: TaskKey) -> Result<T, TaskError> {
        let TaskState::Done(result) = self.remove(key).state else {
            unreachable!("cancel-scope: took a task that had not ended")
        };
        result
    }

    /// The first kept result, in completion order, that `pick` accepts.
    pub(crate) fn find_done(
        &self,
        pick: impl Fn(&Result<T, TaskError>) -> bool,
    ) -> Option<TaskKey> {
        self.done.iter().copied().find(
            |&key| matches!(self.entry(key), Some(Entry { state: TaskState::Done(r), .. }) if pick(r)),
        )
    }

    /// No task runs: hands out every result, in spawn order, and each
    /// task's report line, and empties the ledger.
    pub(crate) fn finish_reports(&mut self) -> (Vec<TaskReport>, Vec<Result<T, TaskError>>) {
        let reason = self.cause.described();
        let stopping = self.shutdown;
        let failure = self.policy.failure;
        self.drain_sorted()
            .into_iter()
            .map(|e| {
                let result = e.state.into_result(&reason);
                let outcome = outcome_of(&result, failure, e.ended_at.is_some());
                let cleanup = match (outcome, e.ended_at, stopping) {
                    (TaskOutcome::Aborted | TaskOutcome::Detached, ..) => None,
                    (_, Some(end), Some(s)) => Some(end.saturating_duration_since(s.at)),
                    _ => None,
                };
                let id = TaskId::from_seq(e.seq);
                let error = error_text(&result, failure);
                let report = TaskReport::new(id, e.name, outcome, cleanup, error, e.cleanup_ran);
                (report, result)
            })
            .unzip()
    }

    /// [`finish_reports`](Self::finish_reports), results only.
    pub(crate) fn finish(&mut self) -> Vec<Result<T, TaskError>> {
        let reason = self.cause.described();
        self.drain_sorted()
            .into_iter()
            .map(|e| e.state.into_result(&reason))
            .collect()
    }

    /// Empties the ledger, handing out its entries in spawn order.
    fn drain_sorted(&mut self) -> Vec<Entry<T, R>> {
        let mut slots = std::mem::take(&mut self.slots);
        // In place, in the slots' own allocation (`flatten` would collect
        // into a new one, grown as it goes).
        slots.retain(Option::is_some);
        let mut entries: Vec<Entry<T, R>> = slots.into_iter().map(Option::unwrap).collect();
        if !entries.is_sorted_by_key(|e| e.seq) {
            entries.sort_unstable_by_key(|e| e.seq);
        }
        self.free.clear();
        self.running = 0;
        self.done.clear();
        entries
    }
}

impl<U, E, R> Ledger<Result<U, E>, R> {
    /// Turns on `fail_fast` and/or `first_ok`, keeping what was on. The rule
    /// holds for every task: the first kept result (in completion order) it
    /// decides on cancels the scope now, as its task would have had the rule
    /// been set before.
    pub(crate) fn cancel_when(&mut self, fail_fast: bool, first_ok: bool) {
        let (was_fail_fast, was_first_ok) = self.policy.rules();
        let rule = CancelRule {
            fail_fast: fail_fast || was_fail_fast,
            first_ok: first_ok || was_first_ok,
            is_ok: Result::is_ok,
        };
        self.policy.cancel = Some(rule);
        for &key in &self.done {
            let Some(Entry {
                state: TaskState::Done(result),
                name,
                ..
            }) = self.entry(key)
            else {
                continue;
            };
            let value = match result {
                Ok(value) => Some(value),
                Err(e) if e.is_panic() => None,
                Err(_) => continue,
            };
            if rule.apply(&self.cause, key.id(), name.as_ref(), value) {
                break;
            }
        }
    }
}

/// What a result means for a report; `after_cancel` when the task ended
/// while a shutdown ran.
pub(crate) fn outcome_of<T>(
    result: &Result<T, TaskError>,
    failure: Option<FailureText<T>>,
    after_cancel: bool,
) -> TaskOutcome {
    match result {
        Err(e) => e.outcome(),
        Ok(v) if failure.is_some_and(|f| f(v).is_some()) => TaskOutcome::Failed,
        Ok(_) if after_cancel => TaskOutcome::Stopped,
        Ok(_) => TaskOutcome::Completed,
    }
}

/// A task's result from how it ended: its value, the payload of its panic,
/// or (`None`) its abort, for the reason `cause` gives.
pub(crate) fn result_of<T>(out: Option<Result<T, Payload>>, cause: &Cause) -> Result<T, TaskError> {
    match out {
        Some(out) => out.map_err(TaskError::panic),
        None => Err(TaskError::aborted(cause.described())),
    }
}

pub(crate) fn error_text<T>(
    result: &Result<T, TaskError>,
    failure: Option<FailureText<T>>,
) -> Option<String> {
    match result {
        Err(e) => Some(e.to_string()),
        Ok(v) => failure.and_then(|f| f(v)),
    }
}

/// The span a scope task runs in, with the `tracing` feature: target
/// `cancel_scope`, name `task`, fields `id` and (for named tasks) `name`.
#[cfg(feature = "tracing")]
pub(crate) fn task_span(seq: u64, name: Option<&str>) -> tracing::Span {
    match name {
        Some(name) => tracing::debug_span!(target: "cancel_scope", "task", id = seq, name),
        None => tracing::debug_span!(target: "cancel_scope", "task", id = seq),
    }
}
