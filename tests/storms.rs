//! Seeded, reproducible randomized "cancellation storms" for `#[cancellable]`
//! and `Scope`.
//!
//! Every storm runs many iterations of one scenario with randomized choices
//! (which side wins, how many yields before the cancellation or the
//! completion, whether the token is cancelled by the fn itself, by a future
//! joined with it in the same task, by another task, or by another OS thread)
//! and checks the contract of `#[cancellable]` on an event log after each
//! iteration, never on wall-clock time:
//!
//! - a level whose setup finished gets exactly one outcome; its cleanup ran
//!   exactly once, to completion, iff that outcome is `Err(Cancelled)`, and
//!   never when it is `Ok`;
//! - on `Err` its body was dropped before its cleanup started, and everything
//!   nested in it (deeper levels, their cleanups) happened before that;
//! - ties: a token cancelled before the setup finished means the body is
//!   never polled;
//! - the race: once the token is cancelled, a body that reaches an `.await`
//!   is not resumed past it;
//! - cancelling again (during the cleanup, from anywhere) changes nothing.
//!
//! A level that ran its whole cleanup may also be dropped by its draining
//! caller instead of returning `Err` to it; a level that finished its setup
//! and is dropped without its cleanup having run to completion is a failure
//! ("dropped instead of cancelled").
//!
//! # Running
//!
//! - `CANCEL_SCOPE_STORM_ITERS`: iterations per storm (default 2_000, a few
//!   seconds for the whole file in a debug build on 2 cores).
//! - `CANCEL_SCOPE_STORM_SEED`: the seed, decimal or `0x` hex (default
//!   `0x5eed_cafe_f00d_0001`). Every iteration derives its own generator from
//!   (seed, storm, iteration), so one iteration can be replayed alone:
//! - `CANCEL_SCOPE_STORM_ITER`: run only this iteration.
//!
//! Every failure prints the storm, seed and iteration, the case and the
//! event log, and the command that replays it. Storms that involve another
//! thread are replayed with the same choices, not the same interleaving.
//!
//! The long run (≥ 100_000 iterations per storm), run before a release:
//!
//! ```text
//! CANCEL_SCOPE_STORM_ITERS=100000 cargo test --release --test storms
//! ```

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cancel_scope::{CancellationToken, Cancelled, Scope, TaskError, cancellable, on_cancel};
use tokio::sync::oneshot;
use tokio::task::yield_now;
use tokio::time::Instant;

#[path = "common/storm.rs"]
mod storm;
use storm::*;

// ---------------------------------------------------------------------------
// Storm 1: cancel racing completion
// ---------------------------------------------------------------------------

/// A body that yields `k` times then returns, cancelled after `j` yields of
/// a concurrent canceller (or by the body itself at step `j`).
fn race_case(rng: &mut Rng) -> Case {
    let k = rng.upto(12);
    let mut plan = Plan {
        depth: 1,
        ..Plan::default()
    };
    plan.before[0] = k;
    plan.cleanup_yields[0] = rng.upto(3);
    let mut how = How::random(rng, 14);
    if rng.chance(1, 6) {
        // The body cancels its own token before its yield `j`.
        how = How::Never;
        plan.cancel_at = Some((0, Phase::Body, rng.upto(k + 1)));
    }
    Case { plan, how }
}

async fn race_storm(storm: &'static str) {
    let tally = Tally::default();
    let mut n = 0;
    for (ctx, mut rng) in iterations(storm) {
        let case = race_case(&mut rng);
        run_case(ctx, &case, &tally).await;
        n += 1;
    }
    tally.report(storm, n, &["Ok", "Err"]);
}

/// The body cancelling its own token at step `j < k` always loses the race
/// at its next `.await`; at `j == k` it has no `.await` left and returns
/// `Ok`. Checked exactly, on top of the general rules.
#[test]
fn cancel_racing_completion_self_cancel_is_exact() {
    let rt = current_thread();
    rt.block_on(async {
        let tally = Tally::default();
        for (ctx, mut rng) in iterations("cancel_racing_completion_self_cancel_is_exact") {
            let k = rng.upto(12);
            let j = rng.upto(k);
            let mut plan = Plan {
                depth: 1,
                ..Plan::default()
            };
            plan.before[0] = k;
            plan.cleanup_yields[0] = rng.upto(3);
            plan.cancel_at = Some((0, Phase::Body, j));
            let case = Case {
                plan,
                how: How::Never,
            };
            let _announce = Announce(ctx);
            let root = CancellationToken::new();
            let log = Log::default();
            let r = level(
                root.clone(),
                log.clone(),
                Arc::new(case.plan.clone()),
                root,
                0,
            )
            .await;
            log.push(returned(0, &r));
            let events = log.events();
            if let Err(why) = check_call(&case.plan, &events, Some(r)) {
                fail(ctx, &case, &events, &why);
            }
            let steps = count(&events, |e| matches!(e, Ev::Step(..)));
            let ok = if j < k {
                r == Err(Cancelled::new()) && steps == j as usize
            } else {
                r == Ok(0) && steps == k as usize
            };
            if !ok {
                fail(
                    ctx,
                    &case,
                    &events,
                    &format!("self-cancel at step {j} of {k}: got {r:?} after {steps} steps"),
                );
            }
            tally.add(if r.is_ok() { "Ok" } else { "Err" });
        }
    });
}

