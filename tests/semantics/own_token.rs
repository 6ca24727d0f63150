//! A call is cancelled only by its own token or its own `timeout`: a future owned outside a body (through `&mut`, a `Shared`, a caller's `LocalScope`) keeps running, untouched.

use super::*;

/// A long-lived job with a token of its own: it counts its cleanups and says
/// when its work is done.
#[cancellable]
async fn job(done: oneshot::Receiver<u32>, log: Log) -> u32 {
    on_cancel! { log.push("job cleanup"); }
    done.await.unwrap()
}

/// Polls a job owned by its caller through `&mut`, for at most 10 ms.
#[cancellable(timeout = Duration::from_millis(10))]
async fn poll_job_for_a_while<F: Future<Output = Result<u32, Cancelled>> + Unpin>(
    job: &mut F,
) -> Result<u32, Cancelled> {
    job.await
}

#[tokio::test(start_paused = true)]
async fn a_job_polled_through_mut_by_a_timed_out_helper_is_untouched_and_completes() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let mut owned = Box::pin(job(CancellationToken::new(), rx, log.clone()));
    let r = poll_job_for_a_while(CancellationToken::new(), &mut owned).await;
    assert!(r.unwrap_err().is_timeout(), "the helper timed out");
    assert_eq!(
        log.events(),
        Vec::<&str>::new(),
        "the job was not cancelled"
    );
    tx.send(7).unwrap();
    let r = tokio::time::timeout(HANG, owned)
        .await
        .expect("the job hung");
    assert_eq!(r, Ok(7));
}

#[cancellable(timeout = Duration::from_millis(10))]
async fn handler(fetch: futures::future::Shared<Pin<Box<dyn Future<Output = u32> + Send>>>) -> u32 {
    fetch.await
}

/// One in-flight fetch, deduplicated with `Shared` and awaited by two
/// handlers: the first one's timeout must not cancel the fetch under the
/// other.
#[tokio::test(start_paused = true)]
async fn a_shared_fetch_survives_one_waiters_timeout() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let fetch_log = log.clone();
    let fetch: Pin<Box<dyn Future<Output = u32> + Send>> =
        Box::pin(async move { job(CancellationToken::new(), rx, fetch_log).await.unwrap() });
    let fetch = fetch.shared();
    let impatient = handler(CancellationToken::new(), fetch.clone());
    let patient = tokio::spawn(fetch.clone());

    assert!(impatient.await.unwrap_err().is_timeout());
    tx.send(42).unwrap();
    let r = tokio::time::timeout(HANG, patient)
        .await
        .expect("the other waiter hung");
    assert_eq!(r.unwrap(), 42);
    assert_eq!(
        log.events(),
        Vec::<&str>::new(),
        "the fetch was not cancelled"
    );
}

#[cancellable]
async fn join_their_scope(scope: &mut LocalScope<'_, Result<u32, Cancelled>>) -> usize {
    scope.join_all().await.len()
}

/// A `LocalScope` owned by the caller and joined inside a cancelled fn: its
/// tasks (on tokens of their own) keep running, and the caller joins them
/// later.
#[tokio::test(start_paused = true)]
async fn a_local_scope_owned_by_the_caller_outlives_a_cancelled_join() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let mut scope: LocalScope<'_, Result<u32, Cancelled>> = LocalScope::new();
    let job_log = log.clone();
    scope.spawn(move |t| job(t, rx, job_log));
    let token = CancellationToken::new();
    let canceller = token.clone();
    let (r, ()) = tokio::join!(join_their_scope(token, &mut scope), async {
        yield_now().await;
        canceller.cancel();
    });
    assert_eq!(r, Err(Cancelled::new()));
    assert_eq!(
        log.events(),
        Vec::<&str>::new(),
        "the scope's task was not cancelled"
    );
    tx.send(3).unwrap();
    let results = tokio::time::timeout(HANG, scope.join_all())
        .await
        .expect("hung");
    assert_eq!(results.len(), 1);
    assert_eq!(results.into_iter().next().unwrap().unwrap(), Ok(3));
}

/// A job with a token of its own: waits for a message, then does a shielded
/// two-step write.
#[cancellable]
async fn shielded_after_recv(rx: &mut mpsc::Receiver<()>, log: Log) {
    on_cancel! { log.push("job cleanup"); }
    rx.recv().await;
    shield(async {
        log.push("shield start");
        sleep(10 * MS).await;
        log.push("shield end");
    })
    .await;
    std::future::pending::<()>().await;
}

/// Polls the helper `call` makes with a fresh token once, then lets the
/// job's message (on `tx`) and the helper's cancel land together: the helper
/// returns `Cancelled` (and is dropped) once the job's shield is done.
async fn cancel_as_the_message_lands<
    T: Debug + PartialEq,
    F: Future<Output = Result<T, Cancelled>>,
>(
    tx: &mpsc::Sender<()>,
    call: impl FnOnce(CancellationToken) -> F,
) {
    let helper_token = CancellationToken::new();
    let mut helper = Box::pin(call(helper_token.clone()));
    assert!(poll_once(helper.as_mut()).is_pending());
    tx.send(()).await.unwrap();
    helper_token.cancel();
    assert_eq!(helper.await, Err(Cancelled::new()));
}

/// The log of a job whose shield started in its helper's last poll. The
/// shield is the job's (armed: its race is not the cancelled one), and a
/// cancelled race does not drop its body while a shield runs inside it,
/// even in a future it only borrows: the helper returns once the shield is
/// done; the job is untouched; the job's cleanup comes last.
const SHIELD_RUNS_WHOLE: [&str; 4] = [
    "shield start",
    "shield end",
    "helper returned",
    "job cleanup",
];

