//! `#[cancellable]` against the code it replaces, in the same criterion group:
//!
//! - `macro`: the `#[cancellable]` fn (injected owned token);
//! - `macro_ref_token`: the same fn with `#[token] token: &CancellationToken`
//!   (no `clone` per call; only where the body has no `on_cancel!`);
//! - `select`: the hand-written `tokio::select! { biased; .. }`, same
//!   signature, cancel branch running the cleanup;
//! - `run_until_cancelled`: `token.run_until_cancelled(body)`, same signature
//!   (no cleanup possible, so only in the groups without `on_cancel!`).
//!
//! Bodies: `ready` completes on its first poll, `yield` awaits
//! `tokio::task::yield_now()` once. The token is never cancelled while
//! timing (each variant is checked once, cancelled and not, before timing).
//!
//! Run: `cargo bench --bench cancellable -- --warm-up-time 1 --measurement-time 3`
//! The future sizes are printed first.

mod common;

use std::future::Future;
use std::hint::black_box;
use std::mem::size_of_val;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cancel_scope::{CancellationToken, Cancelled, cancellable, on_cancel};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;

/// Where the cleanups flush to: an async cleanup, as in the design's
/// `writer_loop` (`flush(out, &mut pending).await`).
#[derive(Default)]
struct Sink(AtomicU64);

impl Sink {
    async fn flush(&self, pending: u64) {
        self.0.fetch_add(pending, Ordering::Relaxed);
        tokio::task::yield_now().await;
    }

    fn flushed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn work(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

// ---- (a) body ready at once ----------------------------------------------

#[cancellable]
async fn ready_macro(x: u64) -> u64 {
    work(x)
}

#[cancellable]
async fn ready_macro_ref(#[token] token: &CancellationToken, x: u64) -> u64 {
    work(x)
}

async fn ready_select(token: CancellationToken, x: u64) -> Result<u64, Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => Err(Cancelled::new()),
        v = async { work(x) } => Ok(v),
    }
}

async fn ready_select_ref(token: &CancellationToken, x: u64) -> Result<u64, Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => Err(Cancelled::new()),
        v = async { work(x) } => Ok(v),
    }
}

async fn ready_ruc(token: CancellationToken, x: u64) -> Result<u64, Cancelled> {
    token
        .run_until_cancelled(async { work(x) })
        .await
        .ok_or(Cancelled::new())
}

// ---- (b) body yields once ------------------------------------------------

#[cancellable]
async fn yield_macro(x: u64) -> u64 {
    tokio::task::yield_now().await;
    work(x)
}

#[cancellable]
async fn yield_macro_ref(#[token] token: &CancellationToken, x: u64) -> u64 {
    tokio::task::yield_now().await;
    work(x)
}

async fn yield_select(token: CancellationToken, x: u64) -> Result<u64, Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => Err(Cancelled::new()),
        v = async {
            tokio::task::yield_now().await;
            work(x)
        } => Ok(v),
    }
}

async fn yield_select_ref(token: &CancellationToken, x: u64) -> Result<u64, Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => Err(Cancelled::new()),
        v = async {
            tokio::task::yield_now().await;
            work(x)
        } => Ok(v),
    }
}

async fn yield_ruc(token: CancellationToken, x: u64) -> Result<u64, Cancelled> {
    token
        .run_until_cancelled(async {
            tokio::task::yield_now().await;
            work(x)
        })
        .await
        .ok_or(Cancelled::new())
}

// ---- (c) with `on_cancel!`, without setup ---------------------------------

#[cancellable]
async fn cleanup_ready_macro(sink: &Sink, x: u64) -> u64 {
    on_cancel! { sink.flush(x).await; }
    work(x)
}

async fn cleanup_ready_select(
    token: CancellationToken,
    sink: &Sink,
    x: u64,
) -> Result<u64, Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => {
            sink.flush(x).await;
            Err(Cancelled::new())
        }
        v = async { work(x) } => Ok(v),
    }
}

#[cancellable]
async fn cleanup_yield_macro(sink: &Sink, x: u64) -> u64 {
    on_cancel! { sink.flush(x).await; }
    tokio::task::yield_now().await;
    work(x)
}

async fn cleanup_yield_select(
    token: CancellationToken,
    sink: &Sink,
    x: u64,
) -> Result<u64, Cancelled> {
    tokio::select! {
        biased;
        () = token.cancelled() => {
            sink.flush(x).await;
            Err(Cancelled::new())
        }
        v = async {
            tokio::task::yield_now().await;
            work(x)
        } => Ok(v),
    }
}

// ---- (c) with `on_cancel!` and a setup statement before it ----------------

