//! The main demo: a small daemon that moves real data and shuts down cleanly.
//!
//! ```sh
//! cargo run --example daemon                    # stops by itself after 3 s
//! cargo run --example daemon -- --run-for 0.5   # fractional seconds are fine
//! ```
//!
//! A supervisor runs three subsystems as named tasks of one [`Scope`] and
//! stops them when its [`ShutdownSignal`] fires (the first Ctrl-C or
//! SIGTERM) or `--run-for` elapses, with `Scope::shutdown_report`, whose
//! table ends the output:
//!
//! - **ingest** produces numbered records (0, 1, 2, ...) into a bounded
//!   `tokio::sync::mpsc` channel;
//! - **writer**, a `#[cancellable]` fn with a setup (open the file), a body
//!   (buffer records, append them in batches) and an `on_cancel!` cleanup
//!   (close the channel, drain what was already sent, flush what is pending);
//! - **metrics** ticks and reports progress.
//!
//! It stops on Ctrl-C, on SIGTERM (unix), or after `--run-for` seconds; a
//! second Ctrl-C during the shutdown aborts what is left at once. Then it reads
//! the file back and checks that no record was lost: the file holds exactly
//! the lines `0..produced`, in order.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cancel_scope::{
    CancelReason, Cancelled, Scope, ShutdownSignal, TaskError, cancellable, on_cancel,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

#[path = "common/mod.rs"]
mod common;

/// Records ingest sends per millisecond.
const BURST: u64 = 8;
/// Room in the ingest → writer channel.
const CHANNEL_CAPACITY: usize = 64;

/// What the daemon does; `main` sets `run_for` from the command line, tests
/// set everything.
#[derive(Clone, Debug)]
pub struct Config {
    /// Stop by itself after this long.
    pub run_for: Duration,
    /// How long the shutdown waits for the subsystems' cleanups before it
    /// aborts them.
    pub grace: Duration,
    /// How often metrics reports progress.
    pub tick: Duration,
    /// How many records the writer appends at a time.
    pub batch: usize,
    /// A slow disk: how long the writer's final flush stalls before it
    /// writes. Zero in the demo; tests use it to exercise the forced shutdown.
    pub slow_flush: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run_for: Duration::from_secs(3),
            grace: Duration::from_secs(2),
            tick: Duration::from_millis(500),
            batch: 256,
            slow_flush: Duration::ZERO,
        }
    }
}

/// How a subsystem's task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// It returned on its own.
    Finished(String),
    /// It saw its token cancelled and stopped at its next `.await`; it had
    /// nothing to clean up. Why (the `Cancelled`'s reason).
    Cancelled(CancelReason),
    /// It saw its token cancelled, and its `on_cancel!` cleanup ran to
    /// completion (what the cleanup did).
    CleanedUp(String),
    /// It returned an error.
    Failed(String),
    /// It was still running at the end of the grace period (or at a second
    /// Ctrl-C) and was aborted.
    Aborted,
    /// It panicked.
    Panicked(String),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Finished(what) => write!(f, "finished: {what}"),
            Status::Cancelled(why) => {
                write!(
                    f,
                    "cancelled ({why}): stopped at its next .await, no cleanup"
                )
            }
            Status::CleanedUp(what) => write!(f, "cancelled and cleaned up: {what}"),
            Status::Failed(e) => write!(f, "FAILED: {e}"),
            Status::Aborted => f.write_str("ABORTED: dropped where it stood, cleanup not finished"),
            Status::Panicked(e) => write!(f, "PANICKED: {e}"),
        }
    }
}

