//! The main demo: a small daemon that moves real data and shuts down cleanly,
//! built on `cancel_scope::daemon`.
//!
//! ```sh
//! cargo run --example daemon                         # stops by itself after 3 s
//! cargo run --example daemon -- --run-for 0.5        # fractional seconds are fine
//! cargo run --example daemon -- --slow-flush 10      # a hung cleanup: forced after the grace period
//! cargo run --example daemon -- --fail-after 1       # ingest fails: the others clean up, exit 1
//! ```
//!
//! Four subsystems run under `/daemon`:
//!
//! - **ingest** produces numbered records (0, 1, 2, ...) into a bounded
//!   `tokio::sync::mpsc` channel;
//! - **writer**, a `#[cancellable]` fn with a setup (create the file), a
//!   body (buffer records, write them out in batches) and an `on_cancel!`
//!   cleanup (close the channel, drain what was already sent, write what is
//!   pending). Each batch replaces the file through an
//!   [`AtomicFile`](cancel_scope::fs::AtomicFile): a new version is written
//!   beside it and renamed over it, so the file is never seen torn, even
//!   when the shutdown is forced in the middle of a write;
//! - **metrics** ticks and reports progress;
//! - **heartbeat** (Unix), a child process: a shell loop that appends a
//!   line to a file every 200 ms, run with
//!   [`Subsystem::process`](cancel_scope::daemon::Subsystem::process). It
//!   is stopped last, with `SIGTERM` (its trap writes `stopped` and exits
//!   0); a forced shutdown kills its process group. Nothing is left
//!   running either way.
//!
//! It stops on Ctrl-C, on SIGTERM (unix), after `--run-for` seconds, or when
//! a subsystem fails. Ingest stops first, then the writer drains what ingest
//! sent, then metrics (a declared [`ShutdownOrder`]); a second Ctrl-C
//! aborts at once, and so does the end of the grace period. On SIGUSR1 it
//! prints its task tree. Then it reads the file back and says what is in
//! it: the lines `0..n` in order, and whether every record produced is
//! there; after a forced shutdown, the last version written in full.
//!
//! Exit codes: 0 clean, 1 a subsystem failed (or the file is not what the
//! writer wrote), 2 bad arguments, 3 the grace period elapsed, 130 a second
//! signal.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cancel_scope::daemon::{Daemon, DaemonReport, ShutdownOrder, Subsystem};
use cancel_scope::fs::AtomicFile;
#[cfg(unix)]
use cancel_scope::process::Stop;
use cancel_scope::{Cancelled, ShutdownSignal, cancellable, on_cancel};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

#[path = "common/mod.rs"]
mod common;

/// Records ingest sends per millisecond.
const BURST: u64 = 8;
/// Room in the ingest → writer channel.
const CHANNEL_CAPACITY: usize = 64;

/// What the daemon does; `main` sets it from the command line, tests set
/// everything.
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
    /// A slow disk: how long the writer's final flush (when ingest stops,
    /// or in its cleanup) stalls before it writes. Zero in the demo;
    /// `--slow-flush` shows a forced shutdown.
    pub slow_flush: Duration,
    /// Ingest fails ("upstream closed") after this long.
    pub fail_after: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run_for: Duration::from_secs(3),
            grace: Duration::from_secs(2),
            tick: Duration::from_millis(500),
            batch: 256,
            slow_flush: Duration::ZERO,
            fail_after: None,
        }
    }
}

/// What happened, for the printout and for tests.
#[derive(Debug)]
pub struct Report {
    /// The library's report: why it stopped, each subsystem, the exit code.
    pub daemon: DaemonReport,
    /// Records ingest put in the channel.
    pub produced: u64,
    /// Records the writer appended in full batches while running.
    pub written_during_run: u64,
    /// Lines in the file when it was read back.
    pub lines_in_file: u64,
    /// The complete lines are exactly `0, 1, 2, ..` (no gap, no duplicate,
    /// no garbage).
    pub lines_in_order: bool,
    /// The file ends in a line without its newline: a write cut short
    /// (which the `AtomicFile` rules out).
    pub torn_last_line: bool,
    /// The file the records went to (removed with its directory by now).
    pub file: PathBuf,
    /// Lines the heartbeat child process wrote (its last one `stopped`
    /// when its `SIGTERM` trap ran); empty where there is no `sh`.
    pub heartbeat: Vec<String>,
}

