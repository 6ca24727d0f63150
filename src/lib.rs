//! Cancellation for Tokio as one attribute and one type.
//!
//! Cancellation in Tokio is cooperative: a task stops only at an `.await`, and
//! only if something tells it to. Daemons hand-write the same glue for it: a
//! `CancellationToken` threaded through every function, a `tokio::select!`
//! with a cleanup branch, a `JoinSet` plus a token plus a timeout for a
//! graceful-then-forced shutdown. `cancel-scope` makes that glue
//! [`#[cancellable]`](macro@cancellable) and [`Scope`].
//!
//! ```
//! use cancel_scope::{CancellationToken, cancellable, on_cancel};
//! use tokio::sync::mpsc;
//!
//! #[cancellable]
//! async fn writer_loop(rx: &mut mpsc::Receiver<u32>, out: &mut Vec<u32>) -> usize {
//!     let mut pending = Vec::new(); // setup: runs first, never raced
//!     on_cancel! {
//!         // cleanup: runs only on cancel, after the body was dropped
//!         out.append(&mut pending);
//!     }
//!     loop {
//!         // body: raced against the token
//!         let Some(msg) = rx.recv().await else { break out.len() };
//!         pending.push(msg);
//!         if pending.len() >= 64 {
//!             out.append(&mut pending);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (tx, mut rx) = mpsc::channel(8);
//! let token = CancellationToken::new();
//! let mut out = Vec::new();
//! tx.send(7).await.unwrap();
//! let writer = writer_loop(token.clone(), &mut rx, &mut out);
//! let canceller = async {
//!     tokio::task::yield_now().await;
//!     token.cancel();
//! };
//! let (result, ()) = tokio::join!(writer, canceller);
//! assert!(result.is_err()); // cancelled ...
//! assert_eq!(out, [7]); // ... and the pending record was flushed
//! # }
//! ```
//!
//! A [`Scope`] runs tasks that cannot outlive it; each gets a child token of
//! the scope's, and all of them return the same type:
//!
//! ```
//! use std::time::Duration;
//!
//! use cancel_scope::{Cancelled, Scope, cancellable, on_cancel};
//!
//! #[cancellable]
//! async fn worker(id: u64) -> u64 {
//!     on_cancel! { println!("worker {id}: cleaned up"); }
//!     tokio::time::sleep(Duration::from_secs(id)).await;
//!     id
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let mut scope: Scope<Result<u64, Cancelled>> = Scope::new();
//! for id in 1..=3 {
//!     scope.spawn(move |token| worker(token, id));
//! }
//! tokio::time::sleep(Duration::from_millis(1500)).await;
//! // Cancel every task, give their cleanups up to 1 s, abort the rest; the
//! // results come in spawn order.
//! let results = scope.shutdown(Duration::from_secs(1)).await;
//! let finished: Vec<Option<u64>> = results
//!     .into_iter()
//!     .map(|r| r.expect("no task panicked").ok())
//!     .collect();
//! assert_eq!(finished, [Some(1), None, None]); // 2 and 3 were cancelled
//! # }
//! ```
//!
//! # Choosing between a token, `#[cancellable]` and a `Scope`
//!
//! - A bare [`CancellationToken`] is enough when a loop only needs to stop:
//!   `token.run_until_cancelled(work)` or a `select!` on `token.cancelled()`.
//! - `#[cancellable]` is for a function that must clean up when it is
//!   cancelled: flush a buffer, roll back a transaction, say goodbye to a
//!   peer. It races the body against the token, drops the body, runs the
//!   `on_cancel!` block to completion and returns `Err(Cancelled)`.
//! - A [`Scope`] is for a group of tasks that must not outlive their owner:
//!   fan-out work, the subsystems of a daemon, the connections of a server.
//!   Each task gets a child token; `shutdown(grace)` cancels them, waits for
//!   their cleanups and aborts the stragglers.
//!
//! # Features
//!
//! - `signal` (default): [`ShutdownSignal`], a root token cancelled on
//!   Ctrl-C or SIGTERM.
//! - `tracing`: a `tracing` event per cancelled `#[cancellable]` fn, and a
//!   `task` span around every `Scope` task. Built with
//!   `RUSTFLAGS="--cfg tokio_unstable"` as well, the tasks a `Scope` spawns
//!   with a name ([`Scope::spawn_named`] and its kin, so the daemon's
//!   subsystems too) carry it to Tokio's task builder, and tokio-console
//!   shows it.
#![doc = include_str!("semantics.md")]
#![deny(missing_docs)]
// docs.rs (`--cfg docsrs`, nightly): each item gated by a feature says which.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The examples in these docs and in README.md compile without a warning.
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "signal")]
pub use cancel_scope_runtime::ShutdownSignal;
pub use cancel_scope_runtime::daemon;
pub use cancel_scope_runtime::fs;
#[cfg(feature = "process")]
pub use cancel_scope_runtime::process;
pub use cancel_scope_runtime::{
    CancelReason, CancellationToken, Cancelled, LocalScope, Scope, Shield, ShutdownReport,
    SpawnPermit, Spawner, TaskError, TaskHandle, TaskId, TaskOutcome, TaskOutput, TaskReport,
    shield,
};

