//! The daemon's failures, attacked: a failure deep in the tree beside a hung
//! sibling, a failure while the shutdown is under way, two failures in one
//! run, the ancestors' error texts, and a shutdown request seen at once.
//!
//! Every test runs on a paused clock, bounded by a generous virtual timeout
//! so that a daemon that never shuts down fails the test instead of hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cancel_scope::daemon::{Daemon, DaemonReport, NodeState, Restart, ShutdownOrder, Subsystem};
use cancel_scope::{CancellationToken, TaskOutcome};
use tokio::time::Instant;

/// Fails the test if the daemon does not end within an hour of virtual time.
async fn bounded(run: impl std::future::Future<Output = DaemonReport>) -> DaemonReport {
    tokio::time::timeout(Duration::from_secs(3600), run)
        .await
        .expect("the daemon never ended")
}

/// `leaf` nested under a chain of subsystems named `names`, each of which
/// waits for its token.
fn nested(names: &[&'static str], leaf: Subsystem, beside: Option<Subsystem>) -> Subsystem {
    let (first, rest) = names.split_first().expect("a name");
    let rest: Vec<&'static str> = rest.to_vec();
    let mut leaves = Some((leaf, beside));
    Subsystem::new(*first, move |h| async move {
        let (leaf, beside) = leaves.take().expect("once");
        if rest.is_empty() {
            h.start(leaf);
            if let Some(beside) = beside {
                h.start(beside);
            }
        } else {
            h.start(nested(&rest, leaf, beside));
        }
        h.token().cancelled().await;
    })
}

fn fails_after(name: &'static str, after: Duration, error: &'static str) -> Subsystem {
    Subsystem::new(name, move |_| async move {
        tokio::time::sleep(after).await;
        Err::<(), _>(error)
    })
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_depth_5_beside_a_hung_sibling_shuts_the_daemon_down_within_its_grace() {
    let began = Instant::now();
    let hung = Subsystem::new("hung", |_| std::future::pending::<()>());
    let report = bounded(Daemon::new("d").quiet().grace(Duration::from_secs(2)).run(
        move |d| async move {
            let leaf = fails_after("e", Duration::from_secs(1), "boom");
            d.start(nested(&["a", "b", "c", "d"], leaf, Some(hung)));
            // Stops first (reverse start order), before the hung one.
            d.start(Subsystem::new("other", |o| async move {
                o.token().cancelled().await;
                o.note("cleaned up");
            }));
        },
    ))
    .await;
    assert_eq!(report.reason().to_string(), "/d/a/b/c/d/e failed");
    // The shutdown began with the failure, at 1 s, and the grace period
    // bounded it: the hung sibling was aborted 2 s later.
    assert_eq!(began.elapsed(), Duration::from_secs(3), "{report}");
    assert_eq!(report.shutdown_took(), Some(Duration::from_secs(2)));
    let tree = report.tree();
    let other = tree.get("/d/other").unwrap();
    assert_eq!(
        (other.state(), other.note()),
        (NodeState::Ended(TaskOutcome::Stopped), Some("cleaned up")),
        "{report}"
    );
    assert_eq!(
        tree.get("/d/a/b/c/d/hung").unwrap().state(),
        NodeState::Ended(TaskOutcome::Aborted)
    );
    assert_eq!(report.failures().len(), 1, "{report}");
    assert_eq!(report.code(), 1);
}

#[tokio::test(start_paused = true)]
async fn each_ancestor_says_which_descendant_failed_with_its_error_once() {
    let report = bounded(Daemon::new("d").quiet().run(move |d| async move {
        let leaf = fails_after("e", Duration::from_secs(1), "boom");
        d.start(nested(&["a", "b", "c", "d"], leaf, None));
    }))
    .await;
    let tree = report.tree();
    assert_eq!(tree.get("/d/a/b/c/d/e").unwrap().error(), Some("boom"));
    for ancestor in ["/d", "/d/a", "/d/a/b", "/d/a/b/c", "/d/a/b/c/d"] {
        let node = tree.get(ancestor).unwrap();
        assert_eq!(
            node.error(),
            Some("/d/a/b/c/d/e failed: boom"),
            "{ancestor}"
        );
        assert_eq!(node.state(), NodeState::Ended(TaskOutcome::Failed));
    }
    let failures: Vec<String> = report.failures().iter().map(ToString::to_string).collect();
    assert_eq!(failures, ["/d/a/b/c/d/e failed: boom"]);
    assert_eq!(report.to_string().matches("boom").count(), 6, "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_supervised_subsystem_failing_while_it_waits_its_turn_is_not_restarted() {
    let starts = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&starts);
    let report = bounded(Daemon::new("d").quiet().grace(Duration::from_secs(60)).run(
        move |d| async move {
            let policy = Restart::permanent().backoff(Duration::ZERO, Duration::ZERO);
            d.start(Subsystem::supervised("flaky", policy, move |_| {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    // The first run fails a second into the shutdown.
                    let wait = if run == 0 { 1 } else { 3600 };
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                    Err::<(), _>("lost its connection")
                }
            }));
            // Stops first (reverse start order), for 5 s.
            d.start(Subsystem::new("slow", |s| async move {
                s.token().cancelled().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }));
            d.request_shutdown();
        },
    ))
    .await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "restarted during the shutdown"
    );
    let flaky = report.tree().get("/d/flaky").unwrap();
    assert_eq!(
        (flaky.state(), flaky.restarts(), flaky.error()),
        (
            NodeState::Ended(TaskOutcome::Failed),
            0,
            Some("lost its connection")
        )
    );
    assert_eq!(report.failures().len(), 1, "{report}");
    assert_eq!(report.failures()[0].name(), "/d/flaky");
    assert!(
        report.to_string().contains("lost its connection"),
        "{report}"
    );
    assert_eq!(report.code(), 1);
}

