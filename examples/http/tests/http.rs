//! The HTTP example, driven by real clients on 127.0.0.1 during its
//! shutdown. Every wait is a bounded loop or a generous timeout: only a
//! hang gets near them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cancel_scope::daemon::{Forced, NodeState};
use cancel_scope::{ShutdownSignal, TaskOutcome};
use cancel_scope_example_http::client::{self, Got};
use cancel_scope_example_http::{DemoConfig, Server, demo, start};
use tokio::io::BufReader;
use tokio::net::TcpStream;

const HANG: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(HANG, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {HANG:?}"))
}

/// Waits (at most about 10 s) until `ok` holds.
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

async fn server(grace: Duration) -> Server {
    let signal = Arc::new(ShutdownSignal::install().unwrap());
    start(SocketAddr::from(([127, 0, 0, 1], 0)), grace, signal, |_| {})
        .await
        .unwrap()
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_new_connections_are_refused_idle_ones_close() {
    let server = server(Duration::from_secs(30)).await;
    let addr = server.addr();

    // An idle keep-alive connection, after one quick request.
    let mut idle = connect(addr).await;
    let first = client::get(&mut idle, "/").await;
    assert!(
        matches!(
            first,
            Got::Answer {
                status: 200,
                close: false,
                ..
            }
        ),
        "{first:?}"
    );

    // Three slow requests in flight.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = connect(addr).await;
                client::get(&mut conn, "/slow?ms=700").await
            })
        })
        .collect();
    until("3 requests in flight", || server.stats().in_flight == 3).await;

    server.shutdown("SIGTERM");
    assert!(
        client::refused_soon(addr).await,
        "a new connection was still accepted during the shutdown"
    );
    // The shutdown is still waiting for the slow requests.
    assert_eq!(server.stats().in_flight, 3);

    for request in slow {
        let got = bounded("a slow request", request).await.unwrap();
        match got {
            Got::Answer {
                status,
                close,
                body,
            } => {
                assert_eq!(status, 200);
                assert!(
                    close,
                    "answered during the shutdown, with connection: close"
                );
                assert_eq!(body, "/slow?ms=700 answered after 700 ms\n");
            }
            other => panic!("cut: {other:?}"),
        }
    }
    // The idle connection was closed, not waited for.
    assert_eq!(
        bounded("the idle connection", client::get(&mut idle, "/")).await,
        Got::ClosedFirst
    );

    let stats = server.stats();
    let report = bounded("the server", server.stopped()).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.code(), 0);
    assert_eq!(stats.completed, 4);
    assert_eq!(stats.cut, 0);
    assert_eq!(stats.in_flight_at_shutdown, 3);
    let listener = report.tree().get("/http/listener").unwrap();
    assert_eq!(listener.state(), NodeState::Ended(TaskOutcome::Stopped));
    let note = listener.note().unwrap();
    assert!(note.contains("3 requests in flight"), "{note}");
    // Every connection open at the shutdown (4, or more if a connection
    // the test tried got in before the listener closed) closed gracefully.
    let (closed, open) = note
        .split_once(" open connections closed gracefully")
        .and_then(|(before, _)| before.rsplit_once(", ")?.1.split_once(" of "))
        .unwrap_or_else(|| panic!("{note}"));
    assert_eq!(closed, open, "{note}");
    assert!(open.parse::<u64>().unwrap() >= 4, "{note}");
    assert!(note.contains("0 requests cut"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_a_request_is_cut_and_the_report_says_so() {
    let server = server(Duration::from_millis(300)).await;
    let addr = server.addr();
    let request = tokio::spawn(async move {
        let mut conn = connect(addr).await;
        client::get(&mut conn, "/slow?ms=10000").await
    });
    until("the request in flight", || server.stats().in_flight == 1).await;
    server.shutdown("SIGTERM");
    let counters = server.counters();
    let report = bounded("the server", server.stopped()).await;
    assert_eq!(report.forced(), Some(Forced::GraceElapsed), "{report}");
    assert_eq!(report.code(), 3);
    assert_eq!(
        report.tree().get("/http/listener").unwrap().state(),
        NodeState::Ended(TaskOutcome::Aborted)
    );
    // The client saw its connection close without an answer.
    let got = bounded("the cut request", request).await.unwrap();
    assert_eq!(got, Got::ClosedFirst);
    // Its cleanup ran as it was dropped, and counted it as cut.
    until("the request's cleanup", || counters.snapshot().cut == 1).await;
    assert_eq!(counters.snapshot().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_ends_by_itself_with_nothing_cut() {
    let config = DemoConfig {
        run_for: Duration::from_millis(500),
        clients: 3,
        request_time: Duration::from_millis(200),
        grace: Duration::from_secs(30),
    };
    let mut out = Vec::new();
    let report = bounded("the demo", demo(&config, &mut out)).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(report.code(), 0, "{out}");
    assert!(report.refused_after_shutdown, "{out}");
    assert_eq!(report.server.cut, 0, "{out}");
    assert_eq!(report.clients.broken, 0, "{out}");
    assert_eq!(report.server.completed, report.clients.answered, "{out}");
    assert!(report.clients.answered > 0, "{out}");
    assert!(out.contains("/http/listener"), "{out}");
    assert!(
        out.contains("new connection during the shutdown: refused"),
        "{out}"
    );
    assert!(out.contains("exit 0: in-flight requests finished"), "{out}");
}
