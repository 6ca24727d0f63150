//! `Scope` against the `JoinSet` code it replaces, in the same criterion
//! group, on a multi-thread runtime with 2 workers. Each iteration runs in a
//! task on a worker (as a daemon's spawning code does), and times itself.
//!
//! - `spawn_join`: spawn 10k trivial tasks (each holds the token it was given
//!   and returns a number), then collect every result:
//!   `Scope::spawn` + `join_all` (results in spawn order) against a bare
//!   `JoinSet`, a `JoinSet` with one `child_token()` per task (the target),
//!   and the same putting the results back in spawn order by hand.
//! - `cancel_fanout`: 50k tasks parked in a `#[cancellable]` fn whose
//!   `on_cancel!` increments a counter; timed from the cancel until every
//!   task has been joined (so every cleanup has run, which is asserted):
//!   `Scope::shutdown(grace)` against a root token + `JoinSet` by hand
//!   (`cancel()`, then `join_next` until empty, under the same grace
//!   timeout) with the hand-written `select!` version of the task. Spawning
//!   and parking are not timed; timing starts once every task has reached its
//!   `.await`.
//! - `cancel_fanout_timer`: the same, each task parked on a
//!   `tokio::time::sleep` of an hour (as a connection with an idle timeout
//!   is) instead of `pending()`: the cancellation also drops 50k timer
//!   entries.
//! - `churn`: 10k short connections through an accept loop, each a
//!   `tokio::io::duplex` pair whose server half a task reads one request
//!   byte from and answers: a reaping `Scope` (each handler gets a child
//!   token, the scope frees it as it ends, then `join_all`) against
//!   tokio-util's `TaskTracker` with a child token per handler by hand
//!   (then `close` + `wait`). The clients' reads are part of the timing in
//!   both.
//!
//! Run: `cargo bench --bench scope -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cancel_scope::{CancellationToken, Cancelled, Scope, cancellable, on_cancel};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

const SPAWN_N: usize = 10_000;
const FANOUT_N: usize = 50_000;
const CHURN_N: usize = 10_000;
/// Long enough never to end a shutdown here: every task runs its cleanup.
const GRACE: Duration = Duration::from_secs(30);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `f` in a task on a worker and returns the time it reports.
fn on_worker<F, Fut>(rt: &Runtime, f: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Duration> + Send + 'static,
{
    rt.block_on(rt.spawn(f())).expect("bench task")
}

// ---- spawn + join all ------------------------------------------------------

/// The checksum every variant must produce.
fn expected_sum(n: usize) -> usize {
    n * (n - 1) / 2
}

async fn spawn_join_scope(n: usize) -> Duration {
    let start = Instant::now();
    let mut scope = Scope::new();
    for i in 0..n {
        scope.spawn(move |token| async move {
            let _token = token;
            black_box(i)
        });
    }
    let results = scope.join_all().await;
    let elapsed = start.elapsed();
    let sum: usize = results.into_iter().map(|r| r.expect("task")).sum();
    assert_eq!(sum, expected_sum(n));
    elapsed
}

async fn spawn_join_joinset(n: usize) -> Duration {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n {
        set.spawn(async move { black_box(i) });
    }
    let mut results = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        results.push(r);
    }
    let elapsed = start.elapsed();
    let sum: usize = results.into_iter().map(|r| r.expect("task")).sum();
    assert_eq!(sum, expected_sum(n));
    elapsed
}

async fn spawn_join_joinset_token(n: usize) -> Duration {
    let start = Instant::now();
    let root = CancellationToken::new();
    let mut set = JoinSet::new();
    for i in 0..n {
        let token = root.child_token();
        set.spawn(async move {
            let _token = token;
            black_box(i)
        });
    }
    let mut results = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        results.push(r);
    }
    let elapsed = start.elapsed();
    let sum: usize = results.into_iter().map(|r| r.expect("task")).sum();
    assert_eq!(sum, expected_sum(n));
    elapsed
}

