//! `NestedSubsystem`: the scenarios of tokio-graceful-shutdown's own test
//! suite that need a handle on a nested subsystem (partial shutdown, a
//! caught error or panic, abort, detached subsystems, waiting for children,
//! `is_finished`), ported to `cancel_scope::daemon`. Each test names the
//! peer's test it ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cancel_scope::TaskOutcome;
use cancel_scope::daemon::{Daemon, DaemonReport, NodeState, Subsystem, SubsystemHandle};
use tokio::time::sleep;

/// A flag one subsystem sets and the test reads (the peer's `Event`).
#[derive(Clone, Default)]
struct Flag(Arc<AtomicBool>);

impl Flag {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Fails the test if the daemon does not end within an hour of virtual time.
async fn bounded(run: impl std::future::Future<Output = DaemonReport>) -> DaemonReport {
    tokio::time::timeout(Duration::from_secs(3600), run)
        .await
        .expect("the daemon never ended")
}

/// Sets `started`, waits for its token, sets `finished`.
fn until_stopped(name: &'static str, started: &Flag, finished: &Flag) -> Subsystem {
    let (started, finished) = (started.clone(), finished.clone());
    Subsystem::new(name, move |h| async move {
        started.set();
        h.token().cancelled().await;
        finished.set();
    })
}

fn state(report: &DaemonReport, name: &str) -> NodeState {
    report
        .tree()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}\n{report}"))
        .state()
}

/// Ports `partial_shutdown_request_stops_nested_subsystems`.
#[tokio::test(start_paused = true)]
async fn a_partial_shutdown_stops_one_subsystem_and_its_subtree_while_the_rest_runs_on() {
    let [
        s1_finished,
        s2_started,
        s2_finished,
        s3_started,
        s3_finished,
        s1_stopped_s2,
    ] = std::array::from_fn(|_| Flag::default());
    let (s2s, s2f, s3s, s3f) = (
        s2_started.clone(),
        s2_finished.clone(),
        s3_started.clone(),
        s3_finished.clone(),
    );
    let (s1f, stopped) = (s1_finished.clone(), s1_stopped_s2.clone());
    let subsys1 = Subsystem::new("subsys1", move |s1| async move {
        let subsys2 = s1.start(Subsystem::new("subsys2", move |s2| async move {
            s2s.set();
            s2.start(until_stopped("subsys3", &s3s, &s3f));
            s2.token().cancelled().await;
            s2f.set();
        }));
        sleep(Duration::from_millis(200)).await;
        subsys2.stop();
        subsys2.join().await.unwrap();
        stopped.set();
        s1.token().cancelled().await;
        s1f.set();
    });
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(subsys1);
        sleep(Duration::from_millis(300)).await;
        assert!(s2_started.get() && s3_started.get());
        assert!(s2_finished.get() && s3_finished.get() && s1_stopped_s2.get());
        assert!(!s1_finished.get(), "the rest runs on");
        assert!(!d.is_shutdown_requested());
        let tree = d.tree();
        let stopped = NodeState::Ended(TaskOutcome::Stopped);
        assert_eq!(tree.get("/d/subsys1/subsys2").unwrap().state(), stopped);
        assert_eq!(
            tree.get("/d/subsys1/subsys2/subsys3").unwrap().state(),
            stopped
        );
        assert_eq!(tree.get("/d/subsys1").unwrap().state(), NodeState::Running);
        d.request_shutdown();
    }))
    .await;
    assert!(report.is_clean(), "{report}");
}

/// The nested subsystem of the two tests below: cleans up, then fails as
/// `fail` does; its failure is kept to itself, for its parent to catch.
fn fails_when_stopped(
    started: &Flag,
    finished: &Flag,
    fail: fn() -> Result<(), String>,
) -> Subsystem {
    let (started, finished) = (started.clone(), finished.clone());
    Subsystem::new("nested", move |h| async move {
        started.set();
        h.token().cancelled().await;
        finished.set();
        fail()
    })
    .escalate(false)
}

/// The parent of the two tests below: stops `nested`, joins it, and asks
/// the daemon to stop; returns what `join` gave.
async fn stop_and_catch(
    parent: SubsystemHandle,
    nested: Subsystem,
    started: Flag,
    finished: Flag,
) -> Vec<String> {
    let handle = parent.start(nested);
    sleep(Duration::from_millis(100)).await;
    handle.stop();
    let failures = handle.join().await.expect_err("the failure comes back");
    assert!(started.get() && finished.get());
    assert!(
        !parent.is_shutdown_requested(),
        "a caught failure does not stop the daemon"
    );
    parent.request_shutdown();
    failures.iter().map(ToString::to_string).collect()
}

