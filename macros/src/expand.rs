//! Code generation: the rewritten function, or a fallback plus errors.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, FnArg, Ident, Macro, Pat, ReturnType, Stmt, Type, parse_quote};

use crate::errors::Errors;
use crate::model::{self, Body, Cleanup, Input, Model, TokenParam};
use crate::{args, fallback};

/// The attribute, from tokens to tokens (no `proc_macro` types, so it can be
/// driven from unit tests and fuzzers).
pub fn cancellable(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = args::parse(args, &mut errors);
    let token_name = args.token.clone();
    let arg_exprs: Vec<syn::Expr> = [&args.timeout, &args.cleanup_timeout]
        .into_iter()
        .filter_map(|arg| arg.as_ref().map(|(_, expr)| expr.clone()))
        .collect();
    let input: Input = match syn::parse2(item.clone()) {
        Ok(input) => input,
        Err(e) => {
            let span = e.span();
            errors.push(syn::Error::new(
                span,
                format!("`#[cancellable]` applies to an `async fn` ({e})"),
            ));
            let errors = errors.to_compile_errors();
            return quote!(#item #errors);
        }
    };
    let model = model::build(input, args, &mut errors);
    let errors = errors.to_compile_errors();
    // Any error: the fn as written, so that the error is the only one.
    let out = match model {
        Ok(model) if errors.is_empty() => expand(&model),
        _ => fallback::emit(item, token_name, &arg_exprs),
    };
    quote!(#out #errors)
}

/// The path generated code reaches the runtime through.
fn private() -> TokenStream {
    quote!(::cancel_scope::__private)
}

/// A name only the expansion can see (`macro_rules!`-style hygiene).
fn hidden(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The declared return type, `()` when none is written.
fn declared_output(output: &ReturnType) -> Type {
    match output {
        ReturnType::Default => parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    }
}

/// `name: ::cancel_scope::CancellationToken`, after the receiver if any.
fn inject_token(sig: &mut syn::Signature, name: &Ident) {
    let arg: FnArg = parse_quote!(#name: ::cancel_scope::CancellationToken);
    let at = usize::from(matches!(sig.inputs.first(), Some(FnArg::Receiver(_))));
    sig.inputs.insert(at, arg);
}

fn expand(model: &Model) -> TokenStream {
    let mut sig = model.sig.clone();
    if let TokenParam::Injected(name) = &model.token {
        inject_token(&mut sig, name);
    }
    let output = declared_output(&model.sig.output);
    let returned: Type = if model.flatten {
        output.clone()
    } else {
        let span = output.span();
        parse_quote_spanned!(span=> ::core::result::Result<#output, ::cancel_scope::Cancelled>)
    };
    let attrs = &model.attrs;
    let errors_doc = (!model.flatten).then(|| errors_doc(attrs));
    let attrs = quote!(#(#attrs)* #errors_doc);
    let vis = &model.vis;
    let Some(body) = &model.body else {
        if !model.flatten {
            sig.output = ReturnType::Type(Default::default(), Box::new(returned));
        }
        let semi = &model.semi;
        return quote!(#attrs #vis #sig #semi);
    };
    let plain = is_plain(model, body);
    let kept = if plain {
        // `fn f(..) -> impl Future<Output = R>` whose body is the future:
        // the parameters are stored once, by the block (an `async fn` would
        // keep them as well). The `impl` carries this crate's span, so the
        // edition-2024 capture rules apply whatever the user's edition: the
        // future captures every lifetime in scope, as an `async fn`'s does
        // (`tests/edition2021` checks it).
        sig.asyncness = None;
        let future: Type = parse_quote_spanned!(Span::mixed_site()=>
            impl ::core::future::Future<Output = #returned>
        );
        sig.output = ReturnType::Type(Default::default(), Box::new(future));
        Some(keep_params(&mut sig))
    } else {
        if !model.flatten {
            sig.output = ReturnType::Type(Default::default(), Box::new(returned));
        }
        None
    };
    let block = expand_body(model, body, &output, kept);
    let mut block_tokens = TokenStream::new();
    body.brace
        .surround(&mut block_tokens, |tokens| block.to_tokens(tokens));
    quote!(#attrs #vis #sig #block_tokens)
}

/// The fn now returns `Result<T, Cancelled>`, so its docs get an `# Errors`
/// section saying when (which `clippy::pedantic`'s `missing_errors_doc` asks
/// of a `pub` fn), unless they have one. A fn without docs gets none (they
/// would silence `missing_docs`): the lint is allowed instead, as it is about
/// the expansion's return type, not the user's.
fn errors_doc(attrs: &[Attribute]) -> TokenStream {
    let docs: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if docs.is_empty() {
        return quote!(#[allow(clippy::missing_errors_doc)]);
    }
    if docs
        .iter()
        .any(|line| line.trim_start().starts_with("# Errors"))
    {
        return TokenStream::new();
    }
    // At the user's docs: clippy reads only docs written in the crate.
    let span = attrs
        .iter()
        .rfind(|attr| attr.path().is_ident("doc"))
        .map_or_else(Span::call_site, |attr| attr.pound_token.span);
    quote_spanned! {span=>
        #[doc = ""]
        #[doc = " # Errors"]
        #[doc = ""]
        #[doc = " `Err(Cancelled)` when the token is cancelled (or the `timeout`, if any, elapses)"]
        #[doc = " before the fn returns: its body was dropped and its `on_cancel!` cleanup, if any,"]
        #[doc = " has run (`#[cancellable]`)."]
    }
}

/// Whether the fn becomes a plain `fn` returning its future: with a setup
/// before `on_cancel!`, whose `return` and `?` must see the declared type, so
/// everything runs in one block (see [`expand_body`]), which need not be
/// nested in an `async fn`'s. Not when another attribute could be a macro
/// that expects an `async fn` (`#[tracing::instrument]` does): then it stays
/// one.
fn is_plain(model: &Model, body: &Body) -> bool {
    body.cleanup.is_some() && !body.setup.is_empty() && model.attrs.iter().all(is_inert)
}

/// Built-in attributes that do not care whether the fn is `async`.
fn is_inert(attr: &Attribute) -> bool {
    const INERT: [&str; 12] = [
        "doc",
        "allow",
        "warn",
        "deny",
        "forbid",
        "expect",
        "deprecated",
        "must_use",
        "inline",
        "cold",
        "track_caller",
        "cfg",
    ];
    attr.path()
        .get_ident()
        .is_some_and(|name| INERT.iter().any(|inert| name == inert))
}

/// For a plain `fn`: moves every parameter whole into the future, as an
/// `async fn` does, so that none is dropped, in whole or in part, when the
/// fn is called (an unused `_permit`, the `_` of a pattern, the fields the
/// block does not use). A parameter named by a pattern is renamed `arg<i>`
/// (hidden from the user's code) and destructured inside.
fn keep_params(sig: &mut syn::Signature) -> TokenStream {
    let mut kept = TokenStream::new();
    for (i, arg) in sig.inputs.iter_mut().enumerate() {
        let FnArg::Typed(param) = arg else {
            kept.extend(quote!(let _ = &self;));
            continue;
        };
        let attrs = &param.attrs;
        match &mut *param.pat {
            Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                let mutability = ident.mutability.take();
                let name = &ident.ident;
                kept.extend(quote!(#(#attrs)* let #mutability #name = #name;));
            }
            pat => {
                let name = Ident::new(&format!("arg{i}"), Span::mixed_site());
                kept.extend(quote!(let #name = #name; #(#attrs)* let #pat = #name;));
                *pat = parse_quote!(#name);
            }
        }
    }
    kept
}

/// `quote_spanned!` + `parse_quote!`.
macro_rules! parse_quote_spanned {
    ($span:expr=> $($tt:tt)*) => {
        syn::parse2(quote_spanned!($span=> $($tt)*)).expect("generated tokens parse")
    };
}
use parse_quote_spanned;

/// `if false { return declared_type::<T>(); }`: gives the type checker the declared
/// type before it reads the user's statements, so a mismatch in them is
/// reported at the user's expression.
fn type_hint(output: &Type) -> TokenStream {
    let erased = erase_impl_trait(output);
    // The whole `return` expression is spanned over the user's `-> T`, so
    // "return type inferred to be `T` here" points there: it starts with
    // the type's first token and ends with its last.
    let (first, last) = first_and_last(output);
    let call = quote_spanned!(first=> return ::cancel_scope::__private::declared_type::<#erased>);
    let parens = quote_spanned!(last=> ());
    quote!(if false { #call #parens; })
}

/// The spans of the first and the last token of `tokens`.
fn first_and_last(tokens: &impl ToTokens) -> (Span, Span) {
    let mut spans = tokens.to_token_stream().into_iter().map(|t| t.span());
    let first = spans.next().unwrap_or_else(Span::call_site);
    (first, spans.last().unwrap_or(first))
}

/// For `flatten`: `|c| From::from(c)`, which the runtime calls with the
/// `Cancelled` to get the declared `Result`'s error type `E` (a closure that
/// captures nothing: zero sized). Spanned at the return type, so an `E`
/// without `From<Cancelled>` is reported there, once, as exactly that: the
/// error is inside the closure, whose own type is fine, so nothing that holds
/// it fails as well.
fn from_cancelled(output: &Type) -> TokenStream {
    let span = output.span();
    // The closure holds no user code, so its parameter can carry the user's
    // span (where the error shows) without meeting a user's name.
    let c = Ident::new("cancel_scope_cancelled", span);
    quote_spanned!(span=> |#c: ::cancel_scope::Cancelled| ::core::convert::From::from(#c))
}

/// `ty` for a turbofish, which cannot name `impl Trait`: each becomes `_`.
fn erase_impl_trait(ty: &Type) -> Type {
    let mut erased = ty.clone();
    EraseImplTrait.visit_type_mut(&mut erased);
    erased
}

/// See [`erase_impl_trait`].
struct EraseImplTrait;

impl VisitMut for EraseImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(_) = ty {
            *ty = parse_quote!(_);
        } else {
            visit_mut::visit_type_mut(self, ty);
        }
    }
}

/// Re-invokes the user's `on_cancel!` path with the marker its
/// `macro_rules!` accepts silently, so the import counts as used.
fn consumed(mac: &Macro) -> TokenStream {
    let path = &mac.path;
    let bang = &mac.bang_token;
    quote!(#path #bang (@__cancel_scope_consumed);)
}

/// The fn's block. `kept` is `Some` for a plain `fn` (see [`is_plain`]): the
/// statements that keep its parameters.
fn expand_body(
    model: &Model,
    body: &Body,
    output: &Type,
    kept: Option<TokenStream>,
) -> TokenStream {
    let raced = RacedBody::new(model, body, output);
    let Some(cleanup) = &body.cleanup else {
        return block_without_cleanup(model, output, &raced);
    };
    let cleanup = CleanupCall::new(model, cleanup, &raced.fn_name);
    if body.setup.is_empty() {
        return block_cleanup_after_race(model, output, &raced, &cleanup);
    }
    block_with_setup(model, body, output, kept, &raced, &cleanup)
}

/// What every shape of the fn's block has: the token the body races against,
/// and the race itself.
struct RacedBody {
    /// With a timeout, rebinds the token to a child the deadline cancels.
    shadow: Option<TokenStream>,
    /// The hidden token the race borrows.
    token: Ident,
    /// What `token` is bound to (see [`token_borrow`]).
    borrow: TokenStream,
    /// The race of the body against the token, not yet awaited.
    race: TokenStream,
    /// The further `on_cancel!`s, consumed (see [`consumed`]).
    markers: TokenStream,
    /// The fn's name, as the runtime's cleanup and report take it.
    fn_name: TokenStream,
}

impl RacedBody {
    fn new(model: &Model, body: &Body, output: &Type) -> Self {
        let p = private();
        let token = hidden("cancel_scope_token");
        let race = race(model, body, output, &token);
        let fn_name = model.sig.ident.to_string();
        RacedBody {
            shadow: token_shadow(model),
            borrow: token_borrow(model),
            token,
            race,
            markers: body.rejected.iter().map(consumed).collect(),
            fn_name: quote!(#p::name(#fn_name)),
        }
    }
}

/// With a timeout the fn works with a child token that the deadline cancels.
fn token_shadow(model: &Model) -> Option<TokenStream> {
    let p = private();
    let name = model.token.ident();
    model.timeout.as_ref().map(|_| match &model.token {
        TokenParam::Declared { by_ref: true, .. } => {
            let child = hidden("cancel_scope_child");
            quote!(let #child = #p::child_token(#name); let #name = &#child;)
        }
        TokenParam::Declared { mutability, .. } => {
            quote!(let #mutability #name = #p::child_token(&#name);)
        }
        TokenParam::Injected(_) => quote!(let #name = #p::child_token(&#name);),
    })
}

/// The race borrows the token: a `&CancellationToken` parameter is copied,
/// an owned one borrowed.
fn token_borrow(model: &Model) -> TokenStream {
    let name = model.token.ident();
    match &model.token {
        TokenParam::Declared { by_ref: true, .. } => quote!(#name),
        // Reported already (see `Model::token_moved`): borrow a clone, so
        // that the move is not reported a second time.
        _ if model.token_moved => quote!(&::core::clone::Clone::clone(&#name)),
        TokenParam::Declared { .. } | TokenParam::Injected(_) => quote!(&#name),
    }
}

/// The raced body against `token`, within the timeout if there is one.
fn race(model: &Model, body: &Body, output: &Type, token: &Ident) -> TokenStream {
    let p = private();
    let hint = type_hint(output);
    let warning = model.no_await_loop.map(no_await_warning);
    let stmts = &body.body;
    // Spanned at the fn's `{`, so that "value moved here", for a local the
    // body consumes and the cleanup uses, points into the fn, not at the
    // attribute (the body's own tokens would draw a wrong `ref` suggestion).
    let at = body.brace.span.open();
    let raced = quote_spanned!(at=> async { #warning #hint #(#stmts)* });
    match &model.timeout {
        None => quote!(#p::race(#token, #raced)),
        Some(limit) => quote!(#p::race_timeout(#token, #limit, #raced)),
    }
}

/// With `flatten`, turns the `Result<T, Cancelled>` `outcome` into the
/// declared `Result`; else `outcome` as it is.
fn flatten_outcome(model: &Model, output: &Type, outcome: TokenStream) -> TokenStream {
    if model.flatten {
        // At the return type, as `from` is: a missing `From<Cancelled>`
        // shows there once.
        let from = from_cancelled(output);
        let erased = erase_impl_trait(output);
        let span = output.span();
        quote_spanned!(span=> ::cancel_scope::__private::flatten::<#erased>(#outcome, #from))
    } else {
        outcome
    }
}

/// The user's `on_cancel!`, as the runtime runs it once the race is lost.
struct CleanupCall {
    /// The `on_cancel!` path, consumed (see [`consumed`]).
    marker: TokenStream,
    /// The hidden `Cancelled` the lost race gives.
    cancelled: Ident,
    /// The cleanup's future, which gives `cancelled` back.
    call: TokenStream,
}

impl CleanupCall {
    fn new(model: &Model, cleanup: &Cleanup, fn_name: &TokenStream) -> Self {
        let p = private();
        let cleanup_stmts = &cleanup.stmts;
        // Spanned at `on_cancel!`, so a borrow error about what the cleanup
        // captures points there.
        let span = cleanup.mac.path.span();
        let cleanup_block =
            quote_spanned!(span=> async { if false { return; } #(#cleanup_stmts)* });
        let cancelled = hidden("cancel_scope_cancelled");
        // The cleanup future holds the `Cancelled` and gives it back: nothing
        // else keeps a copy across the cleanup's awaits.
        let call = match &model.cleanup_timeout {
            None => quote!(#p::cleanup(#fn_name, #cancelled, #cleanup_block)),
            Some(limit) => {
                quote!(#p::cleanup_within(#fn_name, #cancelled, #limit, #cleanup_block))
            }
        };
        CleanupCall {
            marker: consumed(&cleanup.mac),
            cancelled,
            call,
        }
    }
}

/// The block of a fn without `on_cancel!`: the race alone.
fn block_without_cleanup(model: &Model, output: &Type, raced: &RacedBody) -> TokenStream {
    let RacedBody {
        shadow,
        token,
        borrow,
        race,
        markers,
        fn_name,
    } = raced;
    let outcome = flatten_outcome(model, output, quote!(#race.without_cleanup(#fn_name).await));
    quote! {
        #shadow
        let #token = #borrow;
        #markers
        #outcome
    }
}

/// The block of a fn with nothing before `on_cancel!`, so no `return` or `?`
/// outside the raced body: the cleanup can follow the race directly.
fn block_cleanup_after_race(
    model: &Model,
    output: &Type,
    raced: &RacedBody,
    cleanup: &CleanupCall,
) -> TokenStream {
    let RacedBody {
        shadow,
        token,
        borrow,
        race,
        markers,
        ..
    } = raced;
    let CleanupCall {
        marker,
        cancelled,
        call,
    } = cleanup;
    let value = hidden("cancel_scope_value");
    let result = flatten_outcome(
        model,
        output,
        quote! {
            match #race.await {
                ::core::result::Result::Ok(#value) => ::core::result::Result::Ok(#value),
                ::core::result::Result::Err(#cancelled) => {
                    ::core::result::Result::Err(#call.await)
                }
            }
        },
    );
    quote! {
        #shadow
        let #token = #borrow;
        #marker
        #markers
        #result
    }
}

/// The block of a fn with a setup before `on_cancel!`.
///
/// A setup's `return` and `?` must see the declared type `T`, so setup,
/// race and cleanup run in one block whose output is `T`; a cancelled run
/// leaves through `exit`, which runs the cleanup and hands its `Cancelled`
/// to `run`. In a plain `fn` (see `is_plain`), `run` is the fn's future;
/// else the `async fn` awaits it.
fn block_with_setup(
    model: &Model,
    body: &Body,
    output: &Type,
    kept: Option<TokenStream>,
    raced: &RacedBody,
    cleanup: &CleanupCall,
) -> TokenStream {
    let p = private();
    let RacedBody {
        shadow,
        token,
        borrow,
        race,
        markers,
        ..
    } = raced;
    let CleanupCall {
        marker,
        cancelled,
        call,
    } = cleanup;
    let value = hidden("cancel_scope_value");
    let hint = type_hint(output);
    let setup: &[Stmt] = &body.setup;
    let run = setup_runner(model, output);
    let from = from_cancelled(output);
    let run_args = model.flatten.then(|| quote!(, #from));
    let await_run = kept.is_none().then(|| quote!(.await));
    quote! {
        #run(async move {
            #kept
            #shadow
            #hint
            let #token = #borrow;
            #(#setup)*
            #marker
            #markers
            match #race.await {
                ::core::result::Result::Ok(#value) => #value,
                ::core::result::Result::Err(#cancelled) => #p::exit(#call).await,
            }
        } #run_args)
        #await_run
    }
}

/// The runtime's function that runs a block with a setup: `run`, or with
/// `flatten` `run_flatten` at the return type, as `from` is (see
/// [`flatten_outcome`]).
fn setup_runner(model: &Model, output: &Type) -> TokenStream {
    if model.flatten {
        let erased = erase_impl_trait(output);
        let span = output.span();
        quote_spanned!(span=> ::cancel_scope::__private::run_flatten::<#erased, _, _>)
    } else {
        let p = private();
        quote!(#p::run)
    }
}

/// A warning on stable Rust: the use of a deprecated item, spanned at the
/// loop that never awaits.
fn no_await_warning(at: Span) -> TokenStream {
    // Only the use carries the user's span, so the warning points at the loop.
    let call = Ident::new("cancellable_body_loops_without_await", at);
    quote! {
        #[deprecated(
            note = "this body loops without any `.await`, so it cannot be cancelled until it \
                    ends; await something in the loop (e.g. `tokio::task::yield_now().await`), \
                    or write `#[cancellable(allow_no_await)]` if that is intended"
        )]
        fn cancellable_body_loops_without_await() {}
        #call();
    }
}
