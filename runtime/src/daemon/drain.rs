//! The drain: from the first signal, the daemon is not ready any more but
//! serves on for a while (a load balancer takes it out of rotation), then
//! the ordered shutdown runs.

#[cfg(feature = "signal")]
use std::future::Future;
use std::time::Duration;

#[cfg(feature = "signal")]
use tokio::time::Instant;

use super::{Daemon, DaemonReport};
use crate::report::short_duration as short;
#[cfg(feature = "signal")]
use {super::Shared, crate::ShutdownSignal};

/// A drain, as the report tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Drained {
    took: Duration,
    period: Duration,
}

#[cfg(feature = "signal")]
impl Drained {
    /// A drain of `period` that began at `began` and ends now.
    pub(super) fn since(began: Instant, period: Duration) -> Self {
        Drained {
            took: began.elapsed().min(period),
            period,
        }
    }
}

impl Daemon {
    /// On the first signal, drain before the shutdown: [readiness](super::Readiness)
    /// turns false (answer the load balancer's probe with 503), and
    /// everything keeps serving for `period`; then the ordered shutdown
    /// runs, within its [grace period](Self::grace). A second signal skips
    /// the rest of the drain (the shutdown still runs gracefully; a third
    /// aborts it). A failure, or [`request_shutdown`](super::SubsystemHandle::request_shutdown),
    /// shuts down at once, with no drain. None by default.
    ///
    /// With systemd, `TimeoutStopSec=` must cover the drain and the grace
    /// period; the daemon extends it (`EXTEND_TIMEOUT_USEC`) when it can.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use cancel_scope::ShutdownSignal;
    /// use cancel_scope::daemon::{Daemon, Subsystem};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> std::io::Result<()> {
    /// let signal = Arc::new(ShutdownSignal::install()?);
    /// let sigterm = Arc::clone(&signal);
    /// let report = Daemon::new("d")
    ///     .drain(Duration::from_secs(5))
    ///     .signal(signal)
    ///     .quiet()
    ///     .run(move |d| async move {
    ///         let mut readiness = d.readiness();
    ///         d.start(Subsystem::new("http", move |http| async move {
    ///             assert!(readiness.ready().await);
    ///             sigterm.trigger("SIGTERM");
    ///             readiness.stopping().await; // 503 from now on, still serving
    ///             let drain_began = tokio::time::Instant::now();
    ///             http.token().cancelled().await; // the drain is over
    ///             assert_eq!(drain_began.elapsed(), Duration::from_secs(5));
    ///         }));
    ///     })
    ///     .await;
    /// assert_eq!(report.drained(), Some(Duration::from_secs(5)));
    /// assert!(report.summary().starts_with("d: drained 5.000s, then shutdown (SIGTERM)"));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn drain(mut self, period: Duration) -> Self {
        self.drain = period;
        self
    }
}

impl DaemonReport {
    /// How long the daemon drained before its shutdown (shorter than the
    /// [drain period](Daemon::drain) when a second signal, a failure, or
    /// the end of every subsystem cut it short); `None` when it did not
    /// drain.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let report = Daemon::new("d").quiet().run(|d| async move { d.request_shutdown() }).await;
    /// assert_eq!(report.drained(), None); // no signal, no drain
    /// # }
    /// ```
    #[must_use]
    pub fn drained(&self) -> Option<Duration> {
        self.drained.map(|d| d.took)
    }
}

/// The summary's words for the drain: `"drained 5.000s, then "`.
pub(super) fn describe(drained: Option<Drained>) -> String {
    match drained {
        None => String::new(),
        Some(d) if d.took >= d.period => format!("drained {}, then ", short(d.took)),
        Some(d) => format!(
            "drained {} of {} (cut short), then ",
            short(d.took),
            short(d.period)
        ),
    }
}

/// Records the drain when it ends, however it ends (its future is dropped
/// when a failure starts the shutdown meanwhile).
#[cfg(feature = "signal")]
struct DrainRecord<'a> {
    shared: &'a Shared,
    began: Instant,
    period: Duration,
}

#[cfg(feature = "signal")]
impl Drop for DrainRecord<'_> {
    fn drop(&mut self) {
        let drained = Drained::since(self.began, self.period);
        self.shared.lifecycle.record_drain(drained);
    }
}

/// After the first signal: the drain, for `period` or until a second
/// signal (counted from the first, not from when the daemon saw it).
/// Returns at once without a drain period, or once the shutdown began.
#[cfg(feature = "signal")]
pub(super) async fn after_signal(
    shared: &Shared,
    period: Duration,
    signal: Option<&ShutdownSignal>,
) {
    shared.lifecycle.act_on_signal();
    let Some(signal) = signal.filter(|_| !period.is_zero()) else {
        return;
    };
    let began = Instant::now();
    if !shared.lifecycle.drain_until(began, period) {
        return;
    }
    shared.log(&format!(
        "draining for {}: not ready, still serving",
        short(period)
    ));
    let _record = DrainRecord {
        shared,
        began,
        period,
    };
    let second = signal.received_at_least(2);
    if tokio::time::timeout(period, second).await.is_ok() {
        shared.lifecycle.act_on_signal();
        shared.log(&format!(
            "a second signal: drain cut short after {}",
            short(began.elapsed())
        ));
    }
}

/// Resolves at the signal after those the daemon acted on (the one that
/// began the drain or the shutdown, the one that cut the drain short): the
/// one that forces the shutdown.
#[cfg(feature = "signal")]
pub(super) fn forcing_signal(
    shared: &Shared,
    signal: Option<&ShutdownSignal>,
) -> impl Future<Output = ()> + Send + 'static {
    let next = signal.map(|s| s.received_at_least(shared.lifecycle.signals_acted_on() + 1));
    async move {
        match next {
            Some(next) => next.await,
            None => std::future::pending().await,
        }
    }
}
