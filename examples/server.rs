//! A TCP server whose connections are tasks of a `Scope`, with a graceful,
//! then forced, shutdown.
//!
//! ```sh
//! cargo run --example server                  # grace period 1 s
//! cargo run --example server -- --grace 6     # long enough for every request
//! ```
//!
//! The server listens on 127.0.0.1 (an OS-assigned port) and speaks a
//! line-based key-value protocol:
//!
//! | request | reply |
//! | --- | --- |
//! | `SET <key> <value>` | `OK` |
//! | `GET <key>` | `VALUE <value>` or `NOT_FOUND` |
//! | `SLOW <ms>` | `DONE <ms>`, after `<ms>` milliseconds (at most 60000) |
//! | `QUIT` | `OK bye`, then the server closes the connection |
//! | anything else | `ERR <why>` |
//!
//! On shutdown it stops accepting, lets the requests in flight finish within
//! the grace period, tells every client that is (or becomes) idle
//! `BYE server shutting down` and closes, then aborts the connections still
//! busy. The example runs a few demo clients itself, shuts the server down
//! while two of them wait for a `SLOW` reply, and prints what happened to each
//! connection, seen from both ends.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cancel_scope::{CancellationToken, Scope, cancellable, on_cancel};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[path = "common/mod.rs"]
mod common;

/// What the server says to a client when it shuts down.
pub const BYE: &str = "BYE server shutting down";

/// The longest `SLOW` request served.
const MAX_SLOW_MS: u64 = 60_000;

/// What to run; `main` sets `grace` from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long the shutdown lets requests in flight finish.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace: Duration::from_secs(1),
        }
    }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// Live numbers, for an operator (or a test) to watch.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted so far.
    pub accepted: AtomicUsize,
    /// Requests being executed right now.
    pub in_flight: AtomicUsize,
}

/// Counts a request as in flight while it lives (also when its task is
/// aborted: dropping the task drops the guard).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed it.
    ClientClosed,
    /// The client sent `QUIT`.
    ClientQuit,
    /// The server shut down and told the client `BYE`: the connection was
    /// idle, or (`finished_in_flight`) it first finished the request that
    /// was in flight.
    ClosedByServer {
        /// A request was in flight at the shutdown and was answered.
        finished_in_flight: bool,
    },
    /// Reading or writing failed.
    Error(String),
    /// Still busy at the end of the grace period: aborted.
    Aborted,
    /// The connection's task panicked.
    Panicked(String),
}

/// One connection, seen from the server.
#[derive(Clone, Debug)]
pub struct Connection {
    /// 1, 2, 3.. in accept order.
    pub id: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// Requests answered (unknown for an aborted connection).
    pub served: Option<u32>,
    /// How it ended.
    pub end: End,
}

/// What the server did.
#[derive(Debug)]
pub struct ServerReport {
    /// Every connection, in accept order.
    pub connections: Vec<Connection>,
    /// Requests in flight when the shutdown began.
    pub in_flight_at_shutdown: usize,
    /// From the shutdown request to the last connection closed.
    pub shutdown_took: Duration,
}

type Store = Arc<Mutex<HashMap<String, String>>>;

/// Serves `listener` until `token` is cancelled, then shuts down: stop
/// accepting, let requests in flight finish within `grace`, tell idle clients
/// [`BYE`], abort what is left. Returns once no connection task is left.
pub async fn serve(
    listener: TcpListener,
    token: CancellationToken,
    grace: Duration,
    stats: Arc<Stats>,
) -> ServerReport {
    let store = Store::default();
    let mut connections: Scope<Connection> = Scope::child_of(&token);
    // Spawned and not yet joined, in spawn (= id) order.
    let mut live = BTreeMap::new();
    let mut ended = Vec::new();
    let mut next_id = 1;
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (id, store, stats) = (next_id, store.clone(), stats.clone());
                    next_id += 1;
                    stats.accepted.fetch_add(1, SeqCst);
                    live.insert(id, peer);
                    connections.spawn(move |token| connection(token, id, peer, stream, store, stats));
                }
                // Out of file descriptors and the like: back off a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap the connections that ended, so a long-running server does
            // not keep them all.
            Some(joined) = connections.join_next(), if !connections.is_empty() => match joined {
                Ok(conn) => {
                    live.remove(&conn.id);
                    ended.push(conn);
                }
                // `join_next` does not say which task panicked, so its entry
                // stays in `live`; this server's connections do not panic.
                Err(e) => ended.push(Connection {
                    id: 0,
                    peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                    served: None,
                    end: End::Panicked(e.to_string()),
                }),
            },
        }
    }
    // Stop accepting: from here on, new connections are refused.
    drop(listener);
    let in_flight_at_shutdown = stats.in_flight.load(SeqCst);
    let begun = Instant::now();
    // The token is cancelled already (the scope is its child): connections
    // that are idle say BYE and close; busy ones finish their request first.
    let results = connections.shutdown(grace).await;
    let shutdown_took = begun.elapsed();
    // `shutdown` returns the results of the connections not joined yet, in
    // spawn order: the order of `live`.
    for ((id, peer), result) in live.into_iter().zip(results) {
        ended.push(match result {
            Ok(conn) => conn,
            Err(e) => Connection {
                id,
                peer,
                served: None,
                end: if e.is_panic() {
                    End::Panicked(e.to_string())
                } else {
                    End::Aborted
                },
            },
        });
    }
    ended.sort_by_key(|conn| conn.id);
    ServerReport {
        connections: ended,
        in_flight_at_shutdown,
        shutdown_took,
    }
}

