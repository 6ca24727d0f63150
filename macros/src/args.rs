//! The attribute's arguments: `#[cancellable(token = t, flatten, timeout = e, cleanup_timeout = e)]`.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Token};

use crate::errors::Errors;

const EXPECTED: &str =
    "expected one of `token`, `flatten`, `timeout`, `cleanup_timeout`, `allow_no_await`";

/// The parsed arguments; each keeps the span of its name for later errors.
#[derive(Default)]
pub struct Args {
    /// `token = name`: the name of the injected token parameter.
    pub token: Option<Ident>,
    /// `flatten`: keep the declared `Result<_, E>` and fold `Cancelled` into `E`.
    pub flatten: Option<Span>,
    /// `timeout = EXPR`: the body also races this `Duration`.
    pub timeout: Option<(Span, Expr)>,
    /// `cleanup_timeout = EXPR`: the cleanup is bounded by this `Duration`.
    pub cleanup_timeout: Option<(Span, Expr)>,
    /// `allow_no_await`: silences the warning for a body that loops without
    /// any `.await`.
    pub allow_no_await: Option<Span>,
}

/// One `name` or `name = value` as written, before it is checked.
struct RawArg {
    name: Ident,
    value: Option<Expr>,
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = Ident::parse_any(input)
            .map_err(|e| syn::Error::new(e.span(), format!("expected an argument; {EXPECTED}")))?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(RawArg { name, value })
    }
}

/// Parses the arguments, recording every problem in `errors` and keeping
/// what is usable, so the function can still be expanded.
pub fn parse(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args::default();
    let raw = match Punctuated::<RawArg, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(e);
            return args;
        }
    };
    for RawArg { name, value } in raw {
        let key = name.to_string();
        let span = name.span();
        let duplicate = match key.as_str() {
            "token" => args.token.is_some(),
            "flatten" => args.flatten.is_some(),
            "timeout" => args.timeout.is_some(),
            "cleanup_timeout" => args.cleanup_timeout.is_some(),
            "allow_no_await" => args.allow_no_await.is_some(),
            _ => {
                errors.push(syn::Error::new(
                    span,
                    format!("unknown argument `{key}`; {EXPECTED}"),
                ));
                continue;
            }
        };
        if duplicate {
            errors.push(syn::Error::new(span, format!("duplicate argument `{key}`")));
            continue;
        }
        set_value(&mut args, &key, span, value, errors);
    }
    args
}

/// Records the value of the known argument `key`, or why it cannot be used.
fn set_value(args: &mut Args, key: &str, span: Span, value: Option<Expr>, errors: &mut Errors) {
    match (key, value) {
        ("flatten", None) => args.flatten = Some(span),
        ("allow_no_await", None) => args.allow_no_await = Some(span),
        ("flatten" | "allow_no_await", Some(value)) => errors.push(syn::Error::new_spanned(
            value,
            format!("`{key}` takes no value: write `#[cancellable({key})]`"),
        )),
        ("token", Some(Expr::Path(p))) if p.qself.is_none() && p.attrs.is_empty() => {
            // `Ident`'s parser rejects keywords such as `self`.
            match p
                .path
                .get_ident()
                .map(|i| syn::parse2::<Ident>(i.to_token_stream()))
            {
                Some(Ok(ident)) => args.token = Some(ident),
                _ => errors.push(token_value_error(&p)),
            }
        }
        ("token", Some(other)) => errors.push(token_value_error(&other)),
        ("token", None) => errors.push(syn::Error::new(
            span,
            "`token` needs a parameter name: `#[cancellable(token = cancel)]`",
        )),
        ("timeout", Some(value)) => args.timeout = Some((span, value)),
        ("cleanup_timeout", Some(value)) => args.cleanup_timeout = Some((span, value)),
        (_, None) => errors.push(syn::Error::new(
            span,
            format!("`{key}` needs a `Duration`: `#[cancellable({key} = Duration::from_secs(5))]`"),
        )),
        _ => unreachable!("argument names were checked above"),
    }
}

fn token_value_error(value: &impl ToTokens) -> syn::Error {
    syn::Error::new_spanned(
        value,
        "`token` needs a plain parameter name: `#[cancellable(token = cancel)]`",
    )
}