#[cancellable]
async fn setup_ready_macro(sink: &Sink, x: u64) -> u64 {
    let mut pending = black_box(x);
    on_cancel! { sink.flush(pending).await; }
    pending = work(pending);
    pending
}

async fn setup_ready_select(
    token: CancellationToken,
    sink: &Sink,
    x: u64,
) -> Result<u64, Cancelled> {
    let mut pending = black_box(x);
    tokio::select! {
        biased;
        () = token.cancelled() => {
            sink.flush(pending).await;
            Err(Cancelled::new())
        }
        v = async {
            pending = work(pending);
            pending
        } => Ok(v),
    }
}

#[cancellable]
async fn setup_yield_macro(sink: &Sink, x: u64) -> u64 {
    let mut pending = black_box(x);
    on_cancel! { sink.flush(pending).await; }
    tokio::task::yield_now().await;
    pending = work(pending);
    pending
}

async fn setup_yield_select(
    token: CancellationToken,
    sink: &Sink,
    x: u64,
) -> Result<u64, Cancelled> {
    let mut pending = black_box(x);
    tokio::select! {
        biased;
        () = token.cancelled() => {
            sink.flush(pending).await;
            Err(Cancelled::new())
        }
        v = async {
            tokio::task::yield_now().await;
            pending = work(pending);
            pending
        } => Ok(v),
    }
}

// ---------------------------------------------------------------------------