/// Waits for the next request line.
///
/// Cancelled while waiting (the client is idle at the shutdown), it is
/// dropped at `next_line`, which is cancel safe, and its cleanup tells the
/// client the server is closing. Called with a token already cancelled (the
/// shutdown came while a request was in flight), its body never runs and the
/// cleanup still does: one code path says BYE in both cases.
#[cancellable]
async fn next_request(
    lines: &mut Lines<BufReader<OwnedReadHalf>>,
    write: &mut OwnedWriteHalf,
) -> io::Result<Option<String>> {
    on_cancel! {
        // The client may be gone already; nothing to do about that.
        let _ = write.write_all(format!("{BYE}\n").as_bytes()).await;
    }
    lines.next_line().await
}

/// Serves one connection until the client leaves or the server shuts down.
async fn connection(
    token: CancellationToken,
    id: usize,
    peer: SocketAddr,
    stream: TcpStream,
    store: Store,
    stats: Arc<Stats>,
) -> Connection {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut served = 0;
    let mut finished_in_flight = false;
    let end = loop {
        let line = match next_request(token.clone(), &mut lines, &mut write).await {
            Err(_cancelled) => break End::ClosedByServer { finished_in_flight },
            Ok(Err(e)) => break End::Error(e.to_string()),
            Ok(Ok(None)) => break End::ClientClosed,
            Ok(Ok(Some(line))) => line,
        };
        // In flight: not raced against the token, so a request that started
        // gets its whole reply. The grace period bounds how long that may
        // take; past it, the scope aborts this task.
        let in_flight = InFlight::enter(&stats.in_flight);
        let (reply, quit) = execute(&line, &store).await;
        if let Err(e) = write.write_all(format!("{reply}\n").as_bytes()).await {
            break End::Error(e.to_string());
        }
        drop(in_flight);
        served += 1;
        finished_in_flight |= token.is_cancelled();
        if quit {
            break End::ClientQuit;
        }
    };
    Connection {
        id,
        peer,
        served: Some(served),
        end,
    }
}

/// Executes one request: the reply, and whether the client quits.
async fn execute(line: &str, store: &Store) -> (String, bool) {
    let mut words = line.trim().splitn(3, ' ');
    let reply = match (words.next(), words.next(), words.next()) {
        (Some("SET"), Some(key), Some(value)) => {
            // A std mutex, never held across an `.await`.
            store
                .lock()
                .unwrap()
                .insert(key.to_owned(), value.to_owned());
            "OK".to_owned()
        }
        (Some("GET"), Some(key), None) => match store.lock().unwrap().get(key) {
            Some(value) => format!("VALUE {value}"),
            None => "NOT_FOUND".to_owned(),
        },
        (Some("SLOW"), Some(ms), None) => match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_SLOW_MS => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("DONE {ms}")
            }
            _ => format!("ERR SLOW takes milliseconds, at most {MAX_SLOW_MS}"),
        },
        (Some("QUIT"), None, None) => return ("OK bye".to_owned(), true),
        _ => "ERR expected SET <key> <value>, GET <key>, SLOW <ms> or QUIT".to_owned(),
    };
    (reply, false)
}

// ---------------------------------------------------------------------------
// Demo clients
// ---------------------------------------------------------------------------