#[test]
fn cancel_racing_completion_current_thread() {
    current_thread().block_on(race_storm("cancel_racing_completion_current_thread"));
}

#[test]
fn cancel_racing_completion_multi_thread() {
    multi_thread().block_on(async {
        // Run on a worker, so "another task" really is another thread too.
        tokio::spawn(race_storm("cancel_racing_completion_multi_thread"))
            .await
            .unwrap();
    });
}

// ---------------------------------------------------------------------------
// Storm 2: timeout vs cancel vs completion, on a paused clock
// ---------------------------------------------------------------------------

#[cancellable(timeout = Duration::from_millis(limit_ms))]
async fn timed(
    log: Log,
    limit_ms: u64,
    work_ms: u64,
    cleanup_ms: u64,
    started: Option<oneshot::Sender<()>>,
) -> u32 {
    log.push(Ev::SetupDone {
        level: 0,
        saw_cancel: token.is_cancelled(),
    });
    on_cancel! {
        log.push(Ev::CleanupStart(0));
        if cleanup_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cleanup_ms)).await;
        }
        log.push(Ev::CleanupEnd(0));
    }
    log.push(Ev::BodyStart(0));
    if let Some(started) = started {
        let _ = started.send(());
    }
    let _dropped = DropLog(log.clone(), 0);
    log.push(Ev::Yield(0, 0));
    tokio::time::sleep(Duration::from_millis(work_ms)).await;
    log.push(Ev::Step(0, 0));
    log.push(Ev::BodyDone(0));
    u32::try_from(work_ms).expect("small")
}

#[derive(Clone, Copy, Debug)]
enum TimedHow {
    Never,
    Before,
    /// A joined future sleeps this long, then cancels.
    SiblingSleep(u64),
    /// Another task sleeps this long, then cancels.
    TaskSleep(u64),
    /// The driver waits for the body to start, `advance`s the clock by this
    /// much, then cancels.
    Advance(u64),
}

