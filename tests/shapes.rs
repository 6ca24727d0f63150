//! Every function shape `#[cancellable]` applies to compiles, takes its token
//! where the contract says, and returns what the contract says.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cancel_scope::{CancellationToken, Cancelled, cancellable, on_cancel};

fn live() -> CancellationToken {
    CancellationToken::new()
}

fn dead() -> CancellationToken {
    let token = CancellationToken::new();
    token.cancel();
    token
}

// ---------------------------------------------------------------------------
// Free fns and visibility
// ---------------------------------------------------------------------------

#[cancellable]
async fn free(x: u32) -> u32 {
    x + 1
}

#[tokio::test]
async fn free_fn() {
    assert_eq!(free(live(), 1).await, Ok(2));
    assert_eq!(free(dead(), 1).await, Err(Cancelled::new()));
}

mod inner {
    use cancel_scope::cancellable;

    // Callable from outside `inner` only if the visibility is kept.
    #[cancellable]
    pub(crate) async fn crate_visible(x: u32) -> u32 {
        x * 3
    }

    pub struct Widget(pub u32);

    impl Widget {
        #[cancellable]
        pub async fn size(&self) -> u32 {
            self.0
        }
    }
}

#[tokio::test]
async fn pub_crate_fn_keeps_its_visibility() {
    assert_eq!(inner::crate_visible(live(), 2).await, Ok(6));
    assert_eq!(inner::Widget(5).size(live()).await, Ok(5));
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

struct Counter {
    hits: u32,
}

impl Counter {
    #[cancellable]
    async fn into_hits(self) -> u32 {
        self.hits
    }

    #[cancellable]
    async fn hits(&self) -> u32 {
        self.hits
    }

    #[cancellable]
    async fn bump(&mut self, by: u32) {
        self.hits += by;
    }

    #[cancellable]
    async fn shared(self: Arc<Self>) -> u32 {
        self.hits + Arc::strong_count(&self) as u32
    }

    #[cancellable]
    async fn bumped(mut self, by: u32) -> u32 {
        on_cancel! {
            self.hits = 0;
        }
        self.hits += by;
        self.hits
    }
}

#[tokio::test]
async fn method_taking_self() {
    assert_eq!(Counter { hits: 4 }.into_hits(live()).await, Ok(4));
    assert_eq!(
        Counter { hits: 4 }.into_hits(dead()).await,
        Err(Cancelled::new())
    );
}

#[tokio::test]
async fn method_taking_ref_self() {
    let c = Counter { hits: 4 };
    assert_eq!(c.hits(live()).await, Ok(4));
    assert_eq!(c.hits(dead()).await, Err(Cancelled::new()));
}

#[tokio::test]
async fn method_taking_mut_self() {
    let mut c = Counter { hits: 4 };
    assert_eq!(c.bump(live(), 3).await, Ok(()));
    assert_eq!(c.hits, 7);
    assert_eq!(c.bump(dead(), 3).await, Err(Cancelled::new()));
    assert_eq!(c.hits, 7);
}

#[tokio::test]
async fn method_taking_arc_self() {
    let c = Arc::new(Counter { hits: 4 });
    assert_eq!(c.clone().shared(live()).await, Ok(6));
    assert_eq!(c.shared(dead()).await, Err(Cancelled::new()));
}

#[tokio::test]
async fn method_taking_mut_self_by_value() {
    assert_eq!(Counter { hits: 4 }.bumped(live(), 1).await, Ok(5));
    assert_eq!(
        Counter { hits: 4 }.bumped(dead(), 1).await,
        Err(Cancelled::new())
    );
}

// ---------------------------------------------------------------------------
// Traits
// ---------------------------------------------------------------------------

trait Worker {
    /// Declaration without a body: only the signature is rewritten.
    #[cancellable]
    async fn work(&self, x: u32) -> u32;

    /// Default body.
    #[cancellable]
    async fn default_work(&self, x: u32) -> u32 {
        x + 100
    }
}

struct Doubler;

impl Worker for Doubler {
    #[cancellable]
    async fn work(&self, x: u32) -> u32 {
        x * 2
    }
}

struct Overrider;

impl Worker for Overrider {
    #[cancellable]
    async fn work(&self, x: u32) -> u32 {
        x
    }

    #[cancellable]
    async fn default_work(&self, x: u32) -> u32 {
        x + 1
    }
}

/// Callable only through the rewritten trait signature.
async fn through_trait<W: Worker>(
    w: &W,
    token: CancellationToken,
    x: u32,
) -> Result<u32, Cancelled> {
    w.work(token, x).await
}

#[tokio::test]
async fn trait_declaration_without_body_and_impl() {
    assert_eq!(through_trait(&Doubler, live(), 21).await, Ok(42));
    assert_eq!(
        through_trait(&Doubler, dead(), 21).await,
        Err(Cancelled::new())
    );
    assert_eq!(Overrider.work(live(), 21).await, Ok(21));
}

#[tokio::test]
async fn trait_method_with_default_body() {
    assert_eq!(Doubler.default_work(live(), 1).await, Ok(101));
    assert_eq!(Doubler.default_work(dead(), 1).await, Err(Cancelled::new()));
    assert_eq!(Overrider.default_work(live(), 1).await, Ok(2));
}

// ---------------------------------------------------------------------------
// Generics, lifetimes, `where`, `impl Trait`
// ---------------------------------------------------------------------------

// A short loop that never awaits: the warning is silenced on purpose.
#[cancellable(allow_no_await)]
async fn largest<T: PartialOrd + Copy>(xs: &[T]) -> Option<T> {
    let mut best = *xs.first()?;
    for &x in xs {
        if x > best {
            best = x;
        }
    }
    Some(best)
}

#[tokio::test]
async fn generic_fn_with_bounds() {
    assert_eq!(largest(live(), &[3, 9, 2]).await, Ok(Some(9)));
    assert_eq!(largest::<f64>(live(), &[]).await, Ok(None));
    assert_eq!(largest(dead(), &[1]).await, Err(Cancelled::new()));
}

#[cancellable]
async fn first<'a>(xs: &'a [u32]) -> Option<&'a u32> {
    xs.first()
}

