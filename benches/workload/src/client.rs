//! The load generator: keep-alive HTTP/1.1 connections on raw TCP, each
//! sending one `GET /` at a time and timing it until the whole answer is in.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::BODY;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n";

/// A keep-alive connection to the server.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(512),
        })
    }

    /// One request, answered in full (status 200, the body): its latency.
    pub async fn request(&mut self) -> io::Result<Duration> {
        let start = Instant::now();
        self.stream.write_all(REQUEST).await?;
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                if self.buf.len() >= end + 4 + BODY.len() {
                    break;
                }
            }
            let mut chunk = [0u8; 512];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        if !self.buf.starts_with(b"HTTP/1.1 200 ") || !self.buf.ends_with(BODY) {
            return Err(io::Error::other("not the expected answer"));
        }
        Ok(start.elapsed())
    }

    /// Waits until the server closes the connection (a read of 0 bytes).
    pub async fn closed_by_server(mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(self.stream.read(&mut chunk).await, Ok(0))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `connections` clients sending requests back to back until `duration` has
/// passed (or each has sent `max_per_connection`): every latency.
pub async fn load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    max_per_connection: usize,
) -> io::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        tasks.spawn(async move {
            let mut client = Client::connect(addr).await?;
            let mut latencies = Vec::with_capacity(max_per_connection.min(1 << 16));
            while latencies.len() < max_per_connection && Instant::now() < deadline {
                latencies.push(client.request().await?);
            }
            Ok::<_, io::Error>(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("client task")?);
    }
    Ok((all, start.elapsed()))
}
