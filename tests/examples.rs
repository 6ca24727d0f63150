//! The examples, run with short durations: each one ends by itself and
//! reports what it promises. Each example file is included as a module and
//! its `run` called directly.
//!
//! Time limits here only catch hangs; none asserts a tight wall-clock bound.
// Each example is a module here and brings its own copy of the helpers the
// examples share (`examples/common`), as each example binary does.
#![allow(clippy::duplicate_mod)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use cancel_scope::{CancellationToken, ShutdownSignal};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

#[allow(dead_code)]
#[path = "../examples/daemon.rs"]
mod daemon;

#[allow(dead_code)]
#[path = "../examples/worker.rs"]
mod worker;

#[allow(dead_code)]
#[path = "../examples/batch.rs"]
mod batch;

#[allow(dead_code)]
#[path = "../examples/blocking.rs"]
mod blocking;

#[allow(dead_code)]
#[path = "../examples/server.rs"]
mod server;

/// Generous: only a hang gets near it.
const HANG: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test if it hangs.
async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(HANG, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {HANG:?}"),
    }
}

fn printed(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("the examples print UTF-8")
}

/// An example ends with a one-line summary.
fn assert_summary(out: &str) {
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("summary: "),
        "no summary at the end:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// daemon
// ---------------------------------------------------------------------------

/// A fresh [`ShutdownSignal`] for one run of the daemon.
fn install_signal() -> Arc<ShutdownSignal> {
    Arc::new(ShutdownSignal::install().expect("signal handlers install"))
}

/// Runs the daemon example with `config` and `signal`: its report and what
/// it printed.
async fn run_daemon(
    config: &daemon::Config,
    signal: Arc<ShutdownSignal>,
) -> (daemon::Report, String) {
    let mut out = Vec::new();
    let report = bounded("daemon", daemon::run(config, signal, &mut out))
        .await
        .expect("the daemon runs");
    (report, printed(out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_shuts_down_without_losing_a_record() {
    use cancel_scope::TaskOutcome;
    use cancel_scope::daemon::{Forced, NodeState, StopReason};

    // 1. It stops by itself after `run_for`, in order, and loses nothing.
    let config = daemon::Config {
        run_for: Duration::from_millis(600),
        tick: Duration::from_millis(100),
        grace: Duration::from_secs(20),
        ..daemon::Config::default()
    };
    let signal = install_signal();
    let (report, out) = run_daemon(&config, signal).await;
    assert_eq!(
        report.daemon.reason(),
        &StopReason::Signal("--run-for elapsed"),
        "{out}"
    );
    assert!(report.produced > 0, "{out}");
    assert!(report.none_lost(), "{report:#?}\n{out}");
    assert_eq!(report.lines_in_file, report.produced, "{out}");
    assert_eq!(
        report.written_during_run + report.flushed_at_shutdown(),
        report.produced,
        "{out}"
    );
    assert_eq!(report.daemon.forced(), None, "{out}");
    assert_eq!(report.code(), 0, "{out}");
    let tree = report.daemon.tree();
    let names: Vec<_> = tree.nodes().iter().map(|n| n.name()).collect();
    let mut expected = vec![
        "/daemon",
        "/daemon/ingest",
        "/daemon/writer",
        "/daemon/metrics",
    ];
    if cfg!(unix) {
        // The child process, stopped last with SIGTERM: its trap exits 0.
        expected.push("/daemon/heartbeat");
        let heartbeat = tree.get("/daemon/heartbeat").unwrap();
        assert_eq!(heartbeat.note(), Some("exited 0"), "{out}");
        assert_eq!(
            report.heartbeat.last().map(String::as_str),
            Some("stopped"),
            "{out}"
        );
    }
    assert_eq!(names, expected);
    let ingest = tree.get("/daemon/ingest").unwrap();
    assert_eq!(
        ingest.state(),
        NodeState::Ended(TaskOutcome::Stopped),
        "{out}"
    );
    assert!(
        ingest.note().unwrap().contains("nothing to clean up"),
        "{out}"
    );
    let writer = tree.get("/daemon/writer").unwrap();
    // It finished on its own as ingest stopped, or was cancelled in the
    // middle of that and its cleanup finished the job.
    assert!(
        matches!(
            writer.state(),
            NodeState::Ended(TaskOutcome::Completed) | NodeState::Ended(TaskOutcome::Stopped)
        ),
        "{out}"
    );
    assert!(writer.note().unwrap().contains("flushed"), "{out}");
    assert_eq!(
        tree.get("/daemon/metrics").unwrap().state(),
        NodeState::Ended(TaskOutcome::Stopped),
        "{out}"
    );
    // What the user sees: progress, the reason, the table, the verdict.
    assert!(out.contains("] produced"), "no progress line:\n{out}");
    assert!(
        out.contains("daemon: shutting down: --run-for elapsed"),
        "{out}"
    );
    assert!(out.contains("SUBSYSTEM"), "{out}");
    assert!(out.contains("  /daemon/writer"), "{out}");
    assert!(out.contains("none lost"), "{out}");
    assert!(out.contains("exit 0: clean shutdown"), "{out}");
    // The temp dir is gone.
    assert!(!report.file.exists(), "{out}");
    assert!(!report.file.parent().unwrap().exists(), "{out}");

    // 2. A signal stops it early.
    let config = daemon::Config {
        run_for: HANG,
        tick: Duration::from_millis(100),
        grace: Duration::from_secs(20),
        ..daemon::Config::default()
    };
    let signal = install_signal();
    let sender = tokio::spawn({
        let signal = Arc::clone(&signal);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            signal.trigger("SIGTERM");
        }
    });
    let (report, out) = run_daemon(&config, signal).await;
    sender.await.unwrap();
    assert_eq!(
        report.daemon.reason(),
        &StopReason::Signal("SIGTERM"),
        "{out}"
    );
    assert!(report.none_lost(), "{report:#?}\n{out}");
    assert_eq!(report.code(), 0, "{out}");

    // 3. A second signal during a (very) slow shutdown aborts at once, and
    // the report says what is in the file: no more, no less.
    let config = daemon::Config {
        run_for: HANG,
        tick: Duration::from_millis(100),
        grace: HANG,
        slow_flush: HANG,
        ..daemon::Config::default()
    };
    let signal = install_signal();
    let sender = tokio::spawn({
        let signal = Arc::clone(&signal);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            signal.trigger("Ctrl-C");
            // Ctrl-C again while the (very slow) shutdown runs.
            tokio::time::sleep(Duration::from_millis(200)).await;
            signal.trigger("Ctrl-C");
        }
    });
    let (report, out) = run_daemon(&config, signal).await;
    sender.await.unwrap();
    assert_eq!(
        report.daemon.reason(),
        &StopReason::Signal("Ctrl-C"),
        "{out}"
    );
    assert_eq!(report.daemon.forced(), Some(Forced::SecondSignal), "{out}");
    assert_eq!(
        report.daemon.tree().get("/daemon/writer").unwrap().state(),
        NodeState::Ended(TaskOutcome::Aborted),
        "{out}"
    );
    assert!(report.lines_in_order, "{out}");
    assert!(!report.file_is_wrong(), "{out}");
    assert_eq!(report.lines_in_file, report.written_during_run, "{out}");
    assert_eq!(report.code(), 130, "{out}");
    // The heartbeat child had not had its turn: killed with its group.
    assert_ne!(
        report.heartbeat.last().map(String::as_str),
        Some("stopped"),
        "{out}"
    );
    assert!(out.contains("shutdown forced after"), "{out}");
    assert!(out.contains("(a second signal)"), "{out}");
    if report.missing() > 0 {
        assert!(
            out.contains("were never written: the shutdown was forced"),
            "{out}"
        );
    } else {
        assert!(out.contains("none lost"), "{out}");
    }
    assert!(
        out.contains("exit 130: a second signal aborted the shutdown"),
        "{out}"
    );
    assert!(!report.file.parent().unwrap().exists(), "{out}");

    // 4. A subsystem fails: the others clean up, the exit code says so.
    let config = daemon::Config {
        run_for: HANG,
        tick: Duration::from_millis(100),
        grace: Duration::from_secs(20),
        fail_after: Some(Duration::from_millis(300)),
        ..daemon::Config::default()
    };
    let signal = install_signal();
    let (report, out) = run_daemon(&config, signal).await;
    assert_eq!(
        report.daemon.reason(),
        &StopReason::Failed("/daemon/ingest".into()),
        "{out}"
    );
    assert!(
        out.contains("daemon: /daemon/ingest failed: upstream closed after record"),
        "{out}"
    );
    assert!(report.none_lost(), "{out}");
    assert_eq!(report.code(), 1, "{out}");
    assert!(out.contains("exit 1: a subsystem failed"), "{out}");
}

#[test]
fn daemon_reads_its_flags_and_help_asks_for_the_usage() {
    let args = |a: &[&str]| daemon::parse_args(a.iter().map(|s| s.to_string()));
    assert!(matches!(args(&["--help"]), Ok(None)));
    assert!(matches!(args(&["--run-for", "1", "-h"]), Ok(None)));
    let config = args(&["--run-for=0.5", "--grace", "1", "--fail-after", "2"])
        .unwrap()
        .unwrap();
    assert_eq!(config.run_for, Duration::from_millis(500));
    assert_eq!(config.grace, Duration::from_secs(1));
    assert_eq!(config.fail_after, Some(Duration::from_secs(2)));
    assert!(args(&["--bogus"]).unwrap_err().contains("unknown argument"));
    assert!(
        args(&["--grace", "soon"])
            .unwrap_err()
            .contains("not a number")
    );
    assert!(daemon::USAGE.starts_with("usage: daemon"));
    assert!(daemon::USAGE.contains("exit codes: 0 clean"));
}

// ---------------------------------------------------------------------------
// worker
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_is_dropped_mid_unit_and_reports_its_latency() {
    // Cancelled in the middle of a unit much longer than the test.
    let config = worker::Config {
        stop_after: Duration::from_millis(200),
        unit: HANG,
        units: 3,
    };
    let mut out = Vec::new();
    let report = bounded(
        "worker",
        worker::run(&config, std::future::pending(), &mut out),
    )
    .await
    .expect("the worker runs");
    let out = printed(out);
    assert_summary(&out);
    assert!(report.cancelled, "{out}");
    assert!(report.reason.contains("--stop-after"), "{out}");
    assert_eq!(report.units_done, 0, "{out}");
    assert_eq!(report.interrupted, Some(1), "{out}");
    // It did not wait for the unit to finish.
    assert!(report.latency < HANG / 2, "{out}");
    assert!(report.unit_left > HANG / 2, "{out}");
    assert!(out.contains("cancel latency"), "{out}");
    assert!(out.contains("rolled back by on_cancel!"), "{out}");

    // An interrupt comes before `stop_after`.
    let config = worker::Config {
        stop_after: HANG,
        unit: Duration::from_millis(20),
        units: u32::MAX,
    };
    let interrupt = tokio::time::sleep(Duration::from_millis(150));
    let mut out = Vec::new();
    let report = bounded("worker", worker::run(&config, interrupt, &mut out))
        .await
        .expect("the worker runs");
    let out = printed(out);
    assert_summary(&out);
    assert!(report.cancelled, "{out}");
    assert_eq!(report.reason, "Ctrl-C", "{out}");
    assert_eq!(report.interrupted, Some(report.units_done + 1), "{out}");

    // A worker that finishes first is not cancelled.
    let config = worker::Config {
        stop_after: HANG,
        unit: Duration::from_millis(10),
        units: 3,
    };
    let mut out = Vec::new();
    let report = bounded(
        "worker",
        worker::run(&config, std::future::pending(), &mut out),
    )
    .await
    .expect("the worker runs");
    let out = printed(out);
    assert_summary(&out);
    assert!(!report.cancelled, "{out}");
    assert_eq!(report.units_done, 3, "{out}");
    assert_eq!(report.interrupted, None, "{out}");
}

// ---------------------------------------------------------------------------
// batch
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_fails_fast_and_maps_results_to_inputs() {
    use batch::JobError;

    // Input #5 is corrupt: it fails, and cancels the long inputs.
    let config = batch::Config {
        corrupt: Some(5),
        chunk: Duration::from_millis(10),
    };
    let mut out = Vec::new();
    let report = bounded("batch", batch::run(&config, &mut out))
        .await
        .expect("the batch runs");
    let out = printed(out);
    assert_summary(&out);
    assert_eq!(report.inputs, config.inputs());
    assert_eq!(report.results.len(), report.inputs.len());
    for (i, (input, result)) in report.inputs.iter().zip(&report.results).enumerate() {
        let result = result.as_ref().expect("no task panics or is aborted");
        match result {
            Ok(output) => {
                // Results are in spawn order: each output is its input's.
                assert_eq!(output.checksum, batch::expected_checksum(input), "{out}");
                assert!(input.chunks < 40, "#{i} should have been cancelled:\n{out}");
            }
            Err(JobError::Fatal(why)) => {
                assert_eq!(i, 5, "{out}");
                assert!(why.contains("corrupt"), "{out}");
            }
            Err(JobError::Cancelled {
                done,
                discarded,
                why,
            }) => {
                assert_ne!(i, 5, "{out}");
                assert!(*done < input.chunks, "{out}");
                assert!(*discarded, "the cleanup ran:\n{out}");
                // Task ids count spawns from 0: input #5 is task #5.
                assert_eq!(why.to_string(), "task #5 failed", "{out}");
            }
        }
        // The printout lists the inputs in order.
        assert!(
            out.contains(&format!("  {i}  {}", input.name)),
            "#{i} not printed:\n{out}"
        );
    }
    assert!(
        matches!(report.results[5], Ok(Err(JobError::Fatal(_)))),
        "{out}"
    );
    for long in [2, 4, 6] {
        assert!(
            matches!(report.results[long], Ok(Err(JobError::Cancelled { .. }))),
            "#{long} should be cancelled:\n{out}"
        );
    }
    assert!(out.contains("<- cancels the rest"), "{out}");

    // A clean batch: every input processed.
    let config = batch::Config {
        corrupt: None,
        chunk: Duration::from_millis(2),
    };
    let mut out = Vec::new();
    let report = bounded("batch", batch::run(&config, &mut out))
        .await
        .expect("the batch runs");
    let out = printed(out);
    assert_summary(&out);
    for (input, result) in report.inputs.iter().zip(&report.results) {
        let output = result.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(output.checksum, batch::expected_checksum(input), "{out}");
    }
    assert!(out.contains("8 ok, 0 failed, 0 cancelled"), "{out}");
}

// ---------------------------------------------------------------------------
// blocking
// ---------------------------------------------------------------------------

/// The interrupt comes once both jobs run on their own blocking threads
/// (the runtime counts the threads it starts; a current-thread runtime
/// starts no other), so the shutdown always finds the unchecked job running,
/// and detaches it, however busy the machine: its grace period is a second,
/// a third of the job.
#[test]
fn blocking_work_that_checks_its_token_stops_and_the_rest_is_detached() {
    let threads = Arc::new(AtomicUsize::new(0));
    let started = Arc::clone(&threads);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || {
            started.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();
    let config = blocking::Config {
        stop_after: HANG,
        grace: Duration::from_secs(1),
        job: Duration::from_secs(3),
    };
    let both_running = async {
        while threads.load(SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let mut out = Vec::new();
    let report = rt
        .block_on(bounded(
            "blocking",
            blocking::run(&config, both_running, &mut out),
        ))
        .expect("the example runs");
    let out = printed(out);
    assert_summary(&out);
    // The task that checks its token stopped because of the cancel, before
    // its job was over.
    let checked = report.checked.as_ref().expect("the checked task returns");
    assert!(checked.saw_cancel, "{out}");
    assert!(report.checked_latency.is_some(), "{out}");
    assert!(out.contains("checked    stopped"), "{out}");
    // The one that ignores it could not be stopped: the scope detached it,
    // and its thread ran it to the end, after the shutdown returned.
    let err = report
        .unchecked
        .as_ref()
        .expect_err("the unchecked task is given up on");
    assert!(err.is_detached(), "{err}\n{out}");
    assert!(err.is_aborted(), "{out}");
    let really = report.unchecked_really_stopped.expect("its thread reports");
    assert!(really > report.shutdown_took, "{out}");
    assert!(out.contains("kept running"), "{out}");
}

// ---------------------------------------------------------------------------
// server
// ---------------------------------------------------------------------------

/// A test client on its own TCP connection.
struct Client {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
    local: SocketAddr,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let local = stream.local_addr().unwrap();
        let (read, write) = stream.into_split();
        Client {
            read: BufReader::new(read),
            write,
            local,
        }
    }

    async fn send(&mut self, request: &str) {
        self.write
            .write_all(format!("{request}\n").as_bytes())
            .await
            .expect("send");
    }

    /// The next line; `Err` with the torn rest if the connection ends in the
    /// middle of one, `Ok(None)` at a clean end.
    async fn line(&mut self) -> Result<Option<String>, String> {
        let mut line = String::new();
        bounded("a reply", self.read.read_line(&mut line))
            .await
            .expect("read");
        match line.strip_suffix('\n') {
            Some(whole) => Ok(Some(whole.to_owned())),
            None if line.is_empty() => Ok(None),
            None => Err(line),
        }
    }

    async fn request(&mut self, request: &str) -> String {
        self.send(request).await;
        self.line().await.unwrap().expect("a reply")
    }

    /// Every line until the server closes; panics on a torn line.
    async fn rest(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.line().await {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => return lines,
                Err(torn) => panic!("torn reply {torn:?} after {lines:?}"),
            }
        }
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    bounded(what, async {
        while !ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_finishes_requests_says_bye_and_leaves_no_task() {
    use server::End;

    let tasks = || Handle::current().metrics().num_alive_tasks();
    let baseline = tasks();

    // 1. The server, driven by real clients.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let stats = Arc::new(server::Stats::default());
    let grace = Duration::from_secs(2);
    let running = tokio::spawn(server::serve(listener, token.clone(), grace, stats.clone()));

    let mut idle = Client::connect(addr).await;
    assert_eq!(idle.request("SET lang rust").await, "OK");
    assert_eq!(idle.request("GET lang").await, "VALUE rust");
    assert_eq!(idle.request("GET nothing").await, "NOT_FOUND");
    assert!(idle.request("HELLO").await.starts_with("ERR "));
    let mut silent = Client::connect(addr).await;
    let mut quitter = Client::connect(addr).await;
    assert_eq!(quitter.request("QUIT").await, "OK bye");
    assert_eq!(quitter.rest().await, Vec::<String>::new());
    let mut in_grace = Client::connect(addr).await;
    in_grace.send("SLOW 200").await;
    let mut past_grace = Client::connect(addr).await;
    past_grace.send("SLOW 60000").await;
    // Both SLOW requests are being executed, every connection was accepted.
    wait_until("the requests in flight", || {
        stats.in_flight.load(SeqCst) == 2 && stats.accepted.load(SeqCst) == 5
    })
    .await;

    token.cancel();
    let (idle_rest, silent_rest, in_grace_rest, past_grace_rest) = tokio::join!(
        idle.rest(),
        silent.rest(),
        in_grace.rest(),
        past_grace.rest()
    );
    // Idle clients are told; the request in flight is answered whole, then
    // the client is told; the one past the grace period gets no (torn)
    // reply, only the end of the connection.
    assert_eq!(idle_rest, [server::BYE]);
    assert_eq!(silent_rest, [server::BYE]);
    assert_eq!(in_grace_rest, ["DONE 200", server::BYE]);
    assert_eq!(past_grace_rest, Vec::<String>::new());

    let report = bounded("the server", running).await.unwrap();
    let end_of = |client: &Client| {
        let conn = report
            .connections
            .iter()
            .find(|c| c.peer == client.local)
            .unwrap_or_else(|| panic!("no connection from {}: {report:#?}", client.local));
        conn.end.clone()
    };
    assert_eq!(report.connections.len(), 5, "{report:#?}");
    assert_eq!(
        end_of(&idle),
        End::ClosedByServer {
            finished_in_flight: false
        }
    );
    assert_eq!(
        end_of(&silent),
        End::ClosedByServer {
            finished_in_flight: false
        }
    );
    assert_eq!(end_of(&quitter), End::ClientQuit);
    assert_eq!(
        end_of(&in_grace),
        End::ClosedByServer {
            finished_in_flight: true
        }
    );
    assert_eq!(end_of(&past_grace), End::Aborted);
    assert_eq!(report.in_flight_at_shutdown, 2);
    assert_eq!(
        stats.in_flight.load(SeqCst),
        0,
        "the aborted request is not in flight anymore"
    );
    // It stopped accepting.
    assert!(TcpStream::connect(addr).await.is_err());
    // No connection task outlived the server.
    wait_until("the tasks to be gone", || tasks() == baseline).await;

    // 2. The demo, as `cargo run --example server` runs it (with more grace,
    //    for a busy machine: carol's request still fits, dave's does not).
    let config = server::Config {
        grace: Duration::from_secs(2),
    };
    let mut out = Vec::new();
    let report = bounded("the server demo", server::run(&config, &mut out))
        .await
        .expect("the demo runs");
    let out = printed(out);
    assert_summary(&out);
    let ends: Vec<_> = report.server.connections.iter().map(|c| &c.end).collect();
    assert_eq!(ends.len(), 4, "{out}");
    for t in &report.clients {
        assert_eq!(t.torn, None, "{out}");
        assert_eq!(t.error, None, "{out}");
        let conn = report
            .server
            .connections
            .iter()
            .find(|c| Some(c.peer) == t.local)
            .expect("each client has its connection");
        let (expected_end, expected_replies, expected_after): (End, &[Option<&str>], &[&str]) =
            match t.name {
                "alice" => (
                    End::ClosedByServer {
                        finished_in_flight: false,
                    },
                    &[Some("OK"), Some("VALUE rust")],
                    &[server::BYE],
                ),
                "bob" => (
                    End::ClientQuit,
                    &[
                        Some("OK"),
                        Some("VALUE 1"),
                        Some("NOT_FOUND"),
                        Some("OK bye"),
                    ],
                    &[],
                ),
                "carol" => (
                    End::ClosedByServer {
                        finished_in_flight: true,
                    },
                    &[Some("DONE 300")],
                    &[server::BYE],
                ),
                "dave" => (End::Aborted, &[None], &[]),
                other => panic!("unknown client {other}"),
            };
        assert_eq!(conn.end, expected_end, "{}:\n{out}", t.name);
        let replies: Vec<Option<&str>> = t.exchanges.iter().map(|(_, r)| r.as_deref()).collect();
        assert_eq!(replies, expected_replies, "{}:\n{out}", t.name);
        assert_eq!(t.after, expected_after, "{}:\n{out}", t.name);
    }
    assert!(report.refused_after, "{out}");
    assert!(out.contains("ABORTED"), "{out}");
    wait_until("the tasks to be gone", || tasks() == baseline).await;
}