/// What happened, for the printout and for tests.
#[derive(Debug)]
pub struct Report {
    /// Why the daemon shut down.
    pub reason: String,
    /// Records ingest put in the channel.
    pub produced: u64,
    /// Records the writer appended in full batches while running.
    pub written_during_run: u64,
    /// Records the writer's cleanup drained from the channel and flushed.
    pub flushed_at_shutdown: u64,
    /// Lines in the file when it was read back.
    pub lines_in_file: u64,
    /// The lines are exactly `0, 1, 2, ..` (no gap, no duplicate, no torn
    /// line).
    pub lines_in_order: bool,
    /// From the shutdown request to the last task joined.
    pub shutdown_took: Duration,
    /// A second signal cut the grace period short.
    pub forced: bool,
    /// Each subsystem, in spawn order.
    pub tasks: Vec<(&'static str, Status)>,
    /// The file the records went to (removed with its directory by now).
    pub file: PathBuf,
}

impl Report {
    /// Every record produced is in the file, once, in order.
    pub fn none_lost(&self) -> bool {
        self.lines_in_order
            && self.lines_in_file == self.produced
            && self.written_during_run + self.flushed_at_shutdown == self.produced
    }
}

/// Live counters, read by metrics.
#[derive(Default)]
struct Counters {
    produced: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    /// Set once the writer's cleanup is done.
    flushed: AtomicU64,
}

/// How a subsystem's task reports itself to the supervisor. The scope fails
/// fast: a subsystem that returns `Err` cancels the others and wakes the
/// supervisor.
type Subsystem = Result<Ending, String>;

enum Ending {
    Finished(String),
    Cancelled(CancelReason),
    CleanedUp(String),
}

/// The subsystems, in spawn order: `Scope::shutdown` returns their results in
/// this order.
const NAMES: [&str; 3] = ["ingest", "writer", "metrics"];

// ---------------------------------------------------------------------------
// The subsystems
// ---------------------------------------------------------------------------

/// Produces numbered records, a burst every millisecond, until cancelled.
///
/// No cleanup: dropping it at any `.await` is harmless. `Sender::send` is
/// cancel safe (dropped before it completes, it sent nothing), and a record
/// is counted right after it was sent, with no `.await` in between.
#[cancellable]
async fn ingest(records: mpsc::Sender<u64>, counters: Arc<Counters>) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next = 0;
    loop {
        tick.tick().await;
        for _ in 0..BURST {
            if records.send(next).await.is_err() {
                return format!("the writer closed the channel after record {next}");
            }
            next += 1;
            counters.produced.store(next, Relaxed);
        }
    }
}

/// What the writer's cleanup did.
struct Flush {
    /// Records of a batch the body was writing when it was cancelled.
    interrupted: u64,
    /// Records buffered for the next batch.
    buffered: usize,
    /// Records still in the channel when it was closed.
    drained: usize,
    /// Records the cleanup wrote (drained + buffered + a batch the body was
    /// writing when it was cancelled).
    records: u64,
    result: io::Result<()>,
}

/// Encoded records not yet written to the file.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    records: u64,
}

impl Outbox {
    fn add(&mut self, pending: &mut Vec<u64>) {
        for n in pending.drain(..) {
            self.bytes.extend_from_slice(format!("{n}\n").as_bytes());
            self.records += 1;
        }
    }

    /// Writes everything out and returns how many records that was.
    ///
    /// Cancel safe, so the writer's body may be dropped in the middle of it:
    /// each `write` is cancel safe (dropped before it completes, it wrote
    /// nothing) and what it wrote leaves the outbox with no `.await` in
    /// between, so the cleanup writes exactly the rest: no torn line, no
    /// duplicate.
    async fn write_to(&mut self, file: &mut tokio::fs::File) -> io::Result<u64> {
        while !self.bytes.is_empty() {
            let n = file.write(&self.bytes).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.bytes.drain(..n);
        }
        file.flush().await?;
        Ok(std::mem::take(&mut self.records))
    }
}

