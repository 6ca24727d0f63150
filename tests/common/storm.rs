//! The harness of `tests/storms.rs`: the seeds and the generator, the event
//! log, the chain of `#[cancellable]` levels under test, who cancels and
//! when, and the check of one call against the contract (see the storms'
//! own docs for what is checked and how to replay a failure).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, mpsc as std_mpsc};
use std::time::Duration;

use cancel_scope::{CancellationToken, Cancelled, cancellable, on_cancel};
use tokio::sync::oneshot;
use tokio::task::yield_now;

// ---------------------------------------------------------------------------
// Configuration, seeds and the generator
// ---------------------------------------------------------------------------

pub(crate) const DEFAULT_ITERS: u64 = 2_000;
pub(crate) const DEFAULT_SEED: u64 = 0x5eed_cafe_f00d_0001;

/// Bounds a wait that only exists to turn a hang into a failure.
pub(crate) const HANG: Duration = Duration::from_secs(10);

pub(crate) fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim().replace('_', "");
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={raw:?} is not a u64: {e}")))
}

/// splitmix64: turns (seed, storm, iteration) into a well-mixed state.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64*: small, fast, and good enough to pick test cases.
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn new(seed: u64, storm: &str, iter: u64) -> Rng {
        let mut h = splitmix(seed);
        for b in storm.bytes() {
            h = splitmix(h ^ u64::from(b));
        }
        h = splitmix(h ^ iter);
        Rng(if h == 0 { 1 } else { h })
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn upto(&mut self, max: u32) -> u32 {
        u32::try_from(self.below(u64::from(max) + 1)).expect("fits")
    }

    /// `true` with probability `num / den`.
    pub(crate) fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// Where an iteration is: printed by every failure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub(crate) storm: &'static str,
    pub(crate) seed: u64,
    pub(crate) iter: u64,
}

impl fmt::Display for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "storm `{}` failed at seed={:#x} iteration={}; replay it with \
             CANCEL_SCOPE_STORM_SEED={:#x} CANCEL_SCOPE_STORM_ITER={} \
             cargo test --test storms {} -- --exact",
            self.storm, self.seed, self.iter, self.seed, self.iter, self.storm
        )
    }
}

/// Prints the context when the iteration panics (an assertion, or a panic
/// in the code under test), so every failure names its seed and iteration.
pub(crate) struct Announce(pub(crate) Ctx);

impl Drop for Announce {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0);
        }
    }
}

/// The iterations of one storm, each with its own generator.
pub(crate) fn iterations(storm: &'static str) -> impl Iterator<Item = (Ctx, Rng)> {
    let seed = env_u64("CANCEL_SCOPE_STORM_SEED").unwrap_or(DEFAULT_SEED);
    let iters = env_u64("CANCEL_SCOPE_STORM_ITERS").unwrap_or(DEFAULT_ITERS);
    let only = env_u64("CANCEL_SCOPE_STORM_ITER");
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..iters,
    };
    range.map(move |iter| (Ctx { storm, seed, iter }, Rng::new(seed, storm, iter)))
}

/// Fails the iteration with everything needed to understand and replay it.
#[track_caller]
pub(crate) fn fail(ctx: Ctx, case: &dyn fmt::Debug, events: &[Ev], why: &str) -> ! {
    let mut log = String::new();
    for (i, e) in events.iter().enumerate() {
        log.push_str(&format!("\n    {i:3}: {e:?}"));
    }
    panic!("{ctx}\n  why: {why}\n  case: {case:#?}\n  events:{log}");
}

