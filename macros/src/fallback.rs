//! What is emitted when the attribute reports an error: the fn as the user
//! wrote it, so that the error is the only one.
//!
//! Nothing of the rewrite is kept: no token parameter is injected and the
//! return type is the declared one, so callers that call the fn as written
//! type-check (a caller of the fn it was meant to become gets an error of its
//! own until the misuse is fixed). Only what the attribute itself gives a
//! meaning to is removed from the body, so that it reports nothing more:
//! the `#[token]` markers, the `on_cancel!` blocks, and a body's use of the
//! token that would have been injected.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{Expr, FnArg, Ident, Pat, Stmt};

use crate::model::{self, Input};
use crate::valid;

/// `item` as written, minus the attribute's own markers. `token` is the
/// name the token would have been injected under; `arg_exprs` are the
/// attribute's `timeout` and `cleanup_timeout` expressions.
pub fn emit(item: TokenStream, token: Option<Ident>, arg_exprs: &[Expr]) -> TokenStream {
    let Ok(mut input) = syn::parse2::<Input>(item.clone()) else {
        return item;
    };
    let marked = remove_token_markers(&mut input.sig);
    let token = token.unwrap_or_else(|| Ident::new("token", Span::call_site()));
    let is_const = input.sig.constness.is_some();
    if let Some(block) = &mut input.body {
        if valid::silence_nested_on_cancel(&mut block.stmts).is_some() {
            // The cleanups are taken out, so a parameter or local that only
            // they used would be reported unused: a second diagnostic (an
            // error under `deny(warnings)`) for a fn that is in error anyway.
            // The real expansion checks them once the error is fixed.
            input
                .attrs
                .push(syn::parse_quote!(#[allow(unused_variables, unused_mut)]));
        }
        // The body may use the token the attribute would have injected: a
        // local of that name keeps it from reporting it missing.
        if !marked && !is_const && model::param_named(&input.sig, &token).is_none() {
            let binding: Vec<Stmt> = syn::parse_quote! {
                let #token = ::cancel_scope::CancellationToken::new();
                let _ = &#token;
            };
            block.stmts.splice(0..0, binding);
        }
        // The arguments' expressions, in a closure never called, so that
        // what they name (`Duration`, a parameter) is still used.
        if !is_const && !arg_exprs.is_empty() {
            let uses: Stmt = syn::parse_quote!(let _ = || (#(#arg_exprs,)*););
            block.stmts.insert(0, uses);
        }
    }
    input.into_token_stream()
}

/// Removes the `#[token]` markers from the parameters; `true` when a plain
/// named parameter had one (the body then has its token).
fn remove_token_markers(sig: &mut syn::Signature) -> bool {
    let mut marked = false;
    for arg in &mut sig.inputs {
        let (attrs, named) = match arg {
            FnArg::Typed(pat_type) => {
                (&mut pat_type.attrs, matches!(&*pat_type.pat, Pat::Ident(_)))
            }
            FnArg::Receiver(receiver) => (&mut receiver.attrs, false),
        };
        let before = attrs.len();
        attrs.retain(|attr| !attr.path().is_ident("token"));
        marked |= named && attrs.len() < before;
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::emit;
    use quote::quote;

    #[test]
    fn keeps_the_signature_and_removes_the_markers() {
        let out = emit(
            quote! {
                fn tick(#[token] t: CancellationToken, n: &mut u32) -> u32 {
                    on_cancel! { cleanup(); }
                    *n
                }
            },
            None,
            &[],
        );
        assert_eq!(
            out.to_string(),
            quote! {
                #[allow(unused_variables, unused_mut)]
                fn tick(t: CancellationToken, n: &mut u32) -> u32 {
                    on_cancel! { @__cancel_scope_consumed }
                    *n
                }
            }
            .to_string()
        );
    }
}