fn runtime() -> Runtime {
    // No I/O or time driver: nothing here needs them, and without them a
    // `yield_now` costs a scheduler round trip, not an `epoll_wait`.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Every variant returns the same value on a live token and `Err(Cancelled)`
/// (with its cleanup run) on a cancelled one; checked once, before timing.
fn check(rt: &Runtime) {
    rt.block_on(async {
        let live = CancellationToken::new();
        let dead = CancellationToken::new();
        dead.cancel();
        let sink = Sink::default();
        let ok = Ok(21);

        macro_rules! same {
            ($($call:expr),* $(,)?) => {{
                $( assert_eq!($call.await, ok, "{}", stringify!($call)); )*
            }};
        }
        same!(
            ready_macro(live.clone(), 7),
            ready_macro_ref(&live, 7),
            ready_select(live.clone(), 7),
            ready_select_ref(&live, 7),
            ready_ruc(live.clone(), 7),
            yield_macro(live.clone(), 7),
            yield_macro_ref(&live, 7),
            yield_select(live.clone(), 7),
            yield_select_ref(&live, 7),
            yield_ruc(live.clone(), 7),
            cleanup_ready_macro(live.clone(), &sink, 7),
            cleanup_ready_select(live.clone(), &sink, 7),
            cleanup_yield_macro(live.clone(), &sink, 7),
            cleanup_yield_select(live.clone(), &sink, 7),
            setup_ready_macro(live.clone(), &sink, 7),
            setup_ready_select(live.clone(), &sink, 7),
            setup_yield_macro(live.clone(), &sink, 7),
            setup_yield_select(live.clone(), &sink, 7),
        );
        assert_eq!(sink.flushed(), 0, "a cleanup ran on a live token");

        let err = Err(Cancelled::new());
        assert_eq!(ready_macro(dead.clone(), 7).await, err);
        assert_eq!(ready_select(dead.clone(), 7).await, err);
        assert_eq!(ready_ruc(dead.clone(), 7).await, err);
        assert_eq!(yield_macro(dead.clone(), 7).await, err);
        assert_eq!(yield_select(dead.clone(), 7).await, err);
        let cleanups: [(&str, u64); 8] = [
            ("cleanup_ready_macro", {
                let _ = cleanup_ready_macro(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
            ("cleanup_ready_select", {
                let _ = cleanup_ready_select(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
            ("cleanup_yield_macro", {
                let _ = cleanup_yield_macro(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
            ("cleanup_yield_select", {
                let _ = cleanup_yield_select(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
            ("setup_ready_macro", {
                let _ = setup_ready_macro(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
            ("setup_ready_select", {
                let _ = setup_ready_select(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
            ("setup_yield_macro", {
                let _ = setup_yield_macro(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
            ("setup_yield_select", {
                let _ = setup_yield_select(dead.clone(), &sink, 1).await;
                sink.flushed()
            }),
        ];
        for (i, (name, flushed)) in cleanups.iter().enumerate() {
            assert_eq!(*flushed, i as u64 + 1, "{name}: cleanup did not run once");
        }
    });
}

/// The size of every variant's future, printed before the benchmarks.
fn print_sizes() {
    let t = CancellationToken::new();
    let s = Sink::default();
    let rows: [(&str, usize, usize, Option<usize>); 6] = [
        (
            "ready",
            size_of_val(&ready_macro(t.clone(), 1)),
            size_of_val(&ready_select(t.clone(), 1)),
            Some(size_of_val(&ready_ruc(t.clone(), 1))),
        ),
        (
            "ready, &token",
            size_of_val(&ready_macro_ref(&t, 1)),
            size_of_val(&ready_select_ref(&t, 1)),
            None,
        ),
        (
            "yield",
            size_of_val(&yield_macro(t.clone(), 1)),
            size_of_val(&yield_select(t.clone(), 1)),
            Some(size_of_val(&yield_ruc(t.clone(), 1))),
        ),
        (
            "yield, &token",
            size_of_val(&yield_macro_ref(&t, 1)),
            size_of_val(&yield_select_ref(&t, 1)),
            None,
        ),
        (
            "on_cancel!, ready",
            size_of_val(&cleanup_ready_macro(t.clone(), &s, 1)),
            size_of_val(&cleanup_ready_select(t.clone(), &s, 1)),
            None,
        ),
        (
            "on_cancel!, yield",
            size_of_val(&cleanup_yield_macro(t.clone(), &s, 1)),
            size_of_val(&cleanup_yield_select(t.clone(), &s, 1)),
            None,
        ),
    ];
    let setup_rows: [(&str, usize, usize); 2] = [
        (
            "setup + on_cancel!, ready",
            size_of_val(&setup_ready_macro(t.clone(), &s, 1)),
            size_of_val(&setup_ready_select(t.clone(), &s, 1)),
        ),
        (
            "setup + on_cancel!, yield",
            size_of_val(&setup_yield_macro(t.clone(), &s, 1)),
            size_of_val(&setup_yield_select(t.clone(), &s, 1)),
        ),
    ];
    println!("future sizes in bytes (size_of_val(&f(token, ..)))");
    println!(
        "| body | #[cancellable] | select! | run_until_cancelled | macro - select! |\n| --- | ---: | ---: | ---: | ---: |"
    );
    let all = rows
        .into_iter()
        .chain(setup_rows.into_iter().map(|(n, m, s)| (n, m, s, None)));
    for (name, mac, sel, ruc) in all {
        let ruc = ruc.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let diff = if mac >= sel {
            format!("+{}", mac - sel)
        } else {
            format!("-{}", sel - mac)
        };
        println!("| {name} | {mac} | {sel} | {ruc} | {diff} |");
    }
    println!();
}

/// Time per call of `f().await`, over a batch of `n` calls.
fn batch<F, Fut>(rt: &Runtime, n: u32, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            black_box(f().await);
        }
        start.elapsed() / n
    })
}

/// The ratios, measured in interleaved batches (see `common`).
fn print_ratios(rt: &Runtime) {
    const ROUNDS: usize = 101;
    const N: u32 = 4000;
    let t = &CancellationToken::new();
    let s = &Sink::default();
    common::print_header("paired ratios, #[cancellable] / by hand (current_thread runtime)");
    let pair = |name: &str,
                target: Option<f64>,
                a: &mut dyn FnMut() -> Duration,
                b: &mut dyn FnMut() -> Duration| {
        common::compare(name, target, ROUNDS, a, b);
    };
    pair(
        "ready: macro / select!",
        Some(0.5),
        &mut || batch(rt, N, || ready_macro(t.clone(), black_box(7))),
        &mut || batch(rt, N, || ready_select(t.clone(), black_box(7))),
    );
    pair(
        "ready: macro / run_until_cancelled",
        None,
        &mut || batch(rt, N, || ready_macro(t.clone(), black_box(7))),
        &mut || batch(rt, N, || ready_ruc(t.clone(), black_box(7))),
    );
    pair(
        "ready, &token: macro / select!",
        Some(0.5),
        &mut || batch(rt, N, || ready_macro_ref(t, black_box(7))),
        &mut || batch(rt, N, || ready_select_ref(t, black_box(7))),
    );
    pair(
        "yield: macro / select!",
        Some(1.0),
        &mut || batch(rt, N, || yield_macro(t.clone(), black_box(7))),
        &mut || batch(rt, N, || yield_select(t.clone(), black_box(7))),
    );
    pair(
        "yield: macro / run_until_cancelled",
        None,
        &mut || batch(rt, N, || yield_macro(t.clone(), black_box(7))),
        &mut || batch(rt, N, || yield_ruc(t.clone(), black_box(7))),
    );
    pair(
        "yield, &token: macro / select!",
        Some(1.0),
        &mut || batch(rt, N, || yield_macro_ref(t, black_box(7))),
        &mut || batch(rt, N, || yield_select_ref(t, black_box(7))),
    );
    pair(
        "on_cancel!, ready: macro / select!",
        Some(1.05),
        &mut || batch(rt, N, || cleanup_ready_macro(t.clone(), s, black_box(7))),
        &mut || batch(rt, N, || cleanup_ready_select(t.clone(), s, black_box(7))),
    );
    pair(
        "on_cancel!, yield: macro / select!",
        Some(1.05),
        &mut || batch(rt, N, || cleanup_yield_macro(t.clone(), s, black_box(7))),
        &mut || batch(rt, N, || cleanup_yield_select(t.clone(), s, black_box(7))),
    );
    pair(
        "setup + on_cancel!, ready: macro / select!",
        Some(1.05),
        &mut || batch(rt, N, || setup_ready_macro(t.clone(), s, black_box(7))),
        &mut || batch(rt, N, || setup_ready_select(t.clone(), s, black_box(7))),
    );
    pair(
        "setup + on_cancel!, yield: macro / select!",
        Some(1.05),
        &mut || batch(rt, N, || setup_yield_macro(t.clone(), s, black_box(7))),
        &mut || batch(rt, N, || setup_yield_select(t.clone(), s, black_box(7))),
    );
    assert_eq!(s.flushed(), 0, "a cleanup ran while timing");
    println!();
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    check(&rt);
    print_sizes();
    if common::paired_enabled() {
        print_ratios(&rt);
    }

    let token = CancellationToken::new();
    let sink = Sink::default();
    let (t, s) = (&token, &sink);

    let mut g = c.benchmark_group("cancellable/ready");
    g.bench_function("macro", |b| {
        b.to_async(&rt)
            .iter(|| ready_macro(t.clone(), black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt)
            .iter(|| ready_select(t.clone(), black_box(7)));
    });
    g.bench_function("run_until_cancelled", |b| {
        b.to_async(&rt).iter(|| ready_ruc(t.clone(), black_box(7)));
    });
    g.finish();

    let mut g = c.benchmark_group("cancellable/ready_ref_token");
    g.bench_function("macro", |b| {
        b.to_async(&rt).iter(|| ready_macro_ref(t, black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt).iter(|| ready_select_ref(t, black_box(7)));
    });
    g.finish();

    let mut g = c.benchmark_group("cancellable/yield");
    g.bench_function("macro", |b| {
        b.to_async(&rt)
            .iter(|| yield_macro(t.clone(), black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt)
            .iter(|| yield_select(t.clone(), black_box(7)));
    });
    g.bench_function("run_until_cancelled", |b| {
        b.to_async(&rt).iter(|| yield_ruc(t.clone(), black_box(7)));
    });
    g.finish();

    let mut g = c.benchmark_group("cancellable/yield_ref_token");
    g.bench_function("macro", |b| {
        b.to_async(&rt).iter(|| yield_macro_ref(t, black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt).iter(|| yield_select_ref(t, black_box(7)));
    });
    g.finish();

    let mut g = c.benchmark_group("cancellable/on_cancel_ready");
    g.bench_function("macro", |b| {
        b.to_async(&rt)
            .iter(|| cleanup_ready_macro(t.clone(), s, black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt)
            .iter(|| cleanup_ready_select(t.clone(), s, black_box(7)));
    });
    g.finish();

    let mut g = c.benchmark_group("cancellable/on_cancel_yield");
    g.bench_function("macro", |b| {
        b.to_async(&rt)
            .iter(|| cleanup_yield_macro(t.clone(), s, black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt)
            .iter(|| cleanup_yield_select(t.clone(), s, black_box(7)));
    });
    g.finish();

    let mut g = c.benchmark_group("cancellable/setup_on_cancel_ready");
    g.bench_function("macro", |b| {
        b.to_async(&rt)
            .iter(|| setup_ready_macro(t.clone(), s, black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt)
            .iter(|| setup_ready_select(t.clone(), s, black_box(7)));
    });
    g.finish();

    let mut g = c.benchmark_group("cancellable/setup_on_cancel_yield");
    g.bench_function("macro", |b| {
        b.to_async(&rt)
            .iter(|| setup_yield_macro(t.clone(), s, black_box(7)));
    });
    g.bench_function("select", |b| {
        b.to_async(&rt)
            .iter(|| setup_yield_select(t.clone(), s, black_box(7)));
    });
    g.finish();

    assert!(!token.is_cancelled());
    assert_eq!(sink.flushed(), 0, "a cleanup ran while timing");
}

criterion_group!(benches, bench);
criterion_main!(benches);
