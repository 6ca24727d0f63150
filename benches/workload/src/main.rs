//! The workload benchmark: what cancel-scope costs an HTTP server.
//!
//! A hyper HTTP/1.1 server on 127.0.0.1, in two variants (see `server.rs`):
//! its connections in a reaping `Scope` with `#[cancellable]` handlers, or
//! in a `TaskTracker` with a child token per connection and `select!` in the
//! handlers, by hand. A load generator in the same process (`client.rs`,
//! keep-alive connections on raw TCP, its own single-thread runtime) drives
//! each in turn:
//!
//! 1. **load**: `--connections` clients send requests back to back for
//!    `--seconds`; requests per second, p50 and p99 latency;
//! 2. **drain**: `--drain` keep-alive connections are opened (one request
//!    each, then idle) by a child process (each side of 10k connections
//!    needs its own file descriptors), then the server shuts down: the time
//!    from the cancel until every connection is closed (the client then
//!    checks that it saw the server close each one).
//!
//! The variants alternate (A B, B A, ...), `--rounds` load rounds then
//! `--drain-rounds` drain rounds, after an untimed warm-up; each row is the
//! median of the per-round ratios Scope / by hand (with a 95% confidence
//! interval of that median), so that a drift of the machine's load cancels
//! out.
//!
//! Run: `benches/workload/run.sh` (release build), e.g.
//! `benches/workload/run.sh --rounds 80` (defaults: 40 load rounds of
//! 0.25 s with 32 connections, 10 drain rounds of 10,000 connections, 2
//! server workers).

mod client;
mod server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use server::{Server, Variant};
use tokio::runtime::Runtime;

struct Config {
    rounds: usize,
    seconds: f64,
    drain_rounds: usize,
    connections: usize,
    drain: usize,
    workers: usize,
    /// `--only scope|by-hand`: one load run of `requests` requests on one
    /// variant, nothing else (for an instruction count under callgrind).
    only: Option<Variant>,
    requests: usize,
}

impl Config {
    fn from_args() -> Config {
        let mut config = Config {
            rounds: 40,
            seconds: 0.25,
            drain_rounds: 10,
            connections: 32,
            drain: 10_000,
            workers: 2,
            only: None,
            requests: 20_000,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.chunks(2) {
            let value = || Value(&pair[0], pair.get(1).map(String::as_str));
            match pair[0].as_str() {
                "--rounds" => config.rounds = value().parse(),
                "--seconds" => config.seconds = value().parse(),
                "--connections" => config.connections = value().parse(),
                "--drain" => config.drain = value().parse(),
                "--drain-rounds" => config.drain_rounds = value().parse(),
                "--workers" => config.workers = value().parse(),
                "--requests" => config.requests = value().parse(),
                "--only" => config.only = Some(value().variant()),
                other => panic!(
                    "unknown argument {other}; expected --rounds, --seconds, --connections, \
                     --drain, --drain-rounds, --workers, --only, --requests (each with a value)"
                ),
            }
        }
        config
    }
}

/// A flag's value, as written.
struct Value<'a>(&'a str, Option<&'a str>);

impl Value<'_> {
    fn parse<T: std::str::FromStr>(&self) -> T {
        let value = self.1.unwrap_or_default();
        value
            .parse()
            .unwrap_or_else(|_| panic!("bad value {value:?} for {}", self.0))
    }

    fn variant(&self) -> Variant {
        match self.1 {
            Some("scope") => Variant::Scope,
            Some("by-hand") => Variant::ByHand,
            other => panic!("bad value {other:?} for {}: scope or by-hand", self.0),
        }
    }
}

