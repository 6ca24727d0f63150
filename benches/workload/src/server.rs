//! The server under test, in two variants that differ only in how they keep
//! their connections and race their handlers: a reaping [`Scope`] with
//! `#[cancellable]` handlers, or a `TaskTracker` with a child token per
//! connection and `select!` in the handlers, by hand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cancel_scope::{CancellationToken, Scope, cancellable};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// What every request is answered with.
pub const BODY: &[u8] = b"hello, world\n";

/// Long enough never to end a shutdown here: every connection closes
/// gracefully.
const GRACE: Duration = Duration::from_secs(30);

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// A reaping `Scope`, `#[cancellable]` handlers.
    Scope,
    /// `TaskTracker` + a child token per connection, `select!` handlers.
    ByHand,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    stop: CancellationToken,
    accept_loop: JoinHandle<()>,
}

impl Server {
    /// Binds 127.0.0.1 on a free port and serves on `rt`.
    pub fn start(rt: &Runtime, variant: Variant) -> Server {
        let listener = rt.block_on(listen()).expect("listen on 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let accept_loop = match variant {
            Variant::Scope => rt.spawn(serve_scope(listener, stop.clone())),
            Variant::ByHand => rt.spawn(serve_by_hand(listener, stop.clone())),
        };
        Server {
            addr,
            stop,
            accept_loop,
        }
    }

    /// Stops accepting, shuts every connection down gracefully and waits
    /// until all are closed: the time that takes.
    pub fn drain(self, rt: &Runtime) -> Duration {
        let start = Instant::now();
        self.stop.cancel();
        rt.block_on(self.accept_loop).expect("accept loop");
        start.elapsed()
    }
}

/// A listener on 127.0.0.1 with a free port and a backlog of 1024 (as a
/// server would set it; `TcpListener::bind` asks for 128, and a full queue
/// drops connections, which the clients then retry a second later).
async fn listen() -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(1024)
}

/// The cancel-scope server: connections in a reaping scope (each task's
/// slot is freed as it ends), a child of the server's `stop` token (as
/// `examples/http` makes it); `shutdown` waits for them all.
async fn serve_scope(listener: TcpListener, stop: CancellationToken) {
    // Cancelled only if a shutdown ran out of time (never here): what a
    // handler is raced against.
    let force = CancellationToken::new();
    let mut connections: Scope<()> = Scope::child_of(&stop).reaping();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let force = force.clone();
                connections.spawn(move |token| {
                    let service = service_fn(move |request| {
                        let force = force.clone();
                        async move { Ok::<_, Infallible>(answer_cancellable(force, request).await) }
                    });
                    connection(token, stream, service)
                });
            }
        }
    }
    drop(listener);
    connections.shutdown(GRACE).await;
}

/// The same server by hand: a `TaskTracker`, a child of `stop` per
/// connection. (In both servers, `stop.cancel()` reaches every connection's
/// token on the thread that calls it.)
async fn serve_by_hand(listener: TcpListener, stop: CancellationToken) {
    let force = CancellationToken::new();
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let force = force.clone();
                let service = service_fn(move |request| {
                    let force = force.clone();
                    async move { Ok::<_, Infallible>(answer_select(&force, request).await) }
                });
                tracker.spawn(connection(stop.child_token(), stream, service));
            }
        }
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(GRACE, tracker.wait()).await;
}

/// One connection, served until the client closes it or, once `token` is
/// cancelled, until hyper's graceful shutdown has answered what is in
/// flight (an idle keep-alive connection closes at once).
async fn connection<S>(token: CancellationToken, stream: TcpStream, service: S)
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The handler's work: a small answer.
async fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    if request.uri().path() != "/" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

/// 503 for a request cut by a forced shutdown.
fn unavailable() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}

#[cancellable]
async fn handle(request: Request<Incoming>) -> Response<Full<Bytes>> {
    answer(request).await
}

async fn answer_cancellable(
    force: CancellationToken,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    handle(force, request)
        .await
        .unwrap_or_else(|_| unavailable())
}

async fn answer_select(
    force: &CancellationToken,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    tokio::select! {
        biased;
        () = force.cancelled() => unavailable(),
        response = answer(request) => response,
    }
}
