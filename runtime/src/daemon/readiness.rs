//! Readiness: whether the daemon is serving, for systemd's `READY=1`, a
//! load balancer's readiness probe, and the drain.

use std::future::Future;
use std::pin::Pin;
#[cfg(feature = "signal")]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};

use tokio::sync::watch;
use tokio::time::Instant;

use super::SubsystemHandle;
use super::drain::Drained;
use super::subsystem::sealed::Sealed;
use super::subsystem::{Exit, SubsystemOutput};

/// Where the daemon is in its life, as readiness sees it.
#[cfg_attr(not(feature = "signal"), allow(dead_code))] // no signal, no drain
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// The setup closure, or a [`ReadinessHold`], has not let go yet.
    Starting,
    /// Serving: `READY=1` is said, a readiness probe answers 200.
    Ready,
    /// A signal came: not ready any more; everything serves on until
    /// `ends` (or the next signal).
    Draining {
        /// When the drain period is over.
        ends: Instant,
    },
    /// The shutdown began.
    Stopping,
}

/// The daemon's phase, and the holds that keep it from being ready.
#[derive(Debug)]
pub(super) struct Lifecycle {
    phase: watch::Sender<Phase>,
    /// Under the lock, so that the last release and the move to `Ready` are
    /// one step.
    holds: Mutex<usize>,
    drained: OnceLock<Drained>,
    /// When the drain began, and its period: a drain still going when the
    /// run ends (every subsystem ended during it) is told from this.
    #[cfg(feature = "signal")]
    drain_began: OnceLock<(Instant, std::time::Duration)>,
    /// The signals the daemon acted on: the one that began the drain (or
    /// the shutdown), the one that cut the drain short. The next one
    /// forces the shutdown.
    #[cfg(feature = "signal")]
    signals_acted_on: AtomicUsize,
}

impl Lifecycle {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Lifecycle {
            phase: watch::Sender::new(Phase::Starting),
            holds: Mutex::new(0),
            drained: OnceLock::new(),
            #[cfg(feature = "signal")]
            drain_began: OnceLock::new(),
            #[cfg(feature = "signal")]
            signals_acted_on: AtomicUsize::new(0),
        })
    }

    pub(super) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// A hold on readiness; none once the daemon was ready or stops.
    pub(super) fn hold(self: &Arc<Self>) -> ReadinessHold {
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let held = self.phase() == Phase::Starting;
        if held {
            *holds += 1;
        }
        ReadinessHold {
            lifecycle: held.then(|| Arc::clone(self)),
        }
    }

    fn release(&self) {
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        *holds = holds.saturating_sub(1);
        if *holds == 0 {
            self.move_from(&[Phase::Starting], Phase::Ready);
        }
    }

    /// The drain begins (from the first signal on): not ready any more.
    /// `false` when the shutdown began already.
    #[cfg(feature = "signal")]
    pub(super) fn drain_until(&self, began: Instant, period: std::time::Duration) -> bool {
        let ends = began + period;
        let draining = self.move_from(&[Phase::Starting, Phase::Ready], Phase::Draining { ends });
        if draining {
            let _ = self.drain_began.set((began, period));
        }
        draining
    }

    /// The shutdown begins: not ready, for good.
    pub(super) fn stopping(&self) {
        self.phase.send_if_modified(|phase| {
            let moved = *phase != Phase::Stopping;
            *phase = Phase::Stopping;
            moved
        });
    }

    #[cfg(feature = "signal")]
    pub(super) fn record_drain(&self, drained: Drained) {
        let _ = self.drained.set(drained);
    }

    /// One more signal acted on; returns how many now.
    #[cfg(feature = "signal")]
    pub(super) fn act_on_signal(&self) -> usize {
        self.signals_acted_on.fetch_add(1, Ordering::AcqRel) + 1
    }

    #[cfg(feature = "signal")]
    pub(super) fn signals_acted_on(&self) -> usize {
        self.signals_acted_on.load(Ordering::Acquire)
    }

    /// The drain as the report tells it: as it ended, or, still going as
    /// the run ends, up to now.
    pub(super) fn drained(&self) -> Option<Drained> {
        #[cfg(feature = "signal")]
        if self.drained.get().is_none() {
            let began = self.drain_began.get();
            return began.map(|&(began, period)| Drained::since(began, period));
        }
        self.drained.get().copied()
    }

    fn move_from(&self, from: &[Phase], to: Phase) -> bool {
        self.phase.send_if_modified(|phase| {
            let moved = from.contains(phase);
            if moved {
                *phase = to;
            }
            moved
        })
    }
}