/// What `Scope::join_all` does, by hand: results back in spawn order.
async fn spawn_join_joinset_token_ordered(n: usize) -> Duration {
    let start = Instant::now();
    let root = CancellationToken::new();
    let mut set = JoinSet::new();
    for i in 0..n {
        let token = root.child_token();
        set.spawn(async move {
            let _token = token;
            (i, black_box(i))
        });
    }
    let mut results: Vec<Option<usize>> = vec![None; n];
    while let Some(r) = set.join_next().await {
        let (i, v) = r.expect("task");
        results[i] = Some(v);
    }
    let elapsed = start.elapsed();
    let sum: usize = results.into_iter().map(|r| r.expect("every task")).sum();
    assert_eq!(sum, expected_sum(n));
    elapsed
}

// ---- cancel fan-out ----------------------------------------------------------

#[derive(Default)]
struct Counters {
    /// Tasks that reached their `.await`.
    parked: AtomicUsize,
    /// Cleanups that ran.
    cleaned: AtomicUsize,
}

/// What a parked task waits on.
#[derive(Clone, Copy)]
enum Park {
    /// `std::future::pending()`: nothing to drop but the future.
    Pending,
    /// A `tokio::time::sleep` that never fires here (an idle timeout).
    Timer,
}

/// Longer than any run: the sleep never fires, it is cancelled.
const IDLE: Duration = Duration::from_secs(3600);

async fn park(on: Park) {
    match on {
        Park::Pending => std::future::pending::<()>().await,
        Park::Timer => tokio::time::sleep(IDLE).await,
    }
}

#[cancellable]
async fn parked_macro(c: Arc<Counters>, on: Park) {
    on_cancel! { c.cleaned.fetch_add(1, Ordering::Relaxed); }
    c.parked.fetch_add(1, Ordering::Relaxed);
    park(on).await;
}

async fn parked_select(
    token: CancellationToken,
    c: Arc<Counters>,
    on: Park,
) -> Result<(), Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => {
            c.cleaned.fetch_add(1, Ordering::Relaxed);
            Err(Cancelled::new())
        }
        () = async {
            c.parked.fetch_add(1, Ordering::Relaxed);
            park(on).await;
        } => Ok(()),
    }
}

/// Waits (untimed) until `n` tasks have reached their `.await`, and a little
/// longer so that the last ones have returned `Pending` and registered their
/// waiter on the token.
async fn until_parked(c: &Counters, n: usize) {
    while c.parked.load(Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// `Scope::shutdown`, with the `#[cancellable]` task (or, with
/// `macro_task == false`, the hand-written one, to split the cost).
async fn fanout_scope(n: usize, macro_task: bool, on: Park) -> Duration {
    let c = Arc::new(Counters::default());
    let mut scope = Scope::new();
    for _ in 0..n {
        let c = c.clone();
        if macro_task {
            scope.spawn(move |token| parked_macro(token, c, on));
        } else {
            scope.spawn(move |token| parked_select(token, c, on));
        }
    }
    until_parked(&c, n).await;

    let start = Instant::now();
    let results = scope.shutdown(GRACE).await;
    let elapsed = start.elapsed();

    assert_eq!(c.cleaned.load(Ordering::Relaxed), n, "every cleanup ran");
    assert_eq!(results.len(), n);
    assert!(results.iter().all(|r| matches!(r, Ok(Err(_)))));
    elapsed
}

/// A root token and a `JoinSet`, by hand: `cancel()`, then join every task
/// (under the same grace timeout as `shutdown`), with the hand-written
/// `select!` task (or, with `macro_task == true`, the `#[cancellable]` one).
async fn fanout_joinset(n: usize, macro_task: bool, on: Park) -> Duration {
    let c = Arc::new(Counters::default());
    let root = CancellationToken::new();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (token, c) = (root.child_token(), c.clone());
        if macro_task {
            set.spawn(parked_macro(token, c, on));
        } else {
            set.spawn(parked_select(token, c, on));
        }
    }
    until_parked(&c, n).await;

    let start = Instant::now();
    root.cancel();
    let results = tokio::time::timeout(GRACE, async {
        let mut results = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            results.push(r);
        }
        results
    })
    .await
    .expect("every task stops within the grace period");
    let elapsed = start.elapsed();

    assert_eq!(c.cleaned.load(Ordering::Relaxed), n, "every cleanup ran");
    assert_eq!(results.len(), n);
    assert!(results.iter().all(|r| matches!(r, Ok(Err(_)))));
    elapsed
}

