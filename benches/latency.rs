//! Cancellation latency: from `token.cancel()` to the first statement of the
//! cleanup, for one task parked in a `#[cancellable]` fn with an `on_cancel!`
//! block, against the same task written by hand with `tokio::select!`
//! (`biased;`, cancel branch runs the cleanup). Same criterion group.
//!
//! - `same_thread`: current_thread runtime; the task is spawned and parked,
//!   then the `block_on` future cancels it and awaits it.
//! - `cross_thread`: multi-thread runtime with 2 workers; the task is parked
//!   on a worker and the bench's main thread (not a worker) cancels it, so
//!   the latency includes waking the worker.
//!
//! The cleanup writes `Instant::now()` into a shared slot; the time from just
//! before `cancel()` to that instant is the sample. Spawning and parking are
//! not timed.
//!
//! With `CANCEL_SCOPE_LATENCY_CSV` set, 2000 samples of each variant are taken
//! first (interleaved), written to `target/latency.csv` (or to the path the
//! variable names, if it is not `1`), summarised as percentiles, and plotted
//! as a CDF into `latency.svg` next to the CSV.
//!
//! Run: `cargo bench --bench latency -- --warm-up-time 1 --measurement-time 3`
//! Distribution: `CANCEL_SCOPE_LATENCY_CSV=1 cargo bench --bench latency -- --warm-up-time 1 --measurement-time 3`

mod common;
#[path = "common/parked.rs"]
mod parked;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cancel_scope::{CancellationToken, Cancelled};
use criterion::{Criterion, criterion_group, criterion_main};
use parked::{Stamp, parked_macro, parked_select, parked_select_dropped_first};
use tokio::runtime::Runtime;

/// Nothing: the cleanup's first statement only takes the time.
fn cleanup_starts_hook() {}

/// Which task a sample parks and cancels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Macro,
    Select,
    SelectDroppedFirst,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavor {
    SameThread,
    CrossThread,
}

fn runtime(flavor: Flavor) -> Runtime {
    match flavor {
        Flavor::SameThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::CrossThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .expect("runtime")
}

/// Where a sample's clock stops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Until {
    /// At the first statement of the cleanup.
    CleanupStarts,
    /// When the awaited task has returned its `Err(Cancelled)`: the whole
    /// cancel -> cleanup -> return path (a cleanup of one statement).
    Returned,
}

/// One sample: spawn a parked task, cancel it, return the time from
/// `cancel()` to the start of its cleanup (or to its return). Runs inside
/// `block_on`, so on the multi-thread runtime the cancel comes from the
/// main thread.
async fn sample(flavor: Flavor, variant: Variant, until: Until) -> Duration {
    let stamp = Arc::new(Stamp::default());
    let token = CancellationToken::new();
    let task = match variant {
        Variant::Macro => tokio::spawn(parked_macro(token.clone(), stamp.clone())),
        Variant::Select => tokio::spawn(parked_select(token.clone(), stamp.clone())),
        Variant::SelectDroppedFirst => {
            tokio::spawn(parked_select_dropped_first(token.clone(), stamp.clone()))
        }
    };
    match flavor {
        Flavor::SameThread => {
            // One thread: when the task has set `parked`, its poll has
            // returned `Pending` before this future runs again.
            while !stamp.parked.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
        }
        Flavor::CrossThread => {
            while !stamp.parked.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            // Let the worker's poll return `Pending` (and register the
            // waiter), and the worker go idle as it would in a quiet daemon.
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_micros(50) {
                std::hint::spin_loop();
            }
        }
    }

    let start = Instant::now();
    token.cancel();
    let result = task.await.expect("task");
    let returned = Instant::now();
    assert_eq!(result, Err(Cancelled::new()));
    let at = *stamp.cleanup_at.get().expect("cleanup ran");
    match until {
        Until::CleanupStarts => at.saturating_duration_since(start),
        Until::Returned => returned.saturating_duration_since(start),
    }
}

/// The median latency over `n` samples (the median, not the mean: one
/// descheduled sample on a shared machine would otherwise decide the round).
fn batch(rt: &Runtime, flavor: Flavor, variant: Variant, until: Until, n: usize) -> Duration {
    rt.block_on(async {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            samples.push(sample(flavor, variant, until).await);
        }
        samples.sort_unstable();
        samples[n / 2]
    })
}

