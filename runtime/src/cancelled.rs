//! The error a cancelled `#[cancellable]` fn returns.

use std::fmt;

use crate::CancelReason;

/// Why a `#[cancellable]` fn stopped before its body finished.
///
/// `#[cancellable]` turns an `async fn` returning `T` into one returning
/// `Result<T, Cancelled>`; `Err(Cancelled)` means the body was dropped
/// because its token was cancelled (or its `timeout` elapsed) and the
/// `on_cancel!` cleanup, if any, has run.
///
/// It says why: [`reason`](Self::reason) is the fn's own timeout, or, for a
/// fn running in a task of a [`Scope`](crate::Scope) or
/// [`LocalScope`](crate::LocalScope) that was cancelled, the scope's reason
/// (a sibling that failed under `fail_fast`, the scope's deadline, its
/// shutdown, a shutdown signal, ...), else just "its token was cancelled".
/// See [`CancelReason`] for how the reason is found.
///
/// `Cancelled` is a small `Copy` value (the size of a [`CancelReason`]), so
/// it can be matched, stored and compared freely; two are equal when their
/// reasons are.
///
/// ```
/// use cancel_scope::{CancelReason, Cancelled};
///
/// fn describe(r: Result<u32, Cancelled>) -> String {
///     match r {
///         Ok(v) => format!("done: {v}"),
///         Err(c) if c.is_timeout() => "gave up".to_owned(),
///         Err(c) => c.to_string(),
///     }
/// }
/// assert_eq!(describe(Err(Cancelled::new())), "cancelled");
/// assert_eq!(describe(Err(Cancelled::timed_out())), "gave up");
/// assert_eq!(
///     describe(Err(Cancelled::because(CancelReason::Shutdown))),
///     "cancelled: shut down"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cancelled {
    reason: CancelReason,
}

impl Cancelled {
    /// Cancelled through its token, for no known reason
    /// ([`CancelReason::Token`]).
    ///
    /// ```
    /// use cancel_scope::{CancelReason, Cancelled};
    ///
    /// let c = Cancelled::new();
    /// assert!(!c.is_timeout());
    /// assert_eq!(c.reason(), CancelReason::Token);
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Cancelled::because(CancelReason::Token)
    }

    /// Cancelled because the fn's `timeout` elapsed
    /// ([`CancelReason::Timeout`]).
    ///
    /// ```
    /// let c = cancel_scope::Cancelled::timed_out();
    /// assert!(c.is_timeout());
    /// assert_eq!(c.to_string(), "cancelled: timed out");
    /// ```
    #[must_use]
    pub const fn timed_out() -> Self {
        Cancelled::because(CancelReason::Timeout)
    }

    /// Cancelled for `reason`: for code that cancels by hand and wants to say
    /// why in the same type.
    ///
    /// ```
    /// use cancel_scope::{CancelReason, Cancelled};
    ///
    /// let c = Cancelled::because(CancelReason::Signal("SIGTERM"));
    /// assert_eq!(c.reason(), CancelReason::Signal("SIGTERM"));
    /// assert_eq!(c.to_string(), "cancelled: shutdown signal: SIGTERM");
    /// ```
    #[must_use]
    pub const fn because(reason: CancelReason) -> Self {
        Cancelled { reason }
    }

    /// Why the fn was cancelled. In a scope's task this is the scope's
    /// reason; the `cancel-scope` crate's docs show it with `#[cancellable]`.
    ///
    /// ```
    /// use cancel_scope::{CancelReason, Cancelled};
    ///
    /// fn log(c: Cancelled) -> String {
    ///     match c.reason() {
    ///         CancelReason::TaskFailed(id) => format!("gave up: task #{id} failed"),
    ///         CancelReason::Signal(signal) => format!("stopped by {signal}"),
    ///         other => format!("stopped: {other}"),
    ///     }
    /// }
    /// assert_eq!(log(Cancelled::because(CancelReason::Signal("SIGTERM"))), "stopped by SIGTERM");
    /// assert_eq!(log(Cancelled::timed_out()), "stopped: timed out");
    /// ```
    #[must_use]
    pub const fn reason(&self) -> CancelReason {
        self.reason
    }

    /// `true` when the cancellation came from `#[cancellable(timeout = ..)]`
    /// (of this fn or of an enclosing one) rather than from the token.
    ///
    /// ```
    /// assert!(!cancel_scope::Cancelled::new().is_timeout());
    /// ```
    #[must_use]
    pub const fn is_timeout(&self) -> bool {
        matches!(self.reason, CancelReason::Timeout)
    }
}

impl Default for Cancelled {
    fn default() -> Self {
        Cancelled::new()
    }
}

/// `cancelled` for [`CancelReason::Token`], else `cancelled: <reason>`, as
/// in `cancelled: timed out` or `cancelled: task #3 failed`.
impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            CancelReason::Token => f.write_str("cancelled"),
            reason => write!(f, "cancelled: {reason}"),
        }
    }
}

impl std::error::Error for Cancelled {}

/// A timeout (the fn's own or a scope's deadline) becomes
/// [`std::io::ErrorKind::TimedOut`], any other cancellation
/// [`std::io::ErrorKind::Other`]; the `Cancelled` stays reachable through
/// [`std::io::Error::get_ref`]. (`Interrupted` is deliberately not used: the
/// standard library retries operations that fail with it.)
///
/// ```
/// use cancel_scope::Cancelled;
/// let e = std::io::Error::from(Cancelled::timed_out());
/// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(e.get_ref().unwrap().downcast_ref::<Cancelled>(), Some(&Cancelled::timed_out()));
/// ```
impl From<Cancelled> for std::io::Error {
    fn from(c: Cancelled) -> Self {
        let kind = match c.reason {
            CancelReason::Timeout | CancelReason::Deadline => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, c)
    }
}
