//! The HTTP example of cancel-scope: a hyper server run by
//! `cancel_scope::daemon`, whose in-flight requests finish on shutdown while
//! new connections are refused.
//!
//! `cargo run --example http` runs [`demo`]: the server, a few clients that
//! keep it busy with slow requests, a shutdown in the middle of them, and a
//! report of what each side saw.
//!
//! The server is one subsystem, `/http/listener`: an accept loop that runs
//! each connection as a task of a [`Scope`]. `GET /ready` answers 200 while
//! the daemon serves and 503 from the first signal on: with a drain
//! ([`Daemon::drain`], `--drain <secs>`), a load balancer sees the 503 and
//! stops sending new requests while those it still sends are answered in
//! full. When the drain is over, or without one, the daemon stops it:
//!
//! 1. the accept loop ends and drops the listener: from then on a new
//!    connection is refused by the kernel;
//! 2. each connection is told to shut down gracefully (hyper's
//!    `graceful_shutdown`): an idle keep-alive connection is closed at once,
//!    one with a request in flight answers it (with `connection: close`)
//!    and then closes;
//! 3. `Scope::shutdown_report` waits for them all, within the grace period;
//! 4. each request's cleanup (a guard dropped when its handler ends, however
//!    it ends) releases its slot and counts it as completed or cut.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cancel_scope::daemon::{Daemon, DaemonReport, Readiness, Subsystem, SubsystemHandle};
use cancel_scope::{CancellationToken, Scope, ShutdownSignal, TaskOutcome};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

pub mod client;

/// What the server counts; read with [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    completed: AtomicU64,
    cut: AtomicU64,
    in_flight_at_shutdown: AtomicU64,
    answered_during_drain: AtomicU64,
}

/// The server's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub connections: u64,
    /// Requests whose handler began.
    pub requests: u64,
    /// Requests whose handler is running.
    pub in_flight: u64,
    /// Requests answered in full.
    pub completed: u64,
    /// Requests whose handler was dropped before it answered (aborted, or
    /// the client went away).
    pub cut: u64,
    /// Requests in flight when the listener stopped accepting.
    pub in_flight_at_shutdown: u64,
    /// Requests answered during the drain: after the first signal, before
    /// the listener stopped accepting.
    pub answered_during_drain: u64,
}

impl Stats {
    /// The counters, now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(SeqCst),
            requests: self.requests.load(SeqCst),
            in_flight: self.in_flight.load(SeqCst),
            completed: self.completed.load(SeqCst),
            cut: self.cut.load(SeqCst),
            in_flight_at_shutdown: self.in_flight_at_shutdown.load(SeqCst),
            answered_during_drain: self.answered_during_drain.load(SeqCst),
        }
    }
}

/// A running server: its address, its counters, and a way to stop it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    signal: Arc<ShutdownSignal>,
    stats: Arc<Stats>,
    daemon: tokio::task::JoinHandle<DaemonReport>,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Its counters, to read after it stopped.
    pub fn counters(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Asks it to shut down, as a SIGTERM would (a second call, or a real
    /// Ctrl-C after it, aborts what is left).
    pub fn shutdown(&self, why: &'static str) {
        self.signal.trigger(why);
    }

    /// Waits for it to stop; returns the daemon's report.
    ///
    /// # Panics
    /// If the daemon's task panicked (a bug).
    pub async fn stopped(self) -> DaemonReport {
        self.daemon.await.expect("the daemon's task does not panic")
    }
}

/// Binds `addr` and serves on it, stopped by `signal` (Ctrl-C, SIGTERM or
/// a `trigger`), with `grace` for the in-flight requests; the daemon's log
/// goes to `log`.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn start(
    addr: SocketAddr,
    grace: Duration,
    signal: Arc<ShutdownSignal>,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> io::Result<Server> {
    let listener = TcpListener::bind(addr).await?;
    let timing = Timing {
        grace,
        drain: Duration::ZERO,
    };
    start_on(listener, timing, signal, log)
}

/// How long the server drains, then how long its shutdown may take.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// For the in-flight requests, once the listener stopped accepting.
    pub grace: Duration,
    /// From the first signal: `/ready` answers 503, everything else is
    /// served as before.
    pub drain: Duration,
}

