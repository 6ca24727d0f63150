//! Drives the expansion with generated and mutated inputs, outside the
//! compiler: it must never panic, and must return either tokens that parse
//! as an item or a `compile_error!`.
//!
//! CI runs a short, seeded pass. The long run (1M inputs, any seed):
//!
//! ```sh
//! CANCEL_SCOPE_FUZZ_ITERS=1000000 CANCEL_SCOPE_FUZZ_SEED=7 \
//!     cargo test --release -p cancel-scope-macros fuzz -- --nocapture
//! ```
//!
//! A failure prints the seed and the input, so `CANCEL_SCOPE_FUZZ_SEED`
//! reproduces it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

use crate::expand::cancellable;

/// Real shapes the mutations start from.
const SEEDS: &[&str] = &[
    "async fn f() {}",
    "pub async fn f(x: u32) -> u32 { x }",
    "async fn f(&self) -> u32 { on_cancel! { self.g().await; } 1 }",
    "async fn f(&mut self, a: &mut Vec<u8>) -> io::Result<()> { let mut p = Vec::new(); on_cancel! { a.append(&mut p); } loop { p.push(1); g().await?; } }",
    "async fn f(self: Arc<Self>, #[token] t: CancellationToken) {}",
    "async fn f(#[token] t: &CancellationToken, #[token] u: CancellationToken) {}",
    "pub(crate) async fn f<'a, T: Clone + 'a>(xs: &'a [T]) -> Option<&'a T> where T: Send { xs.first() }",
    "async fn f(x: impl AsRef<str>, (a, b): (u8, u8), mut c: u8) -> impl Display { c += a + b; c }",
    "#[inline] /// doc\n async unsafe fn f() -> Result<(), E> { let x = g()?; on_cancel! { drop(x); } on_cancel! { } Ok(()) }",
    "async fn f(&self) -> u64;",
    "fn f() {}",
    "const fn f() {}",
    "async extern \"C\" fn f() {}",
    "struct S;",
    "async fn f() { if x { on_cancel! { y } } cancel_scope::on_cancel!(z); }",
    "async fn f(token: u8) {}",
];

const ARGS: &[&str] = &[
    "",
    "flatten",
    "token = t",
    "token = self",
    "timeout = Duration::from_secs(1)",
    "cleanup_timeout = d, timeout = e, flatten, token = k",
    "flatten, flatten",
    "tokn",
    "token",
    "timeout",
    "flatten = 1",
    "token = a::b",
    "= =",
    "5",
    "timeout = ,",
];

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

fn random_tree(rng: &mut Rng, depth: u32) -> TokenTree {
    const IDENTS: &[&str] = &[
        "async",
        "fn",
        "self",
        "Self",
        "token",
        "on_cancel",
        "return",
        "await",
        "let",
        "mut",
        "impl",
        "where",
        "const",
        "extern",
        "pub",
        "crate",
        "loop",
        "move",
        "x",
        "Result",
        "CancellationToken",
    ];
    const PUNCTS: &[char] = &[
        '!', '?', ';', ':', ',', '=', '&', '<', '>', '#', '-', '\'', '.',
    ];
    match rng.below(if depth == 0 { 3 } else { 4 }) {
        0 => TokenTree::Ident(Ident::new(
            IDENTS[rng.below(IDENTS.len())],
            Span::call_site(),
        )),
        1 => {
            let spacing = if rng.below(2) == 0 {
                Spacing::Alone
            } else {
                Spacing::Joint
            };
            TokenTree::Punct(Punct::new(PUNCTS[rng.below(PUNCTS.len())], spacing))
        }
        2 => TokenTree::Literal(Literal::u32_unsuffixed(
            u32::try_from(rng.below(100)).unwrap_or(0),
        )),
        _ => {
            let delimiter = [
                Delimiter::Brace,
                Delimiter::Parenthesis,
                Delimiter::Bracket,
                Delimiter::None,
            ][rng.below(4)];
            let inner: TokenStream = (0..rng.below(4))
                .map(|_| random_tree(rng, depth - 1))
                .collect();
            TokenTree::Group(Group::new(delimiter, inner))
        }
    }
}

/// Deletes, inserts, duplicates or swaps tokens, at any depth.
fn mutate(rng: &mut Rng, stream: TokenStream, depth: u32) -> TokenStream {
    let mut trees: Vec<TokenTree> = stream.into_iter().collect();
    for _ in 0..=rng.below(3) {
        let len = trees.len();
        match rng.below(6) {
            0 if len > 0 => {
                trees.remove(rng.below(len));
            }
            1 => trees.insert(rng.below(len + 1), random_tree(rng, 2)),
            2 if len > 0 => {
                let t = trees[rng.below(len)].clone();
                trees.insert(rng.below(len + 1), t);
            }
            3 if len > 1 => trees.swap(rng.below(len), rng.below(len)),
            4 if depth > 0 => {
                for tree in &mut trees {
                    if let TokenTree::Group(g) = tree {
                        if rng.below(2) == 0 {
                            let inner = mutate(rng, g.stream(), depth - 1);
                            *tree = TokenTree::Group(Group::new(g.delimiter(), inner));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    trees.into_iter().collect()
}

fn parse(s: &str) -> TokenStream {
    TokenStream::from_str(s).expect("seed tokenizes")
}

/// The contract of the expansion function for one input.
fn check(args: TokenStream, item: TokenStream) -> Result<(), String> {
    let out = catch_unwind(AssertUnwindSafe(|| cancellable(args.clone(), item.clone())))
        .map_err(|_| "panicked".to_owned())?;
    let text = out.to_string();
    if text.contains("compile_error") {
        return Ok(());
    }
    let as_item = syn::parse2::<syn::Item>(out.clone()).is_ok();
    let as_trait_item = syn::parse2::<syn::TraitItemFn>(out).is_ok();
    if as_item || as_trait_item {
        Ok(())
    } else {
        Err(format!("output is neither an item nor an error: {text}"))
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzz_expansion_never_panics() {
    let iters = env_u64("CANCEL_SCOPE_FUZZ_ITERS", 20_000);
    let seed = env_u64("CANCEL_SCOPE_FUZZ_SEED", 0x5EED);
    let mut rng = Rng(seed | 1);
    // Every seed and argument list unchanged first.
    for item in SEEDS {
        for args in ARGS {
            if let Err(e) = check(parse(args), parse(item)) {
                panic!("seed input failed ({e}): #[cancellable({args})] {item}");
            }
        }
    }
    for i in 0..iters {
        let seed_item = parse(SEEDS[rng.below(SEEDS.len())]);
        let item = mutate(&mut rng, seed_item, 3);
        let seed_args = parse(ARGS[rng.below(ARGS.len())]);
        let args = if rng.below(4) == 0 {
            mutate(&mut rng, seed_args, 1)
        } else {
            seed_args
        };
        if let Err(e) = check(args.clone(), item.clone()) {
            panic!("iteration {i} (seed {seed}) failed ({e}):\n#[cancellable({args})]\n{item}");
        }
    }
}