/// A page of docs, no items: systemd units and a Kubernetes pod spec for a
/// [`daemon::Daemon`], and how its numbers map to theirs.
#[cfg(all(feature = "signal", feature = "systemd"))]
#[doc = include_str!("../docs/deploying.md")]
pub mod deploying {}

/// Makes an `async fn` cancellable: it takes a [`CancellationToken`], races
/// its body against it, and runs an async cleanup when it is cancelled.
///
/// ```
/// use cancel_scope::{CancellationToken, Cancelled, cancellable};
///
/// #[cancellable]
/// async fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // `double` now takes a token first and returns `Result<u32, Cancelled>`.
/// let token = CancellationToken::new();
/// assert_eq!(double(token.clone(), 21).await, Ok(42));
/// token.cancel();
/// assert_eq!(double(token, 21).await, Err(Cancelled::new()));
/// # }
/// ```
///
/// # What the attribute does
///
/// - **Token.** `token: CancellationToken` is injected as the first parameter
///   (after `self`). `#[cancellable(token = name)]` picks another name. A
///   parameter marked `#[token]` (of type `CancellationToken` or
///   `&CancellationToken`) is used instead, and nothing is injected.
/// - **Return type.** `T` becomes `Result<T, Cancelled>`. With
///   `#[cancellable(flatten)]` a declared `Result<T, E>` stays as written
///   (`E: From<Cancelled>`, as `std::io::Error` is) and a cancellation returns
///   `Err(E::from(Cancelled))`.
///   A fn with a setup before `on_cancel!` is emitted as a plain `fn`
///   returning `impl Future<Output = ..>` (its future then stores the
///   parameters once, not twice): it is called and awaited as the
///   `async fn` would be, captures the same lifetimes, keeps every parameter
///   until the future is done or dropped, and can implement an `async fn`
///   of a trait. Rustdoc shows it as such a `fn`. It stays an `async fn`
///   when it has another attribute that may be a macro expecting one (any
///   but `doc`, `allow`, `warn`, `deny`, `forbid`, `expect`, `deprecated`,
///   `must_use`, `inline`, `cold`, `track_caller` and `cfg`), such as
///   `#[tracing::instrument]`.
/// - **Setup, cleanup, body.** Statements before [`on_cancel!`] are the
///   setup: they run first and are not raced. Statements after it are the
///   body, raced against `token.cancelled()`. Without `on_cancel!` the whole
///   body is raced and there is no cleanup.
/// - **On cancellation** the body future is dropped (its `Drop`s run), then
///   the cleanup runs to completion, then the fn returns `Err(Cancelled)`.
///   Cancellation wins ties: with an already-cancelled token the body is
///   never polled, and the cleanup still runs (it pairs with the setup).
/// - **On completion** the fn returns `Ok(value)` and the cleanup does not
///   run. A panic in the body propagates unchanged; the cleanup does not run.
/// - **Dropping** the fn's future from outside (a `select!` that picked
///   another branch, an aborted task) is not a cancellation: the body is
///   dropped, and the cleanup does not run, since nothing polls it any more.
///   Cancel the token and await the future when the cleanup must run.
///
/// # Nested calls
///
/// A `#[cancellable]` call inside a cancelled body is cancelled with it when
/// its token is the caller's or derived from it (pass `token.clone()` or
/// `token.child_token()` on), and its cleanup runs before the caller's:
/// innermost first. A call on an unrelated token is not cancelled; it is
/// dropped with the body (up to 50 ms later: see "Across threads" in the
/// crate docs). A nested call's `Err(Cancelled)` returns into the
/// body like any value, but a caller whose own token is cancelled returns
/// `Err(Cancelled)` whatever its body made of it. The crate docs' section
/// [Cancellation semantics](crate#cancellation-semantics) has each rule with
/// an example, and [`shield`] keeps a critical section (a
/// reply being written) from being cut.
///
/// # The cleanup
///
/// The cleanup is the last code to run, so it owns the parameters and the
/// setup's locals: it may use them mutably or consume them. A local that the
/// body consumes is gone for the cleanup (the body may have been dropped half
/// way through consuming it), and the compiler says so. For a resource both
/// need, keep it in an `Option`:
///
/// ```
/// use cancel_scope::{cancellable, on_cancel, CancellationToken};
/// # struct Tx(std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>);
/// # impl Tx {
/// #     async fn insert(&mut self) { tokio::task::yield_now().await }
/// #     async fn commit(self) { self.0.lock().unwrap().push("commit") }
/// #     async fn rollback(self) { self.0.lock().unwrap().push("rollback") }
/// # }
///
/// #[cancellable]
/// async fn transfer(tx: Tx) {
///     let mut tx = Some(tx);
///     on_cancel! {
///         if let Some(tx) = tx.take() {
///             tx.rollback().await;
///         }
///     }
///     if let Some(t) = tx.as_mut() {
///         t.insert().await;
///     }
///     if let Some(tx) = tx.take() {
///         tx.commit().await;
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
/// let token = CancellationToken::new();
/// token.cancel();
/// assert!(transfer(token, Tx(log.clone())).await.is_err());
/// # assert_eq!(*log.lock().unwrap(), ["rollback"]);
/// # }
/// ```
///
/// Inside the cleanup, `return;` ends the cleanup early (the fn still returns
/// `Err(Cancelled)`), and `?` is a compile error, at the `?`: the cleanup
/// cannot change the outcome, so handle or log its errors
/// (`if let Err(e) = tx.rollback().await { .. }`). Its value must be `()`.
///
/// # `return` and `?`
///
/// In the setup and in the body, `return` and `?` work against the declared
/// return type, as in the fn without the attribute: a fallible setup such as
/// `let f = File::create(p).await?;` followed by a cleanup that uses `f`
/// returns `Ok(Err(e))` when it fails (or `Err(e)` with `flatten`).
///
/// # The token in the body
///
/// The race borrows the token, so the setup and the body may use it, clone
/// it or hand out `token.child_token()`, but not move it: passing `token`
/// by value, or using it in a `move` closure or block, is a compile error
/// that says to pass `token.clone()` instead (or to shadow it with
/// `let token = token.clone();` before the `move` block). The cleanup may
/// move it.
///
/// # With `#[tracing::instrument]`
///
/// Put `#[cancellable]` first, above `#[tracing::instrument]`: the
/// instrumented fn is then the rewritten one, whose `token` parameter
/// `skip(token)` leaves out of the span's fields (else it is recorded with
/// its `Debug`). In the other order, `instrument` moves the body into a
/// block of its own, where `on_cancel!` is not at the top level any more,
/// and that is a compile error saying so. So:
/// `#[cancellable]` on one line, `#[tracing::instrument(skip(token))]` on
/// the next, then `async fn fetch(id: u32) -> u32 { .. }`.
///
/// # Its docs
///
/// The rewritten fn's docs get an `# Errors` section saying when it returns
/// `Err(Cancelled)` (as `clippy::pedantic` asks of a `pub` fn returning a
/// `Result`); a fn without docs gets none, so `missing_docs` still applies.
///
/// # Timeouts
///
/// `#[cancellable(timeout = EXPR)]`, with `EXPR: Duration`, also races the
/// body against a deadline that starts when the body does (so `EXPR` may use
/// the parameters and the setup's locals). When it fires, the cleanup runs
/// and the result is a [`Cancelled`] whose [`is_timeout`](Cancelled::is_timeout)
/// is true. The token the fn sees is then a child of the caller's token that
/// the deadline cancels, so work the body handed it to stops as well, while
/// the caller's token is left alone.
///
/// `#[cancellable(cleanup_timeout = EXPR)]` bounds the cleanup: past it the
/// cleanup is dropped and the fn still returns `Err(Cancelled)`. Both need a
/// Tokio runtime with its time driver enabled.
///
/// ```
/// use std::time::Duration;
/// use cancel_scope::{cancellable, CancellationToken};
///
/// #[cancellable(timeout = Duration::from_millis(ms))]
/// async fn slow(ms: u64) {
///     tokio::time::sleep(Duration::from_secs(3600)).await;
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let err = slow(CancellationToken::new(), 10).await.unwrap_err();
/// assert!(err.is_timeout());
/// # }
/// ```
///
/// # Why it was cancelled
///
/// [`Cancelled::reason`] says why: the fn's own `timeout`
/// ([`CancelReason::Timeout`]), or, for a fn running in a task of a
/// [`Scope`] or [`LocalScope`] that was cancelled, the scope's reason (a
/// sibling that failed under `fail_fast`, the winner under `first_ok`, the
/// deadline, the shutdown, a [`ShutdownSignal`], the owner's `cancel`), else
/// [`CancelReason::Token`]. A nested `#[cancellable]` call cancelled with its
/// caller (it sees its cancellation while the caller polls its body so that
/// nested calls finish) reports the caller's reason. Until something is cancelled the
/// reason costs a scope's tasks little: a reference count per task, two
/// thread-local writes per poll; the `#[cancellable]` fn itself, nothing.
///
/// ```
/// use cancel_scope::{cancellable, on_cancel, CancelReason, Cancelled, Scope};
///
/// #[cancellable]
/// async fn worker(flushed: &std::sync::atomic::AtomicBool) -> u32 {
///     on_cancel! { flushed.store(true, std::sync::atomic::Ordering::SeqCst); }
///     std::future::pending().await
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// static FLUSHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// let mut scope: Scope<Result<u32, Cancelled>> = Scope::new().fail_fast();
/// scope.spawn(|token| worker(token, &FLUSHED));
/// let bad = scope.spawn(|_token| async {
///     tokio::task::yield_now().await;
///     Err(Cancelled::new()) // any `Err` brings the scope down
/// });
/// let results = scope.join_all().await;
/// let cancelled = results[0].as_ref().unwrap().unwrap_err();
/// assert_eq!(cancelled.reason(), CancelReason::TaskFailed(bad));
/// assert_eq!(cancelled.to_string(), format!("cancelled: task #{bad} failed"));
/// assert!(FLUSHED.load(std::sync::atomic::Ordering::SeqCst));
/// # }
/// ```
///
/// # A body that never awaits
///
/// A raced body that loops (`loop`, `while`, `for`) without any `.await`
/// cannot be cancelled until it ends: cancellation only happens at an
/// `.await`. `#[cancellable]` warns about it at the loop (as a deprecation
/// warning, the only kind a macro can emit on stable Rust). Await something
/// in the loop, such as `tokio::task::yield_now().await`, move the work to
/// `spawn_blocking` and check the token there, or silence the warning with
/// `#[cancellable(allow_no_await)]` when the loop is short.
///
/// # Where it applies
///
/// Free functions, inherent and trait-impl methods (`self`, `&self`,
/// `&mut self`, `self: Arc<Self>`), generics, lifetimes, `where` clauses,
/// `impl Trait` arguments; attributes, doc comments and visibility are kept.
/// On a trait method declaration without a body it rewrites the signature
/// only, so the impls (also `#[cancellable]`) match it.
///
/// # Errors
///
/// Misuse is a compile error spanned at the offending tokens, and the
/// function is still emitted as written (no token injected, the declared
/// return type; only `#[token]` markers and `on_cancel!` blocks are taken
/// out, and the body may still name the token), so that the error is the
/// only one and callers that call the fn as written type-check: not an
/// `async fn`, a `const` or `extern` fn, an unknown
/// or duplicate argument, two `on_cancel!`, `on_cancel!` anywhere but the top
/// level of the body, `token = ` naming an existing parameter, two
/// `#[token]` parameters, `flatten` on a fn whose return type is not written
/// as a `Result`. Errors the compiler would report against code the user
/// never wrote are reported at the user's tokens with the fix instead:
/// moving the token in the setup or the body (pass `token.clone()`), `?` in
/// the cleanup (handle the error there), `#[tracing::instrument]` above
/// `#[cancellable]` with an `on_cancel!` (swap them); `flatten` with an error
/// type lacking `From<Cancelled>` is one error at the return type. A cleanup
/// that uses a local the body consumed is the compiler's "use of moved
/// value", pointing at the cleanup and the body's use: keep the local in an
/// `Option` (see [The cleanup](#the-cleanup)).
pub use cancel_scope_macros::cancellable;

