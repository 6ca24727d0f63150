//! The function as `#[cancellable]` sees it: signature, token parameter,
//! setup, cleanup and body, checked against the contract.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, Block, Expr, FnArg, Ident, Macro, Pat, PatType, ReturnType, Signature, Stmt, Token,
    Type, Visibility, token,
};

use crate::args::Args;
use crate::errors::Errors;
use crate::valid;

/// The item under the attribute: a free fn, a method, or a trait method
/// declaration without a body.
pub struct Input {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    pub body: Option<Block>,
    pub semi: Option<Token![;]>,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let (body, semi) = if input.peek(Token![;]) {
            (None, Some(input.parse()?))
        } else {
            (Some(input.parse()?), None)
        };
        Ok(Input {
            attrs,
            vis,
            sig,
            body,
            semi,
        })
    }
}

impl ToTokens for Input {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for attr in &self.attrs {
            attr.to_tokens(tokens);
        }
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        self.body.to_tokens(tokens);
        self.semi.to_tokens(tokens);
    }
}

/// Where the fn's `CancellationToken` comes from.
pub enum TokenParam {
    /// Injected by the attribute as `name: CancellationToken`.
    Injected(Ident),
    /// A parameter the user marked `#[token]`.
    Declared {
        ident: Ident,
        by_ref: bool,
        mutability: Option<Token![mut]>,
    },
}

impl TokenParam {
    pub fn ident(&self) -> &Ident {
        match self {
            TokenParam::Injected(ident) | TokenParam::Declared { ident, .. } => ident,
        }
    }
}

/// The user's `on_cancel! { .. }` statement.
pub struct Cleanup {
    /// The macro as written; the expansion invokes its path again so that a
    /// `use cancel_scope::on_cancel;` counts as used.
    pub mac: Macro,
    pub stmts: Vec<Stmt>,
}

/// A body split at its `on_cancel!`.
pub struct Body {
    pub brace: token::Brace,
    /// Statements before `on_cancel!`: run first, never raced.
    pub setup: Vec<Stmt>,
    pub cleanup: Option<Cleanup>,
    /// Statements after `on_cancel!` (all of them without one): raced.
    pub body: Vec<Stmt>,
    /// Further top-level `on_cancel!`s, already reported as errors; kept so
    /// that their paths still count as used.
    pub rejected: Vec<Macro>,
}

/// Everything the expansion needs.
pub struct Model {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    /// The signature as written, `#[token]` markers removed.
    pub sig: Signature,
    pub token: TokenParam,
    /// `flatten`, when it applies.
    pub flatten: bool,
    pub timeout: Option<Expr>,
    pub cleanup_timeout: Option<Expr>,
    /// Where the raced body loops without any `.await` (unless
    /// `allow_no_await`): the expansion warns there.
    pub no_await_loop: Option<Span>,
    /// `None` for a trait method declaration.
    pub body: Option<Body>,
    pub semi: Option<Token![;]>,
    /// The setup or the body moves the token, which is reported: the race
    /// then borrows a clone, so that the error is the only one.
    pub token_moved: bool,
}

/// Builds the model. `Err` gives back the input when the function cannot be
/// made cancellable at all (not `async`, `const`, `extern`); the errors say why.
pub fn build(mut input: Input, args: Args, errors: &mut Errors) -> Result<Model, Box<Input>> {
    let declared = take_token_params(&mut input.sig, errors);
    let fatal = check_fn_kind(&input.sig, errors);
    let token = match declared {
        Some(declared) => {
            reject_token_arg(&args, errors);
            declared
        }
        None => match injected_token(&input.sig, &args, errors) {
            Some(injected) => injected,
            None => return Err(Box::new(input)),
        },
    };
    if fatal {
        return Err(Box::new(input));
    }
    require_async(&mut input.sig, errors);
    let flatten = match args.flatten {
        Some(span) => check_flatten(&input.sig.output, span, errors),
        None => false,
    };
    let mut body = input.body.map(|block| split_body(block, errors));
    let token_moved = check_body(&token, body.as_mut(), errors);
    check_body_args(&args, body.as_ref(), errors);
    let no_await_loop = match (&body, args.allow_no_await) {
        (Some(body), None) => loop_without_await(&body.body),
        _ => None,
    };
    Ok(Model {
        no_await_loop,
        attrs: input.attrs,
        vis: input.vis,
        sig: input.sig,
        token,
        flatten,
        timeout: args.timeout.map(|(_, e)| e),
        cleanup_timeout: args.cleanup_timeout.map(|(_, e)| e),
        body,
        semi: input.semi,
        token_moved,
    })
}