/// Counts how often each side of a storm happened, so a storm that stopped
/// exercising one of them is noticed (printed with `--nocapture`).
#[derive(Default)]
pub(crate) struct Tally(Mutex<Vec<(&'static str, u64)>>);

impl Tally {
    pub(crate) fn add(&self, what: &'static str) {
        let mut v = self.0.lock().unwrap();
        match v.iter_mut().find(|(w, _)| *w == what) {
            Some((_, n)) => *n += 1,
            None => v.push((what, 1)),
        }
    }

    pub(crate) fn get(&self, what: &str) -> u64 {
        let v = self.0.lock().unwrap();
        v.iter().find(|(w, _)| *w == what).map_or(0, |(_, n)| *n)
    }

    /// With enough iterations, every listed side must have happened.
    pub(crate) fn report(&self, storm: &str, iterations: u64, required: &[&str]) {
        eprintln!("storm `{storm}`: {:?}", self.0.lock().unwrap());
        if iterations >= 500 {
            for what in required {
                assert!(
                    self.get(what) > 0,
                    "storm `{storm}` never exercised `{what}` in {iterations} iterations \
                     (the randomization lost a side of the race)"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The event log
// ---------------------------------------------------------------------------

/// Who cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The driver, before the call.
    Before,
    /// The fn itself (its setup, body or cleanup, at some level).
    Itself,
    /// A future joined with the call, in the same task.
    Sibling,
    /// Another task.
    Task,
    /// Another OS thread.
    Thread,
    /// The owner of a `Scope` (`cancel`/`shutdown`).
    Scope,
}

/// What happened, in order. `u8` is the nesting level (0 = the outermost
/// call). A `Cancel` is logged after `cancel()` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ev {
    SetupStart(u8),
    SetupDone {
        level: u8,
        saw_cancel: bool,
    },
    BodyStart(u8),
    /// The body is about to await yield `i` (a `yield_now`, pending once).
    Yield(u8, u32),
    /// The body resumed after yield `i`.
    Step(u8, u32),
    BodyDone(u8),
    BodyDropped(u8),
    CleanupStart(u8),
    CleanupStep(u8, u32),
    CleanupEnd(u8),
    /// The call at `level` returned (logged by its caller).
    Returned {
        level: u8,
        value: Option<u32>,
        timeout: bool,
    },
    Cancel(Source),
    /// A cancellation of an already cancelled token.
    Recancel(Source),
    /// The caller is about to poll the call at this level (diagnostics: it
    /// shows which level was polled in which poll).
    Poll(u8),
    /// ... and that poll returned (`true`: `Ready`).
    Polled(u8, bool),
}

#[derive(Clone, Default)]
pub(crate) struct Log(pub(crate) Arc<Mutex<LogInner>>);

#[derive(Default)]
pub(crate) struct LogInner {
    pub(crate) events: Vec<Ev>,
    /// A cancellation by the fn itself may be racing an ancestor's, and then
    /// `cancel()` can return before the tokens below it are cancelled (in
    /// tokio-util, a token that an ancestor's cancellation already marked
    /// returns at once): such a `cancel()` is logged as a `Recancel`, which
    /// no rule relies on.
    pub(crate) distrust_itself: bool,
}

impl Log {
    /// A log for a fn whose own cancellations may race an ancestor's.
    pub(crate) fn distrusting_itself() -> Log {
        Log(Arc::new(Mutex::new(LogInner {
            events: Vec::new(),
            distrust_itself: true,
        })))
    }

    pub(crate) fn push(&self, e: Ev) {
        self.0.lock().unwrap().events.push(e);
    }

    pub(crate) fn events(&self) -> Vec<Ev> {
        self.0.lock().unwrap().events.clone()
    }

    /// Logs a cancellation by `src`, made just before, after which the token
    /// and everything derived from it is cancelled: the first one logged is
    /// `Cancel`, any later one `Recancel`. (Whoever logs first, the token
    /// was cancelled by then.)
    pub(crate) fn cancelled(&self, src: Source) {
        let mut inner = self.0.lock().unwrap();
        let already = inner.events.iter().any(|e| matches!(e, Ev::Cancel(_)));
        let distrusted = inner.distrust_itself && src == Source::Itself;
        let first = !already && !distrusted;
        inner.events.push(if first {
            Ev::Cancel(src)
        } else {
            Ev::Recancel(src)
        });
    }
}

/// Logs `BodyDropped(level)` when the body that owns it is dropped.
pub(crate) struct DropLog(pub(crate) Log, pub(crate) u8);

impl Drop for DropLog {
    fn drop(&mut self) {
        self.0.push(Ev::BodyDropped(self.1));
    }
}

pub(crate) fn returned(level: u8, r: &Result<u32, Cancelled>) -> Ev {
    Ev::Returned {
        level,
        value: r.as_ref().ok().copied(),
        timeout: r.as_ref().is_err_and(Cancelled::is_timeout),
    }
}

// ---------------------------------------------------------------------------
// The fn under test: one level of a chain of up to 8 `#[cancellable]` calls
// ---------------------------------------------------------------------------

pub(crate) const MAX_DEPTH: usize = 8;

/// Where a level cancels the root token itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Setup,
    /// In the body, before the yield with this index.
    Body,
    /// In the cleanup, before the cleanup step with this index (a cancel
    /// of an already cancelled token).
    Cleanup,
}

/// What each level of one call does.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    pub(crate) depth: usize,
    pub(crate) setup_yields: [u32; MAX_DEPTH],
    /// Yields in the body before the call to the next level.
    pub(crate) before: [u32; MAX_DEPTH],
    /// Yields in the body after the call to the next level returned.
    pub(crate) after: [u32; MAX_DEPTH],
    pub(crate) cleanup_yields: [u32; MAX_DEPTH],
    /// The next level gets `token.child_token()` (else `token.clone()`).
    pub(crate) child_token: [bool; MAX_DEPTH],
    /// The deepest level waits forever after its yields (only a
    /// cancellation ends it).
    pub(crate) park: bool,
    /// `(level, phase, step)`: the fn cancels the root token there.
    pub(crate) cancel_at: Option<(usize, Phase, u32)>,
}

impl Plan {
    pub(crate) fn maybe_cancel(
        &self,
        root: &CancellationToken,
        log: &Log,
        d: usize,
        p: Phase,
        i: u32,
    ) {
        if self.cancel_at == Some((d, p, i)) {
            root.cancel();
            log.cancelled(Source::Itself);
        }
    }

    /// The value an all-`Ok` chain returns: the sum of the levels.
    pub(crate) fn value(&self) -> u32 {
        (0..self.depth).map(|d| d as u32).sum()
    }
}

pub(crate) fn lvl(d: usize) -> u8 {
    u8::try_from(d).expect("small")
}

/// One level: a setup that yields, an `on_cancel!` that yields and logs its
/// level, a body that yields, calls the next level (boxed recursion) with a
/// child or a clone of its token, and yields again.
#[cancellable]
pub(crate) async fn level(log: Log, plan: Arc<Plan>, root: CancellationToken, d: usize) -> u32 {
    log.push(Ev::SetupStart(lvl(d)));
    for i in 0..plan.setup_yields[d] {
        plan.maybe_cancel(&root, &log, d, Phase::Setup, i);
        yield_now().await;
    }
    log.push(Ev::SetupDone {
        level: lvl(d),
        saw_cancel: token.is_cancelled(),
    });
    on_cancel! {
        log.push(Ev::CleanupStart(lvl(d)));
        for i in 0..plan.cleanup_yields[d] {
            plan.maybe_cancel(&root, &log, d, Phase::Cleanup, i);
            yield_now().await;
            log.push(Ev::CleanupStep(lvl(d), i));
        }
        log.push(Ev::CleanupEnd(lvl(d)));
    }
    log.push(Ev::BodyStart(lvl(d)));
    let _dropped = DropLog(log.clone(), lvl(d));
    let mut step = 0;
    for _ in 0..plan.before[d] {
        plan.maybe_cancel(&root, &log, d, Phase::Body, step);
        log.push(Ev::Yield(lvl(d), step));
        yield_now().await;
        log.push(Ev::Step(lvl(d), step));
        step += 1;
    }
    let mut value = d as u32;
    if d + 1 < plan.depth {
        let child = if plan.child_token[d] {
            token.child_token()
        } else {
            token.clone()
        };
        let mut fut = Box::pin(level(child, log.clone(), plan.clone(), root.clone(), d + 1));
        // Awaits the next level, logging each poll of it.
        let r = std::future::poll_fn(|cx| {
            log.push(Ev::Poll(lvl(d + 1)));
            let p = fut.as_mut().poll(cx);
            log.push(Ev::Polled(lvl(d + 1), p.is_ready()));
            p
        })
        .await;
        log.push(returned(lvl(d + 1), &r));
        value += r.unwrap_or(0);
    }
    for _ in 0..plan.after[d] {
        plan.maybe_cancel(&root, &log, d, Phase::Body, step);
        log.push(Ev::Yield(lvl(d), step));
        yield_now().await;
        log.push(Ev::Step(lvl(d), step));
        step += 1;
    }
    if plan.park && d + 1 == plan.depth {
        plan.maybe_cancel(&root, &log, d, Phase::Body, step);
        log.push(Ev::Yield(lvl(d), step));
        std::future::pending::<()>().await;
    }
    log.push(Ev::BodyDone(lvl(d)));
    value
}

// ---------------------------------------------------------------------------
// Who cancels, and when
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub(crate) enum How {
    /// Nobody (unless the plan's `cancel_at` says the fn does).
    Never,
    /// The token is cancelled before the call.
    Before,
    /// A future joined with the call cancels after `yields` yields, then
    /// cancels `repeat` more times, one yield apart.
    Sibling { yields: u32, repeat: u32 },
    /// The same from another task.
    Task { yields: u32, repeat: u32 },
    /// After `yields` yields of a joined future, another OS thread spins
    /// `spins` times and cancels (and `repeat` more times, `spins` apart).
    Thread {
        yields: u32,
        spins: u32,
        repeat: u32,
    },
}

impl How {
    pub(crate) fn random(rng: &mut Rng, max_yields: u32) -> How {
        let yields = rng.upto(max_yields);
        let repeat = if rng.chance(1, 3) { rng.upto(6) } else { 0 };
        match rng.below(8) {
            0 => How::Never,
            1 => How::Before,
            2 | 3 => How::Sibling { yields, repeat },
            4 | 5 => How::Task { yields, repeat },
            _ => How::Thread {
                yields,
                spins: rng.upto(4_000),
                repeat,
            },
        }
    }
}

pub(crate) struct Request {
    pub(crate) token: CancellationToken,
    pub(crate) spins: u32,
    pub(crate) repeat: u32,
    pub(crate) log: Log,
    pub(crate) done: oneshot::Sender<()>,
}

/// One OS thread, shared by all storms, that cancels tokens on request.
pub(crate) fn canceller_thread() -> &'static Mutex<std_mpsc::Sender<Request>> {
    static THREAD: OnceLock<Mutex<std_mpsc::Sender<Request>>> = OnceLock::new();
    THREAD.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("storm-canceller".into())
            .spawn(move || {
                for req in rx {
                    for _ in 0..=req.repeat {
                        for _ in 0..req.spins {
                            std::hint::spin_loop();
                        }
                        req.token.cancel();
                        req.log.cancelled(Source::Thread);
                    }
                    let _ = req.done.send(());
                }
            })
            .expect("spawn the canceller thread");
        Mutex::new(tx)
    })
}