/// Declares the cleanup of a [`#[cancellable]`](macro@cancellable) fn.
///
/// It must be a statement at the top level of a `#[cancellable]` body; the
/// attribute consumes it. Anywhere else it is a compile error.
///
/// ```
/// use cancel_scope::{CancellationToken, cancellable, on_cancel};
///
/// #[cancellable]
/// async fn work(log: &mut Vec<&'static str>) {
///     log.push("setup");
///     on_cancel! { log.push("cleanup"); }
///     std::future::pending::<()>().await;
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let token = CancellationToken::new();
/// token.cancel();
/// let mut log = Vec::new();
/// assert!(work(token, &mut log).await.is_err());
/// assert_eq!(log, ["setup", "cleanup"]);
/// # }
/// ```
///
/// ```compile_fail
/// use cancel_scope::on_cancel;
///
/// async fn not_cancellable() {
///     on_cancel! { println!("never"); }
/// }
/// ```
#[macro_export]
macro_rules! on_cancel {
    (@__cancel_scope_consumed) => {};
    ($($cleanup:tt)*) => {
        ::core::compile_error! {
            "`on_cancel!` must be a statement at the top level of a `#[cancellable]` async fn body"
        }
    };
}

/// README.md's code blocks, compiled and run by `cargo test` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct Readme;

#[doc(hidden)]
pub mod __private {
    pub use cancel_scope_runtime::private::*;
}