/// Ports `partial_shutdown_panic_gets_propagated_correctly`.
#[tokio::test(start_paused = true)]
async fn a_panic_in_a_partial_shutdown_is_returned_by_join_and_caught() {
    let (started, finished) = (Flag::default(), Flag::default());
    let nested = fails_when_stopped(&started, &finished, || panic!("nested panicked"));
    let (tx, mut caught) = tokio::sync::mpsc::unbounded_channel();
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("subsys", move |s| async move {
            tx.send(stop_and_catch(s, nested, started, finished).await)
                .unwrap();
        }));
    }))
    .await;
    let caught = caught.recv().await.unwrap();
    assert_eq!(
        caught,
        ["/d/subsys/nested failed: task panicked: nested panicked"]
    );
    assert_eq!(
        state(&report, "/d/subsys/nested"),
        NodeState::Ended(TaskOutcome::Panicked)
    );
    assert!(report.failures().is_empty(), "caught: {report}");
    assert_eq!(report.code(), 0);
    assert!(
        report
            .to_string()
            .contains("error: task panicked: nested panicked"),
        "{report}"
    );
}

/// Ports `partial_shutdown_error_gets_propagated_correctly`.
#[tokio::test(start_paused = true)]
async fn an_error_in_a_partial_shutdown_is_returned_by_join_and_caught() {
    let (started, finished) = (Flag::default(), Flag::default());
    let nested = fails_when_stopped(&started, &finished, || Err("nested failed".into()));
    let (tx, mut caught) = tokio::sync::mpsc::unbounded_channel();
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("subsys", move |s| async move {
            tx.send(stop_and_catch(s, nested, started, finished).await)
                .unwrap();
        }));
    }))
    .await;
    assert_eq!(
        caught.recv().await.unwrap(),
        ["/d/subsys/nested failed: nested failed"]
    );
    assert_eq!(
        state(&report, "/d/subsys/nested"),
        NodeState::Ended(TaskOutcome::Failed)
    );
    assert!(report.failures().is_empty(), "caught: {report}");
    assert_eq!(report.code(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_escalated_is_returned_by_join_but_not_caught() {
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("parent", move |p| async move {
            let child = p.start(Subsystem::new("child", |_| async { Err("broke") }));
            let failures = child.join().await.unwrap_err();
            assert_eq!(failures[0].to_string(), "/d/parent/child failed: broke");
            assert!(p.is_shutdown_requested(), "it escalated at once");
        }));
    }))
    .await;
    assert_eq!(report.failures().len(), 1, "{report}");
    assert_eq!(report.code(), 1);
}

/// Ports `nested_subsystem_is_aborted` (and `abort_subsystem_works`).
#[tokio::test(start_paused = true)]
async fn abort_stops_a_subsystem_and_its_subtree_at_once_without_a_failure() {
    let reached = Flag::default();
    let r = reached.clone();
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("top", move |top| async move {
            let d1 = top.start(Subsystem::new("d1", move |d1| async move {
                d1.start(Subsystem::new("d2", move |_| async move {
                    sleep(Duration::from_millis(1000)).await;
                    r.set();
                    if true {
                        panic!("depth 2 should not reach completion");
                    }
                }));
            }));
            sleep(Duration::from_millis(500)).await;
            assert_eq!(
                top.tree().get("/d/top/d1").unwrap().state(),
                NodeState::AwaitingChildren
            );
            d1.abort();
            d1.abort(); // twice is harmless
            sleep(Duration::from_millis(1)).await;
            assert!(d1.is_finished());
            assert_eq!(d1.join().await, Ok(()));
            sleep(Duration::from_millis(1000)).await;
        }));
    }))
    .await;
    assert!(!reached.get(), "d2 was aborted with d1");
    let aborted = NodeState::Ended(TaskOutcome::Aborted);
    assert_eq!(state(&report, "/d/top/d1"), aborted);
    assert_eq!(state(&report, "/d/top/d1/d2"), aborted);
    assert_eq!(
        state(&report, "/d/top"),
        NodeState::Ended(TaskOutcome::Completed)
    );
    assert_eq!(report.code(), 0, "{report}");
}