/// One connection, seen from a client.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// The client's name.
    pub name: &'static str,
    /// Its address, to match it with the server's view.
    pub local: Option<SocketAddr>,
    /// Each request, with its reply if one came.
    pub exchanges: Vec<(String, Option<String>)>,
    /// Lines that came after the replies (`BYE ...`).
    pub after: Vec<String>,
    /// A line cut short by the end of the connection, if any.
    pub torn: Option<String>,
    /// How the conversation ended, if not with the server closing.
    pub error: Option<String>,
}

/// Connects, sends `script` one request at a time, then reads whatever else
/// the server says until it closes. Signals `ready` once its part is done:
/// when the last request is a `SLOW` one, as soon as it is sent; otherwise
/// once every reply came.
pub async fn client(
    addr: SocketAddr,
    name: &'static str,
    script: &'static [&'static str],
    ready: mpsc::Sender<()>,
) -> Transcript {
    let mut transcript = Transcript {
        name,
        ..Transcript::default()
    };
    let mut ready = Some(ready);
    if let Err(e) = converse(addr, script, &mut ready, &mut transcript).await {
        transcript.error = Some(e.to_string());
    }
    // In case the conversation ended early.
    signal(&mut ready).await;
    transcript
}

/// Sends on `ready`, the first time only.
async fn signal(ready: &mut Option<mpsc::Sender<()>>) {
    if let Some(ready) = ready.take() {
        let _ = ready.send(()).await;
    }
}

async fn converse(
    addr: SocketAddr,
    script: &[&str],
    ready: &mut Option<mpsc::Sender<()>>,
    transcript: &mut Transcript,
) -> io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    transcript.local = Some(stream.local_addr()?);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut replies = 0;
    for (i, &request) in script.iter().enumerate() {
        write.write_all(format!("{request}\n").as_bytes()).await?;
        transcript.exchanges.push((request.to_owned(), None));
        let last = i + 1 == script.len();
        if last && request.starts_with("SLOW") {
            signal(ready).await;
        }
        match read_line(&mut read, transcript).await? {
            Some(reply) => {
                transcript.exchanges[i].1 = Some(reply);
                replies += 1;
            }
            None => return Ok(()),
        }
    }
    if replies == script.len() {
        signal(ready).await;
    }
    while let Some(line) = read_line(&mut read, transcript).await? {
        transcript.after.push(line);
    }
    Ok(())
}

