//! Child processes owned the way a task is: [`Child`] stops its whole
//! process group gracefully (a signal, a grace period, then `SIGKILL`),
//! always reaps it, and kills it at once when it is dropped unreaped; [`run`]
//! runs a command under a token.
//!
//! Tokio's own `Child` sends `SIGKILL` to the direct child only, and only
//! with `kill_on_drop`; its grandchildren (what a `sh -c` started) live on,
//! and a dropped child is reaped only while a runtime still turns. This is
//! the leak "zombie subprocesses" of a daemon that shuts down, closed the
//! way Trio's `run_process` and Go's `exec.Cmd.Cancel` + `WaitDelay` close
//! it, and tied to [`#[cancellable]`](https://docs.rs/cancel-scope):
//!
//! ```
//! # extern crate cancel_scope_runtime as cancel_scope;
//! # #[cfg(unix)] mod unix {
//! use cancel_scope::process::Child;
//! use cancel_scope::{CancellationToken, Cancelled};
//! use tokio::process::Command;
//!
//! // What `#[cancellable]` with `on_cancel! { child.stop().await; }` makes.
//! pub async fn convert(token: CancellationToken) -> Result<std::io::Result<bool>, Cancelled> {
//!     let mut sleep = Command::new("sleep");
//!     sleep.arg("30");
//!     let mut child = match Child::spawn(sleep) {
//!         Ok(child) => child,
//!         Err(e) => return Ok(Err(e)),
//!     };
//!     tokio::select! {
//!         biased;
//!         () = token.cancelled() => {
//!             // SIGTERM to its group, up to 5 s, then SIGKILL; reaped.
//!             let _ = child.stop().await;
//!             Err(Cancelled::new())
//!         }
//!         status = child.wait() => Ok(status.map(|s| s.success())),
//!     }
//! }
//! # }
//! # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() {
//! let token = cancel_scope::CancellationToken::new();
//! token.cancel();
//! assert!(unix::convert(token).await.is_err());
//! # }
//! # #[cfg(not(unix))] fn main() {}
//! ```
//!
//! # On Windows
//!
//! There are no process groups or signals: [`Child::stop`] kills the child
//! (`TerminateProcess`) and waits for it, and its grace is not used; a drop
//! kills the child. Its own children are not reached.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::{ExitStatus, Output, Stdio};
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use crate::Cancelled;

/// How [`Child::stop`] stops a child: the signal it sends the child's
/// process group first ( `SIGTERM` by default), and how long it then waits
/// for the child to exit before it sends `SIGKILL` (5 s by default).
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use std::time::Duration;
/// use cancel_scope::process::Stop;
///
/// let stop = Stop::new().grace(Duration::from_secs(2));
/// # #[cfg(unix)]
/// let stop = stop.signal(2); // SIGINT
/// assert_eq!(stop.grace_period(), Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    #[cfg(unix)]
    signal: i32,
    grace: Duration,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    /// `SIGTERM`, then 5 s, then `SIGKILL`: what Trio's `run_process` does.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// assert_eq!(cancel_scope::process::Stop::new().grace_period(), Duration::from_secs(5));
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Stop {
            #[cfg(unix)]
            signal: 15,
            grace: Duration::from_secs(5),
        }
    }

    /// How long the child has to exit after the first signal, before
    /// `SIGKILL`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// use std::time::Duration;
    /// let stop = cancel_scope::process::Stop::new().grace(Duration::from_millis(500));
    /// assert_eq!(stop.grace_period(), Duration::from_millis(500));
    /// ```
    #[must_use]
    pub const fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The grace period ([`grace`](Self::grace)).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// assert_eq!(cancel_scope::process::Stop::new().grace_period().as_secs(), 5);
    /// ```
    #[must_use]
    pub const fn grace_period(&self) -> Duration {
        self.grace
    }

    /// The signal sent first, by number (`libc::SIGINT` is 2, `SIGTERM`
    /// 15, `SIGHUP` 1). Unix only.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let stop = cancel_scope::process::Stop::new().signal(2);
    /// assert_eq!(stop.signal_number(), 2);
    /// ```
    #[cfg(unix)]
    #[must_use]
    pub const fn signal(mut self, signal: i32) -> Self {
        self.signal = signal;
        self
    }

    /// The signal sent first ([`signal`](Self::signal)). Unix only.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// assert_eq!(cancel_scope::process::Stop::new().signal_number(), 15);
    /// ```
    #[cfg(unix)]
    #[must_use]
    pub const fn signal_number(&self) -> i32 {
        self.signal
    }
}

