//! `process::Child` and `process::run` with real processes (`sh`, `sleep`):
//! the graceful stop, the kill after the grace, the whole group, no zombie,
//! a drop from an aborted task or after the runtime is gone.
#![cfg(all(unix, feature = "process"))]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cancel_scope::process::{Child, Stop, run};
use cancel_scope::{CancellationToken, Cancelled, Scope, cancellable, on_cancel};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Long enough to catch a hang, short of a test runner's patience.
const BOUND: Duration = Duration::from_secs(20);

/// A process as `/proc/<pid>/stat` shows it: its state letter and its start
/// time (which tells it from a later process given the same pid).
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields start after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields[0].chars().next()?, fields[19].parse().ok()?))
}

/// A process seen running, to check later that it is gone.
struct Seen {
    pid: u32,
    start: u64,
}

impl Seen {
    fn new(pid: u32) -> Seen {
        let (_, start) = stat(pid).expect("the process runs");
        Seen { pid, start }
    }

    /// The same process, still there (a zombie too: not reaped).
    fn exists(&self) -> bool {
        stat(self.pid).is_some_and(|(_, start)| start == self.start)
    }

    /// The same process, alive (not a zombie).
    fn runs(&self) -> bool {
        stat(self.pid).is_some_and(|(state, start)| start == self.start && state != 'Z')
    }
}

impl Drop for Seen {
    /// A failed test leaves nothing running.
    fn drop(&mut self) {
        if self.runs() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
    }
}

/// Polls `cond` until it holds, for up to `BOUND`.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn blocking_eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh path for a marker file, removed when dropped.
struct Marker(PathBuf);

impl Marker {
    fn new(name: &str) -> Marker {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("cancel-scope-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Marker(path)
    }

    fn read(&self) -> Option<String> {
        std::fs::read_to_string(&self.0).ok()
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `sh -c script` with stdout piped, spawned as a `Child`.
fn sh(script: &str) -> Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).stdout(Stdio::piped());
    Child::spawn(cmd).expect("sh spawns")
}

/// The lines the child prints first (it prints `ready` or pids once its
/// traps are set).
async fn read_lines(child: &mut Child, n: usize) -> Vec<String> {
    let mut lines = BufReader::new(child.take_stdout().expect("stdout piped")).lines();
    let mut out = Vec::new();
    while out.len() < n {
        let line = tokio::time::timeout(BOUND, lines.next_line())
            .await
            .expect("the child prints in time")
            .expect("stdout reads")
            .expect("the child prints before it ends");
        out.push(line);
    }
    // Keep the pipe open (a write to a closed pipe would kill the shell).
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    out
}

fn short(grace_ms: u64) -> Stop {
    Stop::new().grace(Duration::from_millis(grace_ms))
}

#[tokio::test]
async fn stop_runs_the_childs_sigterm_trap() {
    let marker = Marker::new("trap");
    let mut child = sh(&format!(
        "trap 'echo stopped > {}; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
        marker.0.display()
    ))
    .with_stop(Stop::new().grace(BOUND));
    let seen = Seen::new(child.id().unwrap());
    read_lines(&mut child, 1).await;
    let status = child.stop().await.unwrap();
    assert!(status.success(), "the trap exits 0: {status}");
    assert_eq!(marker.read().as_deref(), Some("stopped\n"));
    assert!(!seen.exists(), "reaped: no zombie");
    assert_eq!(child.id(), None);
}

#[tokio::test]
async fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
    let mut child =
        sh("trap '' TERM; echo ready; while :; do sleep 0.05; done").with_stop(short(300));
    let seen = Seen::new(child.id().unwrap());
    read_lines(&mut child, 1).await;
    let started = Instant::now();
    let status = child.stop().await.unwrap();
    let took = started.elapsed();
    assert_eq!(status.signal(), Some(9), "SIGKILL: {status}");
    assert!(
        took >= Duration::from_millis(300),
        "the grace was given: {took:?}"
    );
    assert!(took < BOUND, "{took:?}");
    assert!(!seen.exists());
}