/// The next whole line; `None` at the end of the connection (a torn last
/// line goes to `transcript.torn`).
async fn read_line(
    read: &mut BufReader<OwnedReadHalf>,
    transcript: &mut Transcript,
) -> io::Result<Option<String>> {
    let mut line = String::new();
    read.read_line(&mut line).await?;
    match line.strip_suffix('\n') {
        Some(whole) => Ok(Some(whole.to_owned())),
        None if line.is_empty() => Ok(None),
        None => {
            transcript.torn = Some(line);
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------

/// The demo clients: `alice` and `bob` are done before the shutdown (alice
/// stays connected, idle; bob quits); `carol` and `dave` are waiting for a
/// `SLOW` reply when it comes (carol's fits in the default grace period,
/// dave's does not).
pub const CLIENTS: [(&str, &[&str]); 4] = [
    ("alice", &["SET lang rust", "GET lang"]),
    ("bob", &["SET x 1", "GET x", "GET y", "QUIT"]),
    ("carol", &["SLOW 300"]),
    ("dave", &["SLOW 5000"]),
];

/// What the demo did.
#[derive(Debug)]
pub struct Report {
    /// The server's side.
    pub server: ServerReport,
    /// The clients' side, in [`CLIENTS`] order.
    pub clients: Vec<Transcript>,
    /// A connection attempt after the shutdown was refused.
    pub refused_after: bool,
}

/// Runs the server and the demo clients, shuts the server down while two
/// requests are in flight, and prints both sides to `out`.
pub async fn run(config: &Config, out: &mut impl Write) -> io::Result<Report> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    writeln!(
        out,
        "server: listening on {addr} (SET k v | GET k | SLOW ms | QUIT); grace period {}",
        common::human(config.grace)
    )?;
    let token = CancellationToken::new();
    let stats = Arc::new(Stats::default());
    let server = serve(listener, token.clone(), config.grace, stats.clone());
    let demo = async {
        let (ready_tx, mut ready) = mpsc::channel(CLIENTS.len());
        let mut clients = Scope::new();
        for (name, script) in CLIENTS {
            let ready_tx = ready_tx.clone();
            clients.spawn(move |_token| client(addr, name, script, ready_tx));
        }
        drop(ready_tx);
        // Shut down once every client did its part and both SLOW requests
        // are being executed (or after a while, whatever happened).
        let all_set = async {
            // Each client signals once, or drops its sender.
            while ready.recv().await.is_some() {}
            while stats.in_flight.load(SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), all_set).await;
        token.cancel();
        // Bounded: a client that hangs is aborted.
        clients
            .shutdown(config.grace + Duration::from_secs(10))
            .await
    };
    let (server, clients) = tokio::join!(server, demo);
    let clients: Vec<Transcript> = clients
        .into_iter()
        .zip(CLIENTS)
        .map(|(t, (name, _))| {
            t.unwrap_or_else(|e| Transcript {
                name,
                error: Some(e.to_string()),
                ..Transcript::default()
            })
        })
        .collect();
    let refused_after = TcpStream::connect(addr).await.is_err();
    let report = Report {
        server,
        clients,
        refused_after,
    };
    print_report(config, &report, out)?;
    Ok(report)
}

fn print_report(config: &Config, report: &Report, out: &mut impl Write) -> io::Result<()> {
    let name_of = |peer: SocketAddr| {
        report
            .clients
            .iter()
            .find(|t| t.local == Some(peer))
            .map_or("?", |t| t.name)
    };
    writeln!(
        out,
        "shutdown: stopped accepting with {} requests in flight; took {} (grace {})",
        report.server.in_flight_at_shutdown,
        common::human(report.server.shutdown_took),
        common::human(config.grace),
    )?;
    writeln!(out, "connections, seen from the server")?;
    for conn in &report.server.connections {
        let served = match conn.served {
            Some(1) => "1 request, ".to_owned(),
            Some(n) => format!("{n} requests, "),
            None => String::new(),
        };
        let end = match &conn.end {
            End::ClientClosed => "closed by the client".to_owned(),
            End::ClientQuit => "the client quit".to_owned(),
            End::ClosedByServer {
                finished_in_flight: true,
            } => format!("finished its request in flight, then told \"{BYE}\""),
            End::ClosedByServer {
                finished_in_flight: false,
            } => format!("idle: told \"{BYE}\""),
            End::Error(e) => format!("error: {e}"),
            End::Aborted => "ABORTED: still busy at the end of the grace period".to_owned(),
            End::Panicked(e) => format!("PANICKED: {e}"),
        };
        writeln!(
            out,
            "  #{} {} {:<8} {served}{end}",
            conn.id,
            conn.peer,
            format!("({})", name_of(conn.peer)),
        )?;
    }
    writeln!(out, "connections, seen from the clients")?;
    for t in &report.clients {
        let mut said: Vec<String> = t
            .exchanges
            .iter()
            .map(|(request, reply)| match reply {
                Some(reply) => format!("{request} -> {reply}"),
                None => format!("{request} -> (no reply)"),
            })
            .collect();
        said.extend(t.after.iter().map(|line| format!("<- {line}")));
        if let Some(torn) = &t.torn {
            said.push(format!("TORN LINE {torn:?}"));
        }
        said.push(match &t.error {
            Some(e) => format!("error: {e}"),
            None => "closed".to_owned(),
        });
        writeln!(out, "  {:<5}  {}", t.name, said.join(" | "))?;
    }
    writeln!(
        out,
        "a new connection after the shutdown: {}",
        if report.refused_after {
            "refused"
        } else {
            "ACCEPTED?!"
        }
    )?;
    let ends = &report.server.connections;
    let count = |f: fn(&End) -> bool| ends.iter().filter(|c| f(&c.end)).count();
    writeln!(
        out,
        "summary: {} connections: {} finished the request in flight, {} idle ones were told \
         BYE, {} were aborted at the end of the grace period, the rest closed by the clients; \
         shutdown took {}",
        ends.len(),
        count(|e| matches!(
            e,
            End::ClosedByServer {
                finished_in_flight: true
            }
        )),
        count(|e| matches!(
            e,
            End::ClosedByServer {
                finished_in_flight: false
            }
        )),
        count(|e| matches!(e, End::Aborted)),
        common::human(report.server.shutdown_took),
    )?;
    Ok(())
}

/// `--grace <secs>` (also `--grace=<secs>`).
fn parse_args() -> Result<Config, String> {
    const USAGE: &str = "usage: server [--grace <secs>]   (default 1)";
    let mut config = Config::default();
    if let Some(secs) = common::seconds_flag("grace", USAGE)? {
        config.grace = secs;
    }
    Ok(config)
}

#[tokio::main]
async fn main() {
    let config = common::args_or_exit(parse_args());
    if let Err(e) = run(&config, &mut io::stdout()).await {
        eprintln!("server: {e}");
        std::process::exit(1);
    }
}
