//! The errors found in one expansion: a leaf that the parsing and checking
//! steps (`args.rs`, `model.rs`) and `expand.rs` all push to.

use proc_macro2::TokenStream;

/// Every error found, combined so that all of them are reported at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn to_compile_errors(&self) -> TokenStream {
        self.0
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}