#[tokio::test]
async fn stop_sends_the_configured_signal() {
    let mut child = sh("echo ready; while :; do sleep 0.05; done").with_stop(Stop::new().signal(2));
    read_lines(&mut child, 1).await;
    assert_eq!(child.stop().await.unwrap().signal(), Some(2));
}

/// `sh` that starts a grandchild (`sleep`) in its group and prints its pid.
const WITH_GRANDCHILD: &str = "sleep 1000 & echo $!; wait";

#[tokio::test]
async fn a_grandchild_is_gone_after_stop() {
    let mut child = sh(WITH_GRANDCHILD).with_stop(short(5_000));
    let leader = Seen::new(child.id().unwrap());
    let grandchild = Seen::new(read_lines(&mut child, 1).await[0].parse().unwrap());
    assert!(grandchild.runs());
    child.stop().await.unwrap();
    assert!(!leader.exists());
    // Killed; its reaping is its new parent's (init's) business.
    eventually("the grandchild dies", || !grandchild.runs()).await;
}

#[tokio::test]
async fn a_grandchild_left_when_the_child_exits_is_killed_when_it_is_reaped() {
    // The shell exits at once and leaves its `sleep` behind, in its group.
    let mut child = sh("sleep 1000 & echo $!");
    let grandchild = Seen::new(read_lines(&mut child, 1).await[0].parse().unwrap());
    assert!(child.wait().await.unwrap().success());
    eventually("the grandchild dies", || !grandchild.runs()).await;
}

#[tokio::test]
async fn dropping_a_child_kills_its_group_and_reaps_it() {
    let mut child = sh(WITH_GRANDCHILD);
    let leader = Seen::new(child.id().unwrap());
    let grandchild = Seen::new(read_lines(&mut child, 1).await[0].parse().unwrap());
    drop(child);
    eventually("the child is reaped (no zombie)", || !leader.exists()).await;
    eventually("the grandchild dies", || !grandchild.runs()).await;
}

#[tokio::test]
async fn a_child_ignoring_sigterm_dropped_is_killed_at_once() {
    let mut child = sh("trap '' TERM; echo ready; while :; do sleep 0.05; done");
    let leader = Seen::new(child.id().unwrap());
    read_lines(&mut child, 1).await;
    drop(child);
    eventually("the child is killed and reaped", || !leader.exists()).await;
}

#[tokio::test]
async fn stop_on_an_exited_child_returns_its_status() {
    let mut child = sh("exit 3");
    let leader = Seen::new(child.id().unwrap());
    eventually("the child exits", || {
        stat(leader.pid).is_none_or(|(state, _)| state == 'Z')
    })
    .await;
    let status = child.stop().await.unwrap();
    assert_eq!(status.code(), Some(3), "its own exit, not a signal");
    assert!(!leader.exists());
    // And again, once reaped.
    assert_eq!(child.stop().await.unwrap().code(), Some(3));
    assert_eq!(child.wait().await.unwrap().code(), Some(3));
}

#[tokio::test]
async fn wait_is_cancel_safe() {
    let mut child = sh("echo ready; while :; do sleep 0.05; done").with_stop(short(5_000));
    read_lines(&mut child, 1).await;
    let seen = Seen::new(child.id().unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), child.wait())
            .await
            .is_err()
    );
    assert!(seen.runs(), "a dropped wait leaves the child running");
    assert_eq!(child.stop().await.unwrap().signal(), Some(15));
    assert!(!seen.exists());
}

#[tokio::test]
async fn two_hundred_children_stop_in_parallel_within_one_grace() {
    let grace = Duration::from_millis(1_000);
    let mut children = Vec::new();
    for _ in 0..200 {
        // Ignores SIGTERM: each needs the whole grace and a SIGKILL.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; exec sleep 1000"]);
        children.push(
            Child::spawn(cmd)
                .unwrap()
                .with_stop(Stop::new().grace(grace)),
        );
    }
    let seen: Vec<Seen> = children
        .iter()
        .map(|c| Seen::new(c.id().unwrap()))
        .collect();
    // Let each shell set its trap and exec `sleep` (still ignoring SIGTERM).
    for s in &seen {
        eventually("the shell execs sleep", || {
            std::fs::read_to_string(format!("/proc/{}/comm", s.pid)).is_ok_and(|c| c == "sleep\n")
        })
        .await;
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut child in children {
        tasks.spawn(async move { child.stop().await });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap().unwrap().signal(), Some(9));
    }
    let took = started.elapsed();
    // One grace, plus the noise of a shared machine; 200 graces in a row
    // would be 200 s.
    assert!(took < grace * 10, "{took:?}");
    for s in &seen {
        assert!(!s.exists());
    }
}