#[derive(Debug)]
struct TimedCase {
    limit_ms: u64,
    work_ms: u64,
    cleanup_ms: u64,
    how: TimedHow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Winner {
    Completion,
    Timeout,
    Cancel,
}

async fn run_timed(ctx: Ctx, case: &TimedCase, tally: &Tally) {
    let _announce = Announce(ctx);
    let token = CancellationToken::new();
    let log = Log::default();
    let start = Instant::now();
    let (limit, work, cleanup) = (case.limit_ms, case.work_ms, case.cleanup_ms);
    // The call, and the virtual time when it returned.
    let call = |started| {
        let f = timed(token.clone(), log.clone(), limit, work, cleanup, started);
        async move {
            let r = f.await;
            (r, start.elapsed())
        }
    };
    let (r, elapsed) = match case.how {
        TimedHow::Never => call(None).await,
        TimedHow::Before => {
            token.cancel();
            log.cancelled(Source::Before);
            call(None).await
        }
        TimedHow::SiblingSleep(c) => {
            let canceller = async {
                tokio::time::sleep(Duration::from_millis(c)).await;
                token.cancel();
                log.cancelled(Source::Sibling);
            };
            tokio::join!(call(None), canceller).0
        }
        TimedHow::TaskSleep(c) => {
            let (t, l) = (token.clone(), log.clone());
            let canceller = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(c)).await;
                t.cancel();
                l.cancelled(Source::Task);
            });
            let r = call(None).await;
            canceller.await.unwrap();
            r
        }
        TimedHow::Advance(c) => {
            let (started_tx, started_rx) = oneshot::channel();
            let task = tokio::spawn(call(Some(started_tx)));
            // The body has started (so has its deadline); no time passed.
            let _ = started_rx.await;
            tokio::time::advance(Duration::from_millis(c)).await;
            token.cancel();
            log.cancelled(Source::Sibling);
            task.await.unwrap()
        }
    };
    let ms = u64::try_from(elapsed.as_millis()).expect("small");
    log.push(returned(0, &r));
    let events = log.events();
    if let Err(why) = check_timed(&events, r) {
        fail(ctx, case, &events, &why);
    }

    // Who may have won. `Some(true)`: that timer fired before the race
    // looked, `None`: it may have (a tie).
    let allowed = allowed_winners(case);
    let winner = match r {
        Ok(_) => Winner::Completion,
        Err(c) if c.is_timeout() => Winner::Timeout,
        Err(_) => Winner::Cancel,
    };
    if !allowed.contains(&winner) {
        fail(
            ctx,
            case,
            &events,
            &format!("{winner:?} won (got {r:?}), expected one of {allowed:?}"),
        );
    }
    // The virtual time it took: when the winner fired, plus the cleanup.
    let cleanup_if_err = if r.is_err() { cleanup } else { 0 };
    let expect_ms = match (case.how, winner) {
        (TimedHow::Advance(c), _) => c + cleanup_if_err,
        (_, Winner::Completion) => work,
        (_, Winner::Timeout) => limit + cleanup,
        (TimedHow::Before, Winner::Cancel) => cleanup,
        (TimedHow::SiblingSleep(c) | TimedHow::TaskSleep(c), Winner::Cancel) => c + cleanup,
        (TimedHow::Never, Winner::Cancel) => unreachable!("checked above"),
    };
    // Sleeps round up to the timer's millisecond tick.
    if ms + 2 < expect_ms || ms > expect_ms + 2 {
        fail(
            ctx,
            case,
            &events,
            &format!("{winner:?} after {ms}ms of virtual time, expected about {expect_ms}ms"),
        );
    }
    if winner == Winner::Timeout && matches!(case.how, TimedHow::Never) && token.is_cancelled() {
        fail(
            ctx,
            case,
            &events,
            "the timeout cancelled the caller's token",
        );
    }
    tally.add(match winner {
        Winner::Completion => "Completion",
        Winner::Timeout => "Timeout",
        Winner::Cancel => "Cancel",
    });
}

/// The winners the contract allows. Timers fire in virtual-time order; on the
/// same tick the deadline beats the body (cancellation wins ties: the race
/// looks at the deadline first), and a canceller in another future may go
/// either way. `advance(c)` fires every timer due by `c` at once (a timer
/// due exactly at `c` may or may not fire, the clock not being aligned to
/// the tick).
fn allowed_winners(case: &TimedCase) -> Vec<Winner> {
    let (limit, work) = (case.limit_ms, case.work_ms);
    let mut allowed = Vec::new();
    let mut allow = |w| {
        if !allowed.contains(&w) {
            allowed.push(w);
        }
    };
    match case.how {
        TimedHow::Before => allow(Winner::Cancel),
        TimedHow::Advance(c) => {
            let fired = |x: u64| -> &'static [bool] {
                match x.cmp(&c) {
                    std::cmp::Ordering::Less => &[true],
                    std::cmp::Ordering::Equal => &[true, false],
                    std::cmp::Ordering::Greater => &[false],
                }
            };
            for &w in fired(work) {
                for &l in fired(limit) {
                    allow(if l {
                        Winner::Timeout
                    } else if w {
                        Winner::Completion
                    } else {
                        Winner::Cancel
                    });
                }
            }
        }
        TimedHow::Never | TimedHow::SiblingSleep(_) | TimedHow::TaskSleep(_) => {
            let cancel = match case.how {
                TimedHow::SiblingSleep(c) | TimedHow::TaskSleep(c) => Some(c),
                _ => None,
            };
            let first = [Some(work), Some(limit), cancel]
                .into_iter()
                .flatten()
                .min()
                .expect("work is always there");
            if cancel == Some(first) {
                allow(Winner::Cancel);
            }
            if limit == first {
                allow(Winner::Timeout);
            } else if work == first {
                allow(Winner::Completion);
            }
        }
    }
    allowed
}

