//! The HTTP example, driven by real clients on 127.0.0.1 during its
//! shutdown. Every wait is a bounded loop or a generous timeout: only a
//! hang gets near them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cancel_scope::daemon::{Forced, NodeState};
use cancel_scope::{ShutdownSignal, TaskOutcome};
use cancel_scope_example_http::client::{self, Got};
use cancel_scope_example_http::{DemoConfig, Server, Timing, demo, start, start_on};
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
        drain: Duration::from_millis(300),
    };
    let mut out = Vec::new();
    let report = bounded("the demo", demo(&config, &mut out)).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(report.code(), 0, "{out}");
    assert!(report.refused_after_shutdown, "{out}");
    assert_eq!(report.server.cut, 0, "{out}");
    assert_eq!(report.clients.broken, 0, "{out}");
    // The server answered the clients, and the demo's one `GET /ready`.
    assert_eq!(
        report.server.completed,
        report.clients.answered + 1,
        "{out}"
    );
    assert!(report.clients.answered > 0, "{out}");
    assert!(out.contains("/http/listener"), "{out}");
    assert!(
        out.contains("new connection during the shutdown: refused"),
        "{out}"
    );
    assert!(out.contains("exit 0: in-flight requests finished"), "{out}");
    // The drain: /ready said 503 at once, and the report tells the drain.
    assert_eq!(report.ready_after_signal, Some(503), "{out}");
    assert!(report.daemon.drained().is_some(), "{out}");
    assert!(
        out.contains("GET /ready right after the signal: 503"),
        "{out}"
    );
    assert!(out.contains("http: drained "), "{out}");
}

async fn draining_server(drain: Duration) -> Server {
    let signal = Arc::new(ShutdownSignal::install().unwrap());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let timing = Timing {
        grace: Duration::from_secs(30),
        drain,
    };
    start_on(listener, timing, signal, |_| {}).unwrap()
}

/// `GET /ready` on a new connection: its status.
async fn ready(addr: SocketAddr) -> u16 {
    match client::get(&mut connect(addr).await, "/ready").await {
        Got::Answer { status, .. } => status,
        other => panic!("/ready: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_drain_ready_says_503_and_everything_is_served_until_a_second_signal() {
    // A drain far longer than the test: only the second signal ends it.
    let server = draining_server(Duration::from_secs(600)).await;
    let addr = server.addr();
    assert_eq!(bounded("/ready", ready(addr)).await, 200);

    // A slow request in flight when the signal comes.
    let slow = tokio::spawn(async move {
        let mut conn = connect(addr).await;
        client::get(&mut conn, "/slow?ms=700").await
    });
    until("the request in flight", || server.stats().in_flight == 1).await;
    server.shutdown("SIGTERM");
    let mut status = 0;
    for _ in 0..100 {
        status = bounded("/ready", ready(addr)).await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 503, "/ready still 200 after the signal");

    // New connections are still accepted and answered in full, on
    // keep-alive (not `connection: close`: nothing is stopping yet).
    let mut fresh = connect(addr).await;
    for _ in 0..2 {
        let got = bounded("a request during the drain", client::get(&mut fresh, "/")).await;
        assert_eq!(
            got,
            Got::Answer {
                status: 200,
                close: false,
                body: "/ answered after 0 ms\n".into()
            }
        );
    }
    let got = bounded("the slow request", slow).await.unwrap();
    assert!(
        matches!(
            got,
            Got::Answer {
                status: 200,
                close: false,
                ..
            }
        ),
        "{got:?}"
    );
    let during = server.stats().answered_during_drain;
    // The 503, the two on `fresh`, the slow one (the first /ready polls
    // may have come before the drain began).
    assert!(during >= 4, "{during} answered during the drain");

    // The second signal skips the rest of the drain: the graceful shutdown
    // runs, and new connections are refused from then on.
    server.shutdown("SIGTERM");
    assert!(
        client::refused_soon(addr).await,
        "still accepting after the drain was cut short"
    );
    // The keep-alive connection is closed gracefully (it was idle).
    assert_eq!(
        bounded("the idle connection", client::get(&mut fresh, "/")).await,
        Got::ClosedFirst
    );
    let report = bounded("the server", server.stopped()).await;
    assert_eq!(report.forced(), None, "{report}");
    assert_eq!(report.code(), 0, "{report}");
    let drained = report.drained().expect("it drained");
    assert!(drained < Duration::from_secs(600), "{report}");
    assert!(
        report
            .summary()
            .contains("(cut short), then shutdown (SIGTERM)"),
        "{report}"
    );
    let note = report
        .tree()
        .get("/http/listener")
        .unwrap()
        .note()
        .unwrap()
        .to_owned();
    assert!(
        note.contains(&format!("({during} during the drain)")),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_runs_its_full_period_then_the_shutdown_refuses_new_connections() {
    let drain = Duration::from_millis(300);
    let server = draining_server(drain).await;
    let addr = server.addr();
    assert_eq!(bounded("/ready", ready(addr)).await, 200);
    server.shutdown("SIGTERM");
    assert!(
        client::refused_within(addr, drain + Duration::from_secs(10)).await,
        "never refused after the drain"
    );
    let report = bounded("the server", server.stopped()).await;
    assert_eq!(report.code(), 0, "{report}");
    assert!(report.drained().unwrap() >= drain, "{report}");
    assert!(report.summary().starts_with("http: drained "), "{report}");
    assert!(!report.summary().contains("cut short"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_signal_aborts_the_shutdown_that_followed_a_skipped_drain() {
    let server = draining_server(Duration::from_secs(600)).await;
    let addr = server.addr();
    let stuck = tokio::spawn(async move {
        let mut conn = connect(addr).await;
        client::get(&mut conn, "/slow?ms=10000").await
    });
    until("the request in flight", || server.stats().in_flight == 1).await;
    server.shutdown("SIGTERM"); // drain
    server.shutdown("SIGTERM"); // skip it: the graceful shutdown waits for the request
    assert!(client::refused_soon(addr).await);
    assert_eq!(
        server.stats().in_flight,
        1,
        "the second signal must not abort"
    );
    server.shutdown("SIGTERM"); // abort
    let report = bounded("the server", server.stopped()).await;
    assert_eq!(report.forced(), Some(Forced::SecondSignal), "{report}");
    assert_eq!(report.code(), 130);
    assert_eq!(
        bounded("the cut request", stuck).await.unwrap(),
        Got::ClosedFirst
    );
}