/// `token = ..` alongside a `#[token]` parameter names nothing: reported.
fn reject_token_arg(args: &Args, errors: &mut Errors) {
    if let Some(name) = &args.token {
        errors.push(syn::Error::new(
            name.span(),
            "`token = ..` names the injected parameter, but this fn already has a \
             `#[token]` parameter and nothing is injected; remove one of the two",
        ));
    }
}

/// The token the attribute injects, named by `token = ..` or else `token`;
/// `None` (reported) when a parameter already has that name.
fn injected_token(sig: &Signature, args: &Args, errors: &mut Errors) -> Option<TokenParam> {
    let name = args
        .token
        .clone()
        .unwrap_or_else(|| Ident::new("token", Span::call_site()));
    let Some(existing) = param_named(sig, &name) else {
        return Some(TokenParam::Injected(name));
    };
    let (span, message) = if args.token.is_some() {
        let message = format!(
            "`token = {name}` names an existing parameter; pick a new name for the \
             injected token, or mark that parameter `#[token]` to use it instead"
        );
        (name.span(), message)
    } else {
        let message = format!(
            "a parameter is already named `{name}`; mark it `#[token]` to use it as \
             the cancellation token, or name the injected one with \
             `#[cancellable(token = other_name)]`"
        );
        (existing, message)
    };
    errors.push(syn::Error::new(span, message));
    None
}

/// Reports what the body cannot do (move the token, `?` in the cleanup,
/// `#[tracing::instrument]` above); `true` when it moves the token.
fn check_body(token: &TokenParam, body: Option<&mut Body>, errors: &mut Errors) -> bool {
    let Some(body) = body else {
        return false;
    };
    let token_moved = match token {
        TokenParam::Declared { by_ref: true, .. } => false,
        token => check_token_moves(token.ident(), body, errors),
    };
    check_cleanup(body, errors);
    check_instrument_order(body, errors);
    token_moved
}

/// Reports `timeout` and `cleanup_timeout` where there is nothing for them
/// to bound: no body, or (`cleanup_timeout`) no `on_cancel!`.
fn check_body_args(args: &Args, body: Option<&Body>, errors: &mut Errors) {
    let Some(body) = body else {
        for (span, name) in [
            (&args.timeout, "timeout"),
            (&args.cleanup_timeout, "cleanup_timeout"),
        ]
        .into_iter()
        .filter_map(|(arg, name)| arg.as_ref().map(|(span, _)| (*span, name)))
        {
            errors.push(syn::Error::new(
                span,
                format!("`{name}` applies to a function body; put it on the fn that has one"),
            ));
        }
        return;
    };
    if let (Some((span, _)), None) = (&args.cleanup_timeout, &body.cleanup) {
        errors.push(syn::Error::new(
            *span,
            "`cleanup_timeout` bounds the `on_cancel!` cleanup, and this fn has none",
        ));
    }
}

/// Reports every move of the token in the setup and the body (the race
/// borrows it until the body ends); `true` when there is one.
fn check_token_moves(name: &Ident, body: &Body, errors: &mut Errors) -> bool {
    let stmts: Vec<Stmt> = body.setup.iter().chain(&body.body).cloned().collect();
    let moves = valid::moves_of(name, &stmts);
    for m in &moves {
        let message = if m.captured {
            format!(
                "this `move` block takes `{name}`, which the race against it borrows until the \
                 body ends; give the block a clone: `let {name} = {name}.clone();` before it"
            )
        } else {
            format!(
                "`{name}` cannot be moved here: the race against it borrows it until the body \
                 ends; pass `{name}.clone()` (or `{name}.child_token()`) instead"
            )
        };
        errors.push(syn::Error::new(m.at, message));
    }
    !moves.is_empty()
}

/// `?` in the cleanup is reported, and the cleanup emitted empty, so that the
/// error is the only one.
fn check_cleanup(body: &mut Body, errors: &mut Errors) {
    let Some(cleanup) = &mut body.cleanup else {
        return;
    };
    let marks = valid::question_marks(&cleanup.stmts);
    for at in &marks {
        errors.push(syn::Error::new(
            *at,
            "`?` cannot be used in `on_cancel!`: the cleanup cannot change the result, which is \
             `Err(Cancelled)`; handle the error here (`if let Err(e) = .. { .. }`), or drop it \
             with `let _ = ..;`",
        ));
    }
    if !marks.is_empty() {
        cleanup.stmts.clear();
    }
}

