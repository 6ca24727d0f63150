//! The daemon under an orchestrator, in-process: readiness and its holds,
//! the drain and the signals around it. (The notify protocol and socket
//! activation are tested on a real process in `examples/http/tests`.)
//! Time is paused: the drain and grace periods pass at once, in order.

use std::sync::Arc;
use std::time::Duration;

use cancel_scope::ShutdownSignal;
use cancel_scope::daemon::{Daemon, Forced, StopReason, Subsystem};
use tokio::sync::oneshot;
use tokio::time::Instant;

fn signal() -> Arc<ShutdownSignal> {
    Arc::new(ShutdownSignal::install().unwrap())
}

#[tokio::test(start_paused = true)]
async fn readiness_waits_for_the_setup_and_every_hold_and_does_not_come_back() {
    let (told, ready_seen) = oneshot::channel();
    let report = Daemon::new("d")
        .quiet()
        .run(|d| async move {
            let readiness = d.readiness();
            let first = d.hold_readiness();
            let second = d.hold_readiness();
            let watcher = d.readiness();
            d.start(Subsystem::new("bind", move |bind| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(first);
                assert!(!watcher.is_ready(), "one hold is left");
                tokio::time::sleep(Duration::from_secs(1)).await;
                second.release();
                assert!(watcher.is_ready());
                // A hold taken now holds nothing.
                let late = bind.hold_readiness();
                assert!(watcher.is_ready());
                drop(late);
                let _ = told.send(Instant::now());
                bind.request_shutdown();
                assert!(!watcher.is_ready(), "the shutdown began");
            }));
            assert!(!readiness.is_ready(), "the setup has not returned");
        })
        .await;
    assert_eq!(report.code(), 0, "{report}");
    assert!(ready_seen.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_setup_that_fails_is_never_ready() {
    let (tx, rx) = oneshot::channel();
    let report = Daemon::new("d")
        .quiet()
        .run(|d| async move {
            let mut readiness = d.readiness();
            d.start(Subsystem::new("probe", move |_| async move {
                let _ = tx.send(readiness.ready().await);
            }));
            Err::<(), _>("cannot bind")
        })
        .await;
    assert_eq!(report.code(), 1);
    assert_eq!(rx.await, Ok(false));
}

#[tokio::test(start_paused = true)]
async fn a_drain_keeps_everything_running_then_the_ordered_shutdown_runs_within_the_grace() {
    let signal = signal();
    let sigterm = Arc::clone(&signal);
    let report = Daemon::new("d")
        .drain(Duration::from_secs(10))
        .grace(Duration::from_secs(3))
        .signal(signal)
        .quiet()
        .run(move |d| async move {
            let mut readiness = d.readiness();
            d.start(Subsystem::new("w", move |w| async move {
                assert!(readiness.ready().await);
                let signalled = Instant::now();
                sigterm.trigger("SIGTERM");
                readiness.stopping().await;
                assert!(!w.token().is_cancelled(), "still serving");
                w.token().cancelled().await;
                assert_eq!(signalled.elapsed(), Duration::from_secs(10));
                // Its cleanup has the whole grace period, after the drain.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }));
        })
        .await;
    assert_eq!(report.forced(), None, "{report}");
    assert_eq!(report.drained(), Some(Duration::from_secs(10)));
    assert_eq!(report.shutdown_took(), Some(Duration::from_secs(2)));
    assert_eq!(report.reason(), &StopReason::Signal("SIGTERM"));
    assert!(
        report
            .summary()
            .starts_with("d: drained 10.000s, then shutdown (SIGTERM) took 2.000s"),
        "{}",
        report.summary()
    );
}

#[tokio::test(start_paused = true)]
async fn signals_that_come_before_the_daemon_looks_still_count_in_order() {
    // Two at once: the drain is cut short, the shutdown is still graceful.
    let signal = signal();
    let twice = Arc::clone(&signal);
    let report = Daemon::new("d")
        .drain(Duration::from_secs(600))
        .signal(signal)
        .quiet()
        .run(move |d| async move {
            d.start(Subsystem::new("w", |w| async move {
                w.token().cancelled().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }));
            twice.trigger("SIGTERM");
            twice.trigger("SIGTERM");
        })
        .await;
    assert_eq!(report.forced(), None, "{report}");
    assert_eq!(report.drained(), Some(Duration::ZERO), "{report}");
    assert!(report.summary().contains("(cut short)"), "{report}");

    // Three at once: the third aborts the shutdown.
    let signal = self::signal();
    let thrice = Arc::clone(&signal);
    let report = Daemon::new("d")
        .drain(Duration::from_secs(600))
        .signal(signal)
        .quiet()
        .run(move |d| async move {
            d.start(Subsystem::new("w", |w| async move {
                w.token().cancelled().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }));
            for _ in 0..3 {
                thrice.trigger("SIGTERM");
            }
        })
        .await;
    assert_eq!(report.forced(), Some(Forced::SecondSignal), "{report}");
    assert_eq!(report.code(), 130);
}

#[tokio::test(start_paused = true)]
async fn a_failure_during_the_drain_ends_it_and_a_signal_after_that_forces_the_shutdown() {
    let signal = signal();
    let (sigterm, again) = (Arc::clone(&signal), Arc::clone(&signal));
    let report = Daemon::new("d")
        .drain(Duration::from_secs(60))
        .grace(Duration::from_secs(30))
        .signal(signal)
        .quiet()
        .run(move |d| async move {
            d.start(Subsystem::new("failing", move |_| async move {
                sigterm.trigger("SIGTERM");
                tokio::time::sleep(Duration::from_secs(5)).await;
                Err::<(), _>("lost the database")
            }));
            d.start(Subsystem::new("slow", move |s| async move {
                s.token().cancelled().await;
                // The signal the drain began with does not force the
                // shutdown; the next one does.
                tokio::time::sleep(Duration::from_secs(1)).await;
                again.trigger("SIGTERM");
                std::future::pending::<()>().await;
            }));
        })
        .await;
    assert_eq!(
        report.reason(),
        &StopReason::Failed("/d/failing".into()),
        "{report}"
    );
    assert_eq!(report.drained(), Some(Duration::from_secs(5)), "{report}");
    assert_eq!(report.forced(), Some(Forced::SecondSignal), "{report}");
    assert_eq!(report.shutdown_took(), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_requested_shutdown_does_not_drain() {
    let report = Daemon::new("d")
        .drain(Duration::from_secs(60))
        .signal(signal())
        .quiet()
        .run(|d| async move {
            let mut readiness = d.readiness();
            d.start(Subsystem::new("w", move |w| async move {
                assert!(readiness.ready().await);
                w.request_shutdown();
                w.token().cancelled().await;
            }));
        })
        .await;
    assert_eq!(report.drained(), None, "{report}");
    assert_eq!(report.shutdown_took(), Some(Duration::ZERO));
}

/// A drain that every subsystem's end cut short is in the report.
#[tokio::test(start_paused = true)]
async fn a_drain_cut_short_by_the_end_of_every_subsystem_is_reported() {
    let sigterm = signal();
    let report = Daemon::new("d")
        .drain(Duration::from_secs(100))
        .signal(Arc::clone(&sigterm))
        .quiet()
        .run(move |d| async move {
            let mut readiness = d.readiness();
            d.start(Subsystem::new("http", move |_| async move {
                assert!(readiness.ready().await);
                sigterm.trigger("SIGTERM");
                readiness.stopping().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }));
        })
        .await;
    assert_eq!(report.drained(), Some(Duration::from_secs(2)), "{report}");
    assert!(report.summary().contains("(cut short)"), "{report}");
}