/// The rules for the one-level `timed` fn: exactly one setup; the cleanup
/// ran exactly once, to completion, iff the result is an `Err` (timeout or
/// not), after the body was dropped; the body never resumed on `Err`; a
/// token cancelled before the body would start means it never starts.
fn check_timed(events: &[Ev], r: Result<u32, Cancelled>) -> Result<(), String> {
    let n = |e: Ev| count(events, |x| *x == e);
    let setup = events
        .iter()
        .position(|e| matches!(e, Ev::SetupDone { .. }))
        .ok_or("no setup")?;
    let (cs, ce) = (n(Ev::CleanupStart(0)), n(Ev::CleanupEnd(0)));
    match r {
        Ok(_) => {
            if cs + ce != 0 {
                return Err("Ok, but the cleanup ran".into());
            }
            if n(Ev::BodyDone(0)) != 1 {
                return Err("Ok without the body finishing".into());
            }
        }
        Err(_) => {
            if cs != 1 || ce != 1 {
                return Err(format!(
                    "Err, but the cleanup started {cs} and ended {ce} times"
                ));
            }
            if n(Ev::Step(0, 0)) + n(Ev::BodyDone(0)) != 0 {
                return Err("Err, but the body resumed after its sleep".into());
            }
            let start = pos(events, Ev::CleanupStart(0));
            let dropped = pos(events, Ev::BodyDropped(0));
            if n(Ev::BodyStart(0)) == 1 && !(dropped.is_some() && dropped < start) {
                return Err("the body was not dropped before the cleanup".into());
            }
            if r.is_err_and(|c| !c.is_timeout())
                && !events.iter().any(|e| matches!(e, Ev::Cancel(_)))
            {
                return Err("cancelled, yet nobody cancelled".into());
            }
        }
    }
    let cancelled_first = events
        .iter()
        .position(|e| matches!(e, Ev::Cancel(_)))
        .is_some_and(|c| c < setup)
        || matches!(
            events[setup],
            Ev::SetupDone {
                saw_cancel: true,
                ..
            }
        );
    if cancelled_first && n(Ev::BodyStart(0)) != 0 {
        return Err("cancelled before the body would start, yet the body was polled".into());
    }
    Ok(())
}

#[test]
fn timeout_races_cancel_and_completion_on_a_paused_clock() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        // In a task, so that `advance` lets the timers it fired run first.
        tokio::spawn(async {
            let storm = "timeout_races_cancel_and_completion_on_a_paused_clock";
            let tally = Tally::default();
            let mut n = 0;
            for (ctx, mut rng) in iterations(storm) {
                let c = 1 + rng.below(20);
                let case = TimedCase {
                    limit_ms: 1 + rng.below(20),
                    work_ms: 1 + rng.below(20),
                    cleanup_ms: if rng.chance(1, 3) { rng.below(5) } else { 0 },
                    how: match rng.below(7) {
                        0 => TimedHow::Never,
                        1 => TimedHow::Before,
                        2 | 3 => TimedHow::SiblingSleep(c),
                        4 | 5 => TimedHow::TaskSleep(c),
                        _ => TimedHow::Advance(c),
                    },
                };
                run_timed(ctx, &case, &tally).await;
                n += 1;
            }
            tally.report(storm, n, &["Completion", "Timeout", "Cancel"]);
        })
        .await
        .unwrap();
    });
}

// ---------------------------------------------------------------------------
// Storm 3: cancel during the setup, and during the cleanup
// ---------------------------------------------------------------------------

/// The setup awaits; the cancellation is aimed at the setup's window (a
/// cancellation seen there means the body is never polled, and the cleanup
/// still runs exactly once), and the canceller keeps cancelling into the
/// cleanup's window, as may the cleanup itself (nothing changes).
fn setup_cleanup_case(rng: &mut Rng) -> Case {
    let depth = if rng.chance(1, 3) { 2 } else { 1 };
    let mut plan = Plan {
        depth,
        ..Plan::default()
    };
    for d in 0..depth {
        plan.setup_yields[d] = 1 + rng.upto(5);
        plan.before[d] = rng.upto(3);
        plan.after[d] = rng.upto(2);
        plan.cleanup_yields[d] = 1 + rng.upto(5);
        plan.child_token[d] = rng.chance(1, 2);
    }
    let window = plan.setup_yields[0] + 2;
    let mut how = How::random(rng, window);
    // Keep cancelling while the cleanup runs.
    match &mut how {
        How::Sibling { repeat, .. } | How::Task { repeat, .. } => *repeat = 2 + rng.upto(8),
        How::Thread { repeat, .. } => *repeat = rng.upto(4),
        How::Never | How::Before => {}
    }
    let d = rng.below(depth as u64) as usize;
    plan.cancel_at = match rng.below(4) {
        // The setup cancels its own (root) token.
        0 => Some((d, Phase::Setup, rng.upto(plan.setup_yields[d] - 1))),
        // The cleanup cancels again.
        1 => Some((d, Phase::Cleanup, rng.upto(plan.cleanup_yields[d] - 1))),
        _ => None,
    };
    Case { plan, how }
}

