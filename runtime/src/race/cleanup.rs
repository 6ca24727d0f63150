//! The cleanup of a cancelled `#[cancellable]` fn, and the one `tracing`
//! event per cancelled fn.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tokio::time::error::Elapsed;

use super::frame::{self, Busy, Drain, Registration};
use super::polled_after_completion;
use crate::Cancelled;

/// A fn without a cleanup was cancelled: its `tracing` event.
pub(super) fn report_cancelled(_name: Name, _reason: Cancelled) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "cancel_scope", fn_name = _name.name, reason = %_reason, "cancelled");
}

/// The name of a `#[cancellable]` fn, for its `tracing` events; nothing
/// without the `tracing` feature.
#[derive(Debug, Clone, Copy)]
pub struct Name {
    #[cfg(feature = "tracing")]
    name: &'static str,
}

/// See [`Name`].
#[must_use]
pub const fn name(_name: &'static str) -> Name {
    Name {
        #[cfg(feature = "tracing")]
        name: _name,
    }
}

pin_project! {
    /// Runs a cleanup, then gives back the [`Cancelled`] it ran for (so that
    /// the generated code keeps no copy of it across the cleanup's awaits).
    /// While it runs it tells the race polling it that a nested call is
    /// still cancelling, so a cancelled caller does not drop its body yet.
    #[must_use = "futures do nothing unless polled"]
    pub struct Cleanup<F> {
        state: CleanupState,
        #[pin]
        cleanup: F,
    }
}

/// What a [`Cleanup`] keeps beside the user's block: not generic, so that
/// polling it is compiled once rather than for every fn. With the `tracing`
/// feature, it reports when the cleanup ends, or is dropped before it ends:
/// one event per cancelled fn.
#[derive(Debug)]
pub(crate) struct CleanupState {
    reason: Cancelled,
    #[cfg(feature = "tracing")]
    name: Name,
    /// When the user's block was first polled.
    #[cfg(feature = "tracing")]
    started: Option<std::time::Instant>,
    /// The fn started with its token already cancelled (read on the first
    /// poll).
    retry: bool,
    stage: CleanupStage,
    /// Registered with a cancelled race around the fn.
    upward: Option<Registration>,
    busy: Busy,
}

impl CleanupState {
    /// Made as the race returns `Err` into the generated code; what it
    /// needs of the frame (the retry flag, a draining race) it reads on its
    /// first poll, in the same poll of the body around the fn. (Read here,
    /// they made the same-thread cancel -> cleanup latency ~12 ns slower:
    /// `benches/latency.rs`.)
    fn new(_name: Name, reason: Cancelled) -> CleanupState {
        CleanupState {
            reason,
            #[cfg(feature = "tracing")]
            name: _name,
            #[cfg(feature = "tracing")]
            started: None,
            retry: false,
            stage: CleanupStage::Start,
            upward: None,
            busy: Busy::default(),
        }
    }

    /// The fn's `tracing` event; `_end`: how the cleanup ended ("done",
    /// "cut at its cleanup_timeout", "dropped").
    fn report(&self, _end: &'static str) {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "cancel_scope",
            fn_name = self.name.name,
            reason = %self.reason,
            cleanup = _end,
            cleanup_us = self.started.map_or(0, |t| {
                u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
            }),
            "cancelled"
        );
    }
}

#[cfg(feature = "tracing")]
impl Drop for CleanupState {
    fn drop(&mut self) {
        if let CleanupStage::Start | CleanupStage::Running = self.stage {
            self.report("dropped");
        }
    }
}

/// How the user's block ended, for the `tracing` event: the output of a
/// cleanup without a bound, or of one with a `cleanup_timeout`.
pub trait CleanupEnd {
    /// "done", or "cut at its cleanup_timeout".
    fn end(self) -> &'static str;
}

impl CleanupEnd for () {
    fn end(self) -> &'static str {
        "done"
    }
}

impl CleanupEnd for Result<(), Elapsed> {
    fn end(self) -> &'static str {
        match self {
            Ok(()) => "done",
            Err(_) => "cut at its cleanup_timeout",
        }
    }
}

/// See [`Cleanup`].
pub fn cleanup<F: Future<Output = ()>>(name: Name, reason: Cancelled, cleanup: F) -> Cleanup<F> {
    Cleanup {
        state: CleanupState::new(name, reason),
        cleanup,
    }
}

/// Runs a cleanup for at most `limit`; past it the cleanup is dropped and
/// the fn still returns `Err(Cancelled)`.
pub fn cleanup_within<F: Future<Output = ()>>(
    name: Name,
    reason: Cancelled,
    limit: Duration,
    cleanup: F,
) -> Cleanup<Timeout<F>> {
    Cleanup {
        state: CleanupState::new(name, reason),
        cleanup: tokio::time::timeout(limit, cleanup),
    }
}

impl<F: Future<Output: CleanupEnd>> Future for Cleanup<F> {
    type Output = Cancelled;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Cancelled> {
        let this = self.project();
        this.state.poll(this.cleanup, cx)
    }
}

impl CleanupState {
    /// Polls the user's block (a trait object: the cleanup is the cold
    /// path).
    fn poll<R: CleanupEnd>(
        &mut self,
        cleanup: Pin<&mut dyn Future<Output = R>>,
        cx: &mut Context<'_>,
    ) -> Poll<Cancelled> {
        if let CleanupStage::Start = self.stage {
            self.stage = CleanupStage::Running;
            self.retry = frame::take_started_cancelled();
            self.upward = frame::draining().map(Drain::register);
        }
        match self.stage {
            CleanupStage::Start | CleanupStage::Running => {
                #[cfg(feature = "tracing")]
                self.started.get_or_insert_with(std::time::Instant::now);
                // The cleanup's own calls (a retry loop in it included)
                // report to the cleanup, not to the body around the fn.
                let (poll, _) = frame::with_report(|| cleanup.poll(cx));
                let Poll::Ready(end) = poll else {
                    self.busy.pending();
                    return Poll::Pending;
                };
                self.busy.done();
                self.report(end.end());
                self.upward = None;
                if !frame::may_return_cancelled(self.retry, cx) {
                    self.stage = CleanupStage::Done;
                    return Poll::Pending;
                }
            }
            CleanupStage::Done => {
                frame::may_return_cancelled(false, cx);
            }
            CleanupStage::Returned => polled_after_completion(),
        }
        self.stage = CleanupStage::Returned;
        Poll::Ready(self.reason)
    }
}

/// Where a [`Cleanup`] stands.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CleanupStage {
    /// Not polled yet.
    Start,
    /// The user's block runs.
    Running,
    /// The block is done; the fn returns on the next poll (a retry that
    /// waits a turn: see `frame::RETRIES_PER_POLL`).
    Done,
    /// The fn returned.
    Returned,
}
