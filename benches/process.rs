//! Stopping child processes: `process::Child::stop` against the same by
//! hand (`libc::kill(pid, SIGTERM)` + `tokio::process::Child::wait`), in
//! the same run, on a multi-thread runtime with 2 workers.
//!
//! Each batch spawns 100 `sleep 1000` children (not timed), then times
//! stopping all of them until each is reaped:
//!
//! - `sequential`: one after the other (signal, wait for its exit, next);
//! - `parallel`: one task per child, all at once, joined.
//!
//! `Child::stop` also does a `try_wait` first, arms its grace timer, signals
//! the process group (`killpg`) and kills what is left of the group once
//! the child is reaped; the children here die at the `SIGTERM`, so the
//! times are dominated by the children's own exits.
//!
//! Run: `cargo bench --bench process -- --warm-up-time 1 --measurement-time 3`
// Unix only (signals, `libc::kill`).

mod common;

use std::time::{Duration, Instant};

use cancel_scope::process::Child;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use tokio::process::Command;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const N: usize = 100;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    cmd
}

async fn stop_children(parallel: bool) -> Duration {
    let children: Vec<Child> = (0..N)
        .map(|_| Child::spawn(sleeper()).expect("spawn"))
        .collect();
    let start = Instant::now();
    if parallel {
        let mut set = JoinSet::new();
        for mut child in children {
            set.spawn(async move { child.stop().await });
        }
        while let Some(status) = set.join_next().await {
            assert!(!status.expect("task").expect("stop").success());
        }
    } else {
        for mut child in children {
            assert!(!child.stop().await.expect("stop").success());
        }
    }
    start.elapsed()
}

async fn kill_and_wait(
    mut child: tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    let pid = i32::try_from(child.id().expect("running")).expect("a pid");
    // SAFETY: kill only reads its two integer arguments.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    child.wait().await
}

async fn by_hand(parallel: bool) -> Duration {
    let children: Vec<tokio::process::Child> =
        (0..N).map(|_| sleeper().spawn().expect("spawn")).collect();
    let start = Instant::now();
    if parallel {
        let mut set = JoinSet::new();
        for child in children {
            set.spawn(kill_and_wait(child));
        }
        while let Some(status) = set.join_next().await {
            assert!(!status.expect("task").expect("wait").success());
        }
    } else {
        for child in children {
            assert!(!kill_and_wait(child).await.expect("wait").success());
        }
    }
    start.elapsed()
}

/// Runs one batch in a task on a worker; the time per child.
fn batch(rt: &Runtime, library: bool, parallel: bool) -> Duration {
    let task = rt.spawn(async move {
        if library {
            stop_children(parallel).await
        } else {
            by_hand(parallel).await
        }
    });
    rt.block_on(task).expect("bench task") / u32::try_from(N).expect("small")
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    if common::paired_enabled() {
        common::print_header("paired ratios, Child::stop / kill + wait by hand (100 children)");
        for (name, parallel) in [("sequential", false), ("parallel", true)] {
            common::compare(
                &format!("stop 100 children, {name}: Child::stop / libc::kill + wait"),
                Some(1.1),
                31,
                || batch(&rt, true, parallel),
                || batch(&rt, false, parallel),
            );
        }
        println!();
    }
    for (group, parallel) in [
        ("process/stop_100_sequential", false),
        ("process/stop_100_parallel", true),
    ] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        for (name, library) in [("child_stop", true), ("kill_wait_by_hand", false)] {
            g.bench_function(name, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| batch(&rt, library, parallel)).sum());
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
