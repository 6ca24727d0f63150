//! The daemon layer (`cancel_scope::daemon`), through its public API:
//! signals, graceful then forced shutdown, escalation, restarts, order,
//! the task tree, and a process that exits past a stuck blocking thread.
//!
//! Time is paused wherever the test is about durations; the one wall-clock
//! test (the child process) only bounds a hang, generously.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cancel_scope::daemon::{
    Daemon, Forced, NodeState, Restart, ShutdownOrder, StopReason, Subsystem,
};
use cancel_scope::{Cancelled, ShutdownSignal, TaskOutcome, cancellable, on_cancel};
use tokio::time::Instant;

mod common;

/// What the subsystems (and the daemon's log) say, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line.into());
    }

    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The lines `keep` keeps, in order.
    fn lines_where(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.lines().into_iter().filter(|l| keep(l)).collect()
    }

    fn has(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }

    fn position(&self, line: &str) -> usize {
        self.lines()
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no {line:?} in {:#?}", self.lines()))
    }

    fn daemon(&self, name: &str) -> Daemon {
        let log = self.clone();
        Daemon::new(name).log_with(move |line| log.push(format!("log: {line}")))
    }
}

/// A subsystem that waits for its token, then cleans up for `cleanup`.
fn cleans_up_in(name: &'static str, cleanup: Duration, log: &Log) -> Subsystem {
    let log = log.clone();
    Subsystem::new(name, move |handle| async move {
        handle.token().cancelled().await;
        log.push(format!("stop {name}"));
        tokio::time::sleep(cleanup).await;
        log.push(format!("done {name}"));
        handle.note(format!("cleaned up in {cleanup:?}"));
    })
}

/// `daemon` listening to a fresh [`ShutdownSignal`], and that signal, to
/// trigger it.
fn signalled(daemon: Daemon) -> (Daemon, Arc<ShutdownSignal>) {
    let signal = Arc::new(ShutdownSignal::install().unwrap());
    (daemon.signal(Arc::clone(&signal)), signal)
}