/// A child process that cannot outlive its owner: a [`tokio::process::Child`]
/// that leads a process group of its own (Unix), is stopped gracefully,
/// group-wide, by [`stop`](Self::stop), and is killed with its whole group
/// and reaped when it is dropped before it was reaped.
///
/// - **Its group.** On Unix the child is spawned with `process_group(0)`:
///   it leads a new process group, and what it starts (a shell's commands)
///   is in that group too, so a signal to the group reaches them all.
///   When the child has exited and is reaped ([`wait`](Self::wait),
///   [`try_wait`](Self::try_wait), [`stop`](Self::stop)), what is left of
///   its group is killed (`SIGKILL`) at once: the group does not outlive
///   its leader, and its id is never signalled again (it could be reused).
///   A grandchild that must outlive the child leaves the group (`setsid`).
/// - **Dropped unreaped** (an aborted task, a body dropped without its
///   cleanup, a runtime shutting down), the whole group gets `SIGKILL` at
///   once and the child is reaped without blocking: at once if it has
///   already died, else by a background thread that waits for that one
///   child (with `try_wait`), which works without a runtime too. No zombie,
///   no grandchild. There is no `waitpid(-1)` reaper stealing the exit
///   statuses Tokio waits for.
/// - **Stdio** as configured on the [`Command`]; take the pipes with
///   [`take_stdin`](Self::take_stdin) and its siblings.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use cancel_scope::process::{Child, Stop};
/// use tokio::process::Command;
///
/// let mut cmd = Command::new("sh");
/// cmd.args(["-c", "sleep 30 & wait"]); // a grandchild
/// let mut child = Child::spawn(cmd)?.with_stop(Stop::new().grace(Duration::from_secs(1)));
/// let status = child.stop().await?; // SIGTERM to the shell *and* its sleep
/// assert!(!status.success());
/// # Ok(()) }
/// # #[cfg(not(unix))] fn main() {}
/// ```
#[derive(Debug)]
pub struct Child {
    /// `None` only in `Drop`, which hands it to the reaper.
    inner: Option<tokio::process::Child>,
    /// Its process group, until what is left of it was killed.
    #[cfg(unix)]
    group: Option<i32>,
    stop: Stop,
}

impl Child {
    /// Spawns `cmd` (on Unix as the leader of a new process group).
    ///
    /// # Errors
    ///
    /// What [`Command::spawn`] returns (the program was not found, is not
    /// executable), and an error of kind `Other` outside a Tokio runtime,
    /// checked before anything is spawned.
    ///
    /// # Panics
    ///
    /// In a runtime built without its IO driver (`enable_io`), as Tokio's
    /// own `Command::spawn` does, after the process was started; build the
    /// runtime with `enable_all()`.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use cancel_scope::process::Child;
    /// let mut child = Child::spawn(tokio::process::Command::new("true"))?;
    /// assert!(child.wait().await?.success());
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn spawn(mut cmd: Command) -> io::Result<Child> {
        // Tokio panics after the fork without one, leaving the process
        // unowned.
        if tokio::runtime::Handle::try_current().is_err() {
            let error = "cancel_scope::process::Child::spawn needs a Tokio runtime";
            return Err(io::Error::other(error));
        }
        #[cfg(unix)]
        cmd.process_group(0);
        // Only a backstop: `Drop` kills the group before Tokio would.
        cmd.kill_on_drop(true);
        let inner = cmd.spawn()?;
        Ok(Child {
            #[cfg(unix)]
            group: inner.id().and_then(|id| i32::try_from(id).ok()),
            inner: Some(inner),
            stop: Stop::new(),
        })
    }

    /// The same child, stopped as `stop` says.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use std::time::Duration;
    /// use cancel_scope::process::{Child, Stop};
    /// let child = Child::spawn(tokio::process::Command::new("true"))?
    ///     .with_stop(Stop::new().grace(Duration::from_secs(1)));
    /// assert_eq!(child.stop_config().grace_period(), Duration::from_secs(1));
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    #[must_use]
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// How [`stop`](Self::stop) stops it.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use cancel_scope::process::{Child, Stop};
    /// let child = Child::spawn(tokio::process::Command::new("true"))?;
    /// assert_eq!(child.stop_config(), Stop::new());
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    #[must_use]
    pub fn stop_config(&self) -> Stop {
        self.stop
    }

