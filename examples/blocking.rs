//! A trap of `spawn_blocking`, and its fix: blocking work cannot be aborted
//! (there is no `.await` to drop it at), so it has to check its token.
//!
//! ```sh
//! cargo run --example blocking                      # cancel after 0.5 s
//! cargo run --example blocking -- --stop-after 1    # or press Ctrl-C
//! ```
//!
//! Two CPU-bound closures run on Tokio's blocking pool as tasks of one
//! [`Scope`]:
//!
//! - **checked** polls `token.is_cancelled()` between small units of work,
//!   and stops within one unit of the cancel;
//! - **unchecked** ignores its token, the trap: `Scope::shutdown` waits the
//!   grace period, then gives up on it (the task is *detached*, since blocking
//!   code cannot be aborted) while its thread keeps burning CPU to the end.
//!
//! The program prints how long each took to stop after the cancel.

use std::hint::black_box;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use cancel_scope::{CancellationToken, Scope, TaskError};
use tokio::sync::oneshot;

#[path = "common/mod.rs"]
mod common;

/// What to run; `main` sets `stop_after` from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// Cancel after this long (Ctrl-C cancels earlier).
    pub stop_after: Duration,
    /// How long `shutdown` waits for the tasks after the cancel.
    pub grace: Duration,
    /// How long each task's job is, if nothing stops it.
    pub job: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stop_after: Duration::from_millis(500),
            grace: Duration::from_millis(300),
            job: Duration::from_millis(1500),
        }
    }
}

/// What a blocking task returns.
#[derive(Debug)]
pub struct Work {
    /// Units of work done.
    pub units: u64,
    /// How long it ran.
    pub ran: Duration,
    /// When it stopped.
    pub stopped: Instant,
    /// It saw its token cancelled (rather than finishing its job).
    pub saw_cancel: bool,
}

/// What happened.
#[derive(Debug)]
pub struct Report {
    /// Why the tasks were cancelled.
    pub reason: String,
    /// The task that checks its token, and how long after the cancel it
    /// stopped.
    pub checked: Result<Work, TaskError>,
    /// The same for the task that ignores its token: an error (detached,
    /// or aborted if it never started).
    pub unchecked: Result<Work, TaskError>,
    /// From the cancel to `checked` returning.
    pub checked_latency: Option<Duration>,
    /// From the cancel to `shutdown` returning.
    pub shutdown_took: Duration,
    /// From the cancel to the unchecked closure really returning, on its
    /// thread (`None` if it never ran).
    pub unchecked_really_stopped: Option<Duration>,
    /// Average duration of a unit of work.
    pub unit: Duration,
}

/// One unit of CPU-bound work (some hashing), a fraction of a millisecond.
fn unit_of_work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

/// The solution: check the token between units.
fn checked(token: &CancellationToken, job: Duration) -> Work {
    let started = Instant::now();
    let mut units = 0;
    while started.elapsed() < job {
        if token.is_cancelled() {
            return Work {
                units,
                ran: started.elapsed(),
                stopped: Instant::now(),
                saw_cancel: true,
            };
        }
        unit_of_work(units);
        units += 1;
    }
    Work {
        units,
        ran: started.elapsed(),
        stopped: Instant::now(),
        saw_cancel: false,
    }
}

/// The trap: the same work, never looking at the token.
fn unchecked(job: Duration) -> Work {
    let started = Instant::now();
    let mut units = 0;
    while started.elapsed() < job {
        unit_of_work(units);
        units += 1;
    }
    Work {
        units,
        ran: started.elapsed(),
        stopped: Instant::now(),
        saw_cancel: false,
    }
}