/// Appends the records to `path` in batches of `batch`.
///
/// On cancel, the cleanup closes the channel (ingest can send no more),
/// drains what was already sent, and flushes everything still pending. It
/// reports what it did through `flush`: a cleanup has no value of its own,
/// the fn returns `Err(Cancelled)`.
#[cancellable]
async fn writer(
    path: PathBuf,
    mut records: mpsc::Receiver<u64>,
    batch: usize,
    slow_flush: Duration,
    counters: Arc<Counters>,
    flush: &mut Option<Flush>,
) -> io::Result<()> {
    // Setup: runs first and is not raced; `?` returns the error as the fn's
    // own `io::Result`.
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await?;
    let mut pending = Vec::with_capacity(batch);
    let mut outbox = Outbox::default();
    on_cancel! {
        let (interrupted, buffered) = (outbox.records, pending.len());
        records.close();
        let mut drained = 0;
        // `recv` returns `None` once the channel is closed *and* empty.
        while let Some(n) = records.recv().await {
            pending.push(n);
            drained += 1;
        }
        tokio::time::sleep(slow_flush).await;
        outbox.add(&mut pending);
        let records = outbox.records;
        let result = match outbox.write_to(&mut file).await {
            Ok(_) => file.sync_all().await,
            Err(e) => Err(e),
        };
        *flush = Some(Flush { interrupted, buffered, drained, records, result });
    }
    loop {
        let Some(n) = records.recv().await else {
            // Ingest stopped on its own: write the rest and finish.
            outbox.add(&mut pending);
            let n = outbox.write_to(&mut file).await?;
            counters.written.fetch_add(n, Relaxed);
            return Ok(());
        };
        pending.push(n);
        if pending.len() >= batch {
            outbox.add(&mut pending);
            let n = outbox.write_to(&mut file).await?;
            // Counted before the next `.await`: if the body is dropped
            // there, these records are in the file and counted once.
            counters.written.fetch_add(n, Relaxed);
            counters.batches.fetch_add(1, Relaxed);
            // Durable batches: meanwhile, ingest fills the channel.
            file.sync_data().await?;
        }
    }
}

