//! One `tracing` event per cancelled fn (`--features tracing`).
use super::*;

use crate::common::{Recorder, field, run_recorded};
use crate::derived_tokens::three_levels;
use crate::shield::shield_in_shield;

/// The `cancel_scope` events `fut` emits: `(fn_name, reason, cleanup)`,
/// each `""` when the event does not have it.
fn events_of(fut: impl Future<Output = ()>) -> Vec<(String, String, String)> {
    let recorder = Recorder::default();
    let events = recorder.events.clone();
    run_recorded(recorder, true, fut);
    let events = events.lock().unwrap();
    let get = |fields: &[(String, String)], name| field(fields, name).unwrap_or("").to_owned();
    events
        .iter()
        .filter(|e| field(e, "target") == Some("cancel_scope"))
        .map(|e| (get(e, "fn_name"), get(e, "reason"), get(e, "cleanup")))
        .collect()
}

fn count(events: &[(String, String, String)], name: &str) -> usize {
    events.iter().filter(|e| e.0 == name).count()
}

#[cancellable]
async fn waits_with_cleanup(log: Log) {
    on_cancel! { log.push("outer cleanup"); }
    let _ = slow_cleanup(token.child_token(), log.clone(), 50).await;
}

#[cancellable]
async fn waits_without_cleanup(log: Log) {
    let _ = slow_cleanup(token.child_token(), log.clone(), 50).await;
}

/// Documented: a cancelled fn dropped while it waits for a nested cleanup
/// (before its own cleanup starts, or before it returns) has no event;
/// the nested calls, whose cleanups were dropped, have theirs.
#[test]
fn a_cancelled_fn_dropped_before_its_cleanup_starts_has_no_event() {
    let events = events_of(async {
        let log = Log::default();
        let token = CancellationToken::new();
        let mut with = Box::pin(waits_with_cleanup(token.clone(), log.clone()));
        let mut without = Box::pin(waits_without_cleanup(token.clone(), log.clone()));
        assert!(poll_once(with.as_mut()).is_pending());
        assert!(poll_once(without.as_mut()).is_pending());
        token.cancel();
        // Both wait for their nested 50 ms cleanups; dropped after 10.
        let (a, b) = tokio::join!(
            tokio::time::timeout(10 * MS, with),
            tokio::time::timeout(10 * MS, without)
        );
        assert!(a.is_err() && b.is_err());
        assert_eq!(log.events(), ["slow cleanup start", "slow cleanup start"]);
    });
    assert_eq!(count(&events, "slow_cleanup"), 2, "{events:?}");
    assert_eq!(count(&events, "waits_with_cleanup"), 0, "{events:?}");
    assert_eq!(count(&events, "waits_without_cleanup"), 0, "{events:?}");
}

#[cancellable]
async fn attempt_with(n: Arc<AtomicUsize>) {
    n.fetch_add(1, SeqCst);
    on_cancel! {}
    yield_now().await;
}

/// No setup: its body never runs on a cancelled token; the caller
/// counts its attempts.
#[cancellable]
async fn attempt_without() {
    yield_now().await;
}

#[cancellable]
async fn retries_both(with: Arc<AtomicUsize>, without: Arc<AtomicUsize>) {
    loop {
        let _ = attempt_with(token.clone(), with.clone()).await;
        without.fetch_add(1, SeqCst);
        let _ = attempt_without(token.clone()).await;
    }
}

/// A retry loop on a cancelled caller: every attempt, also those that
/// wait a turn, has exactly one event, and so has the caller.
#[test]
fn every_retry_of_a_cancelled_call_has_exactly_one_event() {
    let with = Arc::new(AtomicUsize::new(0));
    let without = Arc::new(AtomicUsize::new(0));
    let (w, wo) = (with.clone(), without.clone());
    let events = events_of(async move {
        cancel_once_it_waits(|token| retries_both(token, w, wo)).await;
    });
    assert!(with.load(SeqCst) > 1);
    assert_eq!(
        count(&events, "attempt_with"),
        with.load(SeqCst),
        "{events:?}"
    );
    assert_eq!(count(&events, "attempt_without"), without.load(SeqCst));
    assert_eq!(count(&events, "retries_both"), 1);
    assert_eq!(events.len(), with.load(SeqCst) + without.load(SeqCst) + 1);
}

/// Three levels through an unrelated middle: the inner and the outer
/// have one event each, the middle (dropped, not cancelled) none; a
/// shielded fn has its event after its shield, once.
#[test]
fn an_unrelated_middle_level_has_no_event_and_a_shielded_fn_has_one() {
    let events = events_of(async {
        let log = Log::default();
        cancel_once_it_waits(|token| three_levels(token, log.clone())).await;
        cancel_once_it_waits(|token| shield_in_shield(token, log.clone())).await;
    });
    let names: Vec<_> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["innermost", "three_levels", "shield_in_shield"]);
}

#[cancellable(cleanup_timeout = 10 * MS)]
async fn cut_cleanup() {
    on_cancel! { sleep(50 * MS).await; }
    std::future::pending::<()>().await;
}

/// A cleanup cut at its `cleanup_timeout`: one event that says so.
#[test]
fn a_cleanup_cut_at_its_cleanup_timeout_has_one_event_that_says_so() {
    let events = events_of(async {
        let token = CancellationToken::new();
        token.cancel();
        assert_eq!(cut_cleanup(token).await, Err(Cancelled::new()));
    });
    assert_eq!(
        events,
        [(
            "cut_cleanup".to_owned(),
            "cancelled".to_owned(),
            "cut at its cleanup_timeout".to_owned()
        )]
    );
}