fn print_ratios(same: &Runtime, cross: &Runtime) {
    use Flavor::{CrossThread, SameThread};
    use Until::{CleanupStarts, Returned};
    use Variant::{Select, SelectDroppedFirst};
    common::print_header("paired ratios, #[cancellable] / select! (median latency per batch)");
    // Each row: the macro against one hand-written variant, `n` samples a
    // batch.
    let rows = [
        (
            "latency, same thread",
            1.1,
            SameThread,
            Select,
            CleanupStarts,
            201,
        ),
        (
            "latency, same thread, vs select! dropping the body first",
            1.05,
            SameThread,
            SelectDroppedFirst,
            CleanupStarts,
            201,
        ),
        (
            "cancel -> cleanup -> return, same thread",
            1.05,
            SameThread,
            Select,
            Returned,
            201,
        ),
        (
            "cancel -> cleanup -> return, same thread, vs select! dropping the body first",
            1.05,
            SameThread,
            SelectDroppedFirst,
            Returned,
            201,
        ),
        (
            "latency, cross thread",
            1.1,
            CrossThread,
            Select,
            CleanupStarts,
            101,
        ),
    ];
    for (name, target, flavor, by_hand, until, n) in rows {
        let rt = if flavor == SameThread { same } else { cross };
        common::compare(
            name,
            Some(target),
            101,
            || batch(rt, flavor, Variant::Macro, until, n),
            || batch(rt, flavor, by_hand, until, n),
        );
    }
    println!();
}

// ---- distribution ------------------------------------------------------------

const SAMPLES: usize = 2000;

struct Series {
    name: &'static str,
    /// Sorted, in nanoseconds.
    ns: Vec<u64>,
}

impl Series {
    fn quantile(&self, q: f64) -> u64 {
        // Indices are small and non-negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((self.ns.len() - 1) as f64 * q).round() as usize;
        self.ns[i]
    }
}

fn csv_path() -> Option<PathBuf> {
    let v = std::env::var("CANCEL_SCOPE_LATENCY_CSV").ok()?;
    if v.is_empty() || v == "1" {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        );
        Some(target.join("latency.csv"))
    } else {
        Some(PathBuf::from(v))
    }
}

fn collect(same: &Runtime, cross: &Runtime) -> Vec<Series> {
    let mut out = Vec::new();
    for (flavor, rt) in [(Flavor::SameThread, same), (Flavor::CrossThread, cross)] {
        let (mut m, mut s) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
        rt.block_on(async {
            // Interleaved, so load changes hit both alike; a few warm-up runs.
            for i in 0..SAMPLES + 50 {
                let (a, b) = if i % 2 == 0 {
                    let a = sample(flavor, Variant::Macro, Until::CleanupStarts).await;
                    (
                        a,
                        sample(flavor, Variant::Select, Until::CleanupStarts).await,
                    )
                } else {
                    let b = sample(flavor, Variant::Select, Until::CleanupStarts).await;
                    (
                        sample(flavor, Variant::Macro, Until::CleanupStarts).await,
                        b,
                    )
                };
                if i >= 50 {
                    m.push(u64::try_from(a.as_nanos()).unwrap_or(u64::MAX));
                    s.push(u64::try_from(b.as_nanos()).unwrap_or(u64::MAX));
                }
            }
        });
        m.sort_unstable();
        s.sort_unstable();
        let (name_m, name_s) = match flavor {
            Flavor::SameThread => ("same_thread/macro", "same_thread/select"),
            Flavor::CrossThread => ("cross_thread/macro", "cross_thread/select"),
        };
        out.push(Series {
            name: name_m,
            ns: m,
        });
        out.push(Series {
            name: name_s,
            ns: s,
        });
    }
    out
}

fn write_csv(path: &PathBuf, series: &[Series]) -> std::io::Result<()> {
    let mut csv = String::from("variant,rank,latency_ns\n");
    for s in series {
        for (i, ns) in s.ns.iter().enumerate() {
            let _ = writeln!(csv, "{},{i},{ns}", s.name);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, csv)
}

fn print_percentiles(series: &[Series]) {
    println!("latency distribution, {SAMPLES} samples each (ns)");
    println!("| variant | p10 | p50 | p90 | p99 | p99.9 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in series {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            s.quantile(0.10),
            s.quantile(0.50),
            s.quantile(0.90),
            s.quantile(0.99),
            s.quantile(0.999),
            s.ns[s.ns.len() - 1],
        );
    }
    println!();
}