/// One load run's figures.
#[derive(Clone, Copy)]
struct Load {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn load_run(server_rt: &Runtime, client_rt: &Runtime, variant: Variant, config: &Config) -> Load {
    let server = Server::start(server_rt, variant);
    // `--only`: a count of requests, however long they take (under
    // callgrind, a hundred times longer).
    let (duration, per_connection) = match config.only {
        Some(_) => (
            Duration::from_secs(3600),
            config.requests / config.connections,
        ),
        None => (Duration::from_secs_f64(config.seconds), 1_000_000),
    };
    let (mut latencies, elapsed) = client_rt
        .block_on(client::load(
            server.addr,
            config.connections,
            duration,
            per_connection,
        ))
        .expect("load run");
    server.drain(server_rt);
    latencies.sort_unstable();
    let at = |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let per_second = latencies.len() as f64 / elapsed.as_secs_f64();
    Load {
        per_second,
        p50: at(50),
        p99: at(99),
    }
}

/// Opens `n` keep-alive connections (one request each) from a child
/// process (so that each side has its own file descriptors), then shuts the
/// server down: the time until every connection is closed.
fn drain_run(server_rt: &Runtime, variant: Variant, n: usize) -> Duration {
    let server = Server::start(server_rt, variant);
    let mut child = Command::new(std::env::current_exe().expect("this program"))
        .args(["--drain-client", &server.addr.to_string(), &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the drain client");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut next_line = || lines.next().expect("a line").expect("the client's output");
    assert_eq!(next_line(), "ready", "the client opened its connections");
    let elapsed = server.drain(server_rt);
    assert_eq!(
        next_line(),
        format!("closed {n}"),
        "the server closed every connection"
    );
    assert!(child.wait().expect("the client ends").success());
    elapsed
}

/// The drain's client (a child process): opens `n` connections to `addr`,
/// one request each, says `ready`, then `closed <k>` once the server has
/// closed them (`k` of them within a minute).
fn drain_client(addr: &str, n: usize) {
    let addr = addr.parse().expect("an address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let clients = rt.block_on(async move {
        let mut clients = Vec::with_capacity(n);
        // A few hundred at a time, below the listener's backlog.
        for batch in (0..n).collect::<Vec<_>>().chunks(200) {
            let mut opening = tokio::task::JoinSet::new();
            for _ in batch {
                opening.spawn(async move {
                    let mut client = client::Client::connect(addr).await?;
                    client.request().await?;
                    Ok::<_, std::io::Error>(client)
                });
            }
            while let Some(opened) = opening.join_next().await {
                clients.push(opened.expect("client task").expect("connection"));
            }
        }
        clients
    });
    println!("ready");
    let closed = rt.block_on(async {
        let mut closing = tokio::task::JoinSet::new();
        for client in clients {
            closing.spawn(client.closed_by_server());
        }
        let all = tokio::time::timeout(Duration::from_secs(60), closing.join_all()).await;
        all.map_or(0, |all| all.into_iter().filter(|&c| c).count())
    });
    println!("closed {closed}");
}

/// `rounds` rounds of `run` on each variant, in alternating order (A B,
/// B A, ...): per round, `[Scope, by hand]`.
fn alternate<T: Copy>(rounds: usize, mut run: impl FnMut(Variant) -> T) -> Vec<[T; 2]> {
    (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let scope = run(Variant::Scope);
                [scope, run(Variant::ByHand)]
            } else {
                let by_hand = run(Variant::ByHand);
                [run(Variant::Scope), by_hand]
            }
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, addr, n] = &args[..] {
        if flag == "--drain-client" {
            fds::scale(n.parse().expect("a count"));
            return drain_client(addr, n.parse().expect("a count"));
        }
    }
    let mut config = Config::from_args();
    config.drain = fds::scale(config.drain);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    if let Some(variant) = config.only {
        load_run(&server_rt, &client_rt, variant, &config);
        let served = config.requests / config.connections * config.connections;
        println!("workload: {variant:?}: {served} requests served");
        return;
    }
    println!(
        "workload: load: {} rounds of {} connections for {} s; drain: {} rounds of {} \
         connections; server: {} workers, load generator: 1 thread",
        config.rounds,
        config.connections,
        config.seconds,
        config.drain_rounds,
        config.drain,
        config.workers
    );

    // Warm-up, untimed.
    for variant in [Variant::Scope, Variant::ByHand] {
        load_run(&server_rt, &client_rt, variant, &config);
        drain_run(&server_rt, variant, config.drain.min(1000));
    }
    let loads = alternate(config.rounds, |variant| {
        load_run(&server_rt, &client_rt, variant, &config)
    });
    let drains = alternate(config.drain_rounds, |variant| {
        drain_run(&server_rt, variant, config.drain)
    });
    report::print(&loads, &drains);
}

mod fds {
    /// Raises the soft limit on open files so that `drain` connections fit
    /// (each process holds one end; as far as the hard limit, or past it if
    /// the process may); else scales `drain` down, and says so.
    pub fn scale(drain: usize) -> usize {
        let want = u64::try_from(drain + 256).expect("small");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
            return drain;
        }
        if limit.rlim_cur >= want {
            return drain;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: limit.rlim_max.max(want),
        };
        // SAFETY: a valid rlimit; failure leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            return drain;
        }
        let soft = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above; the soft limit may always rise to the hard one.
        let cur = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const soft) } == 0 {
            limit.rlim_max
        } else {
            limit.rlim_cur
        };
        let fits = usize::try_from(cur.saturating_sub(256)).unwrap_or(drain);
        println!(
            "workload: the open-file limit is {cur}: the drain uses {fits} connections, not {drain}"
        );
        fits.min(drain)
    }
}

