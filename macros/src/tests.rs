//! Expansion snapshots of representative functions, so that a change in the
//! generated code shows in review. Refresh with `INSTA_UPDATE=always cargo
//! test -p cancel-scope-macros` (or `cargo insta review`) and read the diff.

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::cancellable;

fn pretty(args: TokenStream, item: TokenStream) -> String {
    print(cancellable(args, item))
}

fn print(items: TokenStream) -> String {
    let file: syn::File = syn::parse2(items).expect("the expansion parses as items");
    prettyplease::unparse(&file)
}

/// A trait method declaration is not an item on its own: print it in a trait.
fn pretty_in_trait(args: TokenStream, item: TokenStream) -> String {
    let out = cancellable(args, item);
    print(quote!(trait Service { #out }))
}

#[test]
fn whole_body_raced() {
    insta::assert_snapshot!(pretty(
        quote!(),
        quote! {
            pub async fn fetch(url: &str) -> Vec<u8> {
                download(url).await
            }
        }
    ));
}

#[test]
fn cleanup_without_setup() {
    insta::assert_snapshot!(pretty(
        quote!(),
        quote! {
            async fn metrics_loop(stats: &Stats) {
                on_cancel! { stats.flush().await; }
                loop { stats.tick().await; }
            }
        }
    ));
}

#[test]
fn writer_loop() {
    insta::assert_snapshot!(pretty(
        quote!(),
        quote! {
            async fn writer_loop(rx: &mut Receiver<Msg>, out: &mut File) -> io::Result<()> {
                let mut pending = Vec::new();
                on_cancel! { flush(out, &mut pending).await; }
                loop {
                    let msg = rx.recv().await.ok_or(closed())?;
                    pending.push(msg);
                    if pending.len() >= 64 { flush(out, &mut pending).await; }
                }
            }
        }
    ));
}

/// A setup with patterns and a `mut` parameter: the plain `fn` keeps every
/// parameter whole.
#[test]
fn setup_keeps_every_parameter() {
    insta::assert_snapshot!(pretty(
        quote!(),
        quote! {
            #[inline]
            async fn keeps((a, _): (u32, Guard), mut n: u32, _permit: Permit) -> u32 {
                n += a;
                on_cancel! {}
                n
            }
        }
    ));
}

/// With an attribute that may be a macro expecting an `async fn` (here
/// tracing's `instrument`), a fn with a setup stays `async`.
#[test]
fn setup_under_another_attribute_stays_async() {
    insta::assert_snapshot!(pretty(
        quote!(),
        quote! {
            #[tracing::instrument]
            async fn stays_async(n: u32) -> u32 {
                let m = n;
                on_cancel! {}
                m
            }
        }
    ));
}

#[test]
fn flatten_timeouts_and_declared_token() {
    insta::assert_snapshot!(pretty(
        quote!(
            flatten,
            timeout = Duration::from_secs(5),
            cleanup_timeout = self.grace
        ),
        quote! {
            async fn commit(&mut self, #[token] cancel: &CancellationToken) -> Result<(), DbError> {
                let tx = self.db.begin().await?;
                on_cancel! { tx.rollback().await; }
                tx.commit().await
            }
        }
    ));
}

#[test]
fn trait_declaration() {
    insta::assert_snapshot!(pretty_in_trait(
        quote!(token = cancel),
        quote! {
            async fn serve(&self, conn: Conn) -> u64;
        }
    ));
}

#[test]
fn error_keeps_the_function() {
    insta::assert_snapshot!(pretty(
        quote!(tokn = t),
        quote! {
            fn not_async(x: u32) -> u32 {
                on_cancel! { cleanup(); }
                x
            }
        }
    ));
}
