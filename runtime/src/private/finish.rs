//! What a `#[cancellable]` fn returns: the hand-off that lets `return` and `?`
//! in the user's code see the declared return type, and `flatten`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::Cleanup;
use crate::Cancelled;

thread_local! {
    /// Where [`Exit`] leaves its [`Cancelled`] for the [`Run`] around it.
    /// Written and read within one `poll` of that `Run`, on one thread: an
    /// `Exit` is always awaited directly by the block its `Run` polls, so the
    /// next `Run` to look is its own.
    static EXIT: std::cell::Cell<Option<Cancelled>> = const { std::cell::Cell::new(None) };
}

pin_project! {
    /// Runs the part of a `#[cancellable]` fn whose `return` and `?` must see
    /// the declared return type `T`: `Ok(v)` when it returns `v`, `Err(c)`
    /// when it reaches [`exit`] after its cleanup ([`Wrap`]), or, for
    /// `#[cancellable(flatten)]`, `v` and `Err(E::from(c))` ([`Flat`]).
    ///
    /// It is the whole future of a fn with a setup before `on_cancel!`: the
    /// fn is expanded to a plain `fn` returning it, so that the parameters are
    /// stored once, in the block it runs.
    #[must_use = "futures do nothing unless polled"]
    pub struct Run<F, K = Wrap> {
        #[pin]
        inner: F,
        finish: PhantomData<fn() -> K>,
    }
}

/// What a [`Run`] returns.
pub trait Finish<T> {
    /// The fn's return type.
    type Output;
    /// The fn's value from the block's.
    fn finish(r: Result<T, Cancelled>) -> Self::Output;
}

/// A [`Run`] returns `Result<T, Cancelled>`.
#[derive(Debug)]
pub struct Wrap;

impl<T> Finish<T> for Wrap {
    type Output = Result<T, Cancelled>;

    fn finish(r: Result<T, Cancelled>) -> Self::Output {
        r
    }
}

/// A [`Run`] of a `#[cancellable(flatten)]` fn returns `T` itself.
#[derive(Debug)]
pub struct Flat;

impl<R: Flatten> Finish<R> for Flat {
    type Output = R;

    fn finish(r: Result<R, Cancelled>) -> R {
        flatten(r)
    }
}

/// See [`Run`].
pub fn run<F: Future>(inner: F) -> Run<F> {
    Run {
        inner,
        finish: PhantomData,
    }
}

/// See [`Run`]; `R` is the declared return type.
pub fn run_flatten<R: Flatten, F: Future<Output = R>>(inner: F) -> Run<F, Flat> {
    Run {
        inner,
        finish: PhantomData,
    }
}

impl<F: Future, K: Finish<F::Output>> Future for Run<F, K> {
    type Output = K::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.poll(cx) {
            Poll::Ready(value) => Poll::Ready(K::finish(Ok(value))),
            Poll::Pending => match EXIT.take() {
                Some(c) => Poll::Ready(K::finish(Err(c))),
                None => Poll::Pending,
            },
        }
    }
}

pin_project! {
    /// The last `.await` of a cancelled run: runs the cleanup, then hands its
    /// `Cancelled` to the [`Run`] around it and never completes, so it can
    /// stand for a value of any type `T`. `Run` takes it in the same `poll`
    /// and returns `Err(c)`.
    #[must_use = "futures do nothing unless polled"]
    pub struct Exit<F, T> {
        #[pin]
        cleanup: Cleanup<F>,
        _output: PhantomData<fn() -> T>,
    }
}

/// See [`Exit`].
pub fn exit<F, T>(cleanup: Cleanup<F>) -> Exit<F, T> {
    Exit {
        cleanup,
        _output: PhantomData,
    }
}

impl<F: Future<Output = &'static str>, T> Future for Exit<F, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Poll::Ready(c) = self.project().cleanup.poll(cx) {
            EXIT.set(Some(c));
        }
        Poll::Pending
    }
}

/// The declared return type of a `#[cancellable(flatten)]` fn: a `Result`
/// whose error type can hold a [`Cancelled`].
#[diagnostic::on_unimplemented(
    message = "`#[cancellable(flatten)]` needs an error type that implements `From<Cancelled>`",
    label = "`{Self}` cannot hold a `Cancelled`",
    note = "implement `From<cancel_scope::Cancelled>` for the error type, or remove `flatten` to return `Result<T, Cancelled>`"
)]
pub trait Flatten: Sized {
    /// `Err(E::from(cancelled))`.
    fn from_cancelled(cancelled: Cancelled) -> Self;
}

impl<T, E: From<Cancelled>> Flatten for Result<T, E> {
    fn from_cancelled(cancelled: Cancelled) -> Self {
        Err(E::from(cancelled))
    }
}

/// `#[cancellable(flatten)]`: folds `Cancelled` into the declared error type.
///
/// # Errors
/// `Err(E::from(Cancelled))` when cancelled, the body's own `Err` otherwise.
pub fn flatten<R: Flatten>(r: Result<R, Cancelled>) -> R {
    match r {
        Ok(v) => v,
        Err(c) => R::from_cancelled(c),
    }
}

/// Never called: `if false { return fake::<T>(); }` tells the type checker
/// the declared return type before it reads the user's code, so a mismatch is
/// reported at the user's expression rather than at the attribute.
#[doc(hidden)]
pub fn fake<T>() -> T {
    unreachable!("cancel-scope: type hint only, never called")
}
