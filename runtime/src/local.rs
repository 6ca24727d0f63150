//! [`LocalScope<'env, T>`]: a scope whose tasks borrow from the caller's
//! stack and run concurrently inside the task that owns the scope.
//!
//! Implementation notes. The scope polls its tasks itself, so it is an
//! executor in miniature, written without `unsafe`:
//!
//! - Each task is a boxed `dyn Future + 'env` in the scope's [`Ledger`],
//!   the bookkeeping `Scope` uses too (slots, results in completion and in
//!   spawn order, `fail_fast` and `first_ok`).
//! - Each task has its own waker, a [`TaskWaker`] (an `Arc` turned into a
//!   [`Waker`] through [`std::task::Wake`]): waking it sends the task's
//!   sequence number on a tokio `mpsc` channel, the scope's ready queue,
//!   which wakes the owner. A join drains the queue (without spending the
//!   coop budget the tasks' own resources need) and polls only the tasks in
//!   it, once each per batch, so a wake-up costs O(1), not a poll of every
//!   task; a freshly spawned task starts in the queue. The scope writes no
//!   synchronisation of its own: the channel is tokio's.
//! - Every poll, and every drop of a task's future, runs under
//!   `catch_unwind`, as [`Scope`](crate::Scope)'s tasks do: a panic becomes
//!   that task's [`TaskError`].
//! - Finished tasks keep their result in the ledger until a join hands it
//!   out; so no join loses a result when its future is dropped half way.

use std::fmt;
use std::future::{Future, poll_fn};
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::id::TaskId;
use crate::ledger::{Ledger, TaskKey, poll_caught};
use crate::reason::{self, CancelReason, Cause};
use crate::task::TaskError;

/// The waker of one task: it sends the task's key to the scope's ready
/// queue, a tokio `mpsc` channel (so the scope writes no synchronisation of
/// its own; it may be woken from any thread). A task woken twice before its
/// next poll is queued twice; the owner polls it once.
struct TaskWaker {
    key: TaskKey,
    ready: UnboundedSender<TaskKey>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Fails only when the scope is gone, and then nothing is left to poll.
        let _ = self.ready.send(self.key);
    }
}

/// A task still running: its future and its waker.
struct LocalTask<'env, T> {
    /// `None` once it ended, while the ledger records it.
    fut: Option<Pin<Box<dyn Future<Output = T> + 'env>>>,
    /// Made once, so that a poll clones nothing.
    waker: Waker,
    /// The last batch that polled it: a task queued twice in one batch is
    /// polled once.
    batch: u64,
}