/// Runs both tasks, cancels them after `config.stop_after` (or when
/// `interrupt` completes), and prints what happened to `out`.
pub async fn run(
    config: &Config,
    interrupt: impl std::future::Future<Output = ()>,
    out: &mut impl Write,
) -> io::Result<Report> {
    writeln!(
        out,
        "blocking: two CPU-bound jobs of {} on the blocking pool; cancel after {} (or Ctrl-C), grace {}",
        common::human(config.job),
        common::human(config.stop_after),
        common::human(config.grace),
    )?;
    writeln!(
        out,
        "  checked    checks token.is_cancelled() between units of work"
    )?;
    writeln!(out, "  unchecked  ignores its token (the trap)")?;

    let mut scope = Scope::new();
    let job = config.job;
    scope.spawn_blocking(move |token| checked(&token, job));
    // The unchecked task's result is thrown away when it is detached: it
    // reports when it really stopped on the side.
    let (really_stopped_tx, really_stopped) = oneshot::channel();
    scope.spawn_blocking(move |_token| {
        let work = unchecked(job);
        let _ = really_stopped_tx.send(work.stopped);
        work
    });

    let reason = tokio::select! {
        () = tokio::time::sleep(config.stop_after) => format!("--stop-after {} elapsed", common::human(config.stop_after)),
        () = interrupt => "Ctrl-C".to_owned(),
    };
    let cancelled_at = Instant::now();
    let mut results = scope.shutdown(config.grace).await.into_iter();
    let shutdown_took = cancelled_at.elapsed();
    let (Some(checked), Some(unchecked)) = (results.next(), results.next()) else {
        unreachable!("two tasks were spawned");
    };
    // Wait for the unchecked thread, to show how long it really ran on
    // (bounded: its job is bounded).
    let unchecked_really_stopped =
        match tokio::time::timeout(config.job + Duration::from_secs(10), really_stopped).await {
            Ok(Ok(stopped)) => Some(stopped.saturating_duration_since(cancelled_at)),
            _ => None,
        };
    let checked_latency = checked
        .as_ref()
        .ok()
        .map(|work| work.stopped.saturating_duration_since(cancelled_at));
    let unit = match &checked {
        Ok(work) if work.units > 0 => work.ran.div_f64(work.units as f64),
        _ => Duration::ZERO,
    };
    let report = Report {
        reason,
        checked,
        unchecked,
        checked_latency,
        shutdown_took,
        unchecked_really_stopped,
        unit,
    };

    writeln!(out, "cancel: {}", report.reason)?;
    match (&report.checked, report.checked_latency) {
        (Ok(work), Some(latency)) if work.saw_cancel => writeln!(
            out,
            "  checked    stopped {} after the cancel, after {} units of ~{} each",
            common::human(latency),
            work.units,
            common::human(report.unit),
        )?,
        (Ok(work), _) => writeln!(
            out,
            "  checked    finished its job ({} units) before the cancel",
            work.units
        )?,
        (Err(e), _) => writeln!(out, "  checked    {e}")?,
    }
    match &report.unchecked {
        Ok(work) => writeln!(
            out,
            "  unchecked  finished its job ({} units) within the grace period",
            work.units
        )?,
        Err(e) => writeln!(out, "  unchecked  {e}")?,
    }
    writeln!(
        out,
        "  shutdown returned {} after the cancel",
        common::human(report.shutdown_took)
    )?;
    if let (Err(e), Some(stopped)) = (&report.unchecked, report.unchecked_really_stopped) {
        if e.is_detached() {
            writeln!(
                out,
                "  but the unchecked thread kept running: it returned {} after the cancel, {} after shutdown gave up on it; its result was thrown away",
                common::human(stopped),
                common::human(stopped.saturating_sub(report.shutdown_took)),
            )?;
        }
    }
    let checked = match report.checked_latency {
        Some(latency) => format!("stopped {} after the cancel", common::human(latency)),
        None => "did not stop on the cancel".to_owned(),
    };
    let unchecked = match (&report.unchecked, report.unchecked_really_stopped) {
        (Err(e), Some(stopped)) if e.is_detached() => format!(
            "was detached after the grace period and ran on until {} after the cancel",
            common::human(stopped)
        ),
        (Ok(_), _) => "finished within the grace period".to_owned(),
        (Err(e), _) => e.to_string(),
    };
    writeln!(
        out,
        "summary: the job that checks its token {checked}; the one that ignores it {unchecked}"
    )?;
    Ok(report)
}

/// `--stop-after <secs>` (also `--stop-after=<secs>`).
fn parse_args() -> Result<Config, String> {
    const USAGE: &str =
        "usage: blocking [--stop-after <secs>]   (default 0.5; Ctrl-C cancels earlier)";
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
        eprintln!("blocking: {e}");
        std::process::exit(1);
    }
}
