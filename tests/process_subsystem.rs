//! `Subsystem::process` with real processes: restarts by policy, the
//! ordered stop, the exit status in the report, nothing left running.
#![cfg(all(unix, feature = "process"))]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cancel_scope::daemon::{
    Daemon, DaemonReport, Restart, ShutdownOrder, Subsystem, SubsystemHandle,
};
use cancel_scope::process::Stop;
use tokio::process::Command;

const BOUND: Duration = Duration::from_secs(20);

/// A fresh directory for markers, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "cancel-scope-subsystem-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        Dir(path)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sh(script: String) -> impl FnMut() -> Command + Send + 'static {
    move || {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        cmd
    }
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn note<'a>(report: &'a DaemonReport, path: &str) -> Option<&'a str> {
    report
        .tree()
        .get(path)
        .unwrap_or_else(|| panic!("{path} in the tree"))
        .note()
}

#[tokio::test]
async fn a_failing_process_is_restarted_by_policy_then_fails_with_its_status() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let report = Daemon::new("app")
        .quiet()
        .run(move |app| async move {
            let mut make = sh("exit 3".to_owned());
            let policy = Restart::transient()
                .intensity(2, Duration::from_secs(60))
                .backoff(Duration::from_millis(10), Duration::from_millis(10));
            app.start(
                Subsystem::process("job", move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    make()
                })
                .restart(policy),
            );
        })
        .await;
    assert_eq!(
        runs.load(Ordering::Relaxed),
        3,
        "the command is made again for each run"
    );
    let job = report.tree().get("/app/job").unwrap();
    assert_eq!(job.restarts(), 2);
    assert_eq!(job.note(), Some("exited 3"));
    assert_eq!(report.failures().len(), 1);
    assert!(
        report.failures()[0].error().contains("exited 3"),
        "{}",
        report.failures()[0]
    );
    assert_eq!(report.code(), 1);
}

#[tokio::test]
async fn a_permanent_process_is_restarted_after_it_exits_0() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let report = Daemon::new("app")
        .quiet()
        .run(move |app| async move {
            let policy = Restart::permanent()
                .intensity(100, Duration::from_secs(60))
                .backoff(Duration::from_millis(1), Duration::from_millis(1));
            let mut make = sh("exit 0".to_owned());
            let runs = Arc::clone(&counted);
            app.start(
                Subsystem::process("tick", move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    make()
                })
                .restart(policy),
            );
            eventually("three runs", || runs.load(Ordering::Relaxed) >= 3).await;
            app.request_shutdown();
        })
        .await;
    assert!(runs.load(Ordering::Relaxed) >= 3);
    assert!(report.failures().is_empty(), "{report}");
    assert!(report.tree().get("/app/tick").unwrap().restarts() >= 2);
}

/// How a child ended, as the tree shows it: on its own (0, 3, a signal it
/// was not sent) and when stopped (its trap exits 0, no trap, SIGTERM
/// ignored).
#[tokio::test]
async fn the_exit_status_is_in_the_report() {
    let dir = Dir::new("status");
    let ready = |name: &str| dir.file(&format!("{name}.ready"));
    let running = |name: &str, body: &str| format!("touch {}; {body}", ready(name));
    let stop = Stop::new().grace(Duration::from_millis(300));
    let paths: Vec<String> = ["trapped", "plain", "deaf"]
        .iter()
        .map(|n| ready(n))
        .collect();
    let forever = "while :; do sleep 0.02; done";
    // A trap is set before the ready file says the child runs: a stop that
    // comes right after must find it in place.
    let trapped = format!("trap 'exit 0' TERM; {}", running("trapped", forever));
    let plain = running("plain", forever);
    let deaf = format!("trap '' TERM; {}", running("deaf", forever));
    let report = Daemon::new("app")
        .quiet()
        .grace(Duration::from_secs(15))
        .run(move |app| async move {
            app.start(Subsystem::process("zero", sh("exit 0".into())));
            app.start(Subsystem::process("three", sh("exit 3".into())).escalate(false));
            app.start(Subsystem::process("usr1", sh("kill -USR1 $$".into())).escalate(false));
            app.start(Subsystem::process_with("trapped", stop, sh(trapped)));
            app.start(Subsystem::process_with("plain", stop, sh(plain)));
            app.start(Subsystem::process_with("deaf", stop, sh(deaf)));
            eventually("all started", || {
                paths.iter().all(|p| std::path::Path::new(p).exists())
            })
            .await;
            app.request_shutdown();
        })
        .await;
    assert_eq!(note(&report, "/app/zero"), Some("exited 0"));
    assert_eq!(note(&report, "/app/three"), Some("exited 3"));
    assert_eq!(note(&report, "/app/usr1"), Some("killed by SIGUSR1"));
    assert_eq!(note(&report, "/app/trapped"), Some("exited 0"));
    assert_eq!(
        note(&report, "/app/plain"),
        Some("killed by SIGTERM (stopped)")
    );
    assert_eq!(
        note(&report, "/app/deaf"),
        Some("killed by SIGKILL after the 300ms grace")
    );
    let mut failures: Vec<String> = report.failures().iter().map(ToString::to_string).collect();
    failures.sort();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("/app/three") && failures[0].contains("exited 3"),
        "{failures:?}"
    );
    assert!(
        failures[1].contains("/app/usr1") && failures[1].contains("killed by SIGUSR1"),
        "{failures:?}"
    );
    // And the printed report shows them.
    let printed = report.to_string();
    assert!(
        printed.contains("killed by SIGKILL after the 300ms grace"),
        "{printed}"
    );
}