#[tokio::test]
async fn fn_with_lifetimes() {
    let xs = vec![4, 5];
    let got = first(live(), &xs).await.unwrap();
    assert!(std::ptr::eq(got.unwrap(), &xs[0]));
    assert_eq!(first(dead(), &xs).await, Err(Cancelled::new()));
}

#[cancellable]
async fn joined<I, S>(items: I, sep: &str) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let parts: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    parts.join(sep)
}

#[tokio::test]
async fn fn_with_where_clause() {
    assert_eq!(joined(live(), ["a", "b"], "-").await, Ok("a-b".to_owned()));
    assert_eq!(joined(dead(), ["a"], "-").await, Err(Cancelled::new()));
}

#[cancellable]
async fn greet(name: impl AsRef<str>, count: impl Future<Output = u32>) -> String {
    let n = count.await;
    format!("{} x{n}", name.as_ref())
}

#[tokio::test]
async fn impl_trait_arguments() {
    assert_eq!(
        greet(live(), String::from("bob"), async { 2 }).await,
        Ok("bob x2".to_owned())
    );
    assert_eq!(
        greet(dead(), "bob", std::future::ready(2)).await,
        Err(Cancelled::new())
    );
}

#[cancellable]
async fn shown(x: u32) -> impl Display {
    format!("<{x}>")
}

#[tokio::test]
async fn impl_display_return() {
    assert_eq!(
        shown(live(), 3).await.map(|d| d.to_string()),
        Ok("<3>".to_owned())
    );
    assert!(shown(dead(), 3).await.is_err());
}

// ---------------------------------------------------------------------------
// Parameter patterns
// ---------------------------------------------------------------------------

#[cancellable(allow_no_await)]
async fn count_up(mut n: u32, times: u32) -> u32 {
    for _ in 0..times {
        n += 1;
    }
    n
}

struct Point {
    x: i32,
    y: i32,
}

#[cancellable]
async fn destructured((a, b): (u32, u32), Point { x, y }: Point) -> (u32, i32) {
    on_cancel! {
        let _ = (a, x);
    }
    (a + b, x - y)
}

