//! `#[cancellable]` in an edition-2021 crate.
//!
//! A fn with a setup before `on_cancel!` expands to a plain `fn` returning
//! `impl Future`; under the edition-2021 rules such a future would capture
//! no lifetime, and every fn below that borrows would fail to compile. The
//! expansion asks for the edition-2024 rules (an `async fn`'s), which this
//! crate checks by compiling; its tests check the fns still behave.
#![deny(warnings)]

use cancel_scope::{cancellable, on_cancel};

/// Several elided lifetimes, one of them mutable, used by the setup, the
/// body and the cleanup.
#[cancellable]
pub async fn copy_all(from: &[u32], to: &mut Vec<u32>, log: &mut Vec<&'static str>) -> usize {
    let before = to.len();
    log.push("setup");
    on_cancel! {
        log.push("cleanup");
        to.truncate(before);
    }
    for x in from {
        to.push(*x);
        tokio::task::yield_now().await;
    }
    to.len() - before
}

/// A receiver, a named lifetime and a generic, with `?` in the setup.
pub struct Store<'a> {
    pub prefix: &'a str,
}

impl<'a> Store<'a> {
    #[cancellable(timeout = std::time::Duration::from_secs(60))]
    pub async fn label<T: std::fmt::Display>(
        &self,
        value: &T,
        parsed: &str,
    ) -> Result<String, std::num::ParseIntError> {
        let n: u32 = parsed.parse()?;
        on_cancel! {}
        tokio::task::yield_now().await;
        Ok(format!("{}{value}{n}", self.prefix))
    }
}

/// `flatten`, with a setup.
#[cancellable(flatten)]
pub async fn flattened(input: &str) -> std::io::Result<usize> {
    let len = input.len();
    on_cancel! {}
    tokio::task::yield_now().await;
    Ok(len)
}

/// The other shapes: no `on_cancel!`, and a cleanup without a setup.
#[cancellable]
pub async fn plain(input: &str) -> usize {
    input.len()
}

#[cancellable]
pub async fn cleanup_only(log: &mut Vec<&'static str>) {
    on_cancel! { log.push("cleanup"); }
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cancel_scope::{CancellationToken, Cancelled};

    #[tokio::test]
    async fn every_shape_runs() {
        let token = CancellationToken::new();
        let (mut to, mut log) = (vec![0], Vec::new());
        assert_eq!(
            copy_all(token.clone(), &[1, 2], &mut to, &mut log).await,
            Ok(2)
        );
        assert_eq!((to, log), (vec![0, 1, 2], vec!["setup"]));

        let store = Store { prefix: "n=" };
        let label = store.label(token.clone(), &"x", "7").await;
        assert_eq!(label, Ok(Ok("n=x7".to_owned())));
        assert!(matches!(
            store.label(token.clone(), &1, "no").await,
            Ok(Err(_))
        ));

        assert_eq!(flattened(token.clone(), "abc").await.unwrap(), 3);
        assert_eq!(plain(token.clone(), "ab").await, Ok(2));

        token.cancel();
        let (mut to, mut log) = (vec![0], Vec::new());
        let r = copy_all(token.clone(), &[1, 2], &mut to, &mut log).await;
        assert_eq!(r, Err(Cancelled::new()));
        assert_eq!((to, log), (vec![0], vec!["setup", "cleanup"]));
        let mut log = Vec::new();
        assert!(cleanup_only(token.clone(), &mut log).await.is_err());
        assert_eq!(log, ["cleanup"]);
        let e = flattened(token, "abc").await.unwrap_err();
        assert!(e.get_ref().unwrap().is::<Cancelled>());
    }
}