#[tokio::test(start_paused = true)]
async fn two_failures_in_one_run_are_both_in_the_report() {
    let report = bounded(Daemon::new("d").quiet().run(|d| async move {
        d.start(Subsystem::new("p", |p| async move {
            p.start(fails_after("c", Duration::from_secs(1), "disk full"));
            p.token().cancelled().await;
            if true {
                panic!("cleanup bug");
            }
        }));
    }))
    .await;
    let failures: Vec<(&str, &str)> = report
        .failures()
        .iter()
        .map(|f| (f.name(), f.error()))
        .collect();
    assert_eq!(
        failures,
        [
            ("/d/p/c", "disk full"),
            ("/d/p", "task panicked: cleanup bug")
        ]
    );
    let table = report.to_string();
    assert!(table.contains("error: disk full"), "{table}");
    assert!(
        table.contains("error: task panicked: cleanup bug"),
        "{table}"
    );
    assert_eq!(
        report.tree().get("/d/p").unwrap().state(),
        NodeState::Ended(TaskOutcome::Panicked)
    );
    assert_eq!(report.code(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_request_is_seen_at_once_everywhere_while_the_order_holds_the_tokens() {
    let (to_test, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let report = bounded(
        Daemon::new("d")
            .quiet()
            .shutdown_order(ShutdownOrder::declared(["asker", "first"]))
            .run(move |d| async move {
                let (keep, kept) = tokio::sync::oneshot::channel();
                d.start(Subsystem::new("first", move |f| async move {
                    keep.send(f.clone()).unwrap();
                    f.token().cancelled().await;
                }));
                let first = kept.await.unwrap();
                d.start(Subsystem::new("asker", move |a| async move {
                    assert!(!a.is_shutdown_requested() && !first.is_shutdown_requested());
                    a.request_shutdown();
                    to_test
                        .send((
                            a.is_shutdown_requested(),
                            first.is_shutdown_requested(),
                            first.token().is_cancelled(),
                        ))
                        .unwrap();
                    a.token().cancelled().await;
                }));
            }),
    )
    .await;
    // Seen in every subsystem at once; `first` is still waiting its turn.
    assert_eq!(seen.recv().await, Some((true, true, false)));
    assert_eq!(report.reason().to_string(), "requested by /d/asker");
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn an_outside_token_shuts_the_daemon_down_in_order() {
    let outside = CancellationToken::new();
    let cancel = outside.clone();
    let report = bounded(
        Daemon::new("d")
            .child_of(&outside)
            .quiet()
            .run(move |d| async move {
                d.start(Subsystem::new("w", |w| async move {
                    w.token().cancelled().await;
                    w.note("flushed");
                }));
                tokio::time::sleep(Duration::from_secs(1)).await;
                cancel.cancel();
            }),
    )
    .await;
    assert_eq!(
        report.reason().to_string(),
        "the outside token was cancelled"
    );
    assert_eq!(report.tree().get("/d/w").unwrap().note(), Some("flushed"));
    assert!(report.is_clean(), "{report}");
}

/// Many subsystems starting nested ones on a multi-threaded runtime while
/// some fail, some are stopped by their parents and the daemon shuts down:
/// the daemon ends, and every subsystem in its report has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_starts_failures_and_stops_ends_with_every_subsystem_ended() {
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        Daemon::new("d")
            .quiet()
            .grace(Duration::from_secs(30))
            .run(|d| async move {
                for n in 0..40u32 {
                    d.start(Subsystem::new(format!("s{n}"), move |s| async move {
                        let mut children = Vec::new();
                        for m in 0..5u32 {
                            let child = Subsystem::new(format!("c{m}"), move |c| async move {
                                tokio::task::yield_now().await;
                                if (n + m) % 7 == 0 {
                                    return Err(format!("{} broke", c.name()));
                                }
                                c.token().cancelled().await;
                                Ok(())
                            });
                            children.push(s.start(child.escalate(n % 2 == 0)));
                        }
                        if n % 3 == 0 {
                            children[0].stop();
                            let _ = children[0].join().await;
                        }
                        if n == 39 {
                            s.request_shutdown();
                        }
                        s.token().cancelled().await;
                    }));
                }
            }),
    )
    .await
    .expect("the daemon ended");
    for node in report.tree().nodes() {
        assert!(node.state().is_final(), "{}: {report}", node.name());
    }
    assert!(!report.failures().is_empty(), "{report}");
    assert_eq!(report.forced(), None, "{report}");
    assert_eq!(report.code(), 1);
}

/// Every subsystem's token descends from the daemon's: a forced shutdown
/// cancels the token of one whose turn never came, a detached one's too (a
/// blocking thread that polls its token sees it).
#[tokio::test(start_paused = true)]
async fn a_forced_shutdown_cancels_every_token_even_those_whose_turn_never_came() {
    let (to_test, mut tokens) = tokio::sync::mpsc::unbounded_channel();
    let report = bounded(Daemon::new("d").quiet().grace(Duration::from_secs(1)).run(
        move |d| async move {
            let waiting = to_test.clone();
            d.start(Subsystem::new("waits-its-turn", move |w| async move {
                let detached = Subsystem::new("detached", move |x| async move {
                    waiting.send(x.token().clone()).unwrap();
                    std::future::pending::<()>().await;
                });
                w.start(detached.detached());
                to_test.send(w.token().clone()).unwrap();
                w.token().cancelled().await;
            }));
            // Stops first, and hangs: the one above never gets its turn.
            d.start(Subsystem::new("hung", |_| std::future::pending::<()>()));
            d.request_shutdown();
        },
    ))
    .await;
    assert_eq!(
        report.forced(),
        Some(cancel_scope::daemon::Forced::GraceElapsed)
    );
    let (first, second) = (tokens.recv().await.unwrap(), tokens.recv().await.unwrap());
    assert!(first.is_cancelled() && second.is_cancelled());
    let waited = report.tree().get("/d/waits-its-turn").unwrap();
    assert_eq!(waited.cleanup_time(), None, "never asked to stop in order");
}

/// A forced shutdown on a multi-threaded runtime while runners are stopping
/// (each held back by a hung nested subsystem): every runner is aborted and
/// the daemon ends. (A runner whose wake-up token was born cancelled by the
/// forced phase used to spin on a worker thread, past its abort.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_shutdown_ends_runners_that_are_stopping_on_other_threads() {
    for _ in 0..20 {
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            Daemon::new("d")
                .quiet()
                .grace(Duration::from_millis(20))
                .run(|d| async move {
                    for n in 0..4 {
                        d.start(Subsystem::new(format!("p{n}"), |p| async move {
                            p.start(Subsystem::new("hung", |_| std::future::pending::<()>()));
                            p.token().cancelled().await;
                        }));
                    }
                    d.request_shutdown();
                }),
        )
        .await
        .expect("the daemon ended");
        assert_eq!(report.code(), 3, "{report}");
    }
}