#[test]
fn cancel_during_setup_and_during_cleanup() {
    let storm = "cancel_during_setup_and_during_cleanup";
    current_thread().block_on(async {
        let tally = Tally::default();
        let mut n = 0;
        for (ctx, mut rng) in iterations(storm) {
            let case = setup_cleanup_case(&mut rng);
            run_case(ctx, &case, &tally).await;
            n += 1;
        }
        tally.report(
            storm,
            n,
            &[
                "Ok",
                "Err",
                "cancelled during a setup",
                "cancelled again during a cleanup",
            ],
        );
    });
}

// ---------------------------------------------------------------------------
// Storm 4: 8 nested `#[cancellable]` calls
// ---------------------------------------------------------------------------

fn nested_case(rng: &mut Rng, max_depth: usize, park_sometimes: bool) -> Case {
    let depth = if rng.chance(2, 3) {
        max_depth
    } else {
        1 + rng.below(max_depth as u64) as usize
    };
    let mut plan = Plan {
        depth,
        park: park_sometimes && rng.chance(1, 4),
        ..Plan::default()
    };
    let mut total = 0;
    for d in 0..depth {
        plan.setup_yields[d] = if rng.chance(1, 2) { rng.upto(2) } else { 0 };
        plan.before[d] = rng.upto(2);
        plan.after[d] = rng.upto(2);
        plan.cleanup_yields[d] = rng.upto(2);
        plan.child_token[d] = rng.chance(1, 2);
        total += plan.setup_yields[d] + plan.before[d] + plan.after[d];
    }
    let mut how = How::random(rng, total + 2);
    if plan.park && matches!(how, How::Never) {
        how = How::Before;
    }
    if rng.chance(1, 5) {
        // Some level cancels the root token from its setup or its body.
        let d = rng.below(depth as u64) as usize;
        let in_setup = plan.setup_yields[d] > 0 && rng.chance(1, 2);
        plan.cancel_at = if in_setup {
            Some((d, Phase::Setup, rng.upto(plan.setup_yields[d] - 1)))
        } else {
            Some((d, Phase::Body, rng.upto(plan.before[d] + plan.after[d])))
        };
    }
    Case { plan, how }
}

async fn nested_storm(storm: &'static str) {
    let tally = Tally::default();
    let mut n = 0;
    for (ctx, mut rng) in iterations(storm) {
        let case = nested_case(&mut rng, MAX_DEPTH, false);
        run_case(ctx, &case, &tally).await;
        n += 1;
    }
    tally.report(storm, n, &["Ok", "Err", "Err with every level started"]);
}

#[test]
fn nested_eight_deep_cleanups_run_innermost_first() {
    current_thread().block_on(nested_storm(
        "nested_eight_deep_cleanups_run_innermost_first",
    ));
}

#[test]
fn nested_eight_deep_cleanups_run_innermost_first_multi_thread() {
    multi_thread().block_on(async {
        tokio::spawn(nested_storm(
            "nested_eight_deep_cleanups_run_innermost_first_multi_thread",
        ))
        .await
        .unwrap();
    });
}

// ---------------------------------------------------------------------------
// Minimized from the storms: a nested cleanup cut short
// ---------------------------------------------------------------------------

/// Records what happened, in order.
type Trace = Arc<Mutex<Vec<&'static str>>>;

#[cancellable]
async fn cut_inner(trace: Trace) {
    on_cancel! {
        trace.lock().unwrap().push("inner cleanup start");
        yield_now().await;
        trace.lock().unwrap().push("inner cleanup end");
    }
    std::future::pending::<()>().await;
}

/// Has a token of its own, not derived from the outer one, so it does not
/// see the cancellation; the call nested in it does.
#[cancellable]
async fn cut_middle(trace: Trace, shutdown: CancellationToken) {
    on_cancel! { trace.lock().unwrap().push("middle cleanup"); }
    let _ = cut_inner(shutdown.child_token(), trace.clone()).await;
}

#[cancellable]
async fn cut_outer(trace: Trace) {
    on_cancel! { trace.lock().unwrap().push("outer cleanup"); }
    let _ = cut_middle(CancellationToken::new(), trace.clone(), token.clone()).await;
}