#[test]
fn a_child_dropped_after_the_runtime_shut_down_is_killed_and_reaped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (child, grandchild) = runtime.block_on(async {
        let mut child = sh(WITH_GRANDCHILD);
        let pid = read_lines(&mut child, 1).await[0].parse().unwrap();
        (child, pid)
    });
    drop(runtime);
    let leader = Seen::new(child.id().unwrap());
    let grandchild = Seen::new(grandchild);
    drop(child);
    blocking_eventually("the child is reaped", || !leader.exists());
    blocking_eventually("the grandchild dies", || !grandchild.runs());
}

#[test]
fn a_runtime_shutting_down_with_a_task_that_owns_a_child_leaves_nothing_running() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (leader, grandchild) = runtime.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut child = sh(WITH_GRANDCHILD);
            let grandchild: u32 = read_lines(&mut child, 1).await[0].parse().unwrap();
            tx.send((child.id().unwrap(), grandchild)).unwrap();
            std::future::pending::<()>().await;
            drop(child);
        });
        rx.await.unwrap()
    });
    let (leader, grandchild) = (Seen::new(leader), Seen::new(grandchild));
    // Drops the task, and its `Child`, while the runtime shuts down.
    drop(runtime);
    blocking_eventually("the child is reaped", || !leader.exists());
    blocking_eventually("the grandchild dies", || !grandchild.runs());
}

#[cancellable]
async fn supervise_script(script: String, pids: tokio::sync::mpsc::Sender<u32>) -> bool {
    let mut child = sh(&script).with_stop(Stop::new().grace(Duration::from_secs(600)));
    on_cancel! {
        let _ = child.stop().await;
    }
    let grandchild = read_lines(&mut child, 1).await[0].parse().unwrap();
    pids.send(child.id().unwrap()).await.unwrap();
    pids.send(grandchild).await.unwrap();
    child.wait().await.unwrap().success()
}

#[tokio::test]
async fn cancelling_a_cancellable_fn_runs_the_childs_trap() {
    let marker = Marker::new("cancellable");
    let script = format!(
        "trap 'echo bye > {}; exit 0' TERM; sleep 1000 & echo $!; wait",
        marker.0.display()
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let token = CancellationToken::new();
    let task = tokio::spawn(supervise_script(token.clone(), script, tx));
    let leader = Seen::new(rx.recv().await.unwrap());
    let grandchild = Seen::new(rx.recv().await.unwrap());
    token.cancel();
    assert_eq!(task.await.unwrap(), Err(Cancelled::new()));
    assert_eq!(marker.read().as_deref(), Some("bye\n"), "the trap ran");
    assert!(!leader.exists());
    eventually("the grandchild dies", || !grandchild.runs()).await;
}

/// The stop in a task's cleanup has a 600 s grace and a child that ignores
/// SIGTERM, but the scope's shutdown grace is 300 ms: at its end the task
/// is aborted, its `Child` dropped, and the group killed then.
#[tokio::test]
async fn a_stop_never_runs_past_the_scopes_grace() {
    let mut scope: Scope<Result<bool, Cancelled>> = Scope::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let script = "trap '' TERM; sleep 1000 & echo $!; wait".to_owned();
        scope.spawn(move |token| supervise_script(token, script, tx));
        seen.push(Seen::new(rx.recv().await.unwrap()));
        seen.push(Seen::new(rx.recv().await.unwrap()));
    }
    let started = Instant::now();
    let results = scope.shutdown(Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.is_aborted()))
    );
    assert!(
        took < Duration::from_secs(60),
        "not the child's 600 s: {took:?}"
    );
    for (i, s) in seen.iter().enumerate() {
        if i % 2 == 0 {
            eventually("the child is killed and reaped", || !s.exists()).await;
        } else {
            eventually("the grandchild dies", || !s.runs()).await;
        }
    }
}