// ---- connection churn ---------------------------------------------------------

/// A connection's server side: read one request byte, answer it.
async fn handle_conn(token: CancellationToken, mut io: DuplexStream) {
    let mut byte = [0u8; 1];
    let answered = token
        .run_until_cancelled(async {
            io.read_exact(&mut byte).await.ok()?;
            io.write_all(&byte).await.ok()
        })
        .await;
    black_box(answered);
}

/// The accept loop: `n` connections, the request already in each buffer;
/// `spawn` takes the server half. Then every client reads its answer.
async fn churn<S: FnMut(DuplexStream)>(n: usize, mut spawn: S) {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"x").await.expect("buffered");
        spawn(server);
        clients.push(client);
    }
    for mut client in clients {
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.expect("answered");
    }
}

async fn churn_scope(n: usize) -> Duration {
    let start = Instant::now();
    let mut scope: Scope<()> = Scope::new().reaping();
    churn(n, |io| {
        scope.spawn(move |token| handle_conn(token, io));
    })
    .await;
    scope.join_all().await;
    drop(scope);
    start.elapsed()
}

async fn churn_tracker(n: usize) -> Duration {
    let start = Instant::now();
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    churn(n, |io| {
        tracker.spawn(handle_conn(root.child_token(), io));
    })
    .await;
    tracker.close();
    tracker.wait().await;
    drop(tracker);
    start.elapsed()
}

// ------------------------------------------------------------------------------

fn per_task(d: Duration, n: usize) -> Duration {
    d / u32::try_from(n).expect("small n")
}

/// One timed run of `f(n)`, per task.
fn spawn_join<Fut>(rt: &Runtime, f: fn(usize) -> Fut, n: usize) -> impl FnMut() -> Duration
where
    Fut: Future<Output = Duration> + Send + 'static,
{
    move || per_task(on_worker(rt, move || f(n)), n)
}

/// One timed cancel fan-out of `FANOUT_N` tasks, per task.
fn fanout(rt: &Runtime, scope: bool, macro_task: bool, on: Park) -> impl FnMut() -> Duration {
    move || {
        let d = if scope {
            on_worker(rt, move || fanout_scope(FANOUT_N, macro_task, on))
        } else {
            on_worker(rt, move || fanout_joinset(FANOUT_N, macro_task, on))
        };
        per_task(d, FANOUT_N)
    }
}

