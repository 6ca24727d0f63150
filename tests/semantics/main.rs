//! The cancellation semantics (the crate docs' "Cancellation semantics"),
//! one module per rule, each with the shapes that tried to break it:
//! futures owned outside a body, nested calls forgotten or dropped, retry
//! loops, caught panics, `block_on` in a `Drop` or inside `block_in_place`,
//! big fan-outs, `shield`. Public API only.
//!
//! Hangs are bounded by paused clocks, loop caps or a generous watchdog
//! thread; no test asserts a wall-clock bound.

#[path = "../common/mod.rs"]
mod common;

mod cancellation_wins;
mod derived_tokens;
mod own_token;
mod per_thread_state;
mod shield;
#[cfg(feature = "tracing")]
mod tracing_events;
mod unrelated_tokens;

// Helpers that more than one rule's shapes use.
use cancellation_wins::{assert_the_loop_yields, quick_attempt};
use derived_tokens::ends_after;
use own_token::{finishes_after, slow_cleanup};

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use cancel_scope::{CancellationToken, Cancelled, LocalScope, cancellable, on_cancel, shield};
use common::{Guard, Log, current_thread, on_watched_thread, poll_once};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::yield_now;
use tokio::time::sleep;

/// Far longer than any test needs; only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(60);

const MS: Duration = Duration::from_millis(1);

/// Waits for ever in its body; logs its cleanup.
#[cancellable]
async fn parked(log: Log, name: &'static str) {
    on_cancel! { log.push(name); }
    std::future::pending::<()>().await;
}

/// Calls `call` with a fresh token, cancels the token once the call waits,
/// and checks that the call returns `Cancelled`.
async fn cancel_once_it_waits<T, F>(call: impl FnOnce(CancellationToken) -> F)
where
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
{
    cancel_when_it_waits(None, call).await;
}

/// [`cancel_once_it_waits`], cancelling `wait` after the call's first poll.
async fn cancel_once_it_waited<T, F>(wait: Duration, call: impl FnOnce(CancellationToken) -> F)
where
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
{
    cancel_when_it_waits(Some(wait), call).await;
}

async fn cancel_when_it_waits<T, F>(
    wait: Option<Duration>,
    call: impl FnOnce(CancellationToken) -> F,
) where
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
{
    let token = CancellationToken::new();
    let mut call = Box::pin(call(token.clone()));
    assert!(poll_once(call.as_mut()).is_pending());
    if let Some(wait) = wait {
        sleep(wait).await;
    }
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
}

/// Polls a future owned by its caller through `&mut` (rule 1's helper).
#[cancellable]
async fn poll_it<F: Future + Unpin>(job: &mut F) {
    let _ = job.await;
}

/// Waits for ever in its body; its cleanup takes a turn, then logs.
#[cancellable]
async fn parked_with_a_turn(log: Log, name: &'static str) {
    on_cancel! {
        yield_now().await; // a cleanup that takes a turn
        log.push(name);
    }
    std::future::pending::<()>().await;
}