/// Keeps the daemon from being ready (systemd's `READY=1`,
/// [`Readiness::is_ready`]) until it is dropped or
/// [`release`](Self::release)d: for a subsystem that must bind its sockets
/// first. Take it with [`SubsystemHandle::hold_readiness`] in the setup
/// closure (or in a subsystem, before it returns, for the subsystems it
/// starts), and move it into the subsystem that binds: the daemon is ready
/// once the setup closure has returned and every hold is released.
///
/// A hold taken once the daemon was ready, or while it stops, holds
/// nothing: readiness does not come back.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// Daemon::new("d").quiet().run(|d| async move {
///     let bound = d.hold_readiness();
///     let readiness = d.readiness();
///     d.start(Subsystem::new("http", move |http| async move {
///         let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///         assert!(!readiness.is_ready()); // the setup returned, the hold holds
///         bound.release(); // READY=1 now
///         # http.request_shutdown();
///         http.token().cancelled().await;
///         drop(listener);
///         Ok::<(), std::io::Error>(())
///     }));
/// }).await;
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a hold is released when it is dropped"]
pub struct ReadinessHold {
    lifecycle: Option<Arc<Lifecycle>>,
}

impl ReadinessHold {
    /// Lets go of the hold (as dropping it does).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// Daemon::new("d").quiet().run(|d| async move {
    ///     let hold = d.hold_readiness();
    ///     hold.release();
    /// }).await;
    /// # }
    /// ```
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for ReadinessHold {
    fn drop(&mut self) {
        if let Some(lifecycle) = self.lifecycle.take() {
            lifecycle.release();
        }
    }
}

/// Whether the daemon is serving: `false` while it starts (until the setup
/// closure has returned and every [`ReadinessHold`] is released), `true`
/// once it is ready, and `false` again, for good, from the first signal
/// on (the [drain](super::Daemon::drain)) or when the shutdown begins.
/// Answer a load balancer's readiness probe with it.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::{Daemon, Subsystem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// Daemon::new("d").quiet().run(|d| async move {
///     let mut readiness = d.readiness();
///     d.start(Subsystem::new("probe", move |probe| async move {
///         assert!(readiness.ready().await); // the setup has returned
///         // ... answer 200 ...
///         probe.request_shutdown();
///         readiness.stopping().await; // a signal, or the shutdown
///         // ... answer 503 ...
///     }));
/// }).await;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Readiness {
    phase: watch::Receiver<Phase>,
}

impl Readiness {
    /// `true` while the daemon serves and has not begun to stop.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// Daemon::new("d").quiet().run(|d| async move {
    ///     assert!(!d.readiness().is_ready()); // the setup has not returned
    /// }).await;
    /// # }
    /// ```
    #[must_use]
    pub fn is_ready(&self) -> bool {
        *self.phase.borrow() == Phase::Ready
    }

    /// Waits until the daemon is ready: `true`; or `false` when it began
    /// to stop before it ever was.
    ///
    /// Cancel-safe.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// Daemon::new("d").quiet().run(|d| async move {
    ///     let mut readiness = d.readiness();
    ///     d.request_shutdown();
    ///     assert!(!readiness.ready().await);
    /// }).await;
    /// # }
    /// ```
    pub async fn ready(&mut self) -> bool {
        match self.phase.wait_for(|p| *p != Phase::Starting).await {
            Ok(phase) => *phase == Phase::Ready,
            Err(_) => false,
        }
    }