/// The scope storm found, on a multi-thread runtime, nested cleanups cut
/// short: with a chain of child tokens cancelled from another thread,
/// tokio-util marks the tokens cancelled one by one, so one poll can see an
/// outer and an inner level cancelled and a level between them not yet. The
/// inner level starts its cleanup (and yields in it); the level between, not
/// having seen the cancellation, reports the nested call as merely pending
/// (`report(false)` in `Race::poll`), so the outer race, which is draining,
/// sees no nested cleanup running and drops its body: the inner cleanup is
/// dropped half-way and the middle level never returns.
///
/// This is the same situation made deterministic on one thread: the middle
/// level's token is not derived from the outer one. The contract: a nested
/// call that saw the cancellation runs its cleanup to completion before the
/// outer body is dropped.
#[tokio::test]
async fn a_nested_cleanup_runs_to_completion_when_a_level_between_has_not_seen_the_cancellation() {
    let trace = Trace::default();
    let token = CancellationToken::new();
    let mut call = Box::pin(cut_outer(token.clone(), trace.clone()));
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
    assert!(polled.is_pending());
    token.cancel();
    assert_eq!(call.await, Err(Cancelled::new()));
    // Whether the middle level, whose own token was not cancelled, is then
    // cancelled too (rather than dropped) is the library's choice; either
    // way the inner cleanup completes before the outer one starts.
    let trace = trace.lock().unwrap().clone();
    assert!(
        trace == ["inner cleanup start", "inner cleanup end", "outer cleanup"]
            || trace
                == [
                    "inner cleanup start",
                    "inner cleanup end",
                    "middle cleanup",
                    "outer cleanup"
                ],
        "the inner cleanup was cut short: {trace:?}"
    );
}