pub(crate) async fn cancel_after(
    token: CancellationToken,
    yields: u32,
    repeat: u32,
    log: Log,
    src: Source,
) {
    for _ in 0..yields {
        yield_now().await;
    }
    token.cancel();
    log.cancelled(src);
    for _ in 0..repeat {
        yield_now().await;
        token.cancel();
        log.cancelled(src);
    }
}

/// Runs `fut` (a call that uses `token`) while cancelling `token` as `how`
/// says; returns once `fut` and the canceller are both done.
pub(crate) async fn drive<F: Future>(
    fut: F,
    token: &CancellationToken,
    how: How,
    log: &Log,
) -> F::Output {
    match how {
        How::Never => fut.await,
        How::Before => {
            token.cancel();
            log.cancelled(Source::Before);
            fut.await
        }
        How::Sibling { yields, repeat } => {
            let canceller =
                cancel_after(token.clone(), yields, repeat, log.clone(), Source::Sibling);
            tokio::join!(fut, canceller).0
        }
        How::Task { yields, repeat } => {
            let canceller = tokio::spawn(cancel_after(
                token.clone(),
                yields,
                repeat,
                log.clone(),
                Source::Task,
            ));
            let out = fut.await;
            canceller.await.expect("the canceller task");
            out
        }
        How::Thread {
            yields,
            spins,
            repeat,
        } => {
            let (done_tx, done_rx) = oneshot::channel();
            let send = async {
                for _ in 0..yields {
                    yield_now().await;
                }
                let req = Request {
                    token: token.clone(),
                    spins,
                    repeat,
                    log: log.clone(),
                    done: done_tx,
                };
                canceller_thread().lock().unwrap().send(req).unwrap();
            };
            let (out, ()) = tokio::join!(fut, send);
            tokio::time::timeout(HANG, done_rx)
                .await
                .expect("the canceller thread answers")
                .expect("the canceller thread");
            out
        }
    }
}

