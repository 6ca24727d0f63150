//! On SIGUSR1 a daemon made with `print_tree_on_sigusr1` logs its task tree.
//! A test binary of its own: it sends a real signal to its own process.
#![cfg(unix)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cancel_scope::daemon::{Daemon, Subsystem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_prints_the_task_tree() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&lines);
    let seen = Arc::clone(&lines);
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        Daemon::new("d")
            .print_tree_on_sigusr1()
            .log_with(move |line| log.lock().unwrap().push(line.to_owned()))
            .run(move |d| async move {
                d.start(Subsystem::new("writer", |w| async move {
                    w.token().cancelled().await;
                }));
                for _ in 0..1000 {
                    if d.tree().get("/d/writer").is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let status = std::process::Command::new("kill")
                    .args(["-USR1", &std::process::id().to_string()])
                    .status()
                    .expect("kill runs");
                assert!(status.success());
                for _ in 0..1000 {
                    if seen
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|l| l.starts_with("SIGUSR1"))
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                d.request_shutdown();
            }),
    )
    .await
    .expect("the daemon ends");
    assert!(report.is_clean(), "{report}");
    let lines = lines.lock().unwrap();
    let tree = lines
        .iter()
        .find(|l| l.starts_with("SIGUSR1: the task tree"))
        .unwrap_or_else(|| panic!("no tree in {lines:#?}"));
    assert!(tree.contains("\n/d "), "{tree}");
    assert!(tree.contains("\n  /d/writer  running"), "{tree}");
}
