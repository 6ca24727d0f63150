//! Nothing leaks in either direction: user code that shadows the prelude,
//! `core`, `std`, `tokio` and every name the expansion uses still compiles
//! under the strictest lints, and the expansion's own bindings are invisible
//! to the user's code.
#![deny(
    warnings,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    unused_qualifications
)]
#![allow(dead_code, non_camel_case_types, clippy::missing_const_for_fn)]

use cancel_scope::{CancellationToken, cancellable, on_cancel};

// Shadow what generated code might reach for without a leading `::`.
mod core {}
mod std {}
mod tokio {}
mod cancel_scope_runtime {}
struct Ok;
struct Err;
struct Some;
struct None;
type Result = ();
type Option = ();
enum Future {}
fn race() {}
fn run() {}
fn fake() {}

/// Locals named like the expansion's bindings do not clash with them.
#[cancellable]
async fn shadows(n: u32) -> u32 {
    let cancel_scope_token = n;
    let cancel_scope_slot = 1;
    let cancel_scope_outcome = 2;
    let cancel_scope_value = 3;
    on_cancel! {
        let cancel_scope_cancelled = cancel_scope_token;
        let _ = cancel_scope_cancelled;
    }
    let cancel_scope_child = cancel_scope_slot + cancel_scope_outcome + cancel_scope_value;
    cancel_scope_token + cancel_scope_child
}

/// A cleanup without setup, with a timeout, and a `#[token]` parameter.
#[cancellable(timeout = ::core::time::Duration::from_secs(1), cleanup_timeout = ::core::time::Duration::from_secs(1))]
async fn timed(#[token] token: &CancellationToken, n: u32) -> u32 {
    on_cancel! {
        let _ = n;
    }
    if token.is_cancelled() { 0 } else { n }
}

/// `flatten` with a user error type named like prelude items.
#[derive(Debug)]
struct Error;

impl From<cancel_scope::Cancelled> for Error {
    fn from(_: cancel_scope::Cancelled) -> Self {
        Self
    }
}

#[cancellable(flatten)]
async fn flattened(fail: bool) -> ::core::result::Result<u32, Error> {
    let start = 1;
    on_cancel! {
        let _ = start;
    }
    if fail {
        ::core::result::Result::Err(Error)
    } else {
        ::core::result::Result::Ok(start)
    }
}

#[test]
fn shadowed_names_do_not_leak() {
    let rt = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let token = CancellationToken::new();
        assert_eq!(
            shadows(token.clone(), 1).await,
            ::core::result::Result::Ok(7)
        );
        assert_eq!(timed(&token, 5).await, ::core::result::Result::Ok(5));
        assert!(matches!(
            flattened(token.clone(), false).await,
            ::core::result::Result::Ok(1)
        ));
        assert!(flattened(token.clone(), true).await.is_err());
        token.cancel();
        assert!(shadows(token.clone(), 1).await.is_err());
        assert!(timed(&token, 5).await.is_err());
    });
}