/// Ports `abort_overrides_shutdown`.
#[tokio::test(start_paused = true)]
async fn abort_cuts_a_graceful_stop_short() {
    let cleaned = Flag::default();
    let c = cleaned.clone();
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        let slow = d.start(Subsystem::new("slow", move |s| async move {
            s.token().cancelled().await;
            sleep(Duration::from_secs(10)).await;
            c.set();
        }));
        slow.stop();
        sleep(Duration::from_secs(1)).await;
        assert!(!slow.is_finished());
        slow.abort();
        slow.join().await.unwrap();
    }))
    .await;
    assert!(!cleaned.get());
    assert_eq!(
        state(&report, "/d/slow"),
        NodeState::Ended(TaskOutcome::Aborted)
    );
    assert_eq!(
        report.tree().get("/d/slow").unwrap().cleanup_time(),
        Some(Duration::from_secs(1))
    );
}

/// Ports `shutdown_does_not_propagate_to_detached_subsystem`.
#[tokio::test(start_paused = true)]
async fn a_detached_subsystem_is_stopped_by_its_parent_not_by_the_parents_shutdown() {
    let (started, finished) = (Flag::default(), Flag::default());
    let nested = until_stopped("detached", &started, &finished).detached();
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("subsys", move |s| async move {
            let detached = s.start(nested);
            sleep(Duration::from_millis(20)).await;
            assert!(started.get() && !finished.get());
            s.token().cancelled().await;
            sleep(Duration::from_millis(20)).await;
            assert!(!finished.get(), "not stopped by its parent's shutdown");
            detached.stop();
            sleep(Duration::from_millis(20)).await;
            assert!(finished.get());
        }));
        sleep(Duration::from_millis(100)).await;
        d.request_shutdown();
    }))
    .await;
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_daemons_shutdown_reaches_a_detached_subsystem_once_its_parent_returned() {
    let (started, finished) = (Flag::default(), Flag::default());
    let nested = until_stopped("detached", &started, &finished).detached();
    let f = finished.clone();
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("subsys", move |s| async move {
            s.start(nested);
            s.token().cancelled().await;
            assert!(!f.get());
        }));
        sleep(Duration::from_millis(100)).await;
        d.request_shutdown();
    }))
    .await;
    assert!(finished.get());
    assert_eq!(
        state(&report, "/d/subsys/detached"),
        NodeState::Ended(TaskOutcome::Stopped)
    );
    assert_eq!(report.forced(), None, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_detached_subsystem_of_a_parent_stopped_earlier_stops_with_the_daemon() {
    let (started, finished) = (Flag::default(), Flag::default());
    let nested = until_stopped("detached", &started, &finished).detached();
    let report = bounded(Daemon::new("d").quiet().grace(Duration::from_secs(10)).run(
        move |d| async move {
            let parent = d.start(Subsystem::new("parent", move |p| async move {
                p.start(nested);
                p.token().cancelled().await;
            }));
            parent.stop(); // returns at once; its detached child runs on
            sleep(Duration::from_secs(1)).await;
            assert!(!parent.is_finished());
            d.request_shutdown();
        },
    ))
    .await;
    assert!(finished.get());
    assert_eq!(report.forced(), None, "{report}");
}

/// Ports `wait_for_children`.
#[tokio::test(start_paused = true)]
async fn a_parent_waits_for_its_children_inside_its_own_fn() {
    let [n1_started, n1_finished, n2_started, n2_finished] =
        std::array::from_fn(|_| Flag::default());
    let slow = |name: &'static str, started: &Flag, finished: &Flag| {
        let (started, finished) = (started.clone(), finished.clone());
        move |h: SubsystemHandle| async move {
            let _ = name;
            started.set();
            h.token().cancelled().await;
            sleep(Duration::from_millis(100)).await;
            finished.set();
        }
    };
    let nested2 = Subsystem::new("nested2", slow("nested2", &n2_started, &n2_finished));
    let nested1_body = slow("nested1", &n1_started, &n1_finished);
    let nested1 = Subsystem::new("nested1", move |h| async move {
        h.start(nested2);
        nested1_body(h).await;
    });
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("subsys", move |s| async move {
            s.start(nested1);
            sleep(Duration::from_millis(100)).await;
            s.request_shutdown();
            assert!(n1_started.get() && n2_started.get());
            assert!(!n1_finished.get() && !n2_finished.get());
            s.wait_for_children().await;
            assert!(n1_finished.get() && n2_finished.get());
            s.note("waited for its children");
        }));
    }))
    .await;
    assert_eq!(
        report.tree().get("/d/subsys").unwrap().note(),
        Some("waited for its children")
    );
    assert!(report.is_clean(), "{report}");
}