/// Serves on `listener`, stopped by `signal`, with `timing`; the daemon's
/// log goes to `log`.
///
/// # Errors
/// When `listener` has no local address.
///
/// # Panics
/// Outside a Tokio runtime.
pub fn start_on(
    listener: TcpListener,
    timing: Timing,
    signal: Arc<ShutdownSignal>,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> io::Result<Server> {
    let addr = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let daemon = Daemon::new("http")
        .grace(timing.grace)
        .drain(timing.drain)
        .signal(Arc::clone(&signal))
        .print_tree_on_sigusr1()
        .log_with(log);
    let s = Arc::clone(&stats);
    let daemon = tokio::spawn(daemon.run(move |http| async move {
        http.start(listener_subsystem(listener, s, timing.grace));
    }));
    Ok(Server {
        addr,
        signal,
        stats,
        daemon,
    })
}

/// The server as a subsystem, `listener`: serves on `listener`, counts in
/// `stats`, and stops as the module's docs say, within the daemon's
/// `grace` period.
pub fn listener_subsystem(listener: TcpListener, stats: Arc<Stats>, grace: Duration) -> Subsystem {
    Subsystem::new("listener", move |handle| {
        serve(handle, listener, stats, grace)
    })
}

/// The accept loop, until the subsystem's token is cancelled; then the
/// graceful shutdown of the connections.
async fn serve(
    handle: SubsystemHandle,
    listener: TcpListener,
    stats: Arc<Stats>,
    grace: Duration,
) -> io::Result<()> {
    let token = handle.token().clone();
    let readiness = handle.readiness();
    let mut connections: Scope<()> = Scope::child_of(&token);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // A connection that failed before it was accepted, or
                    // out of file descriptors: not the listener's end.
                    Err(e) => {
                        eprintln!("http: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                stats.connections.fetch_add(1, SeqCst);
                let served = Served {
                    stats: Arc::clone(&stats),
                    readiness: readiness.clone(),
                    listening: token.clone(),
                };
                connections.spawn_named(format!("connection {peer}"), move |token| {
                    connection(token, stream, served)
                });
            }
            // Finished connections leave the scope as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // From here on a new connection is refused.
    drop(listener);
    let in_flight = stats.in_flight.load(SeqCst);
    stats.in_flight_at_shutdown.store(in_flight, SeqCst);
    // The daemon's grace period bounds the whole shutdown and aborts this
    // subsystem when it ends; the scope's own bound only backs it up, so it
    // is longer (with the same bound, the two timers raced and the scope
    // sometimes cut the request first, leaving the daemon unaware it had
    // been forced).
    let report = connections.shutdown_report(grace.saturating_mul(2)).await;
    let open = report.tasks().len();
    let closed = report.count(TaskOutcome::Stopped) + report.count(TaskOutcome::Completed);
    let s = stats.snapshot();
    handle.note(format!(
        "served {} requests on {} connections ({} during the drain); at the shutdown: \
         stopped accepting, {in_flight} requests in flight, {closed} of {open} open connections \
         closed gracefully; {} requests cut",
        s.completed, s.connections, s.answered_during_drain, s.cut
    ));
    Ok(())
}

/// What a request needs to know of its server.
#[derive(Clone)]
struct Served {
    stats: Arc<Stats>,
    readiness: Readiness,
    /// The listener's token: cancelled when it stops accepting.
    listening: CancellationToken,
}

impl Served {
    /// After the first signal, before the listener stopped accepting.
    fn draining(&self) -> bool {
        !self.readiness.is_ready() && !self.listening.is_cancelled()
    }
}

/// One connection: served until it closes, or, once `token` is cancelled,
/// until hyper's graceful shutdown has answered what is in flight.
async fn connection(token: CancellationToken, stream: TcpStream, served: Served) {
    let service = service_fn(move |request| respond(request, served.clone()));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        // A client that goes away is the client's business.
        _ = conn.as_mut() => {}
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A request's cleanup, run when its handler ends however it ends:
/// releases its slot and counts it.
struct InFlight<'a> {
    stats: &'a Stats,
    answered: bool,
}

impl<'a> InFlight<'a> {
    fn begin(stats: &'a Stats) -> Self {
        stats.requests.fetch_add(1, SeqCst);
        stats.in_flight.fetch_add(1, SeqCst);
        InFlight {
            stats,
            answered: false,
        }
    }

    /// Its answer is ready: counted as answered, and as answered during
    /// the drain if it is one.
    fn answered(&mut self, served: &Served) {
        self.answered = true;
        if served.draining() {
            self.stats.answered_during_drain.fetch_add(1, SeqCst);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let counter = if self.answered {
            &self.stats.completed
        } else {
            &self.stats.cut
        };
        counter.fetch_add(1, SeqCst);
        self.stats.in_flight.fetch_sub(1, SeqCst);
    }
}

/// `GET /slow?ms=N` answers after N ms (at most 10 s); `GET /ready` 200
/// while the daemon is ready, 503 from the first signal on; anything else
/// at once.
async fn respond(
    request: Request<Incoming>,
    served: Served,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut in_flight = InFlight::begin(&served.stats);
    if request.uri().path() == "/ready" {
        let ready = served.readiness.is_ready();
        in_flight.answered(&served);
        let (status, body) = if ready {
            (hyper::StatusCode::OK, "ready\n")
        } else {
            (hyper::StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        return Ok(response);
    }
    let ms = match request.uri().path() {
        "/slow" => request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|ms| ms.parse::<u64>().ok())
            .unwrap_or(500)
            .min(10_000),
        _ => 0,
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    in_flight.answered(&served);
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{} answered after {ms} ms\n",
        request.uri()
    )))))
}

