//! The exit: what a `#[cancellable]` fn returns. [`Exit`] hands the
//! cleanup's `Cancelled` to the [`Run`] around it through the frame, within
//! one poll (an `Exit` is always awaited directly by the block its `Run`
//! polls, so the next `Run` to look is its own); that lets `return` and `?`
//! in the user's code see the declared return type. And `flatten`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::cleanup::{Cleanup, CleanupEnd};
use super::frame;
use crate::Cancelled;

pin_project! {
    /// Runs the part of a `#[cancellable]` fn whose `return` and `?` must see
    /// the declared return type `T`: `Ok(v)` when it returns `v`, `Err(c)`
    /// when it reaches [`exit`] after its cleanup ([`AsResult`]), or, for
    /// `#[cancellable(flatten)]`, `v` and `Err(E::from(c))` ([`Flattened`]).
    ///
    /// It is the whole future of a fn with a setup before `on_cancel!`: the
    /// fn is expanded to a plain `fn` returning it, so that the parameters are
    /// stored once, in the block it runs.
    #[must_use = "futures do nothing unless polled"]
    pub struct Run<F, K = AsResult> {
        #[pin]
        inner: F,
        finish: K,
    }
}

/// What a [`Run`] returns.
pub trait Finish<T> {
    /// The fn's return type.
    type Output;
    /// The fn's value from the block's.
    fn finish(&self, r: Result<T, Cancelled>) -> Self::Output;
}

/// A [`Run`] returns `Result<T, Cancelled>`.
#[derive(Debug)]
pub struct AsResult;

impl<T> Finish<T> for AsResult {
    type Output = Result<T, Cancelled>;

    fn finish(&self, r: Result<T, Cancelled>) -> Self::Output {
        r
    }
}

/// A [`Run`] of a `#[cancellable(flatten)]` fn returns `T` itself; `C` is
/// `<E as From<Cancelled>>::from`, a zero-sized fn item.
#[derive(Debug)]
pub struct Flattened<C>(C);

impl<R: Flatten, C: Fn(Cancelled) -> R::Error> Finish<R> for Flattened<C> {
    type Output = R;

    fn finish(&self, r: Result<R, Cancelled>) -> R {
        flatten(r, &self.0)
    }
}

/// See [`Run`].
pub fn run<F: Future>(inner: F) -> Run<F> {
    Run {
        inner,
        finish: AsResult,
    }
}

/// See [`Run`]; `R` is the declared return type and `from` turns a
/// `Cancelled` into its error type (see [`flatten`]).
pub fn run_flatten<R, F, C>(inner: F, from: C) -> Run<F, Flattened<C>>
where
    R: Flatten,
    F: Future<Output = R>,
    C: Fn(Cancelled) -> R::Error,
{
    Run {
        inner,
        finish: Flattened(from),
    }
}

impl<F: Future, K: Finish<F::Output>> Future for Run<F, K> {
    type Output = K::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(value) => Poll::Ready(this.finish.finish(Ok(value))),
            Poll::Pending => match frame::take_exit() {
                Some(c) => Poll::Ready(this.finish.finish(Err(c))),
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

impl<F: Future<Output: CleanupEnd>, T> Future for Exit<F, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Poll::Ready(c) = self.project().cleanup.poll(cx) {
            frame::set_exit(c);
        }
        Poll::Pending
    }
}

/// The declared return type of a `#[cancellable(flatten)]` fn: a `Result`.
///
/// It has no `From<Cancelled>` bound: the expansion names
/// `<E as From<Cancelled>>::from` itself, at the user's return type, so that
/// a missing impl is one error there that says just that (a bound here would
/// be reported through this trait and its impl).
#[diagnostic::on_unimplemented(
    message = "`#[cancellable(flatten)]` needs a return type `Result<T, E>`, not `{Self}`",
    label = "not a `Result`",
    note = "remove `flatten` to return `Result<{Self}, Cancelled>`"
)]
pub trait Flatten: Sized {
    /// The `E` of `Result<T, E>`.
    type Error;
    /// `Err(error)`.
    fn from_error(error: Self::Error) -> Self;
}

impl<T, E> Flatten for Result<T, E> {
    type Error = E;

    fn from_error(error: E) -> Self {
        Err(error)
    }
}

/// `#[cancellable(flatten)]`: folds `Cancelled` into the declared error type
/// with `from` (`<E as From<Cancelled>>::from`).
///
/// # Errors
/// `Err(from(Cancelled))` when cancelled, the body's own `Err` otherwise.
pub fn flatten<R: Flatten>(r: Result<R, Cancelled>, from: impl Fn(Cancelled) -> R::Error) -> R {
    match r {
        Ok(v) => v,
        Err(c) => R::from_error(from(c)),
    }
}

/// Never called: `if false { return declared_type::<T>(); }` tells the type checker
/// the declared return type before it reads the user's code, so a mismatch is
/// reported at the user's expression rather than at the attribute.
#[doc(hidden)]
pub fn declared_type<T>() -> T {
    unreachable!("cancel-scope: type hint only, never called")
}
