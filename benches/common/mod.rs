//! Shared by the benches: a paired, interleaved ratio measurement.
//!
//! The benchmark machine is shared (other builds run on it), so the load
//! changes between two criterion benchmarks that run one after the other, and
//! so does the ratio of their times. `paired` times the two sides of a
//! comparison in alternating short batches (A B, B A, A B, ...) and reports the
//! median of the per-round ratios, which a slow drift of the background load
//! affects much less. The criterion groups report the absolute times.

#![allow(dead_code)] // not every bench uses every helper

use std::time::Duration;

/// `true` when the binary runs as `cargo bench` (criterion gets `--bench`),
/// not as `cargo test --benches` or with `--list`.
pub fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list" || a == "--test")
}

/// `true` unless `CANCEL_SCOPE_PAIRED=0`, and only when benchmarking.
pub fn paired_enabled() -> bool {
    benchmarking() && std::env::var("CANCEL_SCOPE_PAIRED").map_or(true, |v| v != "0")
}

/// The result of a paired comparison of `a` (cancel-scope) against `b` (by
/// hand). Times are per operation, medians over the rounds.
pub struct Ratio {
    pub median: f64,
    /// A 95% confidence interval of the median (order statistics).
    pub lo: f64,
    pub hi: f64,
    pub rounds: usize,
    pub a: Duration,
    pub b: Duration,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    // Positions are small and non-negative: the casts are exact enough.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs `rounds` rounds of one batch of `a` and one batch of `b`, in
/// alternating order; each closure runs one batch and returns its time per
/// operation.
pub fn paired(
    rounds: usize,
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> Ratio {
    // One untimed round of each to warm caches and allocators.
    a();
    b();
    let mut ratios = Vec::with_capacity(rounds);
    let mut ta = Vec::with_capacity(rounds);
    let mut tb = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = a();
            (x, b())
        } else {
            let y = b();
            (a(), y)
        };
        ratios.push(x.as_secs_f64() / y.as_secs_f64());
        ta.push(x);
        tb.push(y);
    }
    ratios.sort_unstable_by(f64::total_cmp);
    // The ranks n/2 -+ 0.98 sqrt(n) bound the median with ~95% confidence.
    let half = 0.98 * (rounds as f64).sqrt();
    let mid = (rounds as f64 - 1.0) / 2.0;
    Ratio {
        median: quantile(&ratios, 0.5),
        lo: quantile(&ratios, ((mid - half) / (rounds as f64 - 1.0)).max(0.0)),
        hi: quantile(&ratios, ((mid + half) / (rounds as f64 - 1.0)).min(1.0)),
        rounds,
        a: median_duration(ta),
        b: median_duration(tb),
    }
}

/// Runs one paired comparison and prints its row, unless
/// `CANCEL_SCOPE_PAIRED_FILTER` is set and `name` does not contain it.
/// `CANCEL_SCOPE_PAIRED_ROUNDS` overrides the number of rounds.
pub fn compare(
    name: &str,
    target: Option<f64>,
    rounds: usize,
    a: impl FnMut() -> Duration,
    b: impl FnMut() -> Duration,
) {
    if let Ok(filter) = std::env::var("CANCEL_SCOPE_PAIRED_FILTER") {
        if !name.contains(filter.as_str()) {
            return;
        }
    }
    let rounds = std::env::var("CANCEL_SCOPE_PAIRED_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(rounds);
    let r = paired(rounds, a, b);
    print_row(name, &r, target);
}

/// Prints the header of a ratio table.
pub fn print_header(title: &str) {
    println!("{title}");
    println!(
        "| comparison | ratio (median) | 95% CI | rounds | cancel-scope | by hand | target | met |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |");
}

/// Prints one row of a ratio table; `target` is the highest ratio allowed.
/// "met" is decided by the median; "(CI straddles)" when the confidence
/// interval of the median reaches across the target.
pub fn print_row(name: &str, r: &Ratio, target: Option<f64>) {
    let (target, met) = match target {
        Some(t) => {
            let met = if r.hi <= t {
                "yes"
            } else if r.lo > t {
                "NO"
            } else if r.median <= t {
                "yes (CI straddles)"
            } else {
                "NO (CI straddles)"
            };
            (format!("<= {t:.2}x"), met)
        }
        None => ("-".to_owned(), "-"),
    };
    println!(
        "| {name} | {:.3}x | {:.3}..{:.3} | {} | {:?} | {:?} | {target} | {met} |",
        r.median, r.lo, r.hi, r.rounds, r.a, r.b
    );
}