/// The helper's cancellation must not touch the job: a shield the job
/// starts in the helper's last poll is the job's, and defers the job's own
/// cancellation later like any shield that started before it.
#[tokio::test(start_paused = true)]
async fn a_shield_a_job_starts_while_its_helper_is_cancelled_is_the_jobs_and_the_helper_waits_for_it()
 {
    let log = Log::default();
    let (tx, mut rx) = mpsc::channel(1);
    let job_token = CancellationToken::new();
    let mut job = Box::pin(shielded_after_recv(job_token.clone(), &mut rx, log.clone()));
    cancel_as_the_message_lands(&tx, |t| poll_it(t, &mut job)).await;
    log.push("helper returned");
    job_token.cancel();
    let r = tokio::time::timeout(HANG, job).await.expect("hung");
    assert_eq!(r, Err(Cancelled::new()));
    // The job's own cancellation came after its shield started: the shield
    // runs to its end before the job's cleanup.
    assert_eq!(log.events(), SHIELD_RUNS_WHOLE);
}

/// A job without a cleanup, on a token of its own.
#[cancellable]
async fn waits_for_ever() -> u32 {
    std::future::pending().await
}

/// Polls a job for 10 ms and keeps what the job returned.
#[cancellable(timeout = 10 * MS)]
async fn watch_for_10ms<F: Future<Output = Result<u32, Cancelled>> + Unpin>(
    job: &mut F,
    seen: &Mutex<Option<Result<u32, Cancelled>>>,
) {
    let r = job.await;
    *seen.lock().unwrap() = Some(r);
    std::future::pending::<()>().await;
}

/// Documented limit: a call whose own token is cancelled while a cancelled
/// caller polls its body (so that nested calls finish) takes that caller's
/// reason: as a rule it was cancelled with it. A job cancelled by hand at
/// the same moment as its helper's timeout then reports the timeout.
#[tokio::test(start_paused = true)]
async fn a_job_cancelled_in_the_same_turn_as_its_helpers_timeout_takes_the_helpers_reason() {
    let job_token = CancellationToken::new();
    let mut job = Box::pin(waits_for_ever(job_token.clone()));
    let seen = Mutex::new(None);
    let mut watch = Box::pin(watch_for_10ms(CancellationToken::new(), &mut job, &seen));
    assert!(poll_once(watch.as_mut()).is_pending());
    // Its token cancelled by hand; the helper's deadline passes before
    // either is polled again.
    job_token.cancel();
    sleep(10 * MS).await;
    assert!(watch.await.unwrap_err().is_timeout());
    let got = seen.lock().unwrap().take();
    let got = got.expect("the job returned into the helper");
    assert!(got.unwrap_err().is_timeout());
}

/// A task of a `LocalScope` the caller owns, joined by a helper: a shield
/// the task starts in the helper's last poll still defers the task's own
/// cancellation later.
#[tokio::test(start_paused = true)]
async fn a_shield_a_local_scope_task_starts_while_the_joining_helper_is_cancelled_runs_whole() {
    let log = Log::default();
    let (tx, mut rx) = mpsc::channel(1);
    let mut scope: LocalScope<'_, Result<(), Cancelled>> = LocalScope::new();
    let task_log = log.clone();
    let rx = &mut rx;
    scope.spawn(move |t| shielded_after_recv(t, rx, task_log));
    cancel_as_the_message_lands(&tx, |t| join_all_of(t, &mut scope)).await;
    log.push("helper returned");
    scope.cancel();
    let results = tokio::time::timeout(HANG, scope.join_all())
        .await
        .expect("hung");
    assert_eq!(results.len(), 1);
    assert_eq!(log.events(), SHIELD_RUNS_WHOLE);
}

#[cancellable]
async fn join_all_of(scope: &mut LocalScope<'_, Result<(), Cancelled>>) -> usize {
    scope.join_all().await.len()
}

/// A future owned outside, polled by a helper that is then dropped while it
/// is cancelling (waiting for a nested cleanup): the job is untouched and
/// completes when awaited again.
#[cancellable]
async fn helper_with_a_slow_nested_cleanup<F: Future + Unpin>(job: &mut F, log: Log) {
    let mut slow = Box::pin(slow_cleanup(token.child_token(), log.clone(), 50));
    let (_, _) = tokio::join!(&mut slow, job);
}

#[cancellable]
pub(crate) async fn slow_cleanup(log: Log, ms: u64) {
    on_cancel! {
        log.push("slow cleanup start");
        sleep(Duration::from_millis(ms)).await;
        log.push("slow cleanup end");
    }
    std::future::pending::<()>().await;
}

#[cancellable]
pub(crate) async fn finishes_after(log: Log, ms: u64) -> u32 {
    on_cancel! { log.push("job cleanup"); }
    sleep(Duration::from_millis(ms)).await;
    7
}

#[tokio::test(start_paused = true)]
async fn a_job_polled_by_a_helper_dropped_mid_cancel_completes_when_awaited_again() {
    let log = Log::default();
    let mut job = Box::pin(finishes_after(CancellationToken::new(), log.clone(), 100));
    let token = CancellationToken::new();
    {
        let mut helper = Box::pin(helper_with_a_slow_nested_cleanup(
            token.clone(),
            &mut job,
            log.clone(),
        ));
        assert!(poll_once(helper.as_mut()).is_pending());
        token.cancel();
        // The helper waits for its nested cleanup (50 ms); give up on it
        // after 10.
        assert!(
            tokio::time::timeout(10 * MS, helper.as_mut())
                .await
                .is_err()
        );
    }
    assert_eq!(tokio::time::timeout(HANG, job).await.expect("hung"), Ok(7));
    assert_eq!(log.events(), ["slow cleanup start"]);
}