#[tokio::test]
async fn mut_and_destructuring_parameter_patterns() {
    assert_eq!(count_up(live(), 1, 3).await, Ok(4));
    assert_eq!(
        destructured(live(), (1, 2), Point { x: 5, y: 3 }).await,
        Ok((3, 2))
    );
    assert_eq!(
        destructured(dead(), (1, 2), Point { x: 5, y: 3 }).await,
        Err(Cancelled::new())
    );
}

// ---------------------------------------------------------------------------
// Unit return, attributes, `unsafe`
// ---------------------------------------------------------------------------

#[cancellable]
async fn no_return_type(hits: &AtomicU32) {
    hits.fetch_add(1, SeqCst);
}

#[tokio::test]
async fn unit_return() {
    let hits = AtomicU32::new(0);
    let r: Result<(), Cancelled> = no_return_type(live(), &hits).await;
    assert_eq!(r, Ok(()));
    assert_eq!(no_return_type(dead(), &hits).await, Err(Cancelled::new()));
    assert_eq!(hits.load(SeqCst), 1);
}

// Attributes written after `#[cancellable]` are handed to the macro, which
// must emit them again.
#[cancellable]
/// Doubles, documented.
///
/// A second paragraph, so the doc attribute is more than one line.
#[must_use = "the doubled value is the point"]
#[inline]
async fn documented(x: u32) -> u32 {
    x * 2
}

// An attribute with an observable effect, written after `#[cancellable]` so
// the macro is handed it: `#[tokio::main]` turns the rewritten fn into a
// blocking one. Were it dropped, `blocking_double(..)` would be a future and
// the test below would not compile. (`#[cfg]` would not do here: rustc strips
// `cfg`s before any attribute macro sees the item.)
#[cancellable]
#[tokio::main(flavor = "current_thread")]
async fn blocking_double(x: u32) -> u32 {
    x * 2
}

#[tokio::test]
async fn doc_comments_and_attributes_are_kept() {
    assert_eq!(documented(live(), 4).await, Ok(8));
    assert_eq!(documented(dead(), 4).await, Err(Cancelled::new()));
}

#[test]
fn attribute_after_cancellable_still_applies() {
    let r: Result<u32, Cancelled> = blocking_double(live(), 4);
    assert_eq!(r, Ok(8));
    assert_eq!(blocking_double(dead(), 4), Err(Cancelled::new()));
}

/// Reads through a raw pointer.
///
/// # Safety
/// `p` must be valid for reads for as long as the future lives.
#[cancellable]
async unsafe fn read_raw(p: *const u32) -> u32 {
    // SAFETY: the caller promises `p` is valid.
    unsafe { *p }
}

#[tokio::test]
async fn unsafe_async_fn() {
    let x = 11u32;
    // SAFETY: `x` outlives the awaited future.
    let got = unsafe { read_raw(live(), &raw const x) }.await;
    assert_eq!(got, Ok(11));
    // SAFETY: as above.
    let got = unsafe { read_raw(dead(), &raw const x) }.await;
    assert_eq!(got, Err(Cancelled::new()));
}

// ---------------------------------------------------------------------------
// Ways to write `on_cancel!`
// ---------------------------------------------------------------------------

#[cancellable]
async fn full_path_on_cancel(log: &mut Vec<&'static str>) -> u32 {
    log.push("setup");
    cancel_scope::on_cancel! {
        log.push("cleanup");
    }
    std::future::pending::<()>().await;
    1
}

#[cancellable]
async fn parenthesised_on_cancel(log: &mut Vec<&'static str>) -> u32 {
    log.push("setup");
    on_cancel!(log.push("cleanup"));
    std::future::pending::<()>().await;
    1
}

#[tokio::test]
async fn on_cancel_with_full_path_and_with_parentheses() {
    let mut log = Vec::new();
    assert_eq!(
        full_path_on_cancel(dead(), &mut log).await,
        Err(Cancelled::new())
    );
    assert_eq!(log, ["setup", "cleanup"]);

    let mut log = Vec::new();
    assert_eq!(
        parenthesised_on_cancel(dead(), &mut log).await,
        Err(Cancelled::new())
    );
    assert_eq!(log, ["setup", "cleanup"]);
}