    /// Waits until the daemon has stopped being ready for good: the drain
    /// or the shutdown began.
    ///
    /// Cancel-safe.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Daemon;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// Daemon::new("d").quiet().run(|d| async move {
    ///     let mut readiness = d.readiness();
    ///     d.request_shutdown();
    ///     readiness.stopping().await;
    ///     assert!(!readiness.is_ready());
    /// }).await;
    /// # }
    /// ```
    pub async fn stopping(&mut self) {
        let _ = self
            .phase
            .wait_for(|p| matches!(p, Phase::Draining { .. } | Phase::Stopping))
            .await;
    }
}

impl SubsystemHandle {
    /// The daemon's [`Readiness`], to watch: for a readiness probe, or to
    /// stop taking new work from the first signal on.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("probe", |probe| async move {
    ///     let readiness = probe.readiness();
    ///     println!("ready: {}", readiness.is_ready());
    /// });
    /// # drop(s);
    /// ```
    #[must_use]
    pub fn readiness(&self) -> Readiness {
        Readiness {
            phase: self.daemon().lifecycle.subscribe(),
        }
    }

    /// Keeps the daemon from being ready until the [`ReadinessHold`] is
    /// released: take it in the setup closure and move it into the
    /// subsystem that binds the daemon's sockets.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # use cancel_scope::daemon::Subsystem;
    /// let s = Subsystem::new("app", |app| async move {
    ///     let bound = app.hold_readiness();
    ///     app.start(Subsystem::new("http", move |_| async move {
    ///         // bind, then:
    ///         drop(bound);
    ///     }));
    /// });
    /// # drop(s);
    /// ```
    pub fn hold_readiness(&self) -> ReadinessHold {
        self.daemon().lifecycle.hold()
    }
}

/// The setup closure's hold on readiness: released when the setup
/// succeeded; when it failed, panicked or was dropped, kept for good (the
/// daemon never says it is ready, not even for a moment before its
/// shutdown begins).
pub(super) struct SetupHold(Option<Arc<Lifecycle>>);

impl SetupHold {
    fn release(mut self) {
        if let Some(lifecycle) = self.0.take() {
            lifecycle.release();
        }
    }
}

pin_project_lite::pin_project! {
    /// The setup closure's future, holding readiness until it has returned.
    pub(super) struct ReadyAfter<Fut> {
        #[pin]
        setup: Fut,
        hold: Option<SetupHold>,
    }
}

impl<Fut: Future> Future for ReadyAfter<Fut> {
    type Output = SetupOutput<Fut::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.setup.poll(cx));
        Poll::Ready(SetupOutput {
            output,
            hold: this.hold.take(),
        })
    }
}

/// What the setup closure returned, and its hold, released once what it
/// returned is known to be a success.
pub(super) struct SetupOutput<T> {
    output: T,
    hold: Option<SetupHold>,
}

impl<T: SubsystemOutput> Sealed for SetupOutput<T> {
    fn exit(self) -> Exit {
        let exit = self.output.exit();
        if let (Exit::Done, Some(hold)) = (&exit, self.hold) {
            hold.release();
        }
        exit
    }
}

impl<T: SubsystemOutput> SubsystemOutput for SetupOutput<T> {}

/// `setup`, holding the daemon's readiness until its future has returned
/// a success (the hold is taken now, before any subsystem runs).
pub(super) fn ready_after<F, Fut>(
    lifecycle: &Arc<Lifecycle>,
    setup: F,
) -> impl FnOnce(SubsystemHandle) -> ReadyAfter<Fut> + Send + 'static
where
    F: FnOnce(SubsystemHandle) -> Fut + Send + 'static,
{
    let hold = SetupHold(lifecycle.hold().lifecycle.take());
    move |handle| ReadyAfter {
        setup: setup(handle),
        hold: Some(hold),
    }
}