#[tokio::test]
async fn an_aborted_task_leaves_nothing_running() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let token = CancellationToken::new();
    let task = tokio::spawn(supervise_script(token, WITH_GRANDCHILD.to_owned(), tx));
    let leader = Seen::new(rx.recv().await.unwrap());
    let grandchild = Seen::new(rx.recv().await.unwrap());
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    eventually("the child is killed and reaped", || !leader.exists()).await;
    eventually("the grandchild dies", || !grandchild.runs()).await;
}

#[tokio::test]
async fn run_returns_the_output() {
    let token = CancellationToken::new();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo out; echo err >&2; exit 4"]);
    let output = run(&token, cmd).await.unwrap().unwrap();
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    assert_eq!(output.status.code(), Some(4));
}

#[tokio::test]
async fn run_stops_the_child_gracefully_when_cancelled() {
    let (marker, ready) = (Marker::new("run"), Marker::new("run-ready"));
    let token = CancellationToken::new();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "trap 'echo bye > {}; exit 0' TERM; touch {}; while :; do sleep 0.05; done",
        marker.0.display(),
        ready.0.display()
    ));
    let cancel = async {
        eventually("the trap is set", || ready.read().is_some()).await;
        token.cancel();
    };
    let (result, ()) = tokio::join!(run(&token, cmd), cancel);
    assert_eq!(result.unwrap_err(), Cancelled::new());
    assert_eq!(marker.read().as_deref(), Some("bye\n"));
}

#[tokio::test]
async fn run_reports_a_missing_program() {
    let token = CancellationToken::new();
    let err = run(&token, Command::new("/nonexistent/program"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn child_is_send() {
    fn send<T: Send>() {}
    send::<Child>();
}

#[allow(dead_code)]
#[path = "../examples/process.rs"]
mod process_example;

#[tokio::test]
async fn the_process_example_stops_its_child_and_leaves_nothing_running() {
    let mut out = Vec::new();
    let outcome = process_example::run(Duration::from_secs(1), std::future::pending(), &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(outcome.pids.len(), 2, "the child and its grandchild: {out}");
    assert!(
        out.contains("child: SIGTERM, cleaning up"),
        "the trap ran: {out}"
    );
    assert_eq!(outcome.stopped.as_deref(), Some("exit status: 0"), "{out}");
    assert!(out.contains("left running: nothing"), "{out}");
    for &pid in &outcome.pids {
        assert!(!process_example::running(pid), "{pid} runs: {out}");
    }
}

/// A process that left the child's group (`setsid`) and holds its stdout
/// open does not hold a cancelled `run`: the output is read while the child
/// stops, not past it.
#[tokio::test]
async fn a_cancelled_run_does_not_wait_for_a_process_outside_the_group() {
    let pid = Marker::new("escaped");
    let token = CancellationToken::new();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "setsid sh -c 'echo $$ > {0}; exec sleep 60' & while [ ! -s {0} ]; do sleep 0.01; done; echo hi",
        pid.0.display()
    ));
    let cancel = async {
        eventually("the escaped process runs", || pid.read().is_some()).await;
        token.cancel();
    };
    let running = tokio::time::timeout(BOUND, run(&token, cmd));
    let (result, ()) = tokio::join!(running, cancel);
    let escaped: Option<u32> = pid.read().and_then(|p| p.trim().parse().ok());
    let _kill_it = escaped.map(Seen::new);
    let result = result.expect("run ended once its child was stopped and reaped");
    assert_eq!(result.unwrap_err(), Cancelled::new());
}

/// Outside a runtime `spawn` is an error, and nothing was started.
#[test]
fn spawn_outside_a_runtime_is_an_error() {
    let marker = Marker::new("no-runtime");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("touch {}", marker.0.display()));
    let err = Child::spawn(cmd).map(drop).unwrap_err();
    assert!(err.to_string().contains("needs a Tokio runtime"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(marker.read(), None, "a process was started");
}
