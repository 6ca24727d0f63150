//! `ShutdownSignal` with real signals: this test binary sends SIGTERM and
//! SIGINT to itself (after the handlers are installed, so they do not kill
//! it).
#![cfg(unix)]

use std::time::Duration;

use cancel_scope::{CancelReason, Scope, ShutdownSignal};

fn send(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), std::process::id().to_string()])
        .status()
        .expect("the `kill` command runs");
    assert!(status.success(), "kill -{signal} failed");
}

#[tokio::test]
async fn first_signal_cancels_the_root_and_second_forces() {
    let signal = ShutdownSignal::install().expect("handlers install");
    let mut scope: Scope<bool> = Scope::child_of(signal.token());
    scope.spawn(|token| async move {
        token.cancelled().await;
        true
    });
    assert!(!signal.token().is_cancelled());

    send("TERM");
    // Generous: only catches a hang.
    tokio::time::timeout(Duration::from_secs(30), signal.token().cancelled())
        .await
        .expect("SIGTERM cancels the root token");
    assert!(
        !signal.forced().is_cancelled(),
        "one signal is a graceful shutdown"
    );
    assert_eq!(signal.reason(), Some("SIGTERM"));
    assert_eq!(
        scope.cancel_reason(),
        Some(CancelReason::Signal("SIGTERM")),
        "a scope made from the signal's token names the signal"
    );
    let results = scope.shutdown(Duration::from_secs(30)).await;
    assert_eq!(results.len(), 1);
    assert!(
        matches!(results[0], Ok(true)),
        "the task saw the cancellation"
    );

    send("INT");
    tokio::time::timeout(Duration::from_secs(30), signal.forced().cancelled())
        .await
        .expect("a second signal (Ctrl-C) forces the shutdown");
    assert_eq!(signal.received(), 2);
    assert_eq!(
        signal.reason(),
        Some("SIGTERM"),
        "the first signal is the reason"
    );
}