/// Reports progress every `every`, until cancelled.
#[cancellable]
async fn metrics(
    counters: Arc<Counters>,
    every: Duration,
    progress: mpsc::UnboundedSender<String>,
) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(started + every, every);
    let mut last = (started, 0);
    loop {
        let now = tick.tick().await;
        let produced = counters.produced.load(Relaxed);
        let written = counters.written.load(Relaxed);
        let rate = (produced - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, produced);
        let line = format!(
            "[{:>5.1}s] produced {produced:>7} | written {written:>7} in {:>3} batches | {:>4} pending | {rate:>6.0} rec/s",
            (now - started).as_secs_f64(),
            counters.batches.load(Relaxed),
            // `written` was read last: it may be ahead of `produced`.
            produced.saturating_sub(written),
        );
        if progress.send(line).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The supervisor
// ---------------------------------------------------------------------------

/// Runs the daemon until `config.run_for` elapses, `signal` fires (Ctrl-C,
/// SIGTERM, or a test's `trigger`), or a subsystem fails; shuts it down;
/// reads the file back; prints the whole story to `out`.
pub async fn run(
    config: &Config,
    signal: &ShutdownSignal,
    out: &mut impl Write,
) -> io::Result<Report> {
    let dir = unique_temp_dir()?;
    let result = supervise(config, &dir.join("records.log"), signal, out).await;
    let removed = std::fs::remove_dir_all(&dir);
    let report = result?;
    match removed {
        Ok(()) => writeln!(out, "removed {}", dir.display())?,
        Err(e) => writeln!(out, "could not remove {}: {e}", dir.display())?,
    }
    Ok(report)
}

async fn supervise(
    config: &Config,
    path: &Path,
    signal: &ShutdownSignal,
    out: &mut impl Write,
) -> io::Result<Report> {
    writeln!(out, "daemon: records go to {}", path.display())?;
    writeln!(
        out,
        "daemon: stops after {} (--run-for), on Ctrl-C or on SIGTERM",
        common::human(config.run_for)
    )?;

    let counters = Arc::new(Counters::default());
    let (records_tx, records_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    // The supervisor, not the signal, cancels the subsystems: it calls
    // `shutdown_report`, which cancels the scope itself and so can tell
    // which tasks finished on their own and how long each cleanup took.
    let mut subsystems: Scope<Subsystem> = Scope::new().fail_fast();

    let c = counters.clone();
    subsystems.spawn_named(NAMES[0], |token| async move {
        match ingest(token, records_tx, c).await {
            Ok(why) => Ok(Ending::Finished(why)),
            Err(cancelled) => Ok(Ending::Cancelled(cancelled.reason())),
        }
    });
    let (c, file, batch, slow_flush) = (
        counters.clone(),
        path.to_owned(),
        config.batch,
        config.slow_flush,
    );
    subsystems.spawn_named(NAMES[1], move |token| async move {
        let mut flush = None;
        let result = writer(
            token,
            file,
            records_rx,
            batch,
            slow_flush,
            c.clone(),
            &mut flush,
        )
        .await;
        writer_ending(result, flush, &c)
    });
    let (c, tick) = (counters.clone(), config.tick);
    subsystems.spawn_named(NAMES[2], move |token| async move {
        match metrics(token, c, tick, progress_tx).await {
            Ok(()) => Ok(Ending::Finished("nobody reads the progress".into())),
            Err(cancelled) => Ok(Ending::Cancelled(cancelled.reason())),
        }
    });

    // Run: print progress until something asks us to stop.
    let deadline = tokio::time::sleep(config.run_for);
    tokio::pin!(deadline);
    let reason = loop {
        tokio::select! {
            // The scope's token is a child of the signal's: when both are
            // cancelled, the signal is the reason.
            biased;
            () = signal.token().cancelled() => {
                break format!("{} received", signal.reason().unwrap_or("a signal"));
            }
            Some(line) = progress_rx.recv() => writeln!(out, "{line}")?,
            () = &mut deadline => break format!("--run-for {} elapsed", common::human(config.run_for)),
            // `fail_fast`: a failing subsystem cancels the scope.
            () = subsystems.token().cancelled() => {
                // `fail_fast` records which task failed: "task #1 failed".
                let why = subsystems.cancel_reason().map(|r| r.to_string());
                break format!("a subsystem failed ({})", why.unwrap_or_default());
            }
        }
    };

    // Shut down: cancel, give the cleanups `grace`, abort the rest; a second
    // signal aborts at once.
    writeln!(
        out,
        "shutdown: {reason}; cancelling the root token (grace {}; Ctrl-C again to abort at once)",
        common::human(config.grace)
    )?;
    let begun = Instant::now();
    // From now on any signal forces the shutdown: the second one if a signal
    // started it, the first one otherwise.
    let force = if signal.token().is_cancelled() {
        signal.forced()
    } else {
        signal.token()
    };
    let graceful = {
        let shutdown = subsystems.shutdown_report(config.grace);
        tokio::pin!(shutdown);
        tokio::select! {
            report = &mut shutdown => Ok(report),
            () = force.cancelled() => Err("a second signal"),
        }
    };
    let (shutdown_report, forced) = match graceful {
        Ok(report) => (report, false),
        Err(signal) => {
            writeln!(out, "shutdown: {signal}; aborting what is left")?;
            // The interrupted shutdown lost nothing: what it collected is
            // still in the scope. A zero grace period aborts the rest now.
            (subsystems.shutdown_report(Duration::ZERO).await, true)
        }
    };
    let table = shutdown_report.to_string();
    let results = shutdown_report.into_results();
    let shutdown_took = begun.elapsed();
    while let Ok(line) = progress_rx.try_recv() {
        writeln!(out, "{line}")?;
    }

    // Read the file back.
    let text = tokio::fs::read_to_string(path).await?;
    let mut lines_in_file = 0;
    let mut lines_in_order = text.is_empty() || text.ends_with('\n');
    for (i, line) in text.lines().enumerate() {
        lines_in_file += 1;
        lines_in_order &= line.parse::<u64>().ok() == Some(i as u64);
    }
    let tasks: Vec<_> = NAMES
        .into_iter()
        .zip(results.into_iter().map(status))
        .collect();
    let report = Report {
        reason,
        produced: counters.produced.load(Relaxed),
        written_during_run: counters.written.load(Relaxed),
        flushed_at_shutdown: counters.flushed.load(Relaxed),
        lines_in_file,
        lines_in_order,
        shutdown_took,
        forced,
        tasks,
        file: path.to_owned(),
    };
    print_report(&report, counters.batches.load(Relaxed), out)?;
    writeln!(out)?;
    writeln!(out, "{table}")?;
    Ok(report)
}

/// How the writer's task reports itself: its result, and what its cleanup
/// said when it was cancelled.
fn writer_ending(
    result: Result<io::Result<()>, Cancelled>,
    flush: Option<Flush>,
    counters: &Counters,
) -> Subsystem {
    let flush = match result {
        Ok(Ok(())) => return Ok(Ending::Finished("ingest stopped; all written".into())),
        Ok(Err(e)) => return Err(format!("writing the records: {e}")),
        Err(_cancelled) => flush.ok_or("cancelled, but the cleanup did not report")?,
    };
    let Flush {
        interrupted,
        buffered,
        drained,
        records,
        result,
    } = flush;
    result.map_err(|e| format!("final flush: {e}"))?;
    counters.flushed.store(records, Relaxed);
    let mut what = format!(
        "closed the channel, flushed {records} records ({buffered} buffered, \
         {drained} drained from the channel"
    );
    if interrupted > 0 {
        what += &format!(", {interrupted} of a batch cancelled mid-write");
    }
    Ok(Ending::CleanedUp(what + ")"))
}

fn status(result: Result<Subsystem, TaskError>) -> Status {
    match result {
        Ok(Ok(Ending::Finished(why))) => Status::Finished(why),
        Ok(Ok(Ending::Cancelled(why))) => Status::Cancelled(why),
        Ok(Ok(Ending::CleanedUp(what))) => Status::CleanedUp(what),
        Ok(Err(e)) => Status::Failed(e),
        Err(e) if e.is_panic() => Status::Panicked(e.to_string()),
        Err(_) => Status::Aborted,
    }
}

fn print_report(report: &Report, batches: u64, out: &mut impl Write) -> io::Result<()> {
    writeln!(out)?;
    writeln!(out, "report")?;
    writeln!(out, "  records produced        {:>8}", report.produced)?;
    writeln!(
        out,
        "  written during the run  {:>8}  ({batches} batches)",
        report.written_during_run
    )?;
    writeln!(
        out,
        "  flushed at shutdown     {:>8}",
        report.flushed_at_shutdown
    )?;
    let verdict = if report.none_lost() {
        format!("= 0..{} in order, none lost", report.produced)
    } else if !report.lines_in_order {
        "NOT the sequence 0..n: records lost, duplicated or torn".to_owned()
    } else {
        format!(
            "{} records LOST",
            report.produced.saturating_sub(report.lines_in_file)
        )
    };
    writeln!(
        out,
        "  lines in the file       {:>8}  {verdict}",
        report.lines_in_file
    )?;
    writeln!(
        out,
        "  shutdown took           {:>8}{}",
        common::human(report.shutdown_took),
        if report.forced {
            "  (forced by a second signal)"
        } else {
            ""
        }
    )?;
    for (name, status) in &report.tasks {
        writeln!(out, "  {name:<8} {status}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------

/// A fresh directory under the system's temp dir.
fn unique_temp_dir() -> io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0u32.. {
        let dir = std::env::temp_dir().join(format!(
            "cancel-scope-daemon-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => continue,
            Err(e) => return Err(e),
            Ok(()) => return Ok(dir),
        }
    }
    unreachable!()
}

/// `--run-for <secs>` (also `--run-for=<secs>`), fractional seconds allowed.
fn parse_args() -> Result<Config, String> {
    const USAGE: &str =
        "usage: daemon [--run-for <secs>]   (default 3; Ctrl-C or SIGTERM stop it earlier)";
    let mut config = Config::default();
    if let Some(secs) = common::seconds_flag("run-for", USAGE)? {
        config.run_for = secs;
    }
    Ok(config)
}

#[tokio::main]
async fn main() {
    let config = common::args_or_exit(parse_args());
    let signal = match ShutdownSignal::install() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("daemon: cannot listen for signals: {e}");
            std::process::exit(1);
        }
    };
    match run(&config, &signal, &mut io::stdout()).await {
        Ok(report) if report.none_lost() => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("daemon: {e}");
            std::process::exit(1);
        }
    }
}