/// `ingest` stops first and takes a while; `writer` is sent SIGTERM only
/// once `ingest` has exited.
#[tokio::test]
async fn process_subsystems_stop_in_order() {
    let dir = Dir::new("order");
    let log = dir.file("log");
    let script = |name: &str, pause: &str| {
        format!(
            "trap 'sleep {pause}; echo {name} >> {log}; exit 0' TERM; touch {}; \
             while :; do sleep 0.02; done",
            dir.file(&format!("{name}.ready"))
        )
    };
    let readies = [dir.file("ingest.ready"), dir.file("writer.ready")];
    let (ingest, writer) = (script("ingest", "0.3"), script("writer", "0"));
    let report = Daemon::new("app")
        .quiet()
        .grace(Duration::from_secs(15))
        .shutdown_order(ShutdownOrder::declared(["ingest", "writer"]))
        .run(move |app: SubsystemHandle| async move {
            // Started in this order, the default order would stop `writer`
            // first.
            app.start(Subsystem::process("ingest", sh(ingest)));
            app.start(Subsystem::process("writer", sh(writer)));
            eventually("both started", || {
                readies.iter().all(|p| std::path::Path::new(p).exists())
            })
            .await;
            app.request_shutdown();
        })
        .await;
    assert!(report.failures().is_empty(), "{report}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ingest\nwriter\n");
}

/// The daemon's grace (300 ms) is shorter than the child's stop grace
/// (600 s) and the child ignores SIGTERM: the subsystem is aborted at the
/// end of the daemon's grace, and its child's group killed then.
#[tokio::test]
async fn the_daemons_grace_bounds_a_process_stop() {
    let dir = Dir::new("grace");
    let pids = dir.file("pids");
    let script = format!("trap '' TERM; sleep 1000 & echo $$ $! > {pids}; wait");
    let pids_path = pids.clone();
    let started = Instant::now();
    let report = Daemon::new("app")
        .quiet()
        .grace(Duration::from_millis(300))
        .run(move |app| async move {
            let stop = Stop::new().grace(Duration::from_secs(600));
            app.start(Subsystem::process_with("deaf", stop, sh(script)));
            eventually("the pids are written", || {
                std::fs::read_to_string(&pids_path).is_ok_and(|s| s.ends_with('\n'))
            })
            .await;
            app.request_shutdown();
        })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not the child's 600 s"
    );
    assert!(
        report.forced().is_some(),
        "the daemon had to abort: {report}"
    );
    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<&str> = text.split_whitespace().collect();
    let stat = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    eventually("the child is killed and reaped", || stat(pids[0]).is_none()).await;
    eventually("the grandchild is killed", || {
        stat(pids[1]).is_none_or(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
    })
    .await;
}

#[tokio::test]
async fn a_command_that_cannot_start_is_a_failure() {
    let report = Daemon::new("app")
        .quiet()
        .run(|app| async move {
            app.start(Subsystem::process("missing", || {
                Command::new("/nonexistent/program")
            }));
        })
        .await;
    assert_eq!(report.failures().len(), 1);
    assert!(
        report.failures()[0].error().starts_with("cannot start: "),
        "{}",
        report.failures()[0]
    );
}
