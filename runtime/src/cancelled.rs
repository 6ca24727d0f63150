//! The error a cancelled `#[cancellable]` fn returns.

use std::fmt;

/// Why a `#[cancellable]` fn stopped before its body finished.
///
/// `#[cancellable]` turns an `async fn` returning `T` into one returning
/// `Result<T, Cancelled>`; `Err(Cancelled)` means the body was dropped
/// because its token was cancelled (or its `timeout` elapsed) and the
/// `on_cancel!` cleanup, if any, has run.
///
/// `Cancelled` is a small `Copy` value, so it can be matched, stored and
/// compared freely.
///
/// ```
/// use cancel_scope_runtime::Cancelled;
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
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cancelled {
    timeout: bool,
}

impl Cancelled {
    /// Cancelled through its token.
    ///
    /// ```
    /// let c = cancel_scope_runtime::Cancelled::new();
    /// assert!(!c.is_timeout());
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Cancelled { timeout: false }
    }

    /// Cancelled because the fn's `timeout` elapsed.
    ///
    /// ```
    /// let c = cancel_scope_runtime::Cancelled::timed_out();
    /// assert!(c.is_timeout());
    /// assert_eq!(c.to_string(), "cancelled: timed out");
    /// ```
    #[must_use]
    pub const fn timed_out() -> Self {
        Cancelled { timeout: true }
    }

    /// `true` when the cancellation came from `#[cancellable(timeout = ..)]`
    /// rather than from the token.
    ///
    /// ```
    /// assert!(!cancel_scope_runtime::Cancelled::new().is_timeout());
    /// ```
    #[must_use]
    pub const fn is_timeout(&self) -> bool {
        self.timeout
    }
}

impl Default for Cancelled {
    fn default() -> Self {
        Cancelled::new()
    }
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.timeout {
            f.write_str("cancelled: timed out")
        } else {
            f.write_str("cancelled")
        }
    }
}

impl std::error::Error for Cancelled {}

/// A timeout becomes [`std::io::ErrorKind::TimedOut`], a cancellation
/// [`std::io::ErrorKind::Other`]; the `Cancelled` stays reachable through
/// [`std::io::Error::get_ref`]. (`Interrupted` is deliberately not used: the
/// standard library retries operations that fail with it.)
///
/// ```
/// use cancel_scope_runtime::Cancelled;
/// let e = std::io::Error::from(Cancelled::timed_out());
/// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(e.get_ref().unwrap().downcast_ref::<Cancelled>(), Some(&Cancelled::timed_out()));
/// ```
impl From<Cancelled> for std::io::Error {
    fn from(c: Cancelled) -> Self {
        let kind = if c.timeout {
            std::io::ErrorKind::TimedOut
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, c)
    }
}