// ---------------------------------------------------------------------------
// Storm 5: the same calls as `Scope` tasks on a multi-thread runtime
// ---------------------------------------------------------------------------

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (bounded) until the runtime has `baseline` alive tasks again.
async fn alive_tasks_back_to(ctx: Ctx, baseline: usize) {
    for _ in 0..64 {
        if alive_tasks() == baseline {
            return;
        }
        yield_now().await;
    }
    let deadline = std::time::Instant::now() + HANG;
    while alive_tasks() != baseline {
        assert!(
            std::time::Instant::now() < deadline,
            "{ctx}\n  why: {} tasks alive, expected {baseline}: a task outlived its scope",
            alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum End {
    /// `shutdown` with a grace long enough for every cleanup.
    Shutdown,
    /// `shutdown` with no or almost no grace: stragglers are aborted.
    ShutdownShort(u64),
    /// `cancel`, then `join_all`.
    CancelJoinAll,
    /// Dropping the scope: every task aborted.
    Drop,
}

#[derive(Debug)]
struct ScopeCase {
    tasks: Vec<Plan>,
    /// The scope is a `child_of` a parent, which another OS thread cancels.
    parent_from_thread: Option<u32>,
    /// How many results to take with `join_next` before the end (each
    /// raced against `yields` yields, which interrupts it at random).
    join_next: Vec<u32>,
    yields_before_end: u32,
    end: End,
}

type TaskOut = (usize, Result<u32, Cancelled>);

fn scope_case(rng: &mut Rng) -> ScopeCase {
    let n = 1 + rng.below(10) as usize;
    let tasks = (0..n)
        .map(|_| {
            let mut case = match rng.below(3) {
                0 => race_case(rng),
                1 => setup_cleanup_case(rng),
                _ => nested_case(rng, MAX_DEPTH, true),
            };
            // Only the fn itself cancels its task's token; the scope does the
            // rest.
            if rng.chance(1, 4) {
                case.plan.park = true;
            }
            case.plan
        })
        .collect();
    ScopeCase {
        tasks,
        parent_from_thread: rng.chance(1, 4).then(|| rng.upto(20)),
        join_next: (0..rng.below(4)).map(|_| rng.upto(30)).collect(),
        yields_before_end: rng.upto(20),
        end: match rng.below(8) {
            0 => End::ShutdownShort(rng.below(2)),
            1 => End::CancelJoinAll,
            2 => End::Drop,
            _ => End::Shutdown,
        },
    }
}

/// Logs the scope's cancellation in every task's log, once it is complete:
/// when the parent is being cancelled by another thread at the same time,
/// `scope.cancel()` may return before that thread has cancelled the tasks'
/// tokens (see `LogInner::distrust_itself`), so wait for it first.
async fn cancelled_by_scope(logs: &[Log], parent_done: &mut Option<oneshot::Receiver<()>>) {
    if let Some(done) = parent_done.take() {
        tokio::time::timeout(HANG, done).await.unwrap().unwrap();
    }
    for log in logs {
        log.cancelled(Source::Scope);
    }
}

/// The index of the task that returns at once (see `run_scope_case`).
const EARLY: usize = usize::MAX;
const EARLY_VALUE: u32 = 7;

/// A result taken with `join_next` before the end: `true` if it was the
/// task that returns at once.
fn take(
    ctx: Ctx,
    results: &mut [Option<Result<Result<u32, Cancelled>, TaskError>>],
    taken: &mut [bool],
    i: usize,
    r: Result<u32, Cancelled>,
    tally: &Tally,
) -> bool {
    if i == EARLY {
        assert_eq!(r, Ok(EARLY_VALUE), "{ctx}");
        tally.add("early task Ok");
        return true;
    }
    if taken[i] {
        panic!("{ctx}\n  why: task {i} handed out twice");
    }
    taken[i] = true;
    results[i] = Some(Ok(r));
    false
}

async fn run_scope_case(ctx: Ctx, case: &ScopeCase, baseline: usize, tally: &Tally) {
    let _announce = Announce(ctx);
    let parent = CancellationToken::new();
    let mut scope: Scope<TaskOut> = if case.parent_from_thread.is_some() {
        Scope::child_of(&parent)
    } else {
        Scope::new()
    };
    let logs: Vec<Log> = case
        .tasks
        .iter()
        .map(|_| Log::distrusting_itself())
        .collect();
    // A task that ignores its token and returns at once, spawned first: `Ok`
    // by construction whenever the end waits for the tasks (whether a planned
    // task finishes before the end depends on timing).
    scope.spawn(|_token| async { (EARLY, Ok(EARLY_VALUE)) });
    let mut early_joined = false;
    for (i, plan) in case.tasks.iter().enumerate() {
        let log = logs[i].clone();
        let plan = Arc::new(plan.clone());
        scope.spawn(move |t| async move {
            let r = level(t.clone(), log.clone(), plan, t, 0).await;
            log.push(returned(0, &r));
            (i, r)
        });
    }
    // A short shutdown always has a straggler to abort: a task that ignores
    // its token, spawned last (whether a planned task is still cleaning up
    // when the grace ends depends on timing).
    let straggler = matches!(case.end, End::ShutdownShort(_));
    if straggler {
        scope.spawn(|_token| async {
            std::future::pending::<()>().await;
            unreachable!("the straggler never finishes")
        });
    }
    // Another OS thread cancels the parent, hence the scope.
    let mut parent_done = case.parent_from_thread.map(|spins| {
        let (done_tx, done_rx) = oneshot::channel();
        let parent = parent.clone();
        let logs = logs.clone();
        std::thread::spawn(move || {
            for _ in 0..spins * 100 {
                std::hint::spin_loop();
            }
            parent.cancel();
            for log in &logs {
                log.cancelled(Source::Thread);
            }
            let _ = done_tx.send(());
        });
        done_rx
    });

    let mut results: Vec<Option<Result<Result<u32, Cancelled>, TaskError>>> =
        case.tasks.iter().map(|_| None).collect();
    let mut taken = vec![false; case.tasks.len()];
    for &yields in &case.join_next {
        let raced = tokio::select! {
            r = scope.join_next() => Some(r),
            () = async { for _ in 0..yields { yield_now().await; } } => None,
        };
        match raced {
            None => tally.add("join_next interrupted"),
            Some(None) => {}
            Some(Some(Ok((i, r)))) => {
                early_joined |= take(ctx, &mut results, &mut taken, i, r, tally);
            }
            Some(Some(Err(e))) => panic!("{ctx}\n  why: join_next before the end gave {e}"),
        }
    }
    for _ in 0..case.yields_before_end {
        yield_now().await;
    }
    // The scope's token is cancelled first, then the tasks are told.
    let mut aborted_ok = false;
    let rest: Option<Vec<Result<TaskOut, TaskError>>> = match case.end {
        End::Shutdown => {
            scope.cancel();
            cancelled_by_scope(&logs, &mut parent_done).await;
            Some(scope.shutdown(HANG).await)
        }
        End::ShutdownShort(ms) => {
            aborted_ok = true;
            scope.cancel();
            cancelled_by_scope(&logs, &mut parent_done).await;
            Some(scope.shutdown(Duration::from_millis(ms)).await)
        }
        End::CancelJoinAll => {
            scope.cancel();
            cancelled_by_scope(&logs, &mut parent_done).await;
            Some(
                tokio::time::timeout(HANG, scope.join_all())
                    .await
                    .unwrap_or_else(|_| panic!("{ctx}\n  why: join_all after cancel hangs")),
            )
        }
        End::Drop => {
            aborted_ok = true;
            // Dropping the scope cancels its token, then aborts the tasks.
            drop(scope);
            cancelled_by_scope(&logs, &mut parent_done).await;
            None
        }
    };
    // Every task is gone: none outlives its scope.
    alive_tasks_back_to(ctx, baseline).await;

    if let Some(mut rest) = rest {
        if !early_joined {
            match rest.remove(0) {
                Ok((EARLY, Ok(EARLY_VALUE))) => tally.add("early task Ok"),
                Err(e) if aborted_ok && e.is_aborted() && !e.is_panic() => {
                    tally.add("early task aborted");
                }
                other => panic!(
                    "{ctx}\n  why: the task that returns at once gave {other:?}, \
                     not Ok({EARLY_VALUE})"
                ),
            }
        }
        if straggler {
            match rest.pop() {
                Some(Err(e)) if e.is_aborted() && !e.is_panic() => tally.add("straggler aborted"),
                other => panic!(
                    "{ctx}\n  why: the straggler that ignores its token gave {other:?}, \
                     not aborted"
                ),
            }
        }
        let remaining: Vec<usize> = (0..case.tasks.len()).filter(|&i| !taken[i]).collect();
        if rest.len() != remaining.len() {
            panic!(
                "{ctx}\n  why: {} results for {} tasks not yet joined",
                rest.len(),
                remaining.len()
            );
        }
        for (slot, r) in remaining.into_iter().zip(rest) {
            results[slot] = Some(match r {
                Ok((i, r)) => {
                    if i != slot {
                        panic!("{ctx}\n  why: result of task {i} in the place of task {slot}");
                    }
                    Ok(r)
                }
                Err(e) => Err(e),
            });
        }
    }
    for (i, plan) in case.tasks.iter().enumerate() {
        let events = logs[i].events();
        let root = match results[i].take() {
            Some(Ok(r)) => {
                tally.add(if r.is_ok() { "task Ok" } else { "task Err" });
                Some(r)
            }
            Some(Err(e)) => {
                if !(aborted_ok && e.is_aborted() && !e.is_panic()) {
                    fail(ctx, case, &events, &format!("task {i}: {e}"));
                }
                tally.add("task aborted");
                None
            }
            None => {
                if !matches!(case.end, End::Drop) {
                    fail(ctx, case, &events, &format!("task {i}: no result"));
                }
                None
            }
        };
        if let Err(why) = check_call(plan, &events, root) {
            fail(ctx, case, &events, &format!("task {i}: {why}"));
        }
    }
}

#[test]
fn scope_storm_on_a_multi_thread_runtime_then_shutdown() {
    let storm = "scope_storm_on_a_multi_thread_runtime_then_shutdown";
    multi_thread().block_on(async {
        let baseline = alive_tasks();
        let tally = Tally::default();
        let mut n = 0;
        for (ctx, mut rng) in iterations(storm) {
            let case = scope_case(&mut rng);
            run_scope_case(ctx, &case, baseline, &tally).await;
            n += 1;
        }
        // Whether a planned task finishes before the end, or is aborted
        // mid-cleanup, depends on timing: counted, not required.
        tally.report(
            storm,
            n,
            &["early task Ok", "task Err", "straggler aborted"],
        );
    });
}

/// The generator is deterministic: the same (seed, storm, iteration) gives
/// the same case, which is what makes a failure replayable.
#[test]
fn the_generator_replays_a_case_from_its_seed_and_iteration() {
    let draw = |seed, iter| {
        let mut rng = Rng::new(seed, "x", iter);
        (0..8).map(|_| rng.next()).collect::<Vec<_>>()
    };
    assert_eq!(draw(1, 7), draw(1, 7));
    assert_ne!(draw(1, 7), draw(1, 8));
    assert_ne!(draw(1, 7), draw(2, 7));
    let seen = AtomicU64::new(0);
    let mut rng = Rng::new(DEFAULT_SEED, "x", 0);
    for _ in 0..1_000 {
        seen.fetch_or(1 << rng.below(64), Relaxed);
    }
    assert_eq!(
        seen.load(Relaxed),
        u64::MAX,
        "every value of below(64) comes up"
    );
}
