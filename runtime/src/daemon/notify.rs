//! systemd's notify protocol, spoken when `NOTIFY_SOCKET` is set (Unix,
//! with the `systemd` feature): `READY=1`, `STOPPING=1`, `STATUS=`,
//! `EXTEND_TIMEOUT_USEC=` while the drain and the grace period run, and
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` while no subsystem has failed.
//!
//! The messages are `sd-notify`'s; the socket is ours, because `sd-notify`
//! 0.5 cannot reach an abstract one (`@name`).

use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// How long after the grace period ends the process may still take: the
/// wait for aborted tasks (1 s), the report, the runtime's exit timeout.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(all(unix, feature = "systemd")), allow(dead_code))]
pub(super) struct Timing {
    pub(super) grace: Duration,
    pub(super) exit_timeout: Duration,
}

/// Speaks to systemd for the length of [`Daemon::run`](super::Daemon::run);
/// dropped at its end, it says `STATUS=stopped`.
#[derive(Debug)]
pub(super) struct Notifier {
    /// Held for its `Drop`.
    #[cfg(all(unix, feature = "systemd"))]
    _speaker: Option<unix::Speaker>,
}

/// Starts speaking, if `NOTIFY_SOCKET` is set; else does nothing.
#[cfg_attr(not(all(unix, feature = "systemd")), allow(unused_variables))]
pub(super) fn start(shared: &Arc<Shared>, timing: Timing) -> Notifier {
    Notifier {
        #[cfg(all(unix, feature = "systemd"))]
        _speaker: unix::Speaker::start(shared, timing),
    }
}

#[cfg(all(unix, feature = "systemd"))]
mod unix {
    use std::ffi::OsStr;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, PoisonError};
    use std::time::Duration;

    use sd_notify::NotifyState;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    use super::Timing;
    use crate::daemon::Shared;
    use crate::daemon::readiness::Phase;
    use crate::report::short_duration as short;

    /// The shortest time between two pings.
    const MIN_PING_EVERY: Duration = Duration::from_millis(10);

    /// How often the shutdown's progress is looked at.
    const PROGRESS_EVERY: Duration = Duration::from_millis(250);

    /// The task that speaks, and what it says with.
    #[derive(Debug)]
    pub(super) struct Speaker {
        voice: Arc<Voice>,
        task: JoinHandle<()>,
    }

    /// The socket, and what was said on it: the task and the end of the
    /// run both speak (a shutdown can be over before the task runs again).
    #[derive(Debug)]
    struct Voice {
        socket: Socket,
        shared: Arc<Shared>,
        timing: Timing,
        said: std::sync::Mutex<Said>,
    }

    impl Voice {
        /// Says what the daemon's phase calls for and was not said yet.
        fn catch_up(&self) {
            let phase = self.shared.lifecycle.phase();
            let mut said = self.said.lock().unwrap_or_else(PoisonError::into_inner);
            say_phase(&self.socket, &self.shared, self.timing, phase, &mut said);
        }
    }

    impl Speaker {
        pub(super) fn start(shared: &Arc<Shared>, timing: Timing) -> Option<Self> {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let socket = match connect(&path) {
                Ok(socket) => Socket {
                    socket,
                    failed: AtomicBool::new(false),
                },
                Err(e) => {
                    shared.log(&format!("NOTIFY_SOCKET {}: {e}", path.to_string_lossy()));
                    return None;
                }
            };
            // `None` when `WATCHDOG_PID` names another process, or for 0.
            let watchdog = sd_notify::watchdog_enabled().filter(|w| !w.is_zero());
            let voice = Arc::new(Voice {
                socket,
                shared: Arc::clone(shared),
                timing,
                said: std::sync::Mutex::new(Said::default()),
            });
            let task = tokio::spawn(speak(Arc::clone(&voice), watchdog));
            Some(Speaker { voice, task })
        }
    }

    impl Drop for Speaker {
        fn drop(&mut self) {
            self.task.abort();
            let voice = &self.voice;
            voice.catch_up();
            let failed = voice.shared.tree.failures().len();
            let reason = match voice.shared.reason.get() {
                Some(reason) => reason.to_string(),
                None => "every subsystem ended".to_owned(),
            };
            let status = match failed {
                0 => format!("stopped ({reason})"),
                n => format!("stopped ({reason}); {n} failed"),
            };
            voice
                .socket
                .send(&voice.shared, &[NotifyState::Status(&status)]);
        }
    }

    /// A datagram socket connected to systemd's.
    #[derive(Debug)]
    struct Socket {
        socket: UnixDatagram,
        /// A send failed and was logged: the next failures are not.
        failed: AtomicBool,
    }

    impl Socket {
        /// One datagram, one line a state. Never blocks: a message that
        /// does not fit in the socket's buffer is lost (and logged once).
        fn send(&self, shared: &Shared, states: &[NotifyState<'_>]) {
            let message: String = states.iter().map(|s| format!("{s}\n")).collect();
            if let Err(e) = self.socket.send(message.as_bytes()) {
                if !self.failed.swap(true, Ordering::Relaxed) {
                    shared.log(&format!("NOTIFY_SOCKET: cannot send: {e}"));
                }
            }
        }
    }

    /// `path` is a socket's path, or `@name` for one in Linux's abstract
    /// namespace.
    fn connect(path: &OsStr) -> io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        match path.as_bytes().strip_prefix(b"@") {
            Some(name) => connect_abstract(&socket, name)?,
            None => socket.connect(path)?,
        }
        Ok(socket)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn connect_abstract(socket: &UnixDatagram, name: &[u8]) -> io::Result<()> {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.connect_addr(&addr)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn connect_abstract(_: &UnixDatagram, _: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "abstract socket names exist on Linux only",
        ))
    }

    /// What was said already.
    #[derive(Debug, Default)]
    struct Said {
        ready: bool,
        stopping: bool,
        draining: bool,
        progress: Option<String>,
    }

    /// Follows the daemon's phase until the task is aborted.
    async fn speak(voice: Arc<Voice>, watchdog: Option<Duration>) {
        let mut phase = voice.shared.lifecycle.subscribe();
        // Not more often than every 10 ms, whatever `WATCHDOG_USEC` says.
        let ping_every = watchdog.map(|w| (w / 2).max(MIN_PING_EVERY));
        let mut next_ping = Instant::now();
        let mut pinging = ping_every.is_some();
        loop {
            let now = *phase.borrow_and_update();
            voice.catch_up();
            if pinging && Instant::now() >= next_ping {
                pinging = watchdog_ping(&voice.socket, &voice.shared);
                // From now: a late ping is not followed by a burst.
                next_ping = Instant::now() + ping_every.unwrap_or_default();
            }
            let progress = (now == Phase::Stopping).then(|| Instant::now() + PROGRESS_EVERY);
            let wake = [pinging.then_some(next_ping), progress]
                .into_iter()
                .flatten()
                .min();
            let changed = match wake {
                Some(at) => tokio::time::timeout_at(at, phase.changed()).await,
                None => Ok(phase.changed().await),
            };
            if let Ok(Err(_)) = changed {
                return; // the daemon is gone
            }
        }
    }

    /// `WATCHDOG=1`, unless a subsystem failed for good: then `false`, and
    /// no ping again (systemd restarts the daemon when the watchdog fires).
    fn watchdog_ping(socket: &Socket, shared: &Shared) -> bool {
        let failures = shared.tree.failures();
        if let Some(failure) = failures.first() {
            let name = failure.name();
            shared.log(&format!("{name} failed: no more WATCHDOG=1 to systemd"));
            return false;
        }
        socket.send(shared, &[NotifyState::Watchdog]);
        true
    }

    fn say_phase(socket: &Socket, shared: &Shared, timing: Timing, phase: Phase, said: &mut Said) {
        let slack = timing.exit_timeout + Duration::from_secs(2);
        match phase {
            Phase::Starting => {}
            Phase::Ready if !said.ready => {
                said.ready = true;
                socket.send(
                    shared,
                    &[NotifyState::Ready, NotifyState::Status("running")],
                );
            }
            Phase::Ready => {}
            Phase::Draining { ends } if !said.draining => {
                said.draining = true;
                said.stopping = true;
                let left = ends.saturating_duration_since(Instant::now());
                let status = format!("draining: not ready, serving on for {}", short(left));
                socket.send(
                    shared,
                    &[
                        NotifyState::Stopping,
                        NotifyState::Status(&status),
                        extend(left + timing.grace + slack),
                    ],
                );
            }
            Phase::Draining { .. } => {}
            Phase::Stopping => say_progress(socket, shared, timing.grace, slack, said),
        }
    }

    /// `STATUS=` with how many subsystems have ended, when that changed,
    /// with `EXTEND_TIMEOUT_USEC=` to the end of the grace period.
    fn say_progress(
        socket: &Socket,
        shared: &Shared,
        grace: Duration,
        slack: Duration,
        said: &mut Said,
    ) {
        let tree = shared.tree.snapshot();
        let ended = tree.nodes().iter().filter(|n| n.state().is_final()).count();
        let reason = shared
            .reason
            .get()
            .map_or_else(String::new, |r| format!(" ({r})"));
        let status = format!(
            "stopping{reason}: {ended} of {} subsystems ended",
            tree.nodes().len()
        );
        if said.progress.as_ref() == Some(&status) {
            return;
        }
        said.progress = Some(status);
        let deadline = shared.began.get().map(|began| *began + grace);
        let left = deadline.map_or(grace, |d| d.saturating_duration_since(Instant::now()));
        let mut states = vec![
            NotifyState::Status(said.progress.as_deref().unwrap_or_default()),
            extend(left + slack),
        ];
        if !said.stopping {
            said.stopping = true;
            states.insert(0, NotifyState::Stopping);
        }
        socket.send(shared, &states);
    }

    /// `EXTEND_TIMEOUT_USEC=`, at most what the protocol's `u32` holds.
    fn extend(by: Duration) -> NotifyState<'static> {
        NotifyState::ExtendTimeoutUsec(u32::try_from(by.as_micros()).unwrap_or(u32::MAX))
    }
}
