//! Real clients for the demo and the tests: HTTP/1.1 over TCP, keep-alive,
//! written out by hand so that what they saw is plain (an answer, a
//! connection closed before one, or an answer broken in the middle).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What one request got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    /// A whole answer: its status code, whether the server said
    /// `connection: close`, and its body.
    Answer {
        /// The status code.
        status: u16,
        /// The server will close the connection after it.
        close: bool,
        /// The body.
        body: String,
    },
    /// The connection was closed (or reset) before any byte of an answer:
    /// the server never took the request.
    ClosedFirst,
    /// The answer began and broke off: a request cut in the middle.
    Broken(String),
}

/// Sends `GET path` on `conn` and reads the answer.
pub async fn get(conn: &mut BufReader<TcpStream>, path: &str) -> Got {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    if conn.get_mut().write_all(request.as_bytes()).await.is_err() {
        return Got::ClosedFirst;
    }
    let mut status_line = String::new();
    match conn.read_line(&mut status_line).await {
        Ok(0) | Err(_) => return Got::ClosedFirst,
        Ok(_) => {}
    }
    match read_rest(conn, &status_line).await {
        Ok(got) => got,
        Err(e) => Got::Broken(e.to_string()),
    }
}

async fn read_rest(conn: &mut BufReader<TcpStream>, status_line: &str) -> io::Result<Got> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let (mut length, mut close) = (0, false);
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("the headers broke off"));
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("content-length:") {
            length = n.trim().parse().map_err(|_| bad("bad content-length"))?;
        }
        close |= line == "connection: close";
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok(Got::Answer {
        status,
        close,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What a client saw, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Whole answers with status 200.
    pub answered: u64,
    /// Of those, the ones that said `connection: close`: answered during
    /// the shutdown.
    pub answered_with_close: u64,
    /// Answers that broke off, or were not 200.
    pub broken: u64,
    /// Requests on a connection the server had closed before taking them.
    pub not_sent: u64,
}

impl Tally {
    /// Adds another client's.
    pub fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.answered_with_close += other.answered_with_close;
        self.broken += other.broken;
        self.not_sent += other.not_sent;
    }

    fn count(&mut self, got: &Got) -> bool {
        match got {
            Got::Answer {
                status: 200, close, ..
            } => {
                self.answered += 1;
                self.answered_with_close += u64::from(*close);
                !close
            }
            Got::Answer { .. } | Got::Broken(_) => {
                self.broken += 1;
                false
            }
            Got::ClosedFirst => {
                self.not_sent += 1;
                false
            }
        }
    }
}

/// Sends slow requests (`request_time` each) on keep-alive connections,
/// one after the other, reconnecting when the server closes one, until a
/// connection is refused: the server has stopped. Bounded, in case it
/// never does.
pub async fn keep_busy(addr: SocketAddr, request_time: Duration) -> Tally {
    let mut tally = Tally::default();
    let path = format!("/slow?ms={}", request_time.as_millis());
    for _ in 0..10_000 {
        let Ok(stream) = TcpStream::connect(addr).await else {
            return tally; // refused: the server has stopped
        };
        let mut conn = BufReader::new(stream);
        while tally.count(&get(&mut conn, &path).await) {}
    }
    tally
}

/// Tries new connections until one is refused; `false` if none is within
/// about 5 s.
pub async fn refused_soon(addr: SocketAddr) -> bool {
    refused_within(addr, Duration::from_secs(5)).await
}

/// Tries new connections until one is refused; `false` if none is within
/// about `limit`.
pub async fn refused_within(addr: SocketAddr, limit: Duration) -> bool {
    let tries = limit.as_millis() / 10 + 1;
    for _ in 0..tries {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return true,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

/// The status of `GET /ready` on a new connection; `None` when the
/// connection is refused or no answer comes.
pub async fn ready_status(addr: SocketAddr) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    match get(&mut BufReader::new(stream), "/ready").await {
        Got::Answer { status, .. } => Some(status),
        _ => None,
    }
}
