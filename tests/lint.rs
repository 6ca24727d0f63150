//! The macro in every shape under the strictest lints a user may turn on.
//! CI's `cargo clippy --all-targets -- -D warnings` checks this file; the
//! test at the end makes it run as well.
#![deny(warnings, clippy::all, clippy::pedantic)]

use std::fmt::Display;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use cancel_scope::{CancellationToken, Cancelled, cancellable, on_cancel};

/// Whole body raced, unit return.
#[cancellable]
async fn unit() {}

/// Whole body raced, value return.
#[cancellable]
async fn value(x: u32) -> u32 {
    x + 1
}

/// Cleanup without setup.
#[cancellable]
async fn cleanup_only(log: &mut Vec<u32>) -> u32 {
    on_cancel! {
        log.push(1);
    }
    log.push(0);
    tokio::task::yield_now().await;
    2
}

/// Setup, `?`, cleanup consuming a setup local, body with `?`.
#[cancellable]
async fn setup_and_cleanup(fail: bool) -> io::Result<usize> {
    let buf = if fail {
        Err(io::Error::other("setup failed"))
    } else {
        Ok(vec![1u8])
    }?;
    on_cancel! {
        drop(buf);
        tokio::task::yield_now().await;
    }
    let len = buf.len();
    tokio::task::yield_now().await;
    Ok(len)
}

/// `flatten`, `timeout`, `cleanup_timeout`, a renamed token.
#[cancellable(flatten, token = cancel, timeout = Duration::from_secs(5), cleanup_timeout = Duration::from_secs(1))]
async fn everything(count: &mut u32) -> io::Result<u32> {
    *count += 1;
    on_cancel! {
        *count += 10;
    }
    if cancel.is_cancelled() {
        return Err(io::Error::other("seen"));
    }
    tokio::task::yield_now().await;
    Ok(*count)
}

/// A declared token, by reference, with generics, `where`, `impl Trait`.
#[cancellable]
async fn generic<'a, T>(
    #[token] t: &CancellationToken,
    items: &'a [T],
    show: impl Display,
) -> Option<&'a T>
where
    T: Display,
{
    let _ = (t.is_cancelled(), show.to_string());
    items.first()
}

/// `-> impl Trait`.
#[cancellable]
async fn opaque() -> impl Display {
    7
}

struct Service {
    hits: u32,
}

impl Service {
    #[cancellable]
    async fn by_ref(&self) -> u32 {
        self.hits
    }

    #[cancellable]
    async fn by_mut(&mut self) {
        self.hits += 1;
    }

    #[cancellable]
    async fn by_value(self) -> u32 {
        self.hits
    }

    #[cancellable]
    async fn by_arc(self: Arc<Self>, #[token] token: CancellationToken) -> bool {
        token.is_cancelled() && self.hits > 0
    }
}

trait Worker {
    #[cancellable]
    async fn work(&self, n: u32) -> u32;
}

impl Worker for Service {
    #[cancellable]
    async fn work(&self, n: u32) -> u32 {
        let start = self.hits;
        on_cancel! {
            let _ = start;
        }
        start + n
    }
}

/// `pub` fns: `clippy::pedantic`'s `missing_errors_doc` wants an `# Errors`
/// section for a `pub` fn that returns a `Result`, which the expansion does;
/// the macro adds one to the docs (or, for a fn without docs, allows the
/// lint, so that `missing_docs` still reports it).
pub mod public {
    use cancel_scope::{cancellable, on_cancel};

    /// Documented, whole body raced.
    #[cancellable]
    pub async fn documented(x: u32) -> u32 {
        x + 1
    }

    /// Documented, with a setup (a plain `fn` returning `impl Future`).
    #[cancellable]
    pub async fn with_setup(log: &mut Vec<u32>) -> usize {
        log.push(0);
        on_cancel! { log.clear(); }
        log.len()
    }

    #[allow(missing_docs)] // the lint `# Errors` must not silence
    #[cancellable]
    pub async fn undocumented() {}

    /// A trait with a cancellable declaration.
    #[allow(async_fn_in_trait)] // the user's choice, not the macro's
    pub trait Job {
        /// Runs.
        #[cancellable]
        async fn run(&self) -> u32;
    }
}

#[tokio::test]
async fn strict_lints_compile_and_run() {
    let token = CancellationToken::new();
    assert_eq!(unit(token.clone()).await, Ok(()));
    assert_eq!(value(token.clone(), 1).await, Ok(2));
    let mut log = Vec::new();
    assert_eq!(cleanup_only(token.clone(), &mut log).await, Ok(2));
    assert_eq!(
        setup_and_cleanup(token.clone(), false)
            .await
            .map(Result::ok),
        Ok(Some(1))
    );
    assert!(
        setup_and_cleanup(token.clone(), true)
            .await
            .unwrap()
            .is_err()
    );
    let mut count = 0;
    assert_eq!(everything(token.clone(), &mut count).await.ok(), Some(1));
    assert_eq!(generic(&token, &[1, 2], "x").await, Ok(Some(&1)));
    assert_eq!(
        opaque(token.clone()).await.map(|v| v.to_string()),
        Ok("7".to_owned())
    );
    let mut service = Service { hits: 0 };
    service.by_mut(token.clone()).await.unwrap();
    assert_eq!(service.by_ref(token.clone()).await, Ok(1));
    assert_eq!(service.work(token.clone(), 2).await, Ok(3));
    assert_eq!(Service { hits: 4 }.by_value(token.clone()).await, Ok(4));
    token.cancel();
    assert!(Arc::new(service).by_arc(token.clone()).await.is_err());
    assert_eq!(value(token.clone(), 1).await, Err(Cancelled::new()));
    assert!(public::documented(token.clone(), 1).await.is_err());
    assert!(public::with_setup(token.clone(), &mut log).await.is_err());
    assert!(public::undocumented(token).await.is_err());
}
