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
#![deny(missing_docs)]

pub use cancel_scope_runtime::{CancellationToken, Cancelled};

/// Makes an `async fn` cancellable.
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

#[doc(hidden)]
pub mod __private {
    pub use cancel_scope_runtime::private::*;
}
