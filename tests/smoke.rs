use cancel_scope::{CancellationToken, cancellable, on_cancel};

#[cancellable]
async fn plain(x: u32) -> u32 {
    x + 1
}

#[cancellable]
async fn with_setup(log: &mut Vec<String>, fail: bool) -> std::io::Result<u32> {
    log.push("setup".into());
    if fail {
        return Err(std::io::Error::other("no"));
    }
    on_cancel! {
        log.push("cleanup".into());
    }
    std::future::pending::<()>().await;
    Ok(1)
}

#[tokio::test]
async fn smoke() {
    let t = CancellationToken::new();
    assert_eq!(plain(t.clone(), 1).await, Ok(2));
    let mut log = vec![];
    assert!(
        with_setup(t.clone(), &mut log, true)
            .await
            .unwrap()
            .is_err()
    );
    t.cancel();
    assert!(with_setup(t.clone(), &mut log, false).await.is_err());
    assert_eq!(log, ["setup", "setup", "cleanup"]);
}