impl Report {
    /// Records the writer's cleanup put in the file: what is there beyond
    /// the batches written while running (read from the file, not from
    /// what the cleanup meant to do).
    pub fn flushed_at_shutdown(&self) -> u64 {
        self.lines_in_file.saturating_sub(self.written_during_run)
    }

    /// Records produced that are not in the file.
    pub fn missing(&self) -> u64 {
        self.produced.saturating_sub(self.lines_in_file)
    }

    /// Every record produced is in the file, once, in order.
    pub fn none_lost(&self) -> bool {
        self.lines_in_order && !self.torn_last_line && self.lines_in_file == self.produced
    }

    /// The file is not what the writer wrote (out of order, or records
    /// missing although nothing was aborted): a bug, not a shutdown.
    pub fn file_is_wrong(&self) -> bool {
        let forced = self.daemon.forced().is_some();
        // Written through an `AtomicFile`, the file is never torn, forced
        // shutdown or not.
        !self.lines_in_order || self.torn_last_line || (!forced && self.missing() > 0)
    }

    /// The daemon's exit code, or 1 when the file is wrong.
    pub fn code(&self) -> u8 {
        if self.file_is_wrong() {
            1
        } else {
            self.daemon.code()
        }
    }
}

/// Live counters, read by metrics and the final report.
#[derive(Default)]
struct Counters {
    produced: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
}

// ---------------------------------------------------------------------------
// The subsystems
// ---------------------------------------------------------------------------

/// Produces numbered records, a burst every millisecond, until cancelled
/// (or until `fail_after`, when it fails).
///
/// No cleanup: dropping it at any `.await` is harmless. `Sender::send` is
/// cancel safe (dropped before it completes, it sent nothing), and a record
/// is counted right after it was sent, with no `.await` in between.
#[cancellable]
async fn ingest(
    records: mpsc::Sender<u64>,
    counters: Arc<Counters>,
    fail_after: Option<Duration>,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let fail_at = fail_after.map(|d| tokio::time::Instant::now() + d);
    let mut next = 0;
    loop {
        let now = tick.tick().await;
        if fail_at.is_some_and(|at| now >= at) {
            return Err(format!("upstream closed after record {next}"));
        }
        for _ in 0..BURST {
            if records.send(next).await.is_err() {
                return Ok(()); // the writer closed the channel
            }
            next += 1;
            counters.produced.store(next, Relaxed);
        }
    }
}

/// What the writer's cleanup did.
struct Flush {
    /// Records buffered for the next batch.
    buffered: usize,
    /// Records still in the channel when it was closed.
    drained: usize,
    /// Records the cleanup wrote (buffered + drained).
    records: u64,
    result: io::Result<()>,
}

/// The records file, replaced whole by each batch: the new version is
/// written to an [`AtomicFile`] beside it and renamed over it.
struct RecordsFile {
    path: PathBuf,
    /// The file's content, as last committed.
    committed: Vec<u8>,
}

impl RecordsFile {
    /// Writes a version of the file with `pending` added, commits it, and
    /// returns how many records were added.
    ///
    /// Cancel safe, so the writer's body may be dropped in the middle of
    /// it: dropped before the commit, the temporary file is removed and the
    /// file keeps its last version (no torn line); the commit itself is
    /// shielded from the writer's cancellation, and `pending` is emptied
    /// with no `.await` after it, so the cleanup writes exactly the rest.
    async fn append(&mut self, pending: &mut Vec<u64>) -> io::Result<u64> {
        let mut next = self.committed.clone();
        for n in pending.iter() {
            next.extend_from_slice(format!("{n}\n").as_bytes());
        }
        let mut file = AtomicFile::create(&self.path).await?;
        file.write_all(&next).await?;
        file.commit().await?;
        self.committed = next;
        let added = pending.len() as u64;
        pending.clear();
        Ok(added)
    }
}