    fn inner(&mut self) -> &mut tokio::process::Child {
        self.inner.as_mut().expect("taken only in Drop")
    }

    /// Its process id, while it has not been reaped (`None` after).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use cancel_scope::process::Child;
    /// let mut child = Child::spawn(tokio::process::Command::new("true"))?;
    /// assert!(child.id().is_some());
    /// child.wait().await?;
    /// assert_eq!(child.id(), None);
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    #[must_use]
    pub fn id(&self) -> Option<u32> {
        self.inner.as_ref().and_then(tokio::process::Child::id)
    }

    /// Waits for the child to exit, reaps it, kills what is left of its
    /// group, and returns its exit status (at once if it was reaped before).
    ///
    /// Cancel-safe: dropping the future leaves the child running, still
    /// owned by this `Child`.
    ///
    /// # Errors
    ///
    /// What `waitpid` reports (rare: the child was reaped elsewhere).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use cancel_scope::process::Child;
    /// let mut cmd = tokio::process::Command::new("sh");
    /// cmd.args(["-c", "exit 3"]);
    /// let status = Child::spawn(cmd)?.wait().await?;
    /// assert_eq!(status.code(), Some(3));
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.inner().wait().await?;
        self.reaped();
        Ok(status)
    }

    /// The exit status if the child has exited (reaping it, and killing
    /// what is left of its group), `None` if it still runs.
    ///
    /// # Errors
    ///
    /// What `waitpid` reports.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use cancel_scope::process::Child;
    /// let mut sleep = tokio::process::Command::new("sleep");
    /// sleep.arg("30");
    /// let mut child = Child::spawn(sleep)?;
    /// assert!(child.try_wait()?.is_none());
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.inner().try_wait()?;
        if status.is_some() {
            self.reaped();
        }
        Ok(status)
    }

    /// The graceful stop: sends the [`Stop`] signal (`SIGTERM`) to the
    /// child's process group, waits up to its grace period (5 s) for the
    /// child to exit, then sends `SIGKILL` to the group and waits again;
    /// the child is reaped and what is left of its group killed. On a child
    /// that has already exited it returns its status at once.
    ///
    /// The grace is the child's: once it has exited, what is left of its
    /// group gets `SIGKILL` without waiting more.
    ///
    /// Dropping the future (cancel-safe) leaves the child owned by this
    /// `Child`, signalled but maybe not dead; another `stop` signals it
    /// again and waits a new grace period. Dropping the `Child` kills the
    /// group at once, so a stop in a task that is aborted (a `Scope`'s
    /// `shutdown` whose grace ran out) ends with a `SIGKILL` then, not
    /// after its own grace.
    ///
    /// # Errors
    ///
    /// A signal that could not be sent (not "no such process"), or what
    /// `waitpid` reports.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use std::os::unix::process::ExitStatusExt;
    /// use cancel_scope::process::Child;
    /// let mut sleep = tokio::process::Command::new("sleep");
    /// sleep.arg("30");
    /// let mut child = Child::spawn(sleep)?;
    /// let status = child.stop().await?;
    /// assert_eq!(status.signal(), Some(15)); // SIGTERM
    /// assert_eq!(child.stop().await?.signal(), Some(15)); // the same, at once
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub async fn stop(&mut self) -> io::Result<ExitStatus> {
        if self.id().is_none() {
            return self.wait().await; // reaped before: its status
        }
        // An exited child that was not reaped yet still holds its group's
        // id: the signal reaches what is left of its group, and the wait
        // below returns at once.
        #[cfg(unix)]
        self.signal_group(self.stop.signal)?;
        #[cfg(unix)]
        if let Ok(status) = tokio::time::timeout(self.stop.grace, self.wait()).await {
            return status;
        }
        self.start_kill()?;
        self.wait().await
    }

    /// Sends `SIGKILL` to the child's whole process group now (on Windows:
    /// kills the child), without waiting; [`wait`](Self::wait) reaps it.
    ///
    /// # Errors
    ///
    /// A signal that could not be sent (not "no such process").
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use std::os::unix::process::ExitStatusExt;
    /// use cancel_scope::process::Child;
    /// let mut sleep = tokio::process::Command::new("sleep");
    /// sleep.arg("30");
    /// let mut child = Child::spawn(sleep)?;
    /// child.start_kill()?;
    /// assert_eq!(child.wait().await?.signal(), Some(9));
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn start_kill(&mut self) -> io::Result<()> {
        #[cfg(unix)]
        {
            self.signal_group(libc::SIGKILL)
        }
        #[cfg(not(unix))]
        {
            self.inner().start_kill()
        }
    }

    /// Sends `signal` to its group, if it has one still.
    #[cfg(unix)]
    fn signal_group(&self, signal: i32) -> io::Result<()> {
        let Some(group) = self.group else {
            return Ok(());
        };
        // SAFETY: killpg only reads its two integer arguments.
        if unsafe { libc::killpg(group, signal) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// The child was reaped: what is left of its group dies now, while its
    /// group id cannot have been reused (its members hold it, or it is
    /// signalled a moment after the leader was reaped).
    fn reaped(&mut self) {
        #[cfg(unix)]
        {
            let _ = self.signal_group(libc::SIGKILL);
            self.group = None;
        }
    }

    /// Takes the child's stdin, if it was piped (`Stdio::piped()`).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use std::process::Stdio;
    /// use tokio::io::AsyncWriteExt;
    /// use cancel_scope::process::Child;
    /// let mut cmd = tokio::process::Command::new("cat");
    /// cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    /// let mut child = Child::spawn(cmd)?;
    /// let mut stdin = child.take_stdin().unwrap();
    /// stdin.write_all(b"hello").await?;
    /// drop(stdin); // EOF: cat exits
    /// assert!(child.wait().await?.success());
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.inner().stdin.take()
    }

    /// Takes the child's stdout, if it was piped (`Stdio::piped()`).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use std::process::Stdio;
    /// use tokio::io::AsyncReadExt;
    /// use cancel_scope::process::Child;
    /// let mut cmd = tokio::process::Command::new("echo");
    /// cmd.arg("hi").stdout(Stdio::piped());
    /// let mut child = Child::spawn(cmd)?;
    /// let mut out = String::new();
    /// child.take_stdout().unwrap().read_to_string(&mut out).await?;
    /// assert_eq!(out, "hi\n");
    /// # child.wait().await?;
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.inner().stdout.take()
    }

    /// Takes the child's stderr, if it was piped (`Stdio::piped()`).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use std::process::Stdio;
    /// use cancel_scope::process::Child;
    /// let mut cmd = tokio::process::Command::new("true");
    /// cmd.stderr(Stdio::piped());
    /// let mut child = Child::spawn(cmd)?;
    /// assert!(child.take_stderr().is_some());
    /// assert!(child.take_stderr().is_none()); // taken
    /// # child.wait().await?;
    /// # Ok(()) }
    /// # #[cfg(not(unix))] fn main() {}
    /// ```
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.inner().stderr.take()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if inner.id().is_none() {
            return; // reaped, and its group killed then
        }
        let _ = self.start_kill_of(&mut inner);
        if !matches!(inner.try_wait(), Ok(None)) {
            return;
        }
        reaper::reap(inner);
    }
}

