//! The `#[cancellable]` attribute of [cancel-scope](https://docs.rs/cancel-scope).
//!
//! Use it through the `cancel-scope` crate, which documents it: the generated
//! code calls `::cancel_scope::__private`.
//!
//! The pipeline, one file per step: `args.rs` parses the attribute's arguments,
//! `model.rs` splits the function into signature, token, setup, cleanup and
//! body and checks it (`valid.rs` finds, in the user's statements, the
//! mistakes the compiler would report against the expansion), `expand.rs` writes the rewritten function, and on an error
//! `fallback.rs` the function as written, plus the `compile_error!`s.

mod args;
mod errors;
mod expand;
mod fallback;
mod model;
mod valid;

use proc_macro::TokenStream;

/// Makes an `async fn` cancellable; see the `cancel-scope` crate.
#[proc_macro_attribute]
pub fn cancellable(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cancellable(args.into(), item.into()).into()
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