/// `#[tracing::instrument]` above `#[cancellable]` has moved the body into a
/// block of its own, where `on_cancel!` is no longer at the top level: say
/// which order works (rather than the `on_cancel!` macro's own error).
fn check_instrument_order(body: &mut Body, errors: &mut Errors) {
    if body.cleanup.is_some() {
        return;
    }
    // Without `on_cancel!` everything is in `body.body`.
    if !valid::instrumented(&body.body) {
        return;
    }
    if let Some(at) = valid::silence_nested_on_cancel(&mut body.body) {
        errors.push(syn::Error::new(
            at,
            "`#[tracing::instrument]` is above `#[cancellable]`, so it has moved this \
             `on_cancel!` into a block of its own; put `#[cancellable]` first, above \
             `#[tracing::instrument(skip(token))]`",
        ));
    }
}

/// Errors for what cannot be cancellable; `true` when there is one.
fn check_fn_kind(sig: &Signature, errors: &mut Errors) -> bool {
    let mut fatal = false;
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new(
            constness.span,
            "`#[cancellable]` cannot apply to a `const fn`: it rewrites an `async fn`",
        ));
        fatal = true;
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "`#[cancellable]` cannot apply to an `extern` fn: it rewrites a Rust `async fn`",
        ));
        fatal = true;
    }
    fatal
}

/// A fn that is not `async` is reported (and then emitted as written, by
/// `fallback.rs`, as on any error).
fn require_async(sig: &mut Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "`#[cancellable]` requires an `async fn`: write `async fn`",
        ));
        sig.asyncness = Some(Token![async](sig.fn_token.span));
    }
}

/// Removes every `#[token]` marker; returns the first marked parameter and
/// reports the others and any that is not `name: CancellationToken` or
/// `name: &CancellationToken`.
fn take_token_params(sig: &mut Signature, errors: &mut Errors) -> Option<TokenParam> {
    let mut found: Option<TokenParam> = None;
    for arg in &mut sig.inputs {
        let Some(marker) = take_token_marker(arg, errors) else {
            continue;
        };
        let FnArg::Typed(pat_type) = &*arg else {
            errors.push(syn::Error::new_spanned(
                &marker,
                "`#[token]` marks a parameter of type `CancellationToken` or `&CancellationToken`, not `self`",
            ));
            continue;
        };
        if found.is_some() {
            errors.push(syn::Error::new_spanned(
                &marker,
                "only one parameter can be marked `#[token]`",
            ));
            continue;
        }
        found = declared_token(pat_type, errors);
    }
    found
}

/// Removes the parameter's `#[token]` markers; returns the first, and
/// reports a second one and any arguments.
fn take_token_marker(arg: &mut FnArg, errors: &mut Errors) -> Option<Attribute> {
    let attrs = match arg {
        FnArg::Typed(pat_type) => &mut pat_type.attrs,
        FnArg::Receiver(receiver) => &mut receiver.attrs,
    };
    let before = attrs.len();
    let mut marker = None;
    attrs.retain(|attr| {
        let is_marker = attr.path().is_ident("token");
        if is_marker && marker.is_none() {
            marker = Some(attr.clone());
        }
        !is_marker
    });
    let removed = before - attrs.len();
    let marker = marker?;
    if removed > 1 {
        errors.push(syn::Error::new_spanned(
            &marker,
            "duplicate `#[token]` marker",
        ));
    }
    if !matches!(marker.meta, syn::Meta::Path(_)) {
        errors.push(syn::Error::new_spanned(
            &marker,
            "`#[token]` takes no arguments",
        ));
    }
    Some(marker)
}

/// The `#[token]` parameter `pat_type`; `None` (reported) unless it is a
/// plain name of type `CancellationToken` or `&CancellationToken`.
fn declared_token(pat_type: &PatType, errors: &mut Errors) -> Option<TokenParam> {
    let Some(by_ref) = token_type(&pat_type.ty) else {
        errors.push(syn::Error::new_spanned(
            &pat_type.ty,
            "a `#[token]` parameter must have type `CancellationToken` or `&CancellationToken`",
        ));
        return None;
    };
    match &*pat_type.pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(TokenParam::Declared {
            ident: p.ident.clone(),
            by_ref,
            mutability: p.mutability,
        }),
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                "a `#[token]` parameter must be a plain name, like `token: CancellationToken`",
            ));
            None
        }
    }
}

/// `Some(false)` for `CancellationToken`, `Some(true)` for `&CancellationToken`.
fn token_type(ty: &Type) -> Option<bool> {
    match ty {
        Type::Reference(r) if r.mutability.is_none() => {
            token_type(&r.elem).filter(|by_ref| !by_ref).map(|_| true)
        }
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            (last.ident == "CancellationToken" && last.arguments.is_none()).then_some(false)
        }
        Type::Paren(p) => token_type(&p.elem),
        Type::Group(g) => token_type(&g.elem),
        _ => None,
    }
}