/// A scope whose tasks may borrow from the caller's stack: no `'static`, no
/// `Send`. They run concurrently *inside the task that owns the scope*, not
/// on the runtime.
///
/// [`Scope::spawn`](crate::Scope::spawn) needs `Send + 'static` futures,
/// because Tokio may run them on any thread, at any time, for as long as they
/// like. [`LocalScope::spawn`] takes any future that lives for `'env`: it may
/// borrow local variables (a slice, a `&RefCell`, a `&mut`) and it may be
/// `!Send` (an `Rc`, a `RefCell` borrow held across an `.await`). The rest is
/// as in a [`Scope`](crate::Scope): every task gets a child token of the
/// scope's token; results come back in spawn order
/// ([`join_all`](Self::join_all), [`shutdown`](Self::shutdown)) or in
/// completion order ([`join_next`](Self::join_next)); a panic in a task is
/// caught and becomes a [`TaskError`]; [`fail_fast`](Self::fail_fast) and
/// [`first_ok`](Self::first_ok) cancel the scope from inside the task that
/// decides; [`shutdown`](Self::shutdown) cancels, lets the cleanups run for
/// a grace period, then drops the stragglers.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::LocalScope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let data = vec![1, 2, 3, 4, 5];
/// let mut scope = LocalScope::new();
/// for chunk in data.chunks(2) {
///     // `chunk` borrows `data`: no `Arc`, no clone, no `'static`.
///     scope.spawn(move |_token| async move {
///         tokio::task::yield_now().await; // the tasks interleave here
///         chunk.iter().sum::<i32>()
///     });
/// }
/// let sums: Vec<i32> = scope.join_all().await.into_iter().map(Result::unwrap).collect();
/// assert_eq!(sums, [3, 7, 5]); // spawn order
/// # }
/// ```
///
/// # The trade-off: concurrency and borrowing, no parallelism
///
/// A task may borrow because it is not a task of the runtime: the scope
/// owns its future and polls it itself, from the task that owns the scope.
/// The price:
///
/// - **Tasks make progress only while the owner awaits one of the join
///   methods** ([`join_next`](Self::join_next),
///   [`join_next_with_id`](Self::join_next_with_id),
///   [`join_all`](Self::join_all)) or [`shutdown`](Self::shutdown). Spawning
///   does not start a task; between two joins nothing runs, and a task woken
///   in the meantime (its timer fired, its token was cancelled) runs at the
///   next join. A [`Scope`](crate::Scope)'s tasks run on their own, whatever
///   its owner does. To keep the owner's own work going alongside the
///   tasks, await both: `tokio::join!(owner_work, scope.join_all())`.
/// - **No parallelism.** The tasks run concurrently (interleaved at their
///   `.await`s, as in `tokio::join!`), one at a time, on the owner's
///   thread, even on a multi-threaded runtime. A task that blocks, or
///   computes for long without an `.await`, stalls its siblings and the
///   owner. Give CPU-bound work to a `Scope` (its
///   [`spawn_blocking`](crate::Scope::spawn_blocking)), which needs the data
///   owned.
/// - **The scope is `!Send`**, since its tasks may be: a future that holds
///   it across an `.await` is `!Send` too and cannot be given to
///   [`tokio::spawn`]. Own it in `#[tokio::main]`, in
///   [`Runtime::block_on`](tokio::runtime::Runtime::block_on), or in a task
///   of a [`LocalSet`](tokio::task::LocalSet).
/// - **The borrows last as long as the scope**: dropping the scope drops
///   its tasks, so the data they borrow must be declared before the scope,
///   and what they borrow mutably is free again once the scope is dropped.
/// - A task cannot spawn siblings: [`spawn`](Self::spawn) takes
///   `&mut self`.
/// - **Don't make the owner wait, outside a join, for something a task must
///   do.** A task that holds a lock, a permit or a channel slot keeps it
///   while the owner is elsewhere; an owner that then awaits that lock
///   outside a join waits forever, since the task that would release it
///   does not run. Await such a thing together with a join
///   (`tokio::join!(lock, scope.join_all())`), or let the tasks finish
///   first.
///
/// It is the trade-off [moro](https://docs.rs/moro) makes (there, the
/// scope's body runs alongside its tasks, and tasks may spawn siblings), and
/// the polling model of `FuturesUnordered` from the `futures` crate, to
/// which `LocalScope` adds the child tokens, the policies, results in spawn
/// order, caught panics and the graceful shutdown. Use a `Scope` when the
/// tasks can own their data, for parallelism and for tasks that must run
/// while their owner is busy elsewhere; a `LocalScope` when they should
/// borrow it.
///
/// Apart from [`shutdown`](Self::shutdown), which needs Tokio's timer, a
/// `LocalScope` needs no runtime: it runs on any executor.
///
/// # Cleanups
///
/// A task's token is cancelled when the scope's is, and a task sees it
/// as a `Scope`'s task does: with `token.cancelled()` in a `tokio::select!`,
/// or as the first argument of a `#[cancellable]` fn (from the
/// `cancel-scope` crate), whose `on_cancel!` cleanup then runs.
/// [`shutdown`](Self::shutdown) keeps polling the tasks for the grace period
/// so that those cleanups run:
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::cell::RefCell;
/// use std::time::Duration;
/// use cancel_scope::{CancellationToken, LocalScope};
///
/// // Borrows the log: `&RefCell` is not `Send`, and needs not be.
/// async fn worker(id: u32, log: &RefCell<Vec<String>>, token: CancellationToken) -> u32 {
///     tokio::select! {
///         () = token.cancelled() => {
///             // The cleanup, run within the grace period.
///             tokio::task::yield_now().await; // (an async cleanup)
///             log.borrow_mut().push(format!("worker {id} flushed"));
///         }
///         () = std::future::pending() => {} // the work, until cancelled
///     }
///     id
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let log = RefCell::new(Vec::new());
/// let mut scope = LocalScope::new();
/// for id in 0..3 {
///     scope.spawn(|token| worker(id, &log, token));
/// }
/// let results = scope.shutdown(Duration::from_secs(5)).await;
/// let ids: Vec<u32> = results.into_iter().map(Result::unwrap).collect();
/// assert_eq!(ids, [0, 1, 2]);
/// drop(scope); // ends the borrows
/// let mut log = log.into_inner();
/// log.sort(); // the cleanups ran concurrently, in no set order
/// assert_eq!(log, ["worker 0 flushed", "worker 1 flushed", "worker 2 flushed"]);
/// # }
/// ```
///
/// # Dropping a scope
///
/// Dropping a `LocalScope` cancels its token and drops every task's future
/// at once, in spawn order. Nothing polls them any more, so no cleanup runs
/// (no code after a `token.cancelled().await`, no `on_cancel!`), only their
/// `Drop`s; call [`shutdown`](Self::shutdown) first for a graceful stop.
/// Unlike a `Scope`'s tasks, they cannot outlive the scope in any way: they
/// are plain values inside it.
///
/// # Reusing a scope
///
/// As with a `Scope`: when every result has been handed out the scope is
/// empty and can be spawned into again, but its token is never reset, so
/// after [`cancel`](Self::cancel), [`shutdown`](Self::shutdown), a fail-fast
/// or first-ok task or the parent token, new tasks start with a cancelled
/// token. Task ids are never reused.
///
/// # Cost
///
/// Each task is one boxed future plus a small `Arc` for its waker. A
/// wake-up sends the task's number on a tokio `mpsc` channel, which wakes
/// the owner; a join then polls only the woken tasks, not all of them. After polling as many tasks as are running, a join yields
/// to the runtime even if more were woken, so tasks that keep waking
/// themselves cannot starve the owner's other work.
pub struct LocalScope<'env, T> {
    /// The tasks; their futures, while they run.
    ledger: Ledger<T, LocalTask<'env, T>>,
    /// What the tasks' wakers send their keys on.
    ready: UnboundedSender<TaskKey>,
    /// The woken tasks' keys.
    woken: UnboundedReceiver<TaskKey>,
    /// How many batches of woken tasks were polled.
    batches: u64,
    /// The batch being polled (kept to reuse its allocation).
    batch: Vec<TaskKey>,
    /// The sequence number of the next task: its id.
    next_seq: u64,
}

