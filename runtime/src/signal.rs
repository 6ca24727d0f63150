//! A daemon's root token: cancelled on the first Ctrl-C or SIGTERM (or, on
//! Windows, a console event), with a second token for the second signal
//! ("stop waiting, abort now").

use std::future::Future;
use std::io;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::CancelReason;
use crate::reason::{self, Cause};

/// The root of a daemon's shutdown: [`token`](Self::token) is cancelled on
/// the first Ctrl-C (SIGINT) or, on Unix, SIGTERM; [`forced`](Self::forced)
/// on the second, for a supervisor that should stop waiting for cleanups.
///
/// On Windows the console's other events count as signals too: Ctrl-Break
/// (`"Ctrl-Break"`), its window closed (`"console closed"`), the user
/// logging off (`"logoff"`) and the system shutting down (`"system
/// shutdown"`). Windows ends the process soon after the last three (about
/// 5 s after a close), whatever the grace period: keep it short there.
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
    /// How many signals arrived: a watch, for [`ShutdownSignal::received_at_least`].
    received: watch::Sender<usize>,
    first: OnceLock<&'static str>,
}

impl Shared {
    fn signal(&self, name: &'static str) {
        let _ = self.first.set(name);
        let mut before = 0;
        self.received.send_modify(|n| {
            before = *n;
            *n += 1;
        });
        // The first signal asks for a graceful shutdown, any later one forces it.
        if before > 0 {
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
            received: watch::Sender::new(0),
            first: OnceLock::new(),
        });
        let listeners = listen(&shared)?;
        Ok(ShutdownSignal { shared, listeners })
    }

    /// Resolves once `n` signals (and triggers) have arrived, counting
    /// those before the call: the daemon's "skip the drain" (the second)
    /// and "abort the shutdown" (the one after those it acted on).
    pub(crate) fn received_at_least(&self, n: usize) -> impl Future<Output = ()> + Send + 'static {
        let mut received = self.shared.received.subscribe();
        async move {
            if received.wait_for(|&got| got >= n).await.is_err() {
                // The signal was dropped: no signal will come.
                std::future::pending::<()>().await;
            }
        }
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
        *self.shared.received.borrow()
    }
}

/// A task that calls `shared.signal(name)` for each event `stream` receives.
macro_rules! forward {
    ($shared:expr, $stream:expr, $name:expr) => {{
        let (shared, mut stream) = (Arc::clone($shared), $stream);
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                shared.signal($name);
            }
        })
    }};
}

/// Listens for SIGINT and SIGTERM.
#[cfg(unix)]
fn listen(shared: &Arc<Shared>) -> io::Result<Vec<JoinHandle<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    // Every stream first, so that an error leaves no task behind.
    let interrupt = signal(SignalKind::interrupt())?;
    let terminate = signal(SignalKind::terminate())?;
    Ok(vec![
        forward!(shared, interrupt, "Ctrl-C"),
        forward!(shared, terminate, "SIGTERM"),
    ])
}

/// Listens for the console's events: Ctrl-C, Ctrl-Break, its window
/// closed, logoff, system shutdown.
#[cfg(windows)]
fn listen(shared: &Arc<Shared>) -> io::Result<Vec<JoinHandle<()>>> {
    use tokio::signal::windows;
    // Every stream first, so that an error leaves no task behind.
    let ctrl_c = windows::ctrl_c()?;
    let ctrl_break = windows::ctrl_break()?;
    let close = windows::ctrl_close()?;
    let logoff = windows::ctrl_logoff()?;
    let shutdown = windows::ctrl_shutdown()?;
    Ok(vec![
        forward!(shared, ctrl_c, "Ctrl-C"),
        forward!(shared, ctrl_break, "Ctrl-Break"),
        forward!(shared, close, "console closed"),
        forward!(shared, logoff, "logoff"),
        forward!(shared, shutdown, "system shutdown"),
    ])
}

/// Listens for Ctrl-C, the one event Tokio offers elsewhere.
#[cfg(not(any(unix, windows)))]
fn listen(shared: &Arc<Shared>) -> io::Result<Vec<JoinHandle<()>>> {
    let shared = Arc::clone(shared);
    Ok(vec![tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            shared.signal("Ctrl-C");
        }
    })])
}

impl Drop for ShutdownSignal {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}
