//! The same-thread sample of `latency.rs`, for profiling its cancel ->
//! cleanup path: a wall-clock bench on a shared machine is noisy, instruction
//! counts are not. Variants: `macro` (the `#[cancellable]` fn with an
//! `on_cancel!`), `select` (cleanup inside the `select!` branch),
//! `select-dropped` (the `select!` ends first, as the macro orders it).
//!
//! - `<variant> <n>`: `n` samples, for `valgrind --tool=callgrind`. The
//!   spawned future is wrapped in `Probe`: its first poll (the task parks)
//!   goes through `park_poll`, its later polls (the task is cancelled and
//!   runs its cleanup) through `cancel_poll`, so that
//!   `callgrind_annotate --inclusive=yes` separates the two paths.
//! - `<variant> <n> window`: the same, and callgrind counts only the window
//!   `latency.rs` times, from just before `cancel()` to the cleanup's first
//!   statement (`CALLGRIND_TOGGLE_COLLECT` client requests around it; run
//!   with `--collect-atstart=no`).
//! - `time <n>`: wall clock, `n` samples of `macro` and of `select-dropped`
//!   interleaved, with their medians and their means below the 90th
//!   percentile (a mean is not rounded to the clock's nanosecond the way a
//!   median is).
//!
//! Run (release with debug info, so that callgrind names lines):
//! ```text
//! CARGO_PROFILE_BENCH_DEBUG=true cargo bench --bench latency_profile --no-run
//! valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=macro.out \
//!     target/release/deps/latency_profile-<hash> macro 2000 window
//! valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=select.out \
//!     target/release/deps/latency_profile-<hash> select-dropped 2000 window
//! callgrind_annotate --inclusive=yes macro.out | head -60
//! target/release/deps/latency_profile-<hash> time 200000
//! ```

#[path = "common/parked.rs"]
mod parked;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use cancel_scope::{CancellationToken, Cancelled};
use parked::{Stamp, parked_macro, parked_select, parked_select_dropped_first};

/// The cleanup's first statement ends callgrind's window.
fn cleanup_starts_hook() {
    window_ends();
}

/// Splits the polls of the spawned future: the first, and the rest.
struct Probe<F> {
    inner: Pin<Box<F>>,
    polled: bool,
}

impl<F: Future> Future for Probe<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if std::mem::replace(&mut self.polled, true) {
            cancel_poll(self.inner.as_mut(), cx)
        } else {
            park_poll(self.inner.as_mut(), cx)
        }
    }
}

#[inline(never)]
fn park_poll<F: Future>(f: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
    // Distinct from `cancel_poll`, so that the two are not folded into one.
    std::hint::black_box(1_u8);
    f.poll(cx)
}

#[inline(never)]
fn cancel_poll<F: Future>(f: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
    std::hint::black_box(2_u8);
    f.poll(cx)
}

fn probe<F: Future>(f: F) -> Probe<F> {
    Probe {
        inner: Box::pin(f),
        polled: false,
    }
}

/// With `window` as the third argument, callgrind counts only the timed
/// window (run it with `--collect-atstart=no`): from just before `cancel()`
/// to the first statement of the cleanup, as `latency.rs` times it.
static WINDOW: AtomicBool = AtomicBool::new(false);

fn window_starts() {
    if WINDOW.load(Ordering::Relaxed) {
        callgrind_toggle_collect();
    }
}

fn window_ends() {
    if WINDOW.load(Ordering::Relaxed) {
        callgrind_toggle_collect();
    }
}

/// `CALLGRIND_TOGGLE_COLLECT` (valgrind's client request, from
/// `callgrind.h`): a no-op outside valgrind.
#[inline(always)]
fn callgrind_toggle_collect() {
    #[cfg(target_arch = "x86_64")]
    {
        // VG_USERREQ_TOOL_BASE('C', 'T') + 2, and five unused arguments.
        let args: [u64; 6] = [0x4354_0002, 0, 0, 0, 0, 0];
        let mut result: u64 = 0;
        // SAFETY: valgrind's "special instruction preamble" followed by
        // `xchg rbx, rbx`; the four rotations of `rdi` add up to 128 bits
        // (no change) and the exchange is a no-op, so outside valgrind this
        // does nothing. Under valgrind it reads `args` and writes `rdx`.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") result,
                inout("rdi") 0_u64 => _,
            );
        }
        let _ = result;
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Macro,
    Select,
    SelectDroppedFirst,
}