impl<'env, T> LocalScope<'env, T> {
    /// A scope with a fresh root token: only [`cancel`](Self::cancel),
    /// [`shutdown`](Self::shutdown) or dropping the scope cancel it.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::LocalScope;
    ///
    /// let scope = LocalScope::<()>::new();
    /// assert!(scope.is_empty());
    /// assert!(!scope.token().is_cancelled());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        LocalScope::with_cause(Cause::root(CancellationToken::new()))
    }

    /// A scope whose token is a child of `parent`: cancelling `parent`
    /// cancels the scope and its tasks; cancelling the scope never cancels
    /// `parent`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::{CancellationToken, LocalScope};
    ///
    /// let shutdown = CancellationToken::new();
    /// let workers = LocalScope::<()>::child_of(&shutdown);
    /// workers.cancel();
    /// assert!(!shutdown.is_cancelled());
    ///
    /// let workers = LocalScope::<()>::child_of(&shutdown);
    /// shutdown.cancel();
    /// assert!(workers.token().is_cancelled());
    /// ```
    #[must_use]
    pub fn child_of(parent: &CancellationToken) -> Self {
        LocalScope::with_cause(Cause::child_of(parent))
    }

    fn with_cause(cause: Arc<Cause>) -> Self {
        let (ready, woken) = unbounded_channel();
        LocalScope {
            ledger: Ledger::new(cause),
            ready,
            woken,
            batches: 0,
            batch: Vec::new(),
            next_seq: 0,
        }
    }

    fn cause(&self) -> &Arc<Cause> {
        &self.ledger.cause
    }

    /// The scope's token. Clone it to cancel the scope from elsewhere, or
    /// make child tokens of it for work that is not a task of the scope.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::LocalScope;
    ///
    /// let scope = LocalScope::<()>::new();
    /// let token = scope.token().clone();
    /// token.cancel();
    /// assert!(scope.token().is_cancelled());
    /// ```
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        self.cause().token()
    }

    /// Cancels the scope's token, and so every task's token. Nothing is
    /// dropped and nothing is awaited; the tasks see it at the next join.
    /// The token stays cancelled: tasks spawned afterwards start with a
    /// cancelled token.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = LocalScope::new();
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await;
    ///     "stopped"
    /// });
    /// scope.cancel();
    /// assert_eq!(scope.join_next().await.unwrap().unwrap(), "stopped");
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.cause().cancel(CancelReason::Requested);
    }

    /// Why the scope's token was cancelled, `None` while it is not: the
    /// first cause wins. As [`Scope::cancel_reason`](crate::Scope::cancel_reason),
    /// without a deadline.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::{CancelReason, LocalScope};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope: LocalScope<Result<(), &str>> = LocalScope::new().first_ok();
    /// let fast = scope.spawn(|_token| async { Ok(()) });
    /// scope.spawn(|token| async move { token.cancelled().await; Err("cancelled") });
    /// assert_eq!(scope.cancel_reason(), None);
    /// scope.join_all().await;
    /// assert_eq!(scope.cancel_reason(), Some(CancelReason::TaskSucceeded(fast)));
    /// # }
    /// ```
    #[must_use]
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cause().reason()
    }

    /// The number of tasks whose result has not been handed out yet,
    /// running or finished.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = LocalScope::new();
    /// scope.spawn(|_token| async { 1 });
    /// scope.spawn(|_token| async { 2 });
    /// assert_eq!(scope.len(), 2);
    /// scope.join_next().await;
    /// assert_eq!(scope.len(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.ledger.len()
    }

    /// `true` when every task's result has been handed out (or none was
    /// spawned).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut scope = LocalScope::new();
    /// assert!(scope.is_empty());
    /// scope.spawn(|_token| async {});
    /// assert!(!scope.is_empty());
    /// scope.join_all().await;
    /// assert!(scope.is_empty());
    /// # }
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `f(token)` as a task of the scope, where `token` is a fresh
    /// child of the scope's token: it is cancelled when the scope is, and the
    /// task may cancel it (or hand it on) without cancelling the scope or its
    /// siblings.
    ///
    /// The future may borrow anything that outlives the scope (`'env`) and
    /// need not be `Send`. `f` runs right away to build it; the future
    /// itself first runs at the next join (see
    /// [the trade-off](Self#the-trade-off-concurrency-and-borrowing-no-parallelism)).
    /// A `#[cancellable]` fn, or any `async fn(CancellationToken, ..)`, fits
    /// as it is: `scope.spawn(|t| flush(t, &buf))`. Needs no runtime.
    ///
    /// A panic in the task is caught and reported as a [`TaskError`] by the
    /// join methods. Returns the task's [`TaskId`], unique within the scope,
    /// which [`join_next_with_id`](Self::join_next_with_id) hands back.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::cell::Cell;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let hits = Cell::new(0); // `&Cell` is not `Send`
    /// let mut scope = LocalScope::new();
    /// for _ in 0..3 {
    ///     scope.spawn(|_token| async { hits.set(hits.get() + 1) });
    /// }
    /// assert_eq!(hits.get(), 0); // nothing runs until a join
    /// scope.join_all().await;
    /// assert_eq!(hits.get(), 3);
    /// # }
    /// ```
    pub fn spawn<F, Fut>(&mut self, f: F) -> TaskId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + 'env,
    {
        let seq = self.next_seq;
        self.next_seq += 1;
        let fut = f(self.cause().token().child_token());
        #[cfg(feature = "tracing")]
        let fut = tracing::Instrument::instrument(fut, crate::ledger::task_span(seq, None));
        let key = self.ledger.insert(
            seq,
            None,
            LocalTask {
                fut: Some(Box::pin(fut)),
                waker: Waker::noop().clone(),
                batch: 0,
            },
        );
        let waker = Waker::from(Arc::new(TaskWaker {
            key,
            ready: self.ready.clone(),
        }));
        if let Some(task) = self.ledger.running_mut(key) {
            task.waker = waker;
        }
        // In the ready queue from the start: it needs a first poll. (The
        // scope holds the receiver, so the send cannot fail.)
        let _ = self.ready.send(key);
        key.id()
    }

    /// Runs the tasks until the next one finishes and returns its result, in
    /// completion order; `None` when the scope is empty.
    ///
    /// Results that an interrupted [`join_all`](Self::join_all) or
    /// [`shutdown`](Self::shutdown) had already collected come first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes (say, in a
    /// `tokio::select!` whose other branch won), no result is lost; the
    /// tasks it polled keep their progress, and a task that finished stays
    /// in the scope for the next call. While it is not awaited, the tasks
    /// do not run.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let delays = [30, 10, 20];
    /// let mut scope = LocalScope::new();
    /// for ms in &delays {
    ///     scope.spawn(move |_token| async move {
    ///         tokio::time::sleep(Duration::from_millis(*ms)).await;
    ///         ms
    ///     });
    /// }
    /// let mut order = Vec::new();
    /// while let Some(result) = scope.join_next().await {
    ///     order.push(*result.unwrap());
    /// }
    /// assert_eq!(order, [10, 20, 30]);
    /// # }
    /// ```
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        self.join_next_with_id().await.map(|(_, result)| result)
    }

    /// [`join_next`](Self::join_next), with the id of the task the result
    /// belongs to: the [`TaskId`] that [`spawn`](Self::spawn) returned. A
    /// task that panicked carries its id as well.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like `join_next`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let paths = ["a.toml", "b.toml"];
    /// let mut scope = LocalScope::new();
    /// let ids: Vec<_> = paths
    ///     .iter()
    ///     .map(|path| {
    ///         scope.spawn(move |_token| async move {
    ///             if *path == "b.toml" {
    ///                 panic!("corrupt file");
    ///             }
    ///             path.len()
    ///         })
    ///     })
    ///     .collect();
    /// let mut failed = Vec::new();
    /// while let Some((id, result)) = scope.join_next_with_id().await {
    ///     if let Err(err) = result {
    ///         let path = paths[ids.iter().position(|&i| i == id).unwrap()];
    ///         failed.push((path, err.to_string()));
    ///     }
    /// }
    /// assert_eq!(failed, [("b.toml", "task panicked: corrupt file".to_string())]);
    /// # }
    /// ```
    pub async fn join_next_with_id(&mut self) -> Option<(TaskId, Result<T, TaskError>)> {
        poll_fn(|cx| {
            if let Some(next) = self.ledger.take_next() {
                return Poll::Ready(Some(next));
            }
            let idle = self.poll_woken(cx, true);
            self.ledger
                .take_next()
                .map_or(idle.map(|()| None), |next| Poll::Ready(Some(next)))
        })
        .await
    }

    /// Runs every task to its end and returns the results of all tasks not
    /// already returned by [`join_next`](Self::join_next), in spawn order,
    /// so that results map to the tasks as they were spawned. The scope is
    /// empty afterwards.
    ///
    /// It waits as long as it takes: cancel first ([`cancel`](Self::cancel))
    /// to stop tasks that run until cancelled, or use
    /// [`shutdown`](Self::shutdown) to bound the wait.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the results
    /// it already collected stay in the scope and are returned by the next
    /// `join_next`, `join_all` or `shutdown`; the other tasks keep their
    /// progress.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut scope = LocalScope::new();
    /// for ms in [30, 10, 20] {
    ///     scope.spawn(move |_token| async move {
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         ms
    ///     });
    /// }
    /// let results: Vec<u64> = scope.join_all().await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(results, [30, 10, 20]);
    /// # }
    /// ```
    pub async fn join_all(&mut self) -> Vec<Result<T, TaskError>> {
        poll_fn(|cx| self.poll_woken(cx, false)).await;
        self.ledger.finish()
    }

    /// Graceful, then forced shutdown: cancels the scope's token, keeps
    /// running the tasks for up to `grace` so that they see it and run their
    /// cleanups, then drops the tasks still running and returns the results
    /// of all tasks not already returned by [`join_next`](Self::join_next),
    /// in spawn order. It returns as soon as every task has finished, not at
    /// the end of `grace`.
    ///
    /// A dropped task's result is a [`TaskError`] whose
    /// [`is_aborted`](TaskError::is_aborted) is `true`. Its future is dropped
    /// before `shutdown` returns (a panic from its `Drop` is ignored), so no
    /// task is left in the scope.
    ///
    /// The token stays cancelled afterwards: tasks spawned into the scope
    /// then start with a cancelled token.
    ///
    /// # Panics
    ///
    /// When tasks are still running and the runtime has no timer
    /// (`enable_time`), like [`tokio::time::sleep`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that no result is lost: if the future is
    /// dropped before it completes, the results it collected stay in the
    /// scope for the next `join_next`, `join_all` or `shutdown`, and the
    /// other tasks keep their progress (the token stays cancelled; a new
    /// call starts a new grace period).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut scope = LocalScope::new();
    /// scope.spawn(|token| async move {
    ///     token.cancelled().await;
    ///     "cleaned up" // runs its cleanup when cancelled
    /// });
    /// scope.spawn(|_token| async {
    ///     std::future::pending::<()>().await; // ignores its token
    ///     "never"
    /// });
    /// let results = scope.shutdown(Duration::from_millis(50)).await;
    /// assert_eq!(results[0].as_ref().unwrap(), &"cleaned up");
    /// assert!(results[1].as_ref().unwrap_err().is_aborted());
    /// # }
    /// ```
    pub async fn shutdown(&mut self, grace: Duration) -> Vec<Result<T, TaskError>> {
        self.cause().cancel(CancelReason::Shutdown);
        if self.ledger.running() > 0 {
            let all_finished = poll_fn(|cx| self.poll_woken(cx, false));
            if tokio::time::timeout(grace, all_finished).await.is_err() {
                self.abort_running();
            }
        }
        self.ledger.finish()
    }

    /// Polls the woken tasks, batch after batch, until none is woken, or a
    /// task has finished (with `until_done`), or it polled as many tasks as
    /// were running. Each batch is taken until the ready queue is empty,
    /// which registers `cx`'s waker there: the next wake-up, during the
    /// batch's polls or later, wakes the owner (which then yields to the
    /// runtime before polling again). Ready once no task runs.
    fn poll_woken(&mut self, cx: &mut Context<'_>, until_done: bool) -> Poll<()> {
        let budget = self.ledger.running();
        if budget == 0 {
            return Poll::Ready(());
        }
        let mut polled = 0;
        let mut batch = mem::take(&mut self.batch);
        // The scope's cause is current while its tasks run, so that a
        // `#[cancellable]` fn cancelled in one can tell why.
        let outer = reason::enter(Some(Arc::clone(self.cause())));
        loop {
            // `try_recv` takes no coop budget: the tasks' own Tokio resources
            // need it. Only an empty queue is polled, to register `cx`'s
            // waker. (`None` cannot happen: the scope holds a sender.)
            loop {
                while let Ok(key) = self.woken.try_recv() {
                    batch.push(key);
                }
                let Poll::Ready(Some(key)) = self.woken.poll_recv(cx) else {
                    break;
                };
                batch.push(key);
            }
            if batch.is_empty() {
                break;
            }
            self.batches += 1;
            polled += batch.len();
            for key in batch.drain(..) {
                self.poll_task(key);
            }
            let running = self.ledger.running();
            if running == 0 || polled >= budget || (until_done && self.ledger.has_done()) {
                break;
            }
        }
        reason::leave(outer);
        self.batch = batch;
        if self.ledger.running() == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Polls task `key` once, if it is still running; records its end.
    fn poll_task(&mut self, key: TaskKey) {
        let batches = self.batches;
        // A stale wake-up: the task finished since.
        let Some(task) = self.ledger.running_mut(key) else {
            return;
        };
        if task.batch == batches {
            // Queued twice in this batch: polled already.
            return;
        }
        task.batch = batches;
        let mut task_cx = Context::from_waker(&task.waker);
        let Poll::Ready(out) = poll_caught(Pin::new(&mut task.fut), &mut task_cx) else {
            return;
        };
        self.ledger.record(key, Some(out), false);
    }

    /// Drops the futures of the tasks still running, in spawn order; they
    /// count as aborted.
    fn abort_running(&mut self) {
        for key in self.ledger.running_keys() {
            let fut = self.ledger.running_mut(key).and_then(|t| t.fut.take());
            // Reported as the abort, as in a `Scope`.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
            self.ledger.record(key, None, false);
        }
    }
}

