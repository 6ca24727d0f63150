//! The parked task of `latency.rs` and `latency_profile.rs`, in its three
//! forms: a `#[cancellable]` fn with an `on_cancel!`, and `select!` by hand
//! (its cleanup in the branch, or after the `select!` has dropped the body).
//! Each bench defines `fn cleanup_starts_hook()`, called as the cleanup's
//! first statement (nothing, or the end of callgrind's window).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cancel_scope::{CancellationToken, Cancelled, cancellable, on_cancel};

/// What the parked task shares with the bench.
#[derive(Default)]
pub struct Stamp {
    /// Set by the body just before its `.await`.
    pub parked: AtomicBool,
    /// Set by the first statement of the cleanup.
    pub cleanup_at: OnceLock<Instant>,
}

impl Stamp {
    fn cleanup_starts(&self) {
        crate::cleanup_starts_hook();
        let now = Instant::now();
        assert!(self.cleanup_at.set(now).is_ok(), "one cleanup");
    }
}

#[cancellable]
pub async fn parked_macro(stamp: Arc<Stamp>) {
    on_cancel! { stamp.cleanup_starts(); }
    stamp.parked.store(true, Ordering::Release);
    std::future::pending::<()>().await;
}

pub async fn parked_select(token: CancellationToken, stamp: Arc<Stamp>) -> Result<(), Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => {
            stamp.cleanup_starts();
            Err(Cancelled::new())
        }
        () = async {
            stamp.parked.store(true, Ordering::Release);
            std::future::pending::<()>().await;
        } => Ok(()),
    }
}

/// The same task the way the macro orders it, by hand: `select!` ends (and
/// drops the body and the cancellation future) before the cleanup runs,
/// which is what the contract says (the body is dropped, then the cleanup
/// runs); the plain `select!` above runs its cleanup with both still alive.
pub async fn parked_select_dropped_first(
    token: CancellationToken,
    stamp: Arc<Stamp>,
) -> Result<(), Cancelled> {
    let cancelled = tokio::select! {
        biased;
        () = token.cancelled() => true,
        () = async {
            stamp.parked.store(true, Ordering::Release);
            std::future::pending::<()>().await;
        } => false,
    };
    if cancelled {
        stamp.cleanup_starts();
        return Err(Cancelled::new());
    }
    Ok(())
}