#[tokio::test(start_paused = true)]
async fn a_signal_stops_it_gracefully_then_the_grace_period_forces_it() {
    let log = Log::default();
    let (daemon, trigger) = signalled(log.daemon("d"));
    let subsystems = log.clone();
    let report = daemon
        .grace(Duration::from_secs(2))
        .shutdown_order(ShutdownOrder::Concurrent)
        .run(move |d| async move {
            d.start(cleans_up_in(
                "quick",
                Duration::from_millis(100),
                &subsystems,
            ));
            d.start(cleans_up_in("slow", Duration::from_secs(3600), &subsystems));
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.trigger("SIGTERM");
        })
        .await;
    assert_eq!(report.reason(), &StopReason::Signal("SIGTERM"));
    assert_eq!(report.forced(), Some(Forced::GraceElapsed));
    assert_eq!(report.shutdown_took(), Some(Duration::from_secs(2)));
    let tree = report.tree();
    let quick = tree.get("/d/quick").unwrap();
    assert_eq!(quick.state(), NodeState::Ended(TaskOutcome::Stopped));
    assert_eq!(quick.cleanup_time(), Some(Duration::from_millis(100)));
    assert_eq!(quick.note(), Some("cleaned up in 100ms"));
    let slow = tree.get("/d/slow").unwrap();
    assert_eq!(slow.state(), NodeState::Ended(TaskOutcome::Aborted));
    assert_eq!(slow.note(), None, "its cleanup never finished");
    assert_eq!(
        tree.get("/d").unwrap().state(),
        NodeState::Ended(TaskOutcome::Aborted)
    );
    assert!(log.has("done quick") && !log.has("done slow"));
    assert!(log.has("log: shutting down: SIGTERM"), "{:#?}", log.lines());
    assert!(
        log.has("shutdown forced after 2.000s (the grace period elapsed): aborting /d, /d/slow"),
        "{:#?}",
        log.lines()
    );
    assert_eq!(report.code(), 3);
    let printed = report.to_string();
    assert!(printed.contains("/d/slow"), "{printed}");
    assert!(printed.contains("ABORTED"), "{printed}");
    assert!(
        printed.ends_with("-> exit 3") && printed.contains("FORCED after 2.000s"),
        "{printed}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_exits_0_and_says_what_each_cleanup_did() {
    let log = Log::default();
    let (daemon, trigger) = signalled(log.daemon("d"));
    let subsystems = log.clone();
    let report = daemon
        .run(move |d| async move {
            d.start(cleans_up_in("a", Duration::from_millis(10), &subsystems));
            d.start(cleans_up_in("b", Duration::from_millis(20), &subsystems));
            trigger.trigger("Ctrl-C");
        })
        .await;
    assert_eq!(report.forced(), None);
    assert!(report.is_clean());
    assert_eq!(report.code(), 0);
    // Reverse start order: b cleans up first, then a.
    assert_eq!(report.shutdown_took(), Some(Duration::from_millis(30)));
    let printed = report.to_string();
    assert!(printed.contains("cleaned up in 10ms"), "{printed}");
    assert!(
        printed
            .ends_with("d: shutdown (Ctrl-C) took 30.0ms (grace 5.000s): 3 cleaned up -> exit 0"),
        "{printed}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_aborts_at_once() {
    let log = Log::default();
    let (daemon, trigger) = signalled(log.daemon("d"));
    let subsystems = log.clone();
    let report = daemon
        .grace(Duration::from_secs(3600))
        .run(move |d| async move {
            d.start(cleans_up_in("slow", Duration::from_secs(3600), &subsystems));
            trigger.trigger("Ctrl-C");
            tokio::time::sleep(Duration::from_secs(5)).await;
            trigger.trigger("Ctrl-C");
        })
        .await;
    assert_eq!(report.reason(), &StopReason::Signal("Ctrl-C"));
    assert_eq!(report.forced(), Some(Forced::SecondSignal));
    assert_eq!(report.shutdown_took(), Some(Duration::from_secs(5)));
    assert_eq!(
        report.tree().get("/d/slow").unwrap().state(),
        NodeState::Ended(TaskOutcome::Aborted)
    );
    assert_eq!(report.code(), 130);
    assert!(log.has("(a second signal): aborting /d, /d/slow"));
}

/// A forced shutdown aborts a subsystem that had not had its turn to stop:
/// neither it nor a task it spawned with its token sees the token cancelled
/// (which would start a graceful stop, a child process's SIGTERM, that the
/// abort then cuts). On a multi-thread
/// runtime, where a task woken by a cancel can run before the abort of
/// the task above it lands; a few rounds, as it depends on scheduling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_shutdown_starts_no_stop_that_had_not_had_its_turn() {
    for round in 0..20 {
        let (daemon, trigger) = signalled(Daemon::new("d").quiet());
        let saw_cancel = Arc::new(Mutex::new(Vec::new()));
        let saw = Arc::clone(&saw_cancel);
        let report = daemon
            .grace(Duration::from_secs(3600))
            .shutdown_order(ShutdownOrder::declared(["hung", "later", "outer"]))
            .run(move |d| async move {
                // Each fn says it runs; `hung` says it was asked to stop.
                let (up, mut running) = tokio::sync::mpsc::unbounded_channel();
                let hung_up = up.clone();
                d.start(Subsystem::new("hung", move |h| async move {
                    h.token().cancelled().await;
                    let _ = hung_up.send("hung stops");
                    std::future::pending::<()>().await;
                }));
                for name in ["later", "outer"] {
                    let (saw, up) = (Arc::clone(&saw), up.clone());
                    d.start(Subsystem::new(name, move |h| async move {
                        // A task of its own, with a token below its fn's.
                        let mut tasks = cancel_scope::Scope::<()>::child_of(h.token());
                        let (task_saw, task_up) = (Arc::clone(&saw), up.clone());
                        tasks.spawn(move |token| async move {
                            let _ = task_up.send("a task");
                            token.cancelled().await;
                            task_saw.lock().unwrap().push("a task");
                        });
                        if name == "outer" {
                            let (saw, up) = (Arc::clone(&saw), up.clone());
                            h.start(Subsystem::new("inner", move |h| async move {
                                let _ = up.send("inner");
                                h.token().cancelled().await;
                                saw.lock().unwrap().push("inner");
                            }));
                        }
                        let _ = up.send(name);
                        h.token().cancelled().await;
                        saw.lock().unwrap().push(name);
                    }));
                }
                for _ in 0..5 {
                    running.recv().await;
                }
                trigger.trigger("SIGTERM");
                assert_eq!(running.recv().await, Some("hung stops"));
                trigger.trigger("SIGTERM");
            })
            .await;
        assert_eq!(report.forced(), Some(Forced::SecondSignal), "{report}");
        for path in ["/d/hung", "/d/later", "/d/outer", "/d/outer/inner"] {
            let state = report.tree().get(path).unwrap().state();
            assert_eq!(state, NodeState::Ended(TaskOutcome::Aborted), "{report}");
        }
        let saw = saw_cancel.lock().unwrap();
        assert!(saw.is_empty(), "round {round}: {saw:?} saw a cancel");
    }
}

/// A forced shutdown returns although a subsystem's fn is stuck in a
/// synchronous loop on a worker, holding (in that worker's LIFO slot) the
/// runner of a nested subsystem it just stopped: `run` does not wait for a
/// task that cannot be dropped yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_shutdown_returns_while_a_fn_spins() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let release = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(AtomicBool::new(false));
    let outside = cancel_scope::CancellationToken::new();
    let (rel, spin) = (Arc::clone(&release), Arc::clone(&spinning));
    let daemon = Daemon::new("d")
        .quiet()
        .child_of(&outside)
        .grace(Duration::from_millis(100));
    let run = tokio::spawn(daemon.run(move |d| async move {
        d.start(Subsystem::new("spin", move |h| async move {
            let c = h.start(Subsystem::new("c", |_| std::future::pending::<()>()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.stop(); // wakes c's runner from this worker
            spin.store(true, Ordering::SeqCst);
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while !rel.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }));
        std::future::pending::<()>().await;
    }));
    while !spinning.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    outside.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), run).await;
    release.store(true, Ordering::SeqCst);
    let report = report.expect("run returned while the fn spins").unwrap();
    assert_eq!(report.forced(), Some(Forced::GraceElapsed), "{report}");
    for path in ["/d", "/d/spin", "/d/spin/c"] {
        let state = report.tree().get(path).unwrap().state();
        assert_eq!(state, NodeState::Ended(TaskOutcome::Aborted), "{report}");
    }
}