impl<U, E> LocalScope<'_, Result<U, E>> {
    /// Makes the scope fail fast: the first task that returns `Err` or
    /// panics cancels the scope's token at once, in the poll that saw it
    /// fail, so its siblings see their tokens cancelled and run their
    /// cleanups within the same join.
    ///
    /// It holds for every task, those spawned before it included; set on a
    /// scope that holds a failed result not yet handed out, it cancels at
    /// once. The failing task's own result is returned as usual by the join
    /// methods.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let log = std::cell::RefCell::new(Vec::new());
    /// let log = &log;
    /// let mut scope = LocalScope::new().fail_fast();
    /// scope.spawn(move |token| async move {
    ///     token.cancelled().await; // a sibling failed
    ///     log.borrow_mut().push("cleaned up");
    ///     Ok(())
    /// });
    /// scope.spawn(|_token| async { Err("disk full") });
    /// let results = scope.join_all().await;
    /// assert_eq!(results[1].as_ref().unwrap(), &Err("disk full"));
    /// assert!(scope.token().is_cancelled());
    /// assert_eq!(*log.borrow(), ["cleaned up"]);
    /// # }
    /// ```
    #[must_use]
    pub fn fail_fast(mut self) -> Self {
        self.ledger.cancel_when(true, false);
        self
    }

    /// Makes the first success win: the first task that returns `Ok` cancels
    /// the scope's token at once, in the poll that saw it, so its siblings
    /// see their tokens cancelled and run their cleanups. The mirror of
    /// [`fail_fast`](Self::fail_fast); with both, the first task to end in
    /// any way cancels the scope. An `Err` or a panic cancels nothing.
    ///
    /// It holds for every task, those spawned before it included; set on a
    /// scope that holds a success not yet handed out, it cancels at once.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// use cancel_scope::LocalScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let replicas = [("a", 300), ("b", 100), ("c", 200)];
    /// let mut scope = LocalScope::new().first_ok();
    /// for (name, ms) in &replicas {
    ///     scope.spawn(move |token| async move {
    ///         let query = tokio::time::sleep(Duration::from_millis(*ms));
    ///         token.run_until_cancelled(query).await.map(|()| *name).ok_or("cancelled")
    ///     });
    /// }
    /// let results = scope.join_all().await;
    /// assert_eq!(results[0].as_ref().unwrap(), &Err("cancelled"));
    /// assert_eq!(results[1].as_ref().unwrap(), &Ok("b"));
    /// assert_eq!(results[2].as_ref().unwrap(), &Err("cancelled"));
    /// # }
    /// ```
    #[must_use]
    pub fn first_ok(mut self) -> Self {
        self.ledger.cancel_when(false, true);
        self
    }
}

