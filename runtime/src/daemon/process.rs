//! [`Subsystem::process`]: a child process as a daemon subsystem, what
//! people run supervisord or a systemd unit for.

use std::borrow::Cow;
use std::process::ExitStatus;

use tokio::process::Command;

use super::{Restart, Subsystem, SubsystemHandle};
use crate::process::{Child, Stop};

impl Subsystem {
    /// A subsystem that runs the command `make_cmd` makes, as a
    /// [`process::Child`](crate::process::Child) (its own process group):
    ///
    /// - **Started** with the subsystem; its pid is the subsystem's note
    ///   while it runs.
    /// - **Stopped in its turn** (the daemon's [`ShutdownOrder`](super::ShutdownOrder))
    ///   with the graceful stop: `SIGTERM` to its group, 5 s, `SIGKILL`
    ///   ([`process_with`](Self::process_with) sets another [`Stop`]). The
    ///   daemon's grace bounds it: if the daemon's grace runs out first, the
    ///   subsystem is aborted, and dropping the child kills its group at
    ///   once. Give it a stop grace shorter than the daemon's to see how it
    ///   ended in the report.
    /// - **Its exit status** is the subsystem's note in the tree and the
    ///   report: `exited 0`, `exited 3`, `killed by SIGTERM (stopped)`,
    ///   `killed by SIGKILL after the 5s grace`. Exiting with a non-zero
    ///   code, or dying of a signal the daemon did not send, is a failure
    ///   (its text is that status), so it escalates, or is restarted as
    ///   [`restart`](Self::restart) says: `make_cmd` is called again for
    ///   each run. A child that exits 0 on its own has ended, and is not a
    ///   failure. A command that cannot be spawned is a failure too.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cancel_scope::daemon::{Daemon, Subsystem};
    /// use tokio::process::Command;
    ///
    /// let report = Daemon::new("app")
    ///     .quiet()
    ///     .run(|app| async move {
    ///         app.start(Subsystem::process("job", || {
    ///             let mut cmd = Command::new("sh");
    ///             cmd.args(["-c", "exit 3"]);
    ///             cmd
    ///         }));
    ///     })
    ///     .await;
    /// assert_eq!(report.tree().get("/app/job").unwrap().note(), Some("exited 3"));
    /// assert_eq!(report.failures()[0].error(), "exited 3");
    /// # }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn process<F>(name: impl Into<Cow<'static, str>>, make_cmd: F) -> Subsystem
    where
        F: FnMut() -> Command + Send + 'static,
    {
        Subsystem::process_with(name, Stop::new(), make_cmd)
    }

    /// [`process`](Self::process), stopped as `stop` says.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use cancel_scope::daemon::{Daemon, Subsystem};
    /// use cancel_scope::process::Stop;
    /// use tokio::process::Command;
    ///
    /// let report = Daemon::new("app")
    ///     .quiet()
    ///     .run(|app| async move {
    ///         let stop = Stop::new().grace(Duration::from_millis(100));
    ///         app.start(Subsystem::process_with("deaf", stop, || {
    ///             let mut cmd = Command::new("sh");
    ///             cmd.args(["-c", "trap '' TERM; while :; do sleep 0.01; done"]);
    ///             cmd
    ///         }));
    ///         tokio::time::sleep(Duration::from_millis(200)).await; // let it start
    ///         app.request_shutdown();
    ///     })
    ///     .await;
    /// let note = report.tree().get("/app/deaf").unwrap().note();
    /// assert_eq!(note, Some("killed by SIGKILL after the 100ms grace"));
    /// assert!(report.failures().is_empty()); // the daemon sent it
    /// # }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn process_with<F>(
        name: impl Into<Cow<'static, str>>,
        stop: Stop,
        mut make_cmd: F,
    ) -> Subsystem
    where
        F: FnMut() -> Command + Send + 'static,
    {
        Subsystem::supervised(name, Restart::temporary(), move |handle| {
            run_child(handle, make_cmd(), stop)
        })
    }
}

/// One run of a process subsystem: the child until it exits, or until the
/// subsystem is stopped and the child with it.
async fn run_child(handle: SubsystemHandle, cmd: Command, stop: Stop) -> Result<(), String> {
    let mut child = Child::spawn(cmd)
        .map_err(|e| format!("cannot start: {e}"))?
        .with_stop(stop);
    if let Some(pid) = child.id() {
        handle.note(format!("running, pid {pid}"));
    }
    let exited = handle.token().run_until_cancelled(child.wait()).await;
    let (status, stopped) = match exited {
        Some(status) => (status.map_err(|e| format!("cannot wait: {e}"))?, false),
        None => (
            child
                .stop()
                .await
                .map_err(|e| format!("cannot stop: {e}"))?,
            true,
        ),
    };
    let (text, failed) = describe(status, stopped.then_some(stop));
    handle.note(text.clone());
    if failed { Err(text) } else { Ok(()) }
}

/// What `status` says, as the tree shows it, and whether it is a failure:
/// a non-zero exit, or a signal the daemon did not send. `stop` is how the
/// child was stopped, if it was.
fn describe(status: ExitStatus, stop: Option<Stop>) -> (String, bool) {
    // Windows: a stop is a kill, whose exit code is the killer's choice.
    #[cfg(not(unix))]
    if stop.is_some() {
        return (format!("killed (stopped): {status}"), false);
    }
    if let Some(code) = status.code() {
        return (format!("exited {code}"), code != 0);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = signal_name(signal);
            return match stop {
                Some(stop) if signal == libc::SIGKILL && stop.signal_number() != signal => (
                    format!("killed by {name} after the {:?} grace", stop.grace_period()),
                    false,
                ),
                Some(stop) if signal == stop.signal_number() => {
                    (format!("killed by {name} (stopped)"), false)
                }
                _ => (format!("killed by {name}"), true),
            };
        }
    }
    let _ = stop;
    (format!("ended: {status}"), true)
}

/// `SIGTERM` for 15: the common ones by name, the others by number.
#[cfg(unix)]
fn signal_name(signal: i32) -> Cow<'static, str> {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return Cow::Owned(format!("signal {signal}")),
    };
    Cow::Borrowed(name)
}
