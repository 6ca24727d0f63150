//! The causes of the live `ShutdownSignal`s, to link a scope made with
//! `child_of(signal.token())` to its signal.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio_util::sync::CancellationToken;

use super::Cause;

/// Read when a scope made with `child_of` is asked why its parent token was
/// cancelled, written when a signal is installed.
static SIGNALS: Mutex<Vec<Weak<Cause>>> = Mutex::new(Vec::new());

pub(crate) fn register(cause: &Arc<Cause>) {
    let mut signals = SIGNALS.lock().unwrap_or_else(PoisonError::into_inner);
    signals.retain(|s| s.strong_count() > 0);
    signals.push(Arc::downgrade(cause));
}

pub(super) fn find(token: &CancellationToken) -> Option<Arc<Cause>> {
    let signals = SIGNALS.lock().unwrap_or_else(PoisonError::into_inner);
    signals
        .iter()
        .filter_map(Weak::upgrade)
        .find(|cause| cause.token == *token)
}