// ---------------------------------------------------------------------------
// Setup without cleanup-side use, closures with their own `return`
// ---------------------------------------------------------------------------

#[cancellable]
async fn setup_unused_by_cleanup(hits: &AtomicU32, base: u32) -> u32 {
    let offset = base * 10;
    let label = String::from("unused by the cleanup");
    on_cancel! {
        hits.fetch_add(1, SeqCst);
    }
    tokio::task::yield_now().await;
    offset + label.len() as u32
}

#[tokio::test]
async fn setup_locals_not_used_by_the_cleanup() {
    let hits = AtomicU32::new(0);
    assert_eq!(setup_unused_by_cleanup(live(), &hits, 2).await, Ok(41));
    assert_eq!(hits.load(SeqCst), 0);
    assert_eq!(
        setup_unused_by_cleanup(dead(), &hits, 2).await,
        Err(Cancelled::new())
    );
    assert_eq!(hits.load(SeqCst), 1);
}

#[cancellable]
async fn closure_returns(xs: Vec<i32>) -> String {
    // `return` inside the closure returns from the closure, with its own type.
    let clamp = |x: i32| -> i32 {
        if x < 0 {
            return 0;
        }
        x
    };
    let classify = |x: i32| -> &'static str {
        if x == 0 {
            return "zero";
        }
        "positive"
    };
    let total: i32 = xs.iter().copied().map(clamp).sum();
    format!("{total} {}", classify(total))
}

#[tokio::test]
async fn early_return_inside_a_nested_closure() {
    assert_eq!(
        closure_returns(live(), vec![-5, 2, 3]).await,
        Ok("5 positive".to_owned())
    );
    assert_eq!(
        closure_returns(live(), vec![-5]).await,
        Ok("0 zero".to_owned())
    );
    assert_eq!(
        closure_returns(dead(), vec![1]).await,
        Err(Cancelled::new())
    );
}

// ---------------------------------------------------------------------------
// Parameters live as long as the future, as in an `async fn`
// ---------------------------------------------------------------------------

/// Counts its drops.
struct Dropped(Arc<AtomicU32>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

struct Pair {
    used: u32,
    _unused: Dropped,
}

/// A fn with a setup (expanded to a plain `fn` returning its future) whose
/// body uses none of `_permit`, the `_` of the pattern, or `pair._unused`.
#[cancellable]
async fn uses_little(_permit: Dropped, (n, _): (u32, Dropped), pair: Pair) -> u32 {
    let base = n + pair.used;
    on_cancel! {}
    tokio::task::yield_now().await;
    base
}

#[tokio::test]
async fn unused_parameters_are_dropped_with_the_future_not_at_the_call() {
    let drops = Arc::new(AtomicU32::new(0));
    let call = || {
        uses_little(
            live(),
            Dropped(drops.clone()),
            (1, Dropped(drops.clone())),
            Pair {
                used: 2,
                _unused: Dropped(drops.clone()),
            },
        )
    };
    let future = call();
    assert_eq!(drops.load(SeqCst), 0, "nothing is dropped by the call");
    assert_eq!(future.await, Ok(3));
    assert_eq!(drops.load(SeqCst), 3);

    // A future dropped unpolled drops them then.
    let future = call();
    assert_eq!(drops.load(SeqCst), 3);
    drop(future);
    assert_eq!(drops.load(SeqCst), 6);
}

// ---------------------------------------------------------------------------
// `flatten` with `impl Trait` in the declared `Result`
// ---------------------------------------------------------------------------

#[cancellable(flatten)]
async fn shown_flat(x: u32) -> std::io::Result<impl Display> {
    Ok(x * 2)
}

#[cancellable(flatten)]
async fn shown_after_setup(x: u32) -> std::io::Result<impl Display> {
    let y = x + 1;
    on_cancel! {}
    Ok(y * 2)
}

#[tokio::test]
async fn flatten_with_impl_trait_in_the_result() {
    assert_eq!(shown_flat(live(), 2).await.unwrap().to_string(), "4");
    assert_eq!(shown_after_setup(live(), 2).await.unwrap().to_string(), "6");
    let e = shown_after_setup(dead(), 2).await.err().unwrap();
    assert!(e.get_ref().unwrap().is::<Cancelled>());
}