fn print_ratios(rt: &Runtime) {
    common::print_header("paired ratios, Scope / by hand (multi-thread runtime, 2 workers)");
    common::compare(
        "spawn+join_all 10k: Scope / JoinSet + child token",
        Some(1.1),
        121,
        spawn_join(rt, spawn_join_scope, SPAWN_N),
        spawn_join(rt, spawn_join_joinset_token, SPAWN_N),
    );
    common::compare(
        "spawn+join_all 10k: Scope / bare JoinSet",
        None,
        121,
        spawn_join(rt, spawn_join_scope, SPAWN_N),
        spawn_join(rt, spawn_join_joinset, SPAWN_N),
    );
    common::compare(
        "spawn+join_all 10k: Scope / JoinSet + child token + spawn order",
        None,
        121,
        spawn_join(rt, spawn_join_scope, SPAWN_N),
        spawn_join(rt, spawn_join_joinset_token_ordered, SPAWN_N),
    );
    common::compare(
        "cancel fan-out 50k: Scope::shutdown + #[cancellable] / token + JoinSet + select!",
        Some(1.1),
        61,
        fanout(rt, true, true, Park::Pending),
        fanout(rt, false, false, Park::Pending),
    );
    common::compare(
        "cancel fan-out 50k: Scope::shutdown / token + JoinSet (both select! tasks)",
        None,
        61,
        fanout(rt, true, false, Park::Pending),
        fanout(rt, false, false, Park::Pending),
    );
    common::compare(
        "cancel fan-out 50k on a timer: Scope::shutdown + #[cancellable] / token + JoinSet + select!",
        Some(1.1),
        61,
        fanout(rt, true, true, Park::Timer),
        fanout(rt, false, false, Park::Timer),
    );
    common::compare(
        "cancel fan-out 50k on a timer: Scope::shutdown / token + JoinSet (both select! tasks)",
        None,
        61,
        fanout(rt, true, false, Park::Timer),
        fanout(rt, false, false, Park::Timer),
    );
    common::compare(
        "cancel fan-out 50k on a timer: #[cancellable] / select! task (both token + JoinSet)",
        None,
        61,
        fanout(rt, false, true, Park::Timer),
        fanout(rt, false, false, Park::Timer),
    );
    common::compare(
        "connection churn 10k: reaping Scope / TaskTracker + child token",
        Some(1.1),
        61,
        spawn_join(rt, churn_scope, CHURN_N),
        spawn_join(rt, churn_tracker, CHURN_N),
    );
    common::compare(
        "cancel fan-out 50k: #[cancellable] / select! task (both token + JoinSet)",
        None,
        61,
        fanout(rt, false, true, Park::Pending),
        fanout(rt, false, false, Park::Pending),
    );
    println!();
}

fn bench_spawn_join<Fut>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    f: fn(usize) -> Fut,
    n: usize,
) where
    Fut: Future<Output = Duration> + Send + 'static,
{
    g.bench_function(name, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| on_worker(rt, move || f(n))).sum());
    });
}

fn bench_fanout(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    scope: bool,
    on: Park,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    if scope {
                        on_worker(rt, move || fanout_scope(FANOUT_N, true, on))
                    } else {
                        on_worker(rt, move || fanout_joinset(FANOUT_N, false, on))
                    }
                })
                .sum()
        });
    });
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    if common::paired_enabled() {
        print_ratios(&rt);
    }

    let mut g = c.benchmark_group("scope/spawn_join_10k");
    g.sample_size(20);
    bench_spawn_join(&mut g, &rt, "scope", spawn_join_scope, SPAWN_N);
    bench_spawn_join(&mut g, &rt, "joinset", spawn_join_joinset, SPAWN_N);
    bench_spawn_join(
        &mut g,
        &rt,
        "joinset_child_token",
        spawn_join_joinset_token,
        SPAWN_N,
    );
    bench_spawn_join(
        &mut g,
        &rt,
        "joinset_child_token_ordered",
        spawn_join_joinset_token_ordered,
        SPAWN_N,
    );
    g.finish();

    let mut g = c.benchmark_group("scope/churn_10k");
    g.sample_size(20);
    bench_spawn_join(&mut g, &rt, "reaping_scope", churn_scope, CHURN_N);
    bench_spawn_join(&mut g, &rt, "task_tracker", churn_tracker, CHURN_N);
    g.finish();

    let mut g = c.benchmark_group("scope/cancel_fanout_50k");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    bench_fanout(&mut g, &rt, "scope_shutdown", true, Park::Pending);
    bench_fanout(&mut g, &rt, "token_joinset_select", false, Park::Pending);
    g.finish();

    let mut g = c.benchmark_group("scope/cancel_fanout_timer_50k");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    bench_fanout(&mut g, &rt, "scope_shutdown", true, Park::Timer);
    bench_fanout(&mut g, &rt, "token_joinset_select", false, Park::Timer);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
