//! Pattern 1, one task racing a shutdown signal.
//!
//! ```sh
//! cargo run --example worker                     # stop after 1.3 s
//! cargo run --example worker -- --stop-after 3   # or press Ctrl-C
//! ```
//!
//! The worker does units of work (each one a 400 ms wait, like a request to a
//! slow service). It is a `#[cancellable]` fn: no `select!` and no token
//! threaded through the loop. When the shutdown signal comes it is dropped at
//! the `.await` where it stands, in the middle of a unit, instead of being
//! asked to stop after the unit finishes; its `on_cancel!` block then
//! rolls the interrupted unit back. The program prints the cancel latency it
//! observed: from `token.cancel()` to the worker's task returning.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use cancel_scope::{Scope, cancellable, on_cancel};
use tokio::sync::mpsc;

#[path = "common/mod.rs"]
mod common;

/// What to run; `main` sets `stop_after` from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// Send the shutdown signal after this long (Ctrl-C sends it earlier).
    pub stop_after: Duration,
    /// How long one unit of work takes.
    pub unit: Duration,
    /// How many units the job has (it finishes after them if not stopped).
    pub units: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stop_after: Duration::from_millis(1300),
            unit: Duration::from_millis(400),
            units: 100,
        }
    }
}

/// What happened.
#[derive(Debug)]
pub struct Report {
    /// Why the worker was stopped.
    pub reason: String,
    /// Units that finished.
    pub units_done: u32,
    /// The unit the worker was in when it was cancelled, which its cleanup
    /// rolled back.
    pub interrupted: Option<u32>,
    /// How much of the interrupted unit was left: what a worker that only
    /// checks for shutdown between units would have kept the shutdown waiting.
    pub unit_left: Duration,
    /// From `token.cancel()` to the worker's task returning (cleanup
    /// included).
    pub latency: Duration,
    /// `false` if the worker finished instead of being cancelled.
    pub cancelled: bool,
}

/// The worker's own account, written as it goes; the cleanup writes to it
/// too, which is how it reports (a cleanup has no value of its own).
#[derive(Debug, Default)]
struct Progress {
    done: u32,
    /// The unit in progress and when it started.
    current: Option<(u32, Instant)>,
    /// Set by the cleanup: the unit it rolled back.
    rolled_back: Option<(u32, Instant)>,
}

/// One unit of work: a wait on something slow.
async fn unit_of_work(unit: Duration) {
    tokio::time::sleep(unit).await;
}

/// Does `units` units of work, unless cancelled first; says on `done` when
/// each one finishes.
#[cancellable]
async fn worker(
    unit: Duration,
    units: u32,
    progress: &mut Progress,
    done: mpsc::UnboundedSender<u32>,
) -> u32 {
    on_cancel! {
        // The body was dropped in the middle of a unit: undo its effects.
        if let Some(current) = progress.current.take() {
            tokio::task::yield_now().await; // an async rollback
            progress.rolled_back = Some(current);
        }
    }
    for n in 1..=units {
        progress.current = Some((n, Instant::now()));
        unit_of_work(unit).await;
        progress.current = None;
        progress.done = n;
        let _ = done.send(n);
    }
    progress.done
}

/// Runs the worker until `config.stop_after` elapses or `interrupt`
/// completes, then prints what happened to `out`.
pub async fn run(
    config: &Config,
    interrupt: impl std::future::Future<Output = ()>,
    out: &mut impl Write,
) -> io::Result<Report> {
    writeln!(
        out,
        "worker: units of {} each; shutdown signal after {} (or Ctrl-C)",
        common::human(config.unit),
        common::human(config.stop_after)
    )?;
    let mut scope = Scope::new();
    let (unit, units) = (config.unit, config.units);
    let (done_tx, mut done) = mpsc::unbounded_channel();
    scope.spawn(move |token| async move {
        let mut progress = Progress::default();
        let result = worker(token, unit, units, &mut progress, done_tx).await;
        (result.is_err(), progress, Instant::now())
    });

    // The shutdown signal, unless the worker finishes first; a line for
    // each unit meanwhile.
    let stop = tokio::time::sleep(config.stop_after);
    tokio::pin!(stop, interrupt);
    let (reason, finished) = loop {
        tokio::select! {
            () = &mut stop => {
                break (format!("--stop-after {} elapsed", common::human(config.stop_after)), None);
            }
            () = &mut interrupt => break ("Ctrl-C".to_owned(), None),
            Some(n) = done.recv() => writeln!(out, "  unit {n} done")?,
            joined = scope.join_next() => break ("the worker finished first".to_owned(), joined),
        }
    };
    let cancelled_at = Instant::now();
    scope.cancel();
    let joined = match finished {
        Some(joined) => Some(joined),
        None => scope.join_next().await,
    };
    let (cancelled, progress, returned_at) = match joined {
        Some(Ok(value)) => value,
        Some(Err(e)) => return Err(io::Error::other(e)),
        None => unreachable!("one task was spawned"),
    };
    let unit_left = progress.rolled_back.map_or(Duration::ZERO, |(_, started)| {
        (started + config.unit).saturating_duration_since(cancelled_at)
    });
    let report = Report {
        reason,
        units_done: progress.done,
        interrupted: progress.rolled_back.map(|(n, _)| n),
        unit_left,
        latency: returned_at.saturating_duration_since(cancelled_at),
        cancelled,
    };

    writeln!(out, "shutdown: {}", report.reason)?;
    if !report.cancelled {
        writeln!(
            out,
            "  the worker had already finished its {} units",
            report.units_done
        )?;
        writeln!(
            out,
            "summary: the worker finished its {} units before the shutdown signal",
            report.units_done
        )?;
        return Ok(report);
    }
    writeln!(out, "  units finished          {}", report.units_done)?;
    match report.interrupted {
        Some(n) => writeln!(
            out,
            "  unit {n} was dropped at its .await with {} of it left, and rolled back by on_cancel!",
            common::human(report.unit_left)
        )?,
        None => writeln!(out, "  no unit was in progress")?,
    }
    writeln!(
        out,
        "  cancel latency          {}  (token.cancel() -> task returned, cleanup included)",
        common::human(report.latency)
    )?;
    writeln!(
        out,
        "  a loop that checks a flag between units would have kept the shutdown waiting {}",
        common::human(report.unit_left)
    )?;
    let stopped = match report.interrupted {
        Some(n) => format!("in the middle of unit {n}"),
        None => "between units".to_owned(),
    };
    writeln!(
        out,
        "summary: cancelled after {} units, {stopped}; it returned {} after the cancel instead \
         of {}",
        report.units_done,
        common::human(report.latency),
        common::human(report.unit_left)
    )?;
    Ok(report)
}

/// `--stop-after <secs>` (also `--stop-after=<secs>`).
fn parse_args() -> Result<Config, String> {
    const USAGE: &str =
        "usage: worker [--stop-after <secs>]   (default 1.3; Ctrl-C stops it earlier)";
    let mut config = Config::default();
    if let Some(secs) = common::seconds_flag("stop-after", USAGE)? {
        config.stop_after = secs;
    }
    Ok(config)
}

#[tokio::main]
async fn main() {
    let config = common::args_or_exit(parse_args());
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    if let Err(e) = run(&config, ctrl_c, &mut io::stdout()).await {
        eprintln!("worker: {e}");
        std::process::exit(1);
    }
}