/// A fn that blocks its worker in a loop until its token is cancelled (it
/// cannot be dropped by an abort) sees its token cancelled once a forced
/// shutdown is over, although its turn to stop never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_shutdown_cancels_the_token_of_a_fn_stuck_polling_it() {
    let (left, mut loop_left) = tokio::sync::mpsc::unbounded_channel();
    let (up, mut looping) = tokio::sync::mpsc::unbounded_channel();
    let daemon = Daemon::new("d")
        .quiet()
        .grace(Duration::from_millis(100))
        .shutdown_order(ShutdownOrder::declared(["hung", "stuck"]));
    let run = daemon.run(move |d| async move {
        d.start(Subsystem::new("hung", |_| std::future::pending::<()>()));
        d.start(Subsystem::new("stuck", move |h| async move {
            let _ = up.send(());
            // Bounded, so that a failure of this test is not a hang.
            let until = std::time::Instant::now() + Duration::from_secs(30);
            while !h.token().is_cancelled() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            if h.token().is_cancelled() {
                let _ = left.send(());
            }
        }));
        looping.recv().await;
        d.request_shutdown();
    });
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run returned");
    assert_eq!(report.forced(), Some(Forced::GraceElapsed), "{report}");
    let left = tokio::time::timeout(Duration::from_secs(10), loop_left.recv()).await;
    assert_eq!(left, Ok(Some(())), "the stuck fn saw its token cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_signal_during_a_shutdown_for_a_failure_forces_it() {
    let (daemon, trigger) = signalled(Daemon::new("d").quiet());
    let report = daemon
        .grace(Duration::from_secs(3600))
        .run(move |d| async move {
            d.start(Subsystem::new("hung", |h| async move {
                h.token().cancelled().await;
                std::future::pending::<()>().await;
            }));
            d.start(Subsystem::new("bad", |_| async { Err("boom") }));
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.trigger("Ctrl-C");
        })
        .await;
    assert_eq!(report.reason(), &StopReason::Failed("/d/bad".into()));
    assert_eq!(report.forced(), Some(Forced::SecondSignal));
    assert_eq!(
        report.code(),
        1,
        "the failure wins over the forced shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_two_levels_down_escalates_to_the_daemon() {
    let log = Log::default();
    let subsystems = log.clone();
    let report = log
        .daemon("daemon")
        .run(move |daemon| async move {
            let writer_log = subsystems.clone();
            daemon.start(Subsystem::new("writer", move |writer| async move {
                writer.start(Subsystem::new("flush", |_| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Err::<(), _>(std::io::Error::other("disk full"))
                }));
                writer.start(cleans_up_in("index", Duration::from_millis(5), &writer_log));
                writer.token().cancelled().await;
                writer_log.push("stop writer");
            }));
            daemon.start(cleans_up_in(
                "metrics",
                Duration::from_millis(5),
                &subsystems,
            ));
        })
        .await;
    assert_eq!(
        report.reason(),
        &StopReason::Failed("/daemon/writer/flush".into())
    );
    let failures = report.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].name(), "/daemon/writer/flush");
    assert_eq!(failures[0].error(), "disk full");
    let tree = report.tree();
    for (name, state) in [
        ("/daemon", NodeState::Ended(TaskOutcome::Failed)),
        ("/daemon/writer", NodeState::Ended(TaskOutcome::Failed)),
        (
            "/daemon/writer/flush",
            NodeState::Ended(TaskOutcome::Failed),
        ),
        (
            "/daemon/writer/index",
            NodeState::Ended(TaskOutcome::Stopped),
        ),
        ("/daemon/metrics", NodeState::Ended(TaskOutcome::Stopped)),
    ] {
        assert_eq!(tree.get(name).unwrap().state(), state, "{name}\n{report}");
    }
    assert_eq!(
        tree.get("/daemon/writer").unwrap().error(),
        Some("/daemon/writer/flush failed: disk full")
    );
    // Logged once, by name, with its error; the siblings cleaned up.
    let failed = log.lines_where(|l| l.contains("failed:"));
    assert_eq!(failed, ["log: /daemon/writer/flush failed: disk full"]);
    assert!(log.has("done index") && log.has("done metrics") && log.has("stop writer"));
    assert_eq!(report.code(), 1);
    assert!(report.to_string().contains("error: disk full"), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_fn_or_in_making_its_future_is_a_failure_by_name() {
    let report = Daemon::new("d")
        .quiet()
        .run(|d| async move {
            d.start(
                Subsystem::new("in-future", |_| async {
                    if true {
                        panic!("boom")
                    }
                })
                .escalate(false),
            );
            d.start(
                Subsystem::supervised(
                    "in-fn",
                    Restart::temporary(),
                    |_| -> std::future::Ready<()> { panic!("before the future") },
                )
                .escalate(false),
            );
        })
        .await;
    let failures: Vec<_> = report.failures().iter().map(ToString::to_string).collect();
    assert_eq!(
        failures,
        [
            "/d/in-future failed: task panicked: boom",
            "/d/in-fn failed: task panicked: before the future"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_subsystem_can_keep_its_failure_to_itself() {
    let report = Daemon::new("d")
        .quiet()
        .run(|d| async move {
            d.start(Subsystem::new("parent", |parent| async move {
                parent.start(
                    Subsystem::new("cache", |_| async { Err("unreachable") }).escalate(false),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                parent.note("carried on");
            }));
        })
        .await;
    assert_eq!(report.reason(), &StopReason::Finished);
    let tree = report.tree();
    assert_eq!(
        tree.get("/d/parent/cache").unwrap().state(),
        NodeState::Ended(TaskOutcome::Failed)
    );
    let parent = tree.get("/d/parent").unwrap();
    assert_eq!(parent.state(), NodeState::Ended(TaskOutcome::Completed));
    assert_eq!(parent.note(), Some("carried on"));
    assert_eq!(report.failures()[0].name(), "/d/parent/cache");
    assert_eq!(report.code(), 1, "still a failure in the exit code");
}

#[tokio::test(start_paused = true)]
async fn a_parent_that_returns_waits_for_its_nested_subsystems() {
    let log = Log::default();
    let subsystems = log.clone();
    let report = log
        .daemon("d")
        .run(move |d| async move {
            d.start(Subsystem::new("parent", move |parent| async move {
                parent.start(Subsystem::new("child", move |child| async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    child.note("finished its work");
                }));
                // Returns at once; the child is joined, not aborted.
            }));
        })
        .await;
    assert_eq!(report.reason(), &StopReason::Finished);
    let child = report.tree().get("/d/parent/child").unwrap();
    assert_eq!(child.state(), NodeState::Ended(TaskOutcome::Completed));
    assert_eq!(child.note(), Some("finished its work"));
    assert_eq!(
        report.tree().get("/d/parent").unwrap().age(),
        Duration::from_secs(2)
    );
    assert!(report.is_clean());
    drop(subsystems);
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_then_escalate_past_the_intensity_limit() {
    let starts = Log::default();
    let log = Log::default();
    let begun = Instant::now();
    let s = starts.clone();
    let report = log
        .daemon("d")
        .run(move |d| async move {
            let policy = Restart::transient()
                .intensity(3, Duration::from_secs(60))
                .backoff(Duration::from_millis(100), Duration::from_millis(300));
            d.start(Subsystem::supervised("flaky", policy, move |_| {
                s.push(format!("{:?}", begun.elapsed()));
                async { Err::<(), _>("connection refused") }
            }));
        })
        .await;
    // Started at 0, then after 100, 200 and 300 (the cap) ms more.
    assert_eq!(starts.lines(), ["0ns", "100ms", "300ms", "600ms"]);
    let flaky = report.tree().get("/d/flaky").unwrap();
    assert_eq!(flaky.state(), NodeState::Ended(TaskOutcome::Failed));
    assert_eq!(flaky.restarts(), 3);
    assert_eq!(
        flaky.error(),
        Some("failed (connection refused); restarted 3 times within 60.000s, giving up")
    );
    assert_eq!(report.reason(), &StopReason::Failed("/d/flaky".into()));
    assert!(log.has(
        "log: /d/flaky failed (connection refused); restart 1 of 3 within 60.000s in 100.0ms"
    ));
    assert!(log.has("giving up"));
    assert_eq!(report.code(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_nested_failure_restarts_the_supervised_parent_with_its_whole_subtree() {
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let log = Log::default();
    let report = log
        .daemon("d")
        .run(move |d| async move {
            let policy = Restart::transient()
                .intensity(5, Duration::from_secs(60))
                .backoff(Duration::from_millis(10), Duration::from_millis(10));
            d.start(Subsystem::supervised("conn", policy, move |conn| {
                let run = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    // The session fails on the first two runs.
                    conn.start(Subsystem::new("session", move |_| async move {
                        if run < 2 {
                            Err("reset by peer")
                        } else {
                            Ok(())
                        }
                    }));
                }
            }));
        })
        .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    let conn = report.tree().get("/d/conn").unwrap();
    assert_eq!(
        (conn.state(), conn.restarts()),
        (NodeState::Ended(TaskOutcome::Completed), 2)
    );
    // The tree holds the last run's session only.
    assert_eq!(report.tree().nodes().len(), 3, "{report}");
    assert!(log.has(
        "log: /d/conn failed (/d/conn/session failed: reset by peer); restart 1 of 5 within 60.000s in 10.0ms"
    ), "{:#?}", log.lines());
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_intensity_window_forgets_old_restarts() {
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let report = Daemon::new("d")
        .quiet()
        .run(move |d| async move {
            let policy = Restart::transient()
                .intensity(1, Duration::from_secs(10))
                .backoff(Duration::from_millis(1), Duration::from_millis(1));
            d.start(Subsystem::supervised("sometimes", policy, move |_| {
                let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    // Fails after a long while, 3 times; then succeeds.
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    if n < 3 { Err("flaked") } else { Ok(()) }
                }
            }));
        })
        .await;
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
    let node = report.tree().get("/d/sometimes").unwrap();
    assert_eq!(
        (node.state(), node.restarts()),
        (NodeState::Ended(TaskOutcome::Completed), 3)
    );
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn permanent_transient_and_temporary() {
    let count =
        |runs: &Arc<std::sync::atomic::AtomicU32>| runs.load(std::sync::atomic::Ordering::SeqCst);
    let (perm, trans, temp) = (
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
    );
    let (p, t, m) = (perm.clone(), trans.clone(), temp.clone());
    let report = Daemon::new("d")
        .quiet()
        .run(move |d| async move {
            let limit = |r: Restart| r.intensity(2, Duration::from_secs(60));
            // Returns Ok each time: restarted anyway, until the limit.
            d.start(
                Subsystem::supervised("permanent", limit(Restart::permanent()), move |_| {
                    p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {}
                })
                .escalate(false),
            );
            // Returns Ok: done.
            d.start(Subsystem::supervised(
                "transient",
                limit(Restart::transient()),
                move |_| {
                    t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {}
                },
            ));
            // Fails: not restarted.
            d.start(
                Subsystem::supervised("temporary", limit(Restart::temporary()), move |_| {
                    m.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { Err("once") }
                })
                .escalate(false),
            );
        })
        .await;
    assert_eq!((count(&perm), count(&trans), count(&temp)), (3, 1, 1));
    let tree = report.tree();
    assert_eq!(
        tree.get("/d/permanent").unwrap().state(),
        NodeState::Ended(TaskOutcome::Failed)
    );
    assert_eq!(
        tree.get("/d/transient").unwrap().state(),
        NodeState::Ended(TaskOutcome::Completed)
    );
    assert_eq!(
        tree.get("/d/temporary").unwrap().state(),
        NodeState::Ended(TaskOutcome::Failed)
    );
}

#[tokio::test(start_paused = true)]
async fn restart_sets_the_policy_of_a_fn_that_can_run_again() {
    let (supervised, once) = (Log::default(), Log::default());
    let (s, o) = (supervised.clone(), once.clone());
    let report = Daemon::new("d")
        .quiet()
        .run(move |d| async move {
            let policy = Restart::transient().intensity(2, Duration::from_secs(60));
            let again = move |_| {
                s.push("run");
                async { Err::<(), _>("x") }
            };
            d.start(
                Subsystem::supervised("again", Restart::temporary(), again)
                    .restart(policy.clone())
                    .escalate(false),
            );
            // `new`'s fn runs once: there is nothing to run again.
            d.start(
                Subsystem::new("once", move |_| async move {
                    o.push("run");
                    Err::<(), _>("y")
                })
                .restart(policy)
                .escalate(false),
            );
        })
        .await;
    assert_eq!((supervised.lines().len(), once.lines().len()), (3, 1));
    let tree = report.tree();
    assert_eq!(tree.get("/d/again").unwrap().restarts(), 2);
    assert_eq!(tree.get("/d/once").unwrap().restarts(), 0);
    assert_eq!(report.failures().len(), 2, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_backoff_stops_the_restarts() {
    let report = Daemon::new("d")
        .quiet()
        .run(|d| async move {
            let policy =
                Restart::permanent().backoff(Duration::from_secs(60), Duration::from_secs(60));
            d.start(Subsystem::supervised("flaky", policy, |_| async {
                Err("x")
            }));
            tokio::time::sleep(Duration::from_secs(1)).await;
            let tree = d.tree();
            assert_eq!(tree.get("/d/flaky").unwrap().state(), NodeState::Restarting);
            d.request_shutdown();
        })
        .await;
    assert_eq!(report.reason(), &StopReason::Requested("/d".into()));
    assert_eq!(report.shutdown_took(), Some(Duration::ZERO));
    let flaky = report.tree().get("/d/flaky").unwrap();
    assert_eq!(
        (flaky.state(), flaky.restarts()),
        (NodeState::Ended(TaskOutcome::Stopped), 1)
    );
}

#[tokio::test(start_paused = true)]
async fn subsystems_stop_in_reverse_start_order_by_default() {
    let log = Log::default();
    let subsystems = log.clone();
    log.daemon("d")
        .run(move |d| async move {
            for name in ["writer", "ingest", "metrics"] {
                d.start(cleans_up_in(name, Duration::from_millis(10), &subsystems));
            }
            d.request_shutdown();
        })
        .await;
    let order = log.lines_where(|l| !l.starts_with("log:"));
    assert_eq!(
        order,
        [
            "stop metrics",
            "done metrics",
            "stop ingest",
            "done ingest",
            "stop writer",
            "done writer"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn subsystems_stop_in_a_declared_order_at_every_level() {
    let log = Log::default();
    let subsystems = log.clone();
    let report = log
        .daemon("d")
        .shutdown_order(ShutdownOrder::declared(["pipeline", "metrics"]))
        .run(move |d| async move {
            d.start(cleans_up_in(
                "metrics",
                Duration::from_millis(10),
                &subsystems,
            ));
            let inner = subsystems.clone();
            d.start(
                Subsystem::new("pipeline", move |p| async move {
                    p.start(cleans_up_in("writer", Duration::from_millis(10), &inner));
                    p.start(cleans_up_in("ingest", Duration::from_millis(10), &inner));
                    p.start(cleans_up_in("audit", Duration::from_millis(10), &inner));
                })
                .shutdown_order(ShutdownOrder::declared(["ingest", "writer"])),
            );
            d.start(cleans_up_in(
                "admin",
                Duration::from_millis(10),
                &subsystems,
            ));
            d.request_shutdown();
        })
        .await;
    let order = log.lines_where(|l| l.starts_with("stop"));
    assert_eq!(
        order,
        [
            "stop ingest",
            "stop writer",
            "stop audit",
            "stop metrics",
            "stop admin"
        ]
    );
    // Each one after the one before it was done.
    assert!(log.position("done ingest") < log.position("stop writer"));
    assert!(log.position("done audit") < log.position("stop metrics"));
    assert_eq!(report.shutdown_took(), Some(Duration::from_millis(50)));
    assert!(report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_hung_subsystem_holds_back_the_next_ones_only_for_its_stop_timeout() {
    let log = Log::default();
    let subsystems = log.clone();
    let report = log
        .daemon("d")
        .grace(Duration::from_secs(10))
        .shutdown_order(ShutdownOrder::declared(["ingest", "writer"]))
        .run(move |d| async move {
            d.start(
                Subsystem::new("ingest", |_| std::future::pending::<()>())
                    .stop_timeout(Duration::from_secs(1)),
            );
            d.start(cleans_up_in(
                "writer",
                Duration::from_millis(100),
                &subsystems,
            ));
            d.request_shutdown();
        })
        .await;
    let tree = report.tree();
    let writer = tree.get("/d/writer").unwrap();
    assert_eq!(
        writer.state(),
        NodeState::Ended(TaskOutcome::Stopped),
        "{report}"
    );
    assert_eq!(writer.note(), Some("cleaned up in 100ms"));
    assert_eq!(writer.cleanup_time(), Some(Duration::from_millis(100)));
    let ingest = tree.get("/d/ingest").unwrap();
    assert_eq!(ingest.state(), NodeState::Ended(TaskOutcome::Aborted));
    assert_eq!(ingest.cleanup_time(), Some(Duration::from_secs(10)));
    assert!(log.has("log: /d/ingest still stopping after 1.000s: stopping the next ones"));
    assert_eq!(report.code(), 3);
}

#[tokio::test(start_paused = true)]
async fn without_a_stop_timeout_a_hung_subsystem_holds_back_the_rest_until_the_grace_ends() {
    let report = Daemon::new("d")
        .quiet()
        .grace(Duration::from_secs(10))
        .shutdown_order(ShutdownOrder::declared(["ingest", "writer"]))
        .run(|d| async move {
            d.start(Subsystem::new("ingest", |_| std::future::pending::<()>()));
            d.start(Subsystem::new("writer", |w| async move {
                w.token().cancelled().await
            }));
            d.request_shutdown();
        })
        .await;
    let writer = report.tree().get("/d/writer").unwrap();
    assert_eq!(writer.state(), NodeState::Ended(TaskOutcome::Aborted));
    assert_eq!(writer.cleanup_time(), None, "never asked to stop");
    assert!(
        report
            .to_string()
            .contains("(aborted before its turn to stop)"),
        "{report}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_task_tree_shows_what_runs_cleans_up_and_finished() {
    let (to_test, mut snapshots) = tokio::sync::mpsc::unbounded_channel();
    let report = Daemon::new("daemon")
        .quiet()
        .run(move |daemon| async move {
            daemon.start(Subsystem::new("writer", |writer| async move {
                writer.start(Subsystem::new("flush", |flush| async move {
                    flush.token().cancelled().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    flush.note("flushed 12 records");
                }));
                writer.token().cancelled().await;
            }));
            daemon.start(Subsystem::new("job", |_| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }));
            tokio::time::sleep(Duration::from_secs(1)).await;
            to_test.send(daemon.tree()).unwrap();
            daemon.request_shutdown();
            tokio::time::sleep(Duration::from_secs(1)).await;
            to_test.send(daemon.tree()).unwrap();
        })
        .await;

    let running = snapshots.recv().await.unwrap();
    let names: Vec<_> = running.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(
        names,
        [
            "/daemon",
            "/daemon/writer",
            "/daemon/writer/flush",
            "/daemon/job"
        ]
    );
    let flush = running.get("/daemon/writer/flush").unwrap();
    assert_eq!(flush.state(), NodeState::Running);
    assert_eq!(flush.age(), Duration::from_secs(1));
    assert!(!flush.in_cleanup());
    assert_eq!(flush.depth(), 2);
    let job = running.get("/daemon/job").unwrap();
    assert_eq!(
        (job.state(), job.age()),
        (
            NodeState::Ended(TaskOutcome::Completed),
            Duration::from_millis(500)
        )
    );

    let cleaning = snapshots.recv().await.unwrap();
    let flush = cleaning.get("/daemon/writer/flush").unwrap();
    assert!(flush.in_cleanup(), "{cleaning}");
    assert_eq!(flush.cleanup_time(), Some(Duration::from_secs(1)));
    assert_eq!(
        cleaning.get("/daemon/writer").unwrap().state(),
        NodeState::Stopping
    );
    let printed = cleaning.to_string();
    assert!(
        printed.contains("    /daemon/writer/flush  cleaning up"),
        "{printed}"
    );

    let done = report.tree().get("/daemon/writer/flush").unwrap();
    assert_eq!(done.state(), NodeState::Ended(TaskOutcome::Stopped));
    assert_eq!(done.cleanup_time(), Some(Duration::from_secs(2)));
    assert_eq!(done.note(), Some("flushed 12 records"));
}

#[tokio::test(start_paused = true)]
async fn a_subsystem_is_in_the_tree_as_soon_as_it_is_started_and_not_after_its_parent_ended() {
    let log = Log::default();
    let (keep, kept) = tokio::sync::oneshot::channel();
    let report = log
        .daemon("d")
        .run(move |d| async move {
            d.start(Subsystem::new("w", |_| async {}));
            assert!(d.tree().get("/d/w").is_some(), "in the tree at once");
            keep.send(d.clone()).unwrap();
        })
        .await;
    let late = kept.await.unwrap();
    let refused = late.start(Subsystem::new("late", |_| async {}));
    assert!(refused.is_finished());
    assert_eq!(refused.join().await, Ok(()));
    assert!(
        log.has("log: late: not started: /d has ended"),
        "{:#?}",
        log.lines()
    );
    assert!(late.tree().get("/d/late").is_none());
    assert_eq!(report.tree().nodes().len(), 2);
}

#[cancellable]
async fn flusher(flushed: Arc<Mutex<Vec<u32>>>) -> std::io::Result<()> {
    let mut pending = vec![1, 2, 3];
    on_cancel! {
        flushed.lock().unwrap().append(&mut pending);
    }
    std::future::pending().await
}

#[tokio::test(start_paused = true)]
async fn a_cancellable_fn_is_a_subsystem_and_its_cancellation_is_no_failure() {
    let flushed = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&flushed);
    let report = Daemon::new("d")
        .quiet()
        .run(move |d| async move {
            d.start(Subsystem::new("flusher", move |h| {
                flusher(h.token().clone(), f)
            }));
            d.start(Subsystem::new("timeout", |_| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err::<(), _>(Cancelled::new()) // cancelled, but not by its token
            }));
        })
        .await;
    assert_eq!(*flushed.lock().unwrap(), [1, 2, 3]);
    assert_eq!(
        report.tree().get("/d/flusher").unwrap().state(),
        NodeState::Ended(TaskOutcome::Stopped)
    );
    assert_eq!(report.failures().len(), 1);
    assert_eq!(report.failures()[0].name(), "/d/timeout");
}

/// The child's part of the next test: a daemon whose subsystem leaves a
/// blocking thread stuck for an hour, run with `block_on`.
fn run_the_daemon_with_a_stuck_blocking_thread() {
    let report = Daemon::new("stuck")
        .grace(Duration::from_millis(200))
        .block_on(|d| async move {
            d.start(Subsystem::new("blocking", |h| async move {
                let worker = tokio::task::spawn_blocking(|| {
                    std::thread::sleep(Duration::from_secs(3600));
                });
                h.token().cancelled().await;
                drop(worker); // detached: it cannot be stopped
            }));
            d.request_shutdown();
        });
    println!("CHILD REPORT\n{report}");
}

/// Runs itself again as a child process (this same test, with
/// `CANCEL_SCOPE_STUCK_CHILD` set, is the child), and checks that the child
/// exits on time past its stuck blocking thread.
#[test]
fn the_process_exits_on_time_past_a_stuck_blocking_thread() {
    const TEST: &str = "the_process_exits_on_time_past_a_stuck_blocking_thread";
    if std::env::var_os("CANCEL_SCOPE_STUCK_CHILD").is_some() {
        return run_the_daemon_with_a_stuck_blocking_thread();
    }
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture"])
        .env("CANCEL_SCOPE_STUCK_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Generous: the blocking thread sleeps for an hour.
    let deadline = started + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the child process was still alive after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status}\n{out}");
    assert!(out.contains("CHILD REPORT"), "{out}");
    assert!(
        out.contains("stuck: shutdown (requested by /stuck) took"),
        "{out}"
    );
}

/// With the `tracing` feature: each subsystem runs in a `subsystem` span
/// named by its path, and the daemon's log lines are events. Run with
/// `cargo test --features tracing --test daemon`.
#[cfg(feature = "tracing")]
mod spans {
    use cancel_scope::daemon::{Daemon, Subsystem};

    use crate::common::{Fields, Recorder, run_recorded};

    fn has(list: &[Fields], wanted: &[(&str, &str)]) -> bool {
        list.iter().any(|fields| {
            wanted
                .iter()
                .all(|(k, v)| fields.iter().any(|(fk, fv)| fk == k && fv == v))
        })
    }

    #[test]
    fn subsystems_run_in_spans_named_by_their_paths() {
        let recorder = Recorder::default();
        let (spans, events) = (recorder.spans.clone(), recorder.events.clone());
        run_recorded(
            recorder,
            false,
            Daemon::new("d").quiet().run(|d| async move {
                d.start(Subsystem::new("writer", |w| async move {
                    w.start(Subsystem::new("flush", |_| async { Err("boom") }));
                }));
            }),
        );
        let spans = spans.lock().unwrap();
        for path in ["/d", "/d/writer", "/d/writer/flush"] {
            assert!(
                has(&spans, &[("span", "subsystem"), ("name", path)]),
                "{path}: {spans:#?}"
            );
        }
        let events = events.lock().unwrap();
        assert!(
            has(
                &events,
                &[
                    ("target", "cancel_scope::daemon"),
                    ("message", "/d/writer/flush failed: boom")
                ]
            ),
            "{events:#?}"
        );
    }
}

/// A restart policy on a `Subsystem::new` (whose fn runs once) is not
/// silently dropped: the log says it is ignored, and the subsystem is not
/// restarted.
#[tokio::test(start_paused = true)]
async fn a_restart_policy_on_a_run_once_subsystem_is_reported_in_the_log() {
    let log = Log::default();
    let report = log
        .daemon("d")
        .run(|d| async move {
            let once = Subsystem::new("once", |_| async { Err::<(), _>("boom") });
            d.start(once.restart(Restart::permanent()));
        })
        .await;
    assert!(
        log.has("/d/once: its restart policy is ignored"),
        "{:#?}",
        log.lines()
    );
    assert_eq!(report.tree().get("/d/once").unwrap().restarts(), 0);
}
