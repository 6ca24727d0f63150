//! The [`Cause`] kept beside a token: the token, the first reason it was
//! cancelled for, and what is known of its parent. A cause made for a child
//! token ([`Cause::child_of`], in `current.rs`) links to the cause of the
//! scope whose task made it; when its parent token was cancelled, it is
//! asked why from there, or from the `ShutdownSignal` whose token it is
//! (`signals.rs`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use super::{CancelReason, Described};

#[cfg(feature = "signal")]
mod signals;

#[cfg(feature = "signal")]
pub(crate) use signals::register as register_signal;
// The cause of the `ShutdownSignal` whose token is the one given, if any.
#[cfg(feature = "signal")]
use signals::find as signal_cause;

/// Without the `signal` feature, no token is a `ShutdownSignal`'s.
#[cfg(not(feature = "signal"))]
fn signal_cause(_token: &CancellationToken) -> Option<Arc<Cause>> {
    None
}

/// A token, why it was cancelled, and what is known of its parent.
#[derive(Debug)]
pub(crate) struct Cause {
    token: CancellationToken,
    reason: OnceLock<CancelReason>,
    /// `reason` is final: set once the token is known to be cancelled, so
    /// that the many fns of a cancelled scope read it without the token's
    /// lock.
    settled: AtomicBool,
    /// The token given to `child_of`, to find the `ShutdownSignal` it may
    /// belong to (only when asked why, so that making a scope takes no
    /// lock).
    parent_token: Option<CancellationToken>,
    /// The cause of the scope whose task made this one, if any.
    parent: Option<Arc<Cause>>,
    /// The name of the task a `TaskFailed` or `TaskSucceeded` reason names.
    culprit: OnceLock<Cow<'static, str>>,
}

impl Cause {
    /// The cause of a root token.
    pub(crate) fn root(token: CancellationToken) -> Arc<Self> {
        Cause::new(token, None, None)
    }

    /// The cause of `token`, made from `parent_token` in a task of the scope
    /// whose cause is `parent`.
    pub(super) fn new(
        token: CancellationToken,
        parent_token: Option<CancellationToken>,
        parent: Option<Arc<Cause>>,
    ) -> Arc<Self> {
        Arc::new(Cause {
            token,
            reason: OnceLock::new(),
            settled: AtomicBool::new(false),
            parent_token,
            parent,
            culprit: OnceLock::new(),
        })
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Cancels the token, recording `reason` unless it was cancelled
    /// already (then the earlier cause stands).
    pub(crate) fn cancel(&self, reason: CancelReason) {
        self.cancel_by(reason, None);
    }

    /// [`cancel`](Self::cancel) for a task's outcome (`TaskFailed`,
    /// `TaskSucceeded`), with the task's name for the messages that show the
    /// reason, kept if `reason` is the one that stands.
    pub(crate) fn cancel_by(&self, reason: CancelReason, name: Option<&Cow<'static, str>>) {
        let set = !self.token.is_cancelled() && self.reason.set(reason).is_ok();
        self.token.cancel();
        if set {
            self.settled.store(true, Ordering::Release);
            if let Some(name) = name {
                let _ = self.culprit.set(name.clone());
            }
        }
    }

    /// The reason, and the name of the task it names, if any (a name is
    /// kept only with the task reason it came with: see `cancel_by`).
    pub(crate) fn described(&self) -> Option<Described> {
        let reason = self.reason()?;
        let culprit = self.culprit.get().cloned();
        Some(Described { reason, culprit })
    }

    /// Why the token was cancelled; `None` while it is not.
    pub(crate) fn reason(&self) -> Option<CancelReason> {
        // Final: read without the token's lock (every fn of a cancelled
        // scope asks, at once).
        if self.settled.load(Ordering::Acquire) {
            return self.reason.get().copied();
        }
        // The token first: `cancel` records the reason before it cancels, so
        // once the token is seen cancelled, a reason it was cancelled for is
        // there to read (read the other way round, a `cancel` on another
        // thread could land in between and pass for the parent's).
        if !self.token.is_cancelled() {
            return None;
        }
        if let Some(reason) = self.reason.get() {
            self.settled.store(true, Ordering::Release);
            return Some(*reason);
        }
        // Cancelled, and none of its own causes recorded: it came from above.
        let from_signal = self.parent_token.as_ref().and_then(signal_cause);
        let reason = from_signal
            .as_deref()
            .or(self.parent.as_deref())
            .and_then(Cause::reason)
            .unwrap_or(CancelReason::Parent);
        // Final now that the token is cancelled: later calls (one per
        // cancelled fn in the scope's tasks) read it at once.
        let reason = *self.reason.get_or_init(|| reason);
        self.settled.store(true, Ordering::Release);
        Some(reason)
    }
}