// ---------------------------------------------------------------------------
// Checking one call against the contract
// ---------------------------------------------------------------------------

pub(crate) fn count(events: &[Ev], f: impl Fn(&Ev) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

pub(crate) fn pos(events: &[Ev], e: Ev) -> Option<usize> {
    events.iter().position(|x| *x == e)
}

pub(crate) fn level_of(e: &Ev) -> Option<u8> {
    match *e {
        Ev::SetupStart(l)
        | Ev::BodyStart(l)
        | Ev::Yield(l, _)
        | Ev::Step(l, _)
        | Ev::BodyDone(l)
        | Ev::BodyDropped(l)
        | Ev::CleanupStart(l)
        | Ev::CleanupStep(l, _)
        | Ev::CleanupEnd(l) => Some(l),
        Ev::SetupDone { level, .. } => Some(level),
        // Logged by the caller, at the caller's level.
        Ev::Returned { level, .. } => Some(level.saturating_sub(1)),
        Ev::Cancel(_) | Ev::Recancel(_) | Ev::Poll(_) | Ev::Polled(..) => None,
    }
}

/// Checks the log of one call of `level` against the contract. `root` is
/// what the outermost call returned, `None` when its task was aborted (then
/// only the rules that hold for a half-run call are checked).
pub(crate) fn check_call(
    plan: &Plan,
    events: &[Ev],
    root: Option<Result<u32, Cancelled>>,
) -> Result<(), String> {
    let first_cancel = events.iter().position(|e| matches!(e, Ev::Cancel(_)));
    if count(events, |e| matches!(e, Ev::Cancel(_))) > 1 {
        return Err("two first cancellations".into());
    }
    let complete = root.is_some();
    for d in 0..plan.depth {
        let l = lvl(d);
        let once = |e: Ev| -> Result<Option<usize>, String> {
            match count(events, |x| *x == e) {
                0 => Ok(None),
                1 => Ok(pos(events, e)),
                n => Err(format!("{e:?} happened {n} times")),
            }
        };
        let setup_start = once(Ev::SetupStart(l))?;
        let setup_done = events
            .iter()
            .position(|e| matches!(e, Ev::SetupDone { level, .. } if *level == l));
        if count(
            events,
            |e| matches!(e, Ev::SetupDone { level, .. } if *level == l),
        ) > 1
        {
            return Err(format!("level {d}: two setups"));
        }
        let body_start = once(Ev::BodyStart(l))?;
        let body_done = once(Ev::BodyDone(l))?;
        let dropped = once(Ev::BodyDropped(l))?;
        let cleanup_start = once(Ev::CleanupStart(l))?;
        let cleanup_end = once(Ev::CleanupEnd(l))?;
        let outcome: Option<Result<u32, Cancelled>> = if d == 0 {
            root
        } else {
            let mut found = events.iter().filter_map(|e| match *e {
                Ev::Returned {
                    level,
                    value,
                    timeout,
                } if level == l => Some(value.ok_or(if timeout {
                    Cancelled::timed_out()
                } else {
                    Cancelled::new()
                })),
                _ => None,
            });
            let first = found.next();
            if found.next().is_some() {
                return Err(format!("level {d} returned twice"));
            }
            first
        };

        let Some(setup_done) = setup_done else {
            // Never got past its setup: dropped with its caller's body (or
            // not reached). Nothing of the race or the cleanup happened.
            if body_start.is_some() || cleanup_start.is_some() || cleanup_end.is_some() {
                return Err(format!(
                    "level {d}: body or cleanup without a finished setup"
                ));
            }
            if d > 0 && outcome.is_some() {
                return Err(format!("level {d}: returned without finishing its setup"));
            }
            if d == 0 && complete && setup_start.is_some() {
                return Err("the outermost call returned without finishing its setup".into());
            }
            continue;
        };
        // Ties: a cancellation that happened before the setup finished means
        // the body is never polled.
        let saw_cancel = matches!(
            events[setup_done],
            Ev::SetupDone {
                saw_cancel: true,
                ..
            }
        );
        if saw_cancel || first_cancel.is_some_and(|c| c < setup_done) {
            if body_start.is_some() {
                return Err(format!(
                    "level {d}: the token was cancelled before the body would start, \
                     but the body was polled (cancellation must win the tie)"
                ));
            }
            if outcome.is_some_and(|o| o.is_ok()) {
                return Err(format!(
                    "level {d}: cancelled before its body, yet returned Ok"
                ));
            }
        }
        // The race: once the token is cancelled, the body does not get past
        // an `.await` it reached afterwards.
        if let Some(c) = first_cancel {
            for (p, e) in events.iter().enumerate().skip(c) {
                if let Ev::Yield(x, i) = *e {
                    if x == l {
                        let resumed = events[p..]
                            .iter()
                            .any(|e| *e == Ev::Step(l, i) || *e == Ev::BodyDone(l));
                        if resumed {
                            return Err(format!(
                                "level {d}: the body reached yield {i} after the token was \
                                 cancelled and was resumed past it"
                            ));
                        }
                    }
                }
            }
        }
        // A level that ran its whole cleanup may be dropped by its draining
        // caller rather than return its `Err` to it (the body around it is
        // being dropped anyway): that is a cancellation too.
        let outcome = match outcome {
            None if complete && cleanup_end.is_some() => Some(Err(Cancelled::new())),
            o => o,
        };
        match outcome {
            None if complete => {
                return Err(format!(
                    "level {d} finished its setup but never returned, and its cleanup did not \
                     run to completion: it was dropped instead of cancelled"
                ));
            }
            None => {
                // Aborted: a cleanup may have been cut short, never repeated
                // (checked by `once` above).
            }
            Some(Ok(v)) => {
                if cleanup_start.is_some() {
                    return Err(format!("level {d} returned Ok({v}) but its cleanup ran"));
                }
                if body_done.is_none() {
                    return Err(format!(
                        "level {d} returned Ok({v}) without finishing its body"
                    ));
                }
            }
            Some(Err(c)) => {
                if c.is_timeout() {
                    return Err(format!("level {d}: a timeout without a timeout"));
                }
                if first_cancel.is_none() {
                    return Err(format!("level {d} returned Err but nobody cancelled"));
                }
                let (Some(cs), Some(ce)) = (cleanup_start, cleanup_end) else {
                    return Err(format!(
                        "level {d} returned Err(Cancelled) but its cleanup did not run to \
                         completion exactly once"
                    ));
                };
                let steps: Vec<u32> = events[cs..ce]
                    .iter()
                    .filter_map(|e| match *e {
                        Ev::CleanupStep(x, i) if x == l => Some(i),
                        _ => None,
                    })
                    .collect();
                let expected: Vec<u32> = (0..plan.cleanup_yields[d]).collect();
                if steps != expected {
                    return Err(format!(
                        "level {d}: cleanup steps {steps:?}, expected {expected:?}"
                    ));
                }
                if body_start.is_some() && dropped.is_none_or(|p| p > cs) {
                    return Err(format!(
                        "level {d}: the body was not dropped before the cleanup"
                    ));
                }
                // Innermost first: everything nested in this level happened
                // before its cleanup started.
                if let Some(late) = events[cs..]
                    .iter()
                    .find(|e| level_of(e).is_some_and(|x| x > l))
                {
                    return Err(format!(
                        "level {d}: {late:?} of a deeper level happened after this level's \
                         cleanup started (cleanups must run innermost first)"
                    ));
                }
            }
        }
        if let (Some(cs), Some(ce)) = (cleanup_start, cleanup_end) {
            if ce < cs {
                return Err(format!("level {d}: cleanup ended before it started"));
            }
        }
        if cleanup_end.is_some() && cleanup_start.is_none() {
            return Err(format!("level {d}: cleanup end without start"));
        }
        if let Some(p) = dropped {
            if let Some(late) = events[p..]
                .iter()
                .find(|e| level_of(e).is_some_and(|x| x > l))
            {
                return Err(format!(
                    "level {d}: {late:?} of a deeper level happened after this level's body \
                     was dropped"
                ));
            }
        }
        // The value of an `Ok` chain is the sum of the levels that returned
        // `Ok` down to the first `Err`.
        if let Some(Ok(v)) = outcome {
            let child = if d + 1 < plan.depth {
                events.iter().find_map(|e| match *e {
                    Ev::Returned { level, value, .. } if usize::from(level) == d + 1 => {
                        Some(value.unwrap_or(0))
                    }
                    _ => None,
                })
            } else {
                Some(0)
            };
            if let Some(child) = child {
                if v != d as u32 + child {
                    return Err(format!(
                        "level {d} returned {v}, expected {}",
                        d as u32 + child
                    ));
                }
            }
        }
    }
    if first_cancel.is_none() && complete {
        // Nobody cancelled: every level ran to completion.
        if root != Some(Ok(plan.value())) {
            return Err(format!(
                "nobody cancelled, yet the call returned {root:?} (expected Ok({}))",
                plan.value()
            ));
        }
    }
    Ok(())
}

/// One storm case of a single (possibly nested) call.
#[derive(Debug)]
pub(crate) struct Case {
    pub(crate) plan: Plan,
    pub(crate) how: How,
}

/// Runs one call of `level` under `how` and checks it.
pub(crate) async fn run_case(ctx: Ctx, case: &Case, tally: &Tally) {
    let _announce = Announce(ctx);
    let root = CancellationToken::new();
    let log = Log::default();
    let plan = Arc::new(case.plan.clone());
    let call = level(root.clone(), log.clone(), plan.clone(), root.clone(), 0);
    let r = tokio::time::timeout(HANG, drive(call, &root, case.how, &log))
        .await
        .unwrap_or_else(|_| fail(ctx, case, &log.events(), "hang: the call did not return"));
    log.push(returned(0, &r));
    let events = log.events();
    if let Err(why) = check_call(&case.plan, &events, Some(r)) {
        fail(ctx, case, &events, &why);
    }
    tally.add(if r.is_ok() { "Ok" } else { "Err" });
    let started = |d: usize| {
        events
            .iter()
            .any(|e| matches!(e, Ev::SetupDone { level, .. } if usize::from(*level) == d))
    };
    if r.is_err() && (0..case.plan.depth).filter(|&d| started(d)).count() == case.plan.depth {
        tally.add("Err with every level started");
    }
    if events.iter().any(|e| {
        matches!(
            e,
            Ev::SetupDone {
                saw_cancel: true,
                ..
            }
        )
    }) {
        tally.add("cancelled during a setup");
    }
    if recancelled_during_cleanup(&events) {
        tally.add("cancelled again during a cleanup");
    }
    if matches!(case.how, How::Thread { .. }) {
        tally.add(if r.is_ok() {
            "thread: Ok"
        } else {
            "thread: Err"
        });
    }
}

pub(crate) fn recancelled_during_cleanup(events: &[Ev]) -> bool {
    let mut open = 0usize;
    for e in events {
        match e {
            Ev::CleanupStart(_) => open += 1,
            Ev::CleanupEnd(_) => open = open.saturating_sub(1),
            Ev::Recancel(_) if open > 0 => return true,
            _ => {}
        }
    }
    false
}

pub(crate) fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