/// `latency.rs`'s same-thread sample.
async fn sample(variant: Variant) -> std::time::Duration {
    let stamp = Arc::new(Stamp::default());
    let token = CancellationToken::new();
    let task = match variant {
        Variant::Macro => tokio::spawn(probe(parked_macro(token.clone(), stamp.clone()))),
        Variant::Select => tokio::spawn(probe(parked_select(token.clone(), stamp.clone()))),
        Variant::SelectDroppedFirst => tokio::spawn(probe(parked_select_dropped_first(
            token.clone(),
            stamp.clone(),
        ))),
    };
    while !stamp.parked.load(Ordering::Acquire) {
        tokio::task::yield_now().await;
    }
    let start = timed(&token, task).await;
    let at = *stamp.cleanup_at.get().expect("cleanup ran");
    at.saturating_duration_since(start)
}

/// What `latency.rs` times: from `cancel()` to the task's end.
#[inline(never)]
async fn timed(
    token: &CancellationToken,
    task: tokio::task::JoinHandle<Result<(), Cancelled>>,
) -> Instant {
    let start = Instant::now();
    window_starts();
    token.cancel();
    let result = task.await.expect("task");
    assert_eq!(result, Err(Cancelled::new()));
    start
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let first = args.next();
    if first.as_deref() == Some("time") {
        let n = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
        time(n);
        return;
    }
    let variant = match first.as_deref() {
        Some("macro") => Variant::Macro,
        Some("select") => Variant::Select,
        Some("select-dropped") => Variant::SelectDroppedFirst,
        // `cargo test --benches` runs it without arguments: a quick check.
        _ => {
            for variant in [Variant::Macro, Variant::Select, Variant::SelectDroppedFirst] {
                run(variant, 10);
            }
            return;
        }
    };
    let n = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    WINDOW.store(args.next().as_deref() == Some("window"), Ordering::Relaxed);
    run(variant, n);
}

/// Wall-clock: `n` samples of the macro and of the `select!` that drops
/// first, interleaved (so that a change of load hits both alike), then
/// their medians and their means below the 90th percentile (a mean is not
/// rounded to the clock's nanosecond the way one median is).
fn time(n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut m, mut s) = (Vec::with_capacity(n), Vec::with_capacity(n));
    rt.block_on(async {
        for i in 0..n + 1000 {
            let (a, b) = if i % 2 == 0 {
                let a = sample(Variant::Macro).await;
                (a, sample(Variant::SelectDroppedFirst).await)
            } else {
                let b = sample(Variant::SelectDroppedFirst).await;
                (sample(Variant::Macro).await, b)
            };
            if i >= 1000 {
                m.push(a.as_secs_f64() * 1e9);
                s.push(b.as_secs_f64() * 1e9);
            }
        }
    });
    let stats = |v: &mut Vec<f64>| {
        v.sort_unstable_by(f64::total_cmp);
        let p90 = v.len() * 9 / 10;
        let mean = v[..p90].iter().sum::<f64>() / p90 as f64;
        (v[v.len() / 2], mean)
    };
    let ((mm, ma), (sm, sa)) = (stats(&mut m), stats(&mut s));
    println!(
        "macro median {mm:.0} ns, mean<p90 {ma:.1} ns | select-dropped median {sm:.0} ns, mean<p90 {sa:.1} ns | ratio median {:.3}, mean<p90 {:.3}",
        mm / sm,
        ma / sa
    );
}

fn run(variant: Variant, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for _ in 0..n {
            let _ = sample(variant).await;
        }
    });
}