/// The span of a parameter bound to `name`, if any.
pub fn param_named(sig: &Signature, name: &Ident) -> Option<Span> {
    sig.inputs.iter().find_map(|arg| match arg {
        FnArg::Typed(pat_type) => match &*pat_type.pat {
            Pat::Ident(p) if p.ident == *name => Some(p.ident.span()),
            _ => None,
        },
        FnArg::Receiver(_) => None,
    })
}

/// `flatten` needs a return type written as `Result<_, _>` (any path ending
/// in `Result`, so `io::Result<T>` and `anyhow::Result<T>` qualify).
fn check_flatten(output: &ReturnType, flatten: Span, errors: &mut Errors) -> bool {
    let is_result = match output {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        ReturnType::Default => false,
    };
    if !is_result {
        let message = "`flatten` needs a return type written as `Result<T, E>` (with \
                       `E: From<Cancelled>`); without `flatten` the fn returns `Result<T, Cancelled>`";
        errors.push(match output {
            ReturnType::Type(_, ty) => syn::Error::new_spanned(ty, message),
            ReturnType::Default => syn::Error::new(flatten, message),
        });
    }
    is_result
}

/// The `on_cancel!` macro of a top-level statement, if it is one.
pub fn as_on_cancel(stmt: &Stmt) -> Option<&Macro> {
    let mac = match stmt {
        Stmt::Macro(m) => &m.mac,
        Stmt::Expr(Expr::Macro(m), _) => &m.mac,
        _ => return None,
    };
    let last = mac.path.segments.last()?;
    (last.ident == "on_cancel" && last.arguments.is_none()).then_some(mac)
}

/// Splits the body at its first top-level `on_cancel!`.
fn split_body(block: Block, errors: &mut Errors) -> Body {
    let mut setup = Vec::new();
    let mut body = Vec::new();
    let mut cleanup: Option<Cleanup> = None;
    let mut rejected = Vec::new();
    for stmt in block.stmts {
        let Some(mac) = as_on_cancel(&stmt) else {
            if cleanup.is_some() {
                &mut body
            } else {
                &mut setup
            }
            .push(stmt);
            continue;
        };
        let mac = mac.clone();
        if cleanup.is_some() {
            errors.push(syn::Error::new_spanned(
                &mac,
                "a `#[cancellable]` fn can have only one `on_cancel!` block; merge them into one",
            ));
            rejected.push(mac);
            continue;
        }
        let stmts = match mac.parse_body_with(Block::parse_within) {
            Ok(stmts) => stmts,
            Err(e) => {
                errors.push(e);
                Vec::new()
            }
        };
        cleanup = Some(Cleanup { mac, stmts });
    }
    if cleanup.is_none() {
        // Without `on_cancel!` the whole body is raced.
        std::mem::swap(&mut setup, &mut body);
    }
    Body {
        brace: block.brace_token,
        setup,
        cleanup,
        body,
        rejected,
    }
}

/// The span of the first `loop`, `while` or `for` in `stmts` when they hold
/// no `.await` at all: such a body cannot be cancelled until it ends
/// (cancellation happens only at an `.await`). `select!`, `join!` and `try_join!` count as awaits.
fn loop_without_await(stmts: &[Stmt]) -> Option<Span> {
    fn walk(tokens: TokenStream, first_loop: &mut Option<Span>) -> bool {
        let mut prev: Option<TokenTree> = None;
        for tree in tokens {
            match &tree {
                TokenTree::Ident(ident) => {
                    let awaits = match &prev {
                        Some(TokenTree::Punct(p)) => p.as_char() == '.' && ident == "await",
                        _ => false,
                    };
                    if awaits {
                        return true;
                    }
                    if first_loop.is_none()
                        && (ident == "loop" || ident == "while" || ident == "for")
                    {
                        *first_loop = Some(ident.span());
                    }
                }
                TokenTree::Punct(p) if p.as_char() == '!' && awaiting_macro(prev.as_ref()) => {
                    return true;
                }
                TokenTree::Group(group) if walk(group.stream(), first_loop) => return true,
                _ => {}
            }
            prev = Some(tree);
        }
        false
    }
    fn awaiting_macro(name: Option<&TokenTree>) -> bool {
        matches!(name, Some(TokenTree::Ident(n)) if n == "select" || n == "join" || n == "try_join")
    }
    let mut first_loop = None;
    let tokens = stmts.iter().map(ToTokens::to_token_stream).collect();
    if walk(tokens, &mut first_loop) {
        None
    } else {
        first_loop
    }
}
