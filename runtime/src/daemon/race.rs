//! Waiting for the first of several futures, without `tokio::select!` (and
//! so without tokio's `macros` feature, and the proc-macro crates it builds).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

/// Which of [`first4`]'s futures finished first, with its output.
pub(crate) enum First4<A, B, C, D> {
    A(A),
    B(B),
    C(C),
    D(D),
}

/// Polls the four futures in this order, each time, until one is ready; the
/// others are dropped. (Use `std::future::pending()` for a slot not needed.)
pub(crate) async fn first4<A, B, C, D>(
    a: A,
    b: B,
    c: C,
    d: D,
) -> First4<A::Output, B::Output, C::Output, D::Output>
where
    A: Future,
    B: Future,
    C: Future,
    D: Future,
{
    let (mut a, mut b, mut c, mut d) = (pin!(a), pin!(b), pin!(c), pin!(d));
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(First4::A(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(First4::B(v));
        }
        if let Poll::Ready(v) = c.as_mut().poll(cx) {
            return Poll::Ready(First4::C(v));
        }
        if let Poll::Ready(v) = d.as_mut().poll(cx) {
            return Poll::Ready(First4::D(v));
        }
        Poll::Pending
    })
    .await
}
