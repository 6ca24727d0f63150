//! `shield`: a critical section inside a `#[cancellable]` body.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::race::frame::{self, Busy};

/// Runs `future` to completion even if the token of the `#[cancellable]`
/// body that awaits it is cancelled meanwhile.
///
/// Inside a `#[cancellable]` body, `shield(fut).await` defers a cancellation
/// that lands while `fut` runs: the body keeps being polled until `fut` is
/// done, then it is dropped at its next `.await` that waits, the cleanup
/// runs, and the fn returns `Err(Cancelled)`. Use it for what must not be
/// cut in half: a reply frame written to a peer, a record appended to a log,
/// a commit. Outside a `#[cancellable]` body it is `fut` itself.
///
/// ```
/// use std::time::Duration;
/// use cancel_scope::{CancellationToken, cancellable, on_cancel, shield};
/// use tokio::io::{AsyncWriteExt, DuplexStream};
///
/// #[cancellable]
/// async fn serve(conn: &mut DuplexStream, replies: &[&[u8]]) -> std::io::Result<()> {
///     on_cancel! {
///         // Runs after the reply in flight was written whole.
///         let _ = conn.write_all(b"bye\n").await;
///     }
///     for reply in replies {
///         tokio::time::sleep(Duration::from_millis(10)).await; // wait: cancel-safe
///         shield(conn.write_all(reply)).await?; // act: never torn
///     }
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (mut ours, mut theirs) = tokio::io::duplex(1); // a slow peer
/// let token = CancellationToken::new();
/// let replies: [&[u8]; 2] = [b"first reply\n", b"second reply\n"];
/// let server = serve(token.clone(), &mut ours, &replies);
/// let client = async {
///     let mut got = Vec::new();
///     let mut buf = [0; 1];
///     while !got.ends_with(b"bye\n") {
///         use tokio::io::AsyncReadExt;
///         let n = theirs.read(&mut buf).await.unwrap();
///         got.extend_from_slice(&buf[..n]);
///         if got.len() == 3 {
///             token.cancel(); // lands in the middle of the first reply
///         }
///     }
///     got
/// };
/// let (result, got) = tokio::join!(server, client);
/// assert!(result.is_err()); // cancelled ...
/// assert_eq!(got, b"first reply\nbye\n"); // ... with the reply whole
/// # }
/// ```
///
/// # How it behaves
///
/// - **What it defers.** A shield defers the cancellation of every
///   `#[cancellable]` fn whose body it runs in, at any depth (directly, in
///   plain `async` code, or inside a nested `#[cancellable]` call): none of
///   them drops its body while the shield runs. It does not un-cancel
///   tokens: a `#[cancellable]` call *inside* the shield that got a derived
///   token is cancelled as usual. To run one to completion, give it a token
///   of its own (`CancellationToken::new()`). A shield in a branch of a
///   `FuturesUnordered` that nothing wakes after the cancellation is not
///   seen (see the crate docs' known limits): shield the combinator instead.
/// - **Only what has started.** A shield first polled after the
///   cancellation was seen defers nothing: the body is dropped at that
///   `.await`, so a loop of shielded writes stops after the one in flight.
///   Wrap the whole loop in one `shield` to finish all of it.
/// - **Nesting.** A shield inside a shield is the same as the outer one.
/// - **`timeout`.** `#[cancellable(timeout = ..)]` cancels the fn's own
///   token when it elapses; the shield defers that too, so a fn can end
///   later than its timeout by the rest of the shielded future. The result
///   is then a `Cancelled` whose `is_timeout()` is true.
/// - **`cleanup_timeout`** bounds the cleanup only; it starts when the
///   shield is done and the body dropped.
/// - **A `Scope`'s grace period** is wall-clock time for the whole task,
///   shield included: a shield still running when `shutdown(grace)` aborts
///   the task is dropped with it. Keep shielded sections shorter than the
///   grace period (bound them with `tokio::time::timeout` if they could
///   hang).
/// - **Cost.** Nothing for fns that do not use it; one thread-local write
///   per pending poll of the shielded future for those that do.
pub fn shield<F: IntoFuture>(future: F) -> Shield<F::IntoFuture> {
    Shield {
        inner: future.into_future(),
        armed: None,
        busy: Busy::default(),
    }
}

pin_project! {
    /// The future [`shield`] returns: it has the output of the future it
    /// shields.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let shielded: cancel_scope::Shield<_> = cancel_scope::shield(async { 7 });
    /// assert_eq!(shielded.await, 7);
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Shield<F> {
        #[pin]
        inner: F,
        // Set on the first poll: whether it defers a cancellation (`false`
        // when it started after the cancellation was seen).
        armed: Option<bool>,
        busy: Busy,
    }
}

impl<F: Future> Future for Shield<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let armed = *this
            .armed
            .get_or_insert_with(|| frame::draining().is_none());
        let poll = this.inner.poll(cx);
        if poll.is_pending() && armed {
            this.busy.pending();
        } else {
            this.busy.done();
        }
        poll
    }
}