/// What [`demo`] does.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// How long the clients keep the server busy before the shutdown.
    pub run_for: Duration,
    /// How many clients.
    pub clients: usize,
    /// How long each request takes on the server.
    pub request_time: Duration,
    /// For the in-flight requests.
    pub grace: Duration,
    /// From the signal: `/ready` answers 503, everything is served on.
    pub drain: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            run_for: Duration::from_millis(1000),
            clients: 4,
            request_time: Duration::from_millis(300),
            grace: Duration::from_secs(5),
            drain: Duration::from_millis(500),
        }
    }
}

/// What [`demo`] saw, from both sides.
#[derive(Debug)]
pub struct DemoReport {
    /// The server's daemon.
    pub daemon: DaemonReport,
    /// The server's counters at the end.
    pub server: StatsSnapshot,
    /// What the clients saw, all together.
    pub clients: client::Tally,
    /// A connection tried after the shutdown began was refused.
    pub refused_after_shutdown: bool,
    /// The status `/ready` answered right after the signal (503 while
    /// draining).
    pub ready_after_signal: Option<u16>,
}

impl DemoReport {
    /// 0 when every request the server began was answered in full and
    /// every client got every answer it waited for; else 1, or the
    /// daemon's code.
    pub fn code(&self) -> u8 {
        let nothing_cut = self.server.cut == 0 && self.clients.broken == 0;
        match self.daemon.code() {
            0 if nothing_cut && self.refused_after_shutdown => 0,
            0 => 1,
            code => code,
        }
    }
}

/// The demo: a server on 127.0.0.1, `clients` clients sending slow
/// requests on keep-alive connections, a shutdown after `run_for` while
/// requests are in flight, a new connection tried during the shutdown.
/// Writes the story to `out`.
///
/// # Errors
/// When the server cannot bind, or `out` fails.
pub async fn demo(config: &DemoConfig, out: &mut impl io::Write) -> io::Result<DemoReport> {
    let signal = Arc::new(ShutdownSignal::install()?);
    let (log_tx, mut log) = tokio::sync::mpsc::unbounded_channel::<String>();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let timing = Timing {
        grace: config.grace,
        drain: config.drain,
    };
    let server = start_on(listener, timing, signal, move |line| {
        let _ = log_tx.send(format!("server: {line}"));
    })?;
    let addr = server.addr();
    writeln!(
        out,
        "http: listening on http://{addr} (try: curl 'http://{addr}/slow?ms=500'); \
         {} clients; shutdown after {:?}",
        config.clients, config.run_for
    )?;
    let clients: Vec<_> = (0..config.clients)
        .map(|_| tokio::spawn(client::keep_busy(addr, config.request_time)))
        .collect();
    tokio::time::sleep(config.run_for).await;
    let before = server.stats();
    writeln!(
        out,
        "http: shutting down with {} requests in flight ({} answered so far)",
        before.in_flight, before.completed
    )?;
    server.shutdown("demo: --run-for elapsed");
    let ready_after_signal = client::ready_status(addr).await;
    let refused_after_shutdown =
        client::refused_within(addr, config.drain + Duration::from_secs(5)).await;
    let stats = Arc::clone(&server.stats);
    let daemon = server.stopped().await;
    let mut clients_tally = client::Tally::default();
    for c in clients {
        clients_tally.add(c.await.expect("a client does not panic"));
    }
    while let Ok(line) = log.try_recv() {
        writeln!(out, "{line}")?;
    }
    let report = DemoReport {
        daemon,
        server: stats.snapshot(),
        clients: clients_tally,
        refused_after_shutdown,
        ready_after_signal,
    };
    writeln!(out)?;
    writeln!(out, "{}", report.daemon)?;
    writeln!(out)?;
    let c = &report.clients;
    writeln!(
        out,
        "clients: {} requests answered 200 OK in full ({} during the shutdown), {} broken mid-answer, \
         {} not sent (the server had closed the connection)",
        c.answered, c.answered_with_close, c.broken, c.not_sent
    )?;
    writeln!(
        out,
        "server:  {} requests began, {} answered ({} during the drain), {} cut",
        report.server.requests,
        report.server.completed,
        report.server.answered_during_drain,
        report.server.cut
    )?;
    writeln!(
        out,
        "GET /ready right after the signal: {}",
        ready_after_signal.map_or("no answer".to_owned(), |s| s.to_string())
    )?;
    writeln!(
        out,
        "new connection during the shutdown: {}",
        if refused_after_shutdown {
            "refused"
        } else {
            "NOT refused"
        }
    )?;
    let meaning = match report.code() {
        0 => "in-flight requests finished, nothing cut, new connections refused",
        1 => "something was cut, or a new connection got through",
        3 => "the grace period elapsed: requests were aborted",
        130 => "a second signal aborted the shutdown",
        _ => "see above",
    };
    writeln!(out, "exit {}: {meaning}", report.code())?;
    Ok(report)
}