mod report {
    use std::time::Duration;

    use super::Load;

    /// The median of `v` and a 95% confidence interval for it (the ranks
    /// n/2 -+ 0.98 sqrt(n), as the criterion benches' paired tables).
    fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
        v.sort_unstable_by(f64::total_cmp);
        let n = v.len();
        // Small, non-negative ranks: the casts are exact enough.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let half = (0.98 * (n as f64).sqrt()) as usize;
        let lo = (n / 2).saturating_sub(half);
        let hi = (n / 2 + half).min(n - 1);
        (v[n / 2], v[lo], v[hi])
    }

    fn row(name: &str, target: &str, ratios: Vec<f64>, scope: &str, by_hand: &str) {
        let n = ratios.len();
        let (median, lo, hi) = spread(ratios);
        println!(
            "| {name} | {median:.3}x | {lo:.3}..{hi:.3} | {n} | {scope} | {by_hand} | {target} |"
        );
    }

    fn median_of(v: impl Iterator<Item = f64>) -> f64 {
        spread(v.collect()).0
    }

    pub fn print(loads: &[[Load; 2]], drains: &[[Duration; 2]]) {
        println!(
            "| metric | Scope / by hand (median) | 95% CI | rounds | Scope | by hand | goal |"
        );
        println!("| --- | ---: | --- | ---: | ---: | ---: | --- |");
        let ms = |d: f64| format!("{:.1} µs", d * 1e6);
        let side = |i: usize, f: fn(&Load) -> f64| median_of(loads.iter().map(|l| f(&l[i])));
        let per_second: fn(&Load) -> f64 = |l| l.per_second;
        let p50: fn(&Load) -> f64 = |l| l.p50.as_secs_f64();
        let p99: fn(&Load) -> f64 = |l| l.p99.as_secs_f64();
        let ratios = |f: fn(&Load) -> f64| loads.iter().map(|l| f(&l[0]) / f(&l[1])).collect();
        row(
            "requests/s",
            ">= 0.98x",
            ratios(per_second),
            &format!("{:.0}", side(0, per_second)),
            &format!("{:.0}", side(1, per_second)),
        );
        row(
            "p50 latency",
            "-",
            ratios(p50),
            &ms(side(0, p50)),
            &ms(side(1, p50)),
        );
        row(
            "p99 latency",
            "<= 1.05x",
            ratios(p99),
            &ms(side(0, p99)),
            &ms(side(1, p99)),
        );
        let drain = |i: usize| median_of(drains.iter().map(|d| d[i].as_secs_f64()));
        row(
            "drain",
            "<= 1.1x",
            drains
                .iter()
                .map(|d| d[0].as_secs_f64() / d[1].as_secs_f64())
                .collect(),
            &format!("{:.1} ms", drain(0) * 1e3),
            &format!("{:.1} ms", drain(1) * 1e3),
        );
        println!("(each ratio is per round, Scope / by hand; the times are medians)");
    }
}