/// Writes the records to `path` in batches of `batch` (each one a new
/// version of the whole file); when ingest stops, writes the rest and
/// returns how many records that was.
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
) -> io::Result<u64> {
    // Setup: runs first and is not raced; `?` returns the error as the fn's
    // own `io::Result`.
    let mut out = RecordsFile {
        path,
        committed: Vec::new(),
    };
    let mut pending = Vec::with_capacity(batch);
    out.append(&mut pending).await?; // an empty file to begin with
    on_cancel! {
        let buffered = pending.len();
        records.close();
        let mut drained = 0;
        // `recv` returns `None` once the channel is closed *and* empty.
        while let Some(n) = records.recv().await {
            pending.push(n);
            drained += 1;
        }
        tokio::time::sleep(slow_flush).await;
        let records = pending.len() as u64;
        let result = out.append(&mut pending).await.map(drop);
        *flush = Some(Flush { buffered, drained, records, result });
    }
    loop {
        let Some(n) = records.recv().await else {
            // Ingest stopped (the shutdown stops it first): write the rest
            // and finish. If the writer's own turn to stop comes meanwhile,
            // the cleanup writes what this did not.
            tokio::time::sleep(slow_flush).await;
            return out.append(&mut pending).await;
        };
        pending.push(n);
        if pending.len() >= batch {
            let n = out.append(&mut pending).await?;
            // Counted before the next `.await`: if the body is dropped
            // there, these records are in the file and counted once.
            counters.written.fetch_add(n, Relaxed);
            counters.batches.fetch_add(1, Relaxed);
        }
    }
}

/// What the writer's cleanup says it did, for the report; `Err` when the
/// writer failed.
fn writer_note(
    result: Result<io::Result<u64>, Cancelled>,
    flush: Option<Flush>,
) -> Result<String, String> {
    let flush = match result {
        Ok(Ok(n)) => return Ok(format!("ingest stopped: flushed the last {n} records")),
        Ok(Err(e)) => return Err(format!("writing the records: {e}")),
        Err(_cancelled) => flush.ok_or("cancelled, but the cleanup did not report")?,
    };
    let Flush {
        buffered,
        drained,
        records,
        result,
    } = flush;
    result.map_err(|e| format!("final flush: {e}"))?;
    Ok(format!(
        "cancelled: closed the channel, flushed {records} records ({buffered} buffered, \
         {drained} drained)"
    ))
}