impl Child {
    /// `start_kill` for `Drop`, which has taken `inner` out.
    fn start_kill_of(&self, inner: &mut tokio::process::Child) -> io::Result<()> {
        #[cfg(unix)]
        {
            let _ = inner;
            self.signal_group(libc::SIGKILL)
        }
        #[cfg(not(unix))]
        {
            inner.start_kill()
        }
    }
}

/// Reaps children dropped unreaped, after their `SIGKILL`: one thread,
/// started by the first that needs it, polls each of them (`try_wait`, a
/// `waitpid` of that pid only) until it is gone, and sleeps on its channel
/// when none is left. It needs no runtime, so a `Child` dropped while a
/// runtime shuts down, or after, is reaped too; Tokio's own orphan queue
/// is reaped only while a runtime's signal driver turns.
mod reaper {
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Mutex, OnceLock, PoisonError};
    use std::time::Duration;

    /// The reaper's queue; `None` if its thread could not be started.
    static QUEUE: OnceLock<Option<Mutex<Sender<tokio::process::Child>>>> = OnceLock::new();

    pub(super) fn reap(child: tokio::process::Child) {
        let queue = QUEUE.get_or_init(|| {
            let (tx, rx) = channel();
            std::thread::Builder::new()
                .name("cancel-scope-reaper".into())
                .spawn(move || run(&rx))
                .ok()
                .map(|_| Mutex::new(tx))
        });
        // Without a thread (none could be started), Tokio's orphan queue
        // reaps it, while a runtime runs.
        if let Some(queue) = queue {
            // The thread never ends, so the send cannot fail.
            let _ = queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(child);
        }
    }

    fn run(rx: &Receiver<tokio::process::Child>) {
        let mut dying = Vec::new();
        let mut pause = Duration::from_millis(1);
        loop {
            if dying.is_empty() {
                match rx.recv() {
                    Ok(child) => dying.push(child),
                    Err(_) => return,
                }
                pause = Duration::from_millis(1);
            }
            dying.extend(rx.try_iter());
            dying.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
            if !dying.is_empty() {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Runs `cmd` under `token`, as Trio's `run_process` and Go's
/// `exec.CommandContext` do: its stdout and stderr are collected (its stdin
/// is null), and when the token is cancelled first the child is stopped
/// gracefully ([`Child::stop`], with [`Stop::new`]'s defaults) and the
/// result is `Err(Cancelled)`. A non-zero exit is not an error here: look
/// at the output's `status`.
///
/// The output is read while the child stops, so a child that writes
/// during its `SIGTERM` handler does not block on a full pipe.
///
/// # Errors
///
/// `Err(Cancelled)` when the token was cancelled before the command was
/// done, its exit and the end of its output (after the child was stopped and
/// reaped; the output is not waited for past that: a process that left the
/// child's group, with `setsid`, may hold the pipes open); `Ok(Err(e))`
/// when it could not be spawned, read or waited for. Like
/// `Command::output`, an uncancelled run waits for the end of the output.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// # #[cfg(unix)] #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cancel_scope::CancellationToken;
/// use cancel_scope::process::run;
/// use tokio::process::Command;
///
/// let token = CancellationToken::new();
/// let mut cmd = Command::new("echo");
/// cmd.arg("done");
/// let output = run(&token, cmd).await.unwrap().unwrap();
/// assert_eq!(output.stdout, b"done\n");
///
/// token.cancel();
/// let mut sleep = Command::new("sleep");
/// sleep.arg("30");
/// assert!(run(&token, sleep).await.is_err());
/// # }
/// # #[cfg(not(unix))] fn main() {}
/// ```
pub async fn run(
    token: &CancellationToken,
    mut cmd: Command,
) -> Result<io::Result<Output>, Cancelled> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match Child::spawn(cmd) {
        Ok(child) => child,
        Err(e) => return Ok(Err(e)),
    };
    let mut output = std::pin::pin!(read_output(child.take_stdout(), child.take_stderr()));
    let finished = if token.is_cancelled() {
        None
    } else {
        token
            .run_until_cancelled(both(child.wait(), &mut output))
            .await
    };
    match finished {
        Some((status, output)) => Ok(status.and_then(|status| {
            let (stdout, stderr) = output?;
            Ok(Output {
                status,
                stdout,
                stderr,
            })
        })),
        None => {
            stop_reading_meanwhile(&mut child, output).await;
            Err(Cancelled::because(crate::reason::of_current_task()))
        }
    }
}

/// Stops `child`, reading its output meanwhile (a child that writes in its
/// `SIGTERM` handler must not block on a full pipe), and no longer than the
/// stop: a process outside its group may keep the pipes open.
async fn stop_reading_meanwhile(
    child: &mut Child,
    mut output: Pin<&mut impl Future<Output = io::Result<(Vec<u8>, Vec<u8>)>>>,
) {
    let mut stop = std::pin::pin!(child.stop());
    let mut read = false;
    std::future::poll_fn(|cx| {
        if !read {
            read = output.as_mut().poll(cx).is_ready();
        }
        stop.as_mut().poll(cx).map(drop)
    })
    .await;
}

/// Reads both pipes to their ends, together.
fn read_output(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
) -> impl Future<Output = io::Result<(Vec<u8>, Vec<u8>)>> {
    async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            pipe.read_to_end(&mut bytes).await?;
        }
        Ok(bytes)
    }
    async move {
        let (out, err) = both(read_all(stdout), read_all(stderr)).await;
        Ok((out?, err?))
    }
}

/// Polls `a` and `b` together until both are done (`tokio::join!`, without
/// Tokio's `macros` feature).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut out_a, mut out_b) = (None, None);
    std::future::poll_fn(|cx| {
        if out_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        if out_a.is_some() && out_b.is_some() {
            Poll::Ready((out_a.take().unwrap(), out_b.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}