/// A hand-written SVG: one CDF per series, log-scaled latency axis.
fn svg(series: &[Series]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 60.0; // left margin
    const R: f64 = 20.0;
    const T: f64 = 30.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 4] = ["#d62728", "#ff9896", "#1f77b4", "#aec7e8"];
    let min = series.iter().map(|s| s.ns[0]).min().unwrap_or(1).max(1);
    let max = series
        .iter()
        .map(|s| s.quantile(0.999))
        .max()
        .unwrap_or(10)
        .max(min * 10);
    let (lo, hi) = (
        10f64.powf((min as f64).log10().floor()),
        10f64.powf((max as f64).log10().ceil()),
    );
    let x =
        |ns: f64| L + (ns.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * (W - L - R);
    let y = |p: f64| T + (1.0 - p) * (H - T - B);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">cancel() to cleanup start: CDF ({SAMPLES} samples each, p99.9 cut)</text>"#,
        W / 2.0
    );
    // Axes, decade grid lines and labels.
    let mut decade = lo;
    while decade <= hi * 1.001 {
        let gx = x(decade);
        let label = if decade >= 1e6 {
            format!("{}ms", decade / 1e6)
        } else if decade >= 1e3 {
            format!("{}µs", decade / 1e3)
        } else {
            format!("{decade}ns")
        };
        let _ = writeln!(
            out,
            r##"<line x1="{gx:.1}" y1="{T}" x2="{gx:.1}" y2="{}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            H - B,
            H - B + 16.0
        );
        decade *= 10.0;
    }
    for p in [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
        let gy = y(p);
        let _ = writeln!(
            out,
            r##"<line x1="{L}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{p}</text>"##,
            W - R,
            L - 6.0,
            gy + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">latency (log scale)</text>"#,
        (L + W - R) / 2.0,
        H - 12.0
    );
    for (i, s) in series.iter().enumerate() {
        let n = s.ns.len() as f64;
        let cut = s.quantile(0.999);
        let mut points = String::new();
        for (rank, &ns) in s.ns.iter().enumerate().filter(|&(_, &ns)| ns <= cut) {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x(ns as f64),
                y((rank + 1) as f64 / n)
            );
        }
        let color = COLORS[i % COLORS.len()];
        let dash = if s.name.ends_with("select") {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{points}"/>"#
        );
        // Bottom right: slow and rare, where no CDF goes.
        let ly = H - B - 76.0 + 16.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{} (p50 {}ns)</text>"#,
            W - R - 300.0,
            W - R - 270.0,
            W - R - 264.0,
            ly + 4.0,
            s.name,
            s.quantile(0.5)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn distribution(same: &Runtime, cross: &Runtime) {
    let Some(path) = csv_path() else { return };
    let series = collect(same, cross);
    print_percentiles(&series);
    match write_csv(&path, &series) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
    let svg_path = path.with_extension("svg");
    match std::fs::write(&svg_path, svg(&series)) {
        Ok(()) => println!("wrote {}\n", svg_path.display()),
        Err(e) => println!("could not write {}: {e}\n", svg_path.display()),
    }
}

// ------------------------------------------------------------------------------

fn bench(c: &mut Criterion) {
    let same = runtime(Flavor::SameThread);
    let cross = runtime(Flavor::CrossThread);
    if common::benchmarking() {
        distribution(&same, &cross);
    }
    if common::paired_enabled() {
        print_ratios(&same, &cross);
    }

    for (flavor, rt, group) in [
        (Flavor::SameThread, &same, "latency/same_thread"),
        (Flavor::CrossThread, &cross, "latency/cross_thread"),
    ] {
        let mut g = c.benchmark_group(group);
        for (name, variant) in [("macro", Variant::Macro), ("select", Variant::Select)] {
            g.bench_function(name, |b| {
                b.to_async(rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += sample(flavor, variant, Until::CleanupStarts).await;
                    }
                    total
                });
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