/// Reports progress every `every`, until cancelled; returns how many times.
#[cancellable]
async fn metrics(
    counters: Arc<Counters>,
    every: Duration,
    progress: mpsc::UnboundedSender<String>,
    reports: &mut u64,
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
        *reports += 1;
        if progress.send(line).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// Runs the daemon until `config.run_for` elapses, `signal` fires (Ctrl-C,
/// SIGTERM, or a test's `trigger`), or a subsystem fails; reads the file
/// back; prints the whole story to `out`.
pub async fn run(
    config: &Config,
    signal: Arc<ShutdownSignal>,
    out: &mut impl Write,
) -> io::Result<Report> {
    let dir = unique_temp_dir()?;
    let result = supervise(config, &dir.join("records.log"), signal, out).await;
    let removed = std::fs::remove_dir_all(&dir);
    let report = result?;
    if let Err(e) = removed {
        writeln!(out, "could not remove {}: {e}", dir.display())?;
    }
    print_verdict(&report, out)?;
    Ok(report)
}

async fn supervise(
    config: &Config,
    path: &Path,
    signal: Arc<ShutdownSignal>,
    out: &mut impl Write,
) -> io::Result<Report> {
    writeln!(out, "daemon: records go to {}", path.display())?;
    writeln!(
        out,
        "daemon: stops after {} (--run-for), on Ctrl-C or on SIGTERM; Ctrl-C twice aborts; \
         SIGUSR1 prints the task tree",
        common::human(config.run_for)
    )?;

    let counters = Arc::new(Counters::default());
    // The daemon's log and metrics' progress lines, printed in order.
    let (lines, mut printed) = mpsc::unbounded_channel::<String>();
    let log = lines.clone();
    let daemon = Daemon::new("daemon")
        .grace(config.grace)
        .signal(Arc::clone(&signal))
        .print_tree_on_sigusr1()
        .shutdown_order(ShutdownOrder::declared(["ingest", "writer", "metrics"]))
        .log_with(move |line| {
            let _ = log.send(format!("daemon: {line}"));
        });

    let (c, file) = (Arc::clone(&counters), path.to_owned());
    let beats = path.with_file_name("heartbeat.log");
    let Config {
        run_for,
        tick,
        batch,
        slow_flush,
        fail_after,
        ..
    } = config.clone();
    let running = daemon.run(move |root| async move {
        let (records_tx, records_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let c1 = Arc::clone(&c);
        root.start(
            Subsystem::new("ingest", move |handle| async move {
                let result =
                    ingest(handle.token().clone(), records_tx, c1.clone(), fail_after).await;
                let sent = c1.produced.load(Relaxed);
                let (note, result) = match result {
                    Err(_cancelled) => ("stopped at its next .await, nothing to clean up", Ok(())),
                    Ok(Ok(())) => ("the writer closed the channel", Ok(())),
                    Ok(Err(e)) => ("then failed", Err(e)),
                };
                handle.note(format!("sent {sent} records; {note}"));
                result
            })
            // Were ingest to hang as it stops, the writer would still get its
            // turn to flush after this long.
            .stop_timeout(Duration::from_millis(500)),
        );
        let c2 = Arc::clone(&c);
        root.start(Subsystem::new("writer", move |handle| async move {
            let mut flush = None;
            let token = handle.token().clone();
            let result = writer(token, file, records_rx, batch, slow_flush, c2, &mut flush).await;
            handle.note(writer_note(result, flush)?);
            Ok::<(), String>(())
        }));
        let c3 = Arc::clone(&c);
        root.start(Subsystem::new("metrics", move |handle| async move {
            let mut reports = 0;
            let _ = metrics(handle.token().clone(), c3, tick, lines, &mut reports).await;
            handle.note(format!("reported progress {reports} times"));
        }));
        // A child process: stopped last, with SIGTERM, which its trap
        // answers.
        #[cfg(unix)]
        root.start(Subsystem::process_with(
            "heartbeat",
            Stop::new().grace(Duration::from_millis(500)),
            move || heartbeat(&beats),
        ));
        // `--run-for`: as if a signal came (a real one after it forces the
        // shutdown).
        tokio::select! {
            () = tokio::time::sleep(run_for) => signal.trigger("--run-for elapsed"),
            () = root.token().cancelled() => {}
        }
    });
    tokio::pin!(running);
    let daemon = loop {
        tokio::select! {
            report = &mut running => break report,
            Some(line) = printed.recv() => writeln!(out, "{line}")?,
        }
    };
    while let Ok(line) = printed.try_recv() {
        writeln!(out, "{line}")?;
    }
    writeln!(out)?;
    writeln!(out, "{daemon}")?;

    // Read the file back: what is there is what was flushed.
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    // A write cut by an abort leaves a last line without its newline.
    let (complete, torn) = match text.rfind('\n') {
        Some(end) => text.split_at(end + 1),
        None => ("", text.as_str()),
    };
    let mut lines_in_file = 0;
    let mut lines_in_order = true;
    for (i, line) in complete.lines().enumerate() {
        lines_in_file += 1;
        lines_in_order &= line.parse::<u64>().ok() == Some(i as u64);
    }
    let heartbeat = std::fs::read_to_string(path.with_file_name("heartbeat.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    Ok(Report {
        daemon,
        heartbeat,
        produced: counters.produced.load(Relaxed),
        written_during_run: counters.written.load(Relaxed),
        lines_in_file,
        lines_in_order,
        torn_last_line: !torn.is_empty(),
        file: path.to_owned(),
    })
}

/// The heartbeat: a shell loop that appends `beat` to `file` every 200 ms
/// and `stopped` when it gets `SIGTERM`. (`sleep & wait`, so the trap runs
/// at once, and the shell does not report its `sleep` killed.)
#[cfg(unix)]
fn heartbeat(file: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(
            r#"trap 'echo stopped >> "$1"; exit 0' TERM
               while :; do echo beat >> "$1"; sleep 0.2 & wait; done"#,
        )
        .arg("heartbeat")
        .arg(file)
        .stdin(std::process::Stdio::null())
        // dash reports a `sleep` killed by the SIGTERM as "Terminated".
        .stderr(std::process::Stdio::null());
    cmd
}

fn print_verdict(report: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "records: {} produced; {} written while running, {} flushed at shutdown (read back from the file)",
        report.produced,
        report.written_during_run,
        report.flushed_at_shutdown()
    )?;
    let torn = if report.torn_last_line {
        " and a torn last line (a write cut short)"
    } else {
        ""
    };
    let verdict = if !report.lines_in_order {
        "NOT the sequence 0..n: records duplicated or out of order".to_owned()
    } else if report.none_lost() {
        format!("exactly 0..{} in order: none lost", report.lines_in_file)
    } else if report.daemon.forced().is_some() {
        format!(
            "0..{} in order{torn}; the last {} records produced were never written: \
             the shutdown was forced before the writer flushed them (the file is the \
             last version written in full, not a torn one)",
            report.lines_in_file,
            report.missing()
        )
    } else {
        format!(
            "0..{} in order{torn}, but {} records are MISSING",
            report.lines_in_file,
            report.missing()
        )
    };
    writeln!(out, "file:    {} lines, {verdict}", report.lines_in_file)?;
    if !report.heartbeat.is_empty() {
        let beats = report.heartbeat.iter().filter(|l| *l == "beat").count();
        let end = if report.heartbeat.last().is_some_and(|l| l == "stopped") {
            "then its SIGTERM trap said `stopped`"
        } else {
            "then it was killed with its process group"
        };
        writeln!(out, "child:   the heartbeat wrote {beats} beats, {end}")?;
    }
    let meaning = match report.code() {
        0 => "clean shutdown",
        1 if report.file_is_wrong() => "the file is not what the writer wrote",
        1 => "a subsystem failed",
        3 => "the grace period elapsed: cleanups were aborted",
        130 => "a second signal aborted the shutdown",
        _ => "see above",
    };
    writeln!(out, "exit {}: {meaning}", report.code())
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

/// What `--help` prints, on stdout (exit 0); a bad argument prints it on
/// stderr (exit 2).
pub const USAGE: &str = "\
usage: daemon [--run-for <secs>] [--grace <secs>] [--slow-flush <secs>] [--fail-after <secs>]

  --run-for <secs>     stop by itself after this long (default 3; Ctrl-C or SIGTERM stop it earlier)
  --grace <secs>       how long the cleanups may take before they are aborted (default 2)
  --slow-flush <secs>  make the writer's final flush stall this long (shows a forced shutdown)
  --fail-after <secs>  make ingest fail after this long (shows a failure and its escalation)

exit codes: 0 clean, 1 a subsystem failed, 2 bad arguments, 3 grace period elapsed, 130 second signal";

/// What the command line asks for: `Ok(None)` for `--help`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, value) = common::split_flag(arg);
        let slot = match flag.as_str() {
            "--run-for" => &mut config.run_for,
            "--grace" => &mut config.grace,
            "--slow-flush" => &mut config.slow_flush,
            "--fail-after" => config.fail_after.insert(Duration::ZERO),
            _ => return Err(format!("unknown argument `{flag}`")),
        };
        let value = value
            .or_else(|| args.next())
            .ok_or(format!("{flag} needs a number of seconds"))?;
        *slot = common::seconds(&flag, &value)?;
    }
    Ok(Some(config))
}

fn main() -> ExitCode {
    common::main_with(
        "daemon",
        USAGE,
        parse_args(std::env::args().skip(1)),
        |config| async move {
            let signal = match ShutdownSignal::install() {
                Ok(signal) => Arc::new(signal),
                Err(e) => {
                    eprintln!("daemon: cannot listen for signals: {e}");
                    return 1;
                }
            };
            match run(&config, signal, &mut io::stdout()).await {
                Ok(report) => report.code(),
                Err(e) => {
                    eprintln!("daemon: {e}");
                    1
                }
            }
        },
    )
}
