//! A child process that does not outlive the fn that runs it.
//!
//! ```sh
//! cargo run --example process                     # cancelled after 1 s
//! cargo run --example process -- --stop-after 3   # or press Ctrl-C
//! ```
//!
//! `follow` is a `#[cancellable]` fn that runs a shell script in a
//! [`process::Child`](cancel_scope::process::Child) and prints what it says.
//! The script starts a helper in the background (a grandchild: `sleep`) and
//! traps `SIGTERM` to say goodbye. When the token is cancelled, the body is
//! dropped, and the cleanup, `on_cancel! { child.stop().await }`, sends
//! `SIGTERM` to the child's whole process group (the shell *and* its
//! `sleep`), waits up to a grace period for it to exit, `SIGKILL`s the group
//! past it, and reaps the child. The program then checks that neither the
//! child nor the grandchild is still running. Unix only.

use std::io::{self, Write};
use std::time::Duration;

#[cfg(unix)]
use cancel_scope::process::{Child, Stop};
#[cfg(unix)]
use cancel_scope::{CancellationToken, cancellable, on_cancel};

#[path = "common/mod.rs"]
mod common;

/// The child: prints its grandchild's pid, then a line every 200 ms; on
/// `SIGTERM`, says so and exits 0.
#[cfg(unix)]
const SCRIPT: &str = r#"
trap 'echo "child: SIGTERM, cleaning up"; exit 0' TERM
sleep 1000 & echo "grandchild $!"
i=0
while :; do i=$((i+1)); echo "child: working ($i)"; sleep 0.2 & wait $!; done
"#;

/// How `follow` ended, for the printout and for tests.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The child's pid and its grandchild's.
    pub pids: Vec<u32>,
    /// What the child printed.
    pub lines: Vec<String>,
    /// The child's exit status, as the cleanup saw it.
    pub stopped: Option<String>,
}

/// Runs the script and prints what it says, until cancelled.
#[cfg(unix)]
#[cancellable]
async fn follow(grace: Duration, outcome: &mut Outcome) -> io::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", SCRIPT])
        .stdout(std::process::Stdio::piped());
    let mut child = Child::spawn(cmd)?.with_stop(Stop::new().grace(grace));
    outcome.pids.extend(child.id());
    let mut lines = BufReader::new(child.take_stdout().expect("piped")).lines();
    on_cancel! {
        // SIGTERM to the group, the grace, SIGKILL; always reaped.
        let status = child.stop().await;
        // Its goodbye, still in the pipe.
        while let Ok(Some(line)) = lines.next_line().await {
            outcome.lines.push(line);
        }
        outcome.stopped = Some(match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("could not stop it: {e}"),
        });
    }
    while let Some(line) = lines.next_line().await? {
        match line.strip_prefix("grandchild ") {
            Some(pid) => outcome.pids.extend(pid.parse::<u32>().ok()),
            None => outcome.lines.push(line),
        }
    }
    child.wait().await?;
    Ok(())
}

/// Runs `follow` until `stop_after` (or `interrupt`), then prints how it
/// ended and whether anything is left running.
#[cfg(unix)]
pub async fn run(
    stop_after: Duration,
    interrupt: impl std::future::Future<Output = ()>,
    out: &mut impl Write,
) -> io::Result<Outcome> {
    let token = CancellationToken::new();
    let mut outcome = Outcome::default();
    let stop = async {
        tokio::select! {
            () = tokio::time::sleep(stop_after) => {}
            () = interrupt => {}
        }
        token.cancel();
    };
    let (result, ()) = tokio::join!(
        follow(token.clone(), Duration::from_secs(2), &mut outcome),
        stop
    );
    for line in &outcome.lines {
        writeln!(out, "{line}")?;
    }
    match result {
        Ok(done) => writeln!(out, "follow: ended on its own: {done:?}")?,
        Err(_cancelled) => writeln!(
            out,
            "follow: cancelled; its cleanup stopped the child: {}",
            outcome.stopped.as_deref().unwrap_or("?")
        )?,
    }
    // The grandchild dies with the group; give the kernel a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let left: Vec<u32> = outcome
        .pids
        .iter()
        .copied()
        .filter(|&p| running(p))
        .collect();
    if left.is_empty() {
        writeln!(
            out,
            "left running: nothing (child and grandchild {:?} are gone)",
            outcome.pids
        )?;
    } else {
        writeln!(out, "left running: {left:?}")?;
    }
    Ok(outcome)
}

/// Whether `pid` is a live process (not gone, not a zombie).
#[cfg(unix)]
pub fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // No /proc (macOS): ask `kill -0`.
        return std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    };
    stat.rfind(") ")
        .is_some_and(|i| !stat[i + 2..].starts_with('Z'))
}

const USAGE: &str = "usage: process [--stop-after <secs>]   (default 1; Ctrl-C stops it earlier)";

fn main() -> std::process::ExitCode {
    let parsed = common::seconds_flag("stop-after", USAGE)
        .map(|secs| Some(secs.unwrap_or(Duration::from_secs(1))));
    common::main_with("process", USAGE, parsed, |stop_after| async move {
        #[cfg(unix)]
        {
            let ctrl_c = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            match run(stop_after, ctrl_c, &mut io::stdout()).await {
                Ok(outcome) if outcome.pids.iter().all(|&p| !running(p)) => 0,
                Ok(_) => 1,
                Err(e) => {
                    eprintln!("process: {e}");
                    1
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = stop_after;
            eprintln!("process: this example runs `sh`; it is for Unix");
            0
        }
    })
}
