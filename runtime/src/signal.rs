//! A daemon's root token: cancelled on the first Ctrl-C or SIGTERM, with a
//! second token for the second signal ("stop waiting, abort now").

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::CancelReason;
use crate::reason::{self, Cause};

/// The root of a daemon's shutdown: [`token`](Self::token) is cancelled on
/// the first Ctrl-C (SIGINT) or, on Unix, SIGTERM; [`forced`](Self::forced)
/// on the second, for a supervisor that should stop waiting for cleanups.
///
/// Hand `token()` (or children of it) to the daemon's subsystems, usually
/// through [`Scope::child_of`](crate::Scope::child_of); when it fires, shut
/// the scope down with a grace period, and abort if `forced()` fires first.
/// A scope made with `child_of(signal.token())`, and any scope nested in its
/// tasks, reports [`CancelReason::Signal`] with the signal's name, and so do
/// the `#[cancellable]` fns its tasks run.
///
/// ```no_run
/// use std::time::Duration;
/// use cancel_scope_runtime::{Scope, ShutdownSignal};
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let signal = ShutdownSignal::install()?;
/// let mut scope: Scope<()> = Scope::child_of(signal.token());
/// scope.spawn(|token| async move { token.cancelled().await });
///
/// signal.token().cancelled().await; // first Ctrl-C or SIGTERM
/// tokio::select! {
///     results = scope.shutdown(Duration::from_secs(10)) => println!("{} tasks done", results.len()),
///     () = signal.forced().cancelled() => println!("second signal: aborting"),
/// }
/// # Ok(()) }
/// ```
///
/// Dropping it stops listening (and restores nothing: Tokio keeps its signal
/// handlers installed for the life of the process).
#[derive(Debug)]
pub struct ShutdownSignal {
    shared: Arc<Shared>,
    listeners: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    /// The graceful token, and the signal it was cancelled for.
    cause: Arc<Cause>,
    forced: CancellationToken,
    received: AtomicUsize,
    first: OnceLock<&'static str>,
}

impl Shared {
    fn signal(&self, name: &'static str) {
        let _ = self.first.set(name);
        // The first signal asks for a graceful shutdown, any later one forces it.
        if self.received.fetch_add(1, Ordering::AcqRel) > 0 {
            self.forced.cancel();
        }
        self.cause.cancel(CancelReason::Signal(name));
    }
}

impl ShutdownSignal {
    /// Starts listening for Ctrl-C and, on Unix, SIGTERM.
    ///
    /// # Errors
    /// When the signal handlers cannot be registered.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let signal = cancel_scope_runtime::ShutdownSignal::install()?;
    /// assert!(!signal.token().is_cancelled());
    /// # Ok(()) }
    /// ```
    pub fn install() -> io::Result<Self> {
        let cause = Cause::root(CancellationToken::new());
        reason::register_signal(&cause);
        let shared = Arc::new(Shared {
            cause,
            forced: CancellationToken::new(),
            received: AtomicUsize::new(0),
            first: OnceLock::new(),
        });
        let mut listeners = Vec::new();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            for (kind, name) in [
                (SignalKind::interrupt(), "Ctrl-C"),
                (SignalKind::terminate(), "SIGTERM"),
            ] {
                let mut stream = signal(kind)?;
                let shared = Arc::clone(&shared);
                listeners.push(tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        shared.signal(name);
                    }
                }));
            }
        }
        #[cfg(not(unix))]
        {
            let shared = Arc::clone(&shared);
            listeners.push(tokio::spawn(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    shared.signal("Ctrl-C");
                }
            }));
        }
        Ok(ShutdownSignal { shared, listeners })
    }

    /// The root token: cancelled on the first signal (or
    /// [`trigger`](Self::trigger)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let signal = cancel_scope_runtime::ShutdownSignal::install()?;
    /// let subsystem = signal.token().child_token();
    /// signal.trigger("test");
    /// assert!(subsystem.is_cancelled());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        self.shared.cause.token()
    }

    /// Cancelled on the second signal: stop waiting for cleanups.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let signal = cancel_scope_runtime::ShutdownSignal::install()?;
    /// signal.trigger("first");
    /// assert!(!signal.forced().is_cancelled());
    /// signal.trigger("second");
    /// assert!(signal.forced().is_cancelled());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn forced(&self) -> &CancellationToken {
        &self.shared.forced
    }

    /// Acts as if a signal named `reason` arrived: for a `--run-for` limit,
    /// an admin command, or a test.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let signal = cancel_scope_runtime::ShutdownSignal::install()?;
    /// signal.trigger("admin request");
    /// assert!(signal.token().is_cancelled());
    /// assert_eq!(signal.received(), 1);
    /// assert_eq!(signal.reason(), Some("admin request"));
    /// # Ok(()) }
    /// ```
    pub fn trigger(&self, reason: &'static str) {
        self.shared.signal(reason);
    }

    /// What asked for the shutdown first: `"Ctrl-C"`, `"SIGTERM"`, or the
    /// reason given to [`trigger`](Self::trigger); `None` before that.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let signal = cancel_scope_runtime::ShutdownSignal::install()?;
    /// assert_eq!(signal.reason(), None);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn reason(&self) -> Option<&'static str> {
        self.shared.first.get().copied()
    }

    /// How many signals (and triggers) arrived so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let signal = cancel_scope_runtime::ShutdownSignal::install()?;
    /// assert_eq!(signal.received(), 0);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn received(&self) -> usize {
        self.shared.received.load(Ordering::Acquire)
    }
}

impl Drop for ShutdownSignal {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}