/// Ports `query_multidepth_subsystem_alive` (and `query_subsystem_alive`).
#[tokio::test(start_paused = true)]
async fn is_finished_waits_for_the_children_of_a_subsystem_whose_fn_returned() {
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        d.start(Subsystem::new("top", move |top| async move {
            let d1 = top.start(Subsystem::new("d1", |d1| async move {
                d1.start(Subsystem::new("d2", |_| sleep(Duration::from_millis(2000))));
                sleep(Duration::from_millis(1000)).await;
            }));
            assert!(!d1.is_finished());
            sleep(Duration::from_millis(1100)).await;
            assert!(!d1.is_finished(), "its fn returned, its child runs");
            let tree = top.tree();
            assert_eq!(
                tree.get("/d/top/d1").unwrap().state(),
                NodeState::AwaitingChildren
            );
            let line = tree
                .to_string()
                .lines()
                .find(|l| l.contains("/d/top/d1"))
                .map(str::to_owned);
            assert!(line.unwrap().contains("awaiting children"), "{tree}");
            sleep(Duration::from_millis(1100)).await;
            assert!(d1.is_finished());
        }));
    }))
    .await;
    assert_eq!(
        state(&report, "/d/top/d1"),
        NodeState::Ended(TaskOutcome::Completed)
    );
    assert_eq!(
        report.tree().get("/d/top/d1").unwrap().age(),
        Duration::from_secs(2)
    );
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn join_is_cancel_safe_and_a_second_call_returns_the_same_failures() {
    let report = bounded(Daemon::new("d").quiet().run(|d| async move {
        let job = d.start(
            Subsystem::new("job", |_| async {
                sleep(Duration::from_secs(2)).await;
                Err::<(), _>("bad input")
            })
            .escalate(false),
        );
        // A join cut short by a timeout loses nothing.
        let cut = tokio::time::timeout(Duration::from_secs(1), job.join()).await;
        assert!(cut.is_err());
        let first = job.join().await.unwrap_err();
        let second = job.join().await.unwrap_err();
        assert_eq!(first, second);
        assert_eq!(first[0].error(), "bad input");
    }))
    .await;
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_subsystem_started_while_its_parent_stops_takes_its_turn_at_once() {
    let report = bounded(Daemon::new("d").quiet().grace(Duration::from_secs(10)).run(
        |d| async move {
            d.start(Subsystem::new("parent", |p| async move {
                p.start(Subsystem::new("hung", |_| std::future::pending::<()>()));
                p.token().cancelled().await;
                sleep(Duration::from_secs(1)).await;
                // Started last, so first to stop: at once, though the
                // hung one has held the order since the stop began.
                p.start(Subsystem::new("late", |l| async move {
                    l.token().cancelled().await;
                    l.note("stopped");
                }));
                sleep(Duration::from_secs(5)).await; // a long cleanup
            }));
            d.request_shutdown();
        },
    ))
    .await;
    let late = report.tree().get("/d/parent/late").unwrap();
    assert_eq!(
        late.state(),
        NodeState::Ended(TaskOutcome::Stopped),
        "{report}"
    );
    assert_eq!(late.note(), Some("stopped"));
    assert_eq!(late.age(), Duration::ZERO, "stopped as soon as it started");
}

/// An aborted subsystem is finished once `join` returned: its task and the
/// tasks of its subtree are gone, and no cleanup below it ran.
#[tokio::test(start_paused = true)]
async fn an_aborted_subtree_is_finished_when_join_returns() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&cleaned);
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        let mid = d.start(Subsystem::new("mid", move |m| async move {
            m.start(Subsystem::new("leaf", move |l| async move {
                l.token().cancelled().await;
                seen.store(true, Ordering::SeqCst);
            }));
            m.start(Subsystem::new("stuck", |_| std::future::pending::<()>()));
            m.token().cancelled().await;
        }));
        sleep(Duration::from_secs(1)).await;
        mid.abort();
        assert!(mid.join().await.is_ok());
        assert!(mid.is_finished());
        let tree = d.tree();
        for name in ["/d/mid", "/d/mid/leaf", "/d/mid/stuck"] {
            let state = tree.get(name).unwrap().state();
            assert_eq!(
                state,
                NodeState::Ended(TaskOutcome::Aborted),
                "{name}\n{tree}"
            );
        }
        d.request_shutdown();
    }))
    .await;
    assert!(
        !cleaned.load(Ordering::SeqCst),
        "a cleanup ran in an aborted subtree"
    );
    assert!(report.is_clean(), "{report}");
}