impl<T> Default for LocalScope<'_, T> {
    /// Same as [`LocalScope::new`].
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let scope: cancel_scope::LocalScope<u8> = Default::default();
    /// assert!(scope.is_empty());
    /// ```
    fn default() -> Self {
        LocalScope::new()
    }
}

/// Shows the number of tasks, whether the token is cancelled, whether the
/// scope fails fast, and whether the first success wins when it does.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// let scope = cancel_scope::LocalScope::<u8>::new();
/// assert_eq!(
///     format!("{scope:?}"),
///     "LocalScope { len: 0, cancelled: false, fail_fast: false, .. }",
/// );
/// let scope = cancel_scope::LocalScope::<Result<u8, ()>>::new().first_ok();
/// assert_eq!(
///     format!("{scope:?}"),
///     "LocalScope { len: 0, cancelled: false, fail_fast: false, first_ok: true, .. }",
/// );
/// ```
impl<T> fmt::Debug for LocalScope<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ledger
            .debug_struct(f, "LocalScope", self.len())
            .finish_non_exhaustive()
    }
}

/// Cancels the token, then drops every task's future (in spawn order)
/// without polling it again: no cleanup runs. See
/// [Dropping a scope](LocalScope#dropping-a-scope).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::LocalScope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cleaned_up = std::cell::Cell::new(false);
/// let flag = &cleaned_up;
/// let mut scope = LocalScope::new();
/// scope.spawn(move |token| async move {
///     token.cancelled().await;
///     flag.set(true); // never runs: nothing polls the task any more
/// });
/// let token = scope.token().clone();
/// drop(scope);
/// assert!(token.is_cancelled());
/// assert!(!cleaned_up.get());
/// # }
/// ```
impl<T> Drop for LocalScope<'_, T> {
    fn drop(&mut self) {
        self.cause().cancel(CancelReason::Dropped);
        for key in self.ledger.running_keys() {
            drop(self.ledger.running_mut(key).and_then(|t| t.fut.take()));
        }
    }
}
