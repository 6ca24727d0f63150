//! Checks on the user's statements for mistakes that the compiler would
//! report against the expansion (a borrow the user never wrote, a block the
//! user never wrote): found here, they are reported at the user's tokens with
//! the fix. Each check only reports what cannot compile, so valid code is
//! never rejected; what it misses, the compiler still reports.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::visit_mut::{self, VisitMut};
use syn::{Expr, ExprPath, Ident, Item, Pat, Stmt};

/// Where `stmts` move `name` out: as a whole value (`f(name)`,
/// `let x = name;`, `name.drop_guard()`) or into a `move` closure or block.
/// Empty when the statements bind `name` anew anywhere (a shadowing
/// `let name = name.clone();` makes later moves fine), or when `name` is
/// `Copy` (a `&CancellationToken`), which the caller says by not asking.
pub fn moves_of(name: &Ident, stmts: &[Stmt]) -> Vec<Move> {
    let mut finder = Moves {
        name,
        found: Vec::new(),
        rebound: false,
    };
    for stmt in stmts {
        finder.visit_stmt_mut(&mut stmt.clone());
    }
    if finder.rebound {
        Vec::new()
    } else {
        finder.found
    }
}

/// A move found by [`moves_of`].
pub struct Move {
    /// The moved name, as written.
    pub at: Span,
    /// Captured by a `move` closure or block (rather than moved as a value).
    pub captured: bool,
}

/// `CancellationToken`'s methods that take `self`.
const CONSUMING_METHODS: [&str; 3] = ["drop_guard", "cancelled_owned", "run_until_cancelled_owned"];

struct Moves<'a> {
    name: &'a Ident,
    found: Vec<Move>,
    rebound: bool,
}

impl Moves<'_> {
    fn moved(&mut self, at: Span, captured: bool) {
        self.found.push(Move { at, captured });
    }

    fn is_name(&self, expr: &Expr) -> Option<Span> {
        match expr {
            Expr::Path(ExprPath {
                qself: None,
                path,
                attrs,
            }) if attrs.is_empty() => path
                .get_ident()
                .filter(|ident| *ident == self.name)
                .map(Ident::span),
            Expr::Paren(p) => self.is_name(&p.expr),
            _ => None,
        }
    }

    /// Visits `expr` in a place that does not move it (`&expr`, `expr.field`).
    fn visit_place(&mut self, expr: &mut Expr) {
        if self.is_name(expr).is_none() {
            self.visit_expr_mut(expr);
        }
    }

    /// The first use of `name` in tokens, for a `move` block that captures it.
    fn first_use(&self, tokens: TokenStream) -> Option<Span> {
        let mut prev_dot = false;
        for tree in tokens {
            match &tree {
                TokenTree::Ident(ident) if ident == self.name && !prev_dot => {
                    return Some(ident.span());
                }
                TokenTree::Group(group) => {
                    if let Some(span) = self.first_use(group.stream()) {
                        return Some(span);
                    }
                }
                _ => {}
            }
            prev_dot = matches!(&tree, TokenTree::Punct(p) if p.as_char() == '.');
        }
        None
    }
}

impl VisitMut for Moves<'_> {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        if let Some(at) = self.is_name(expr) {
            self.moved(at, false);
            return;
        }
        match expr {
            Expr::Reference(r) => self.visit_place(&mut r.expr),
            Expr::RawAddr(r) => self.visit_place(&mut r.expr),
            Expr::Field(f) => self.visit_place(&mut f.base),
            Expr::Index(i) => {
                self.visit_place(&mut i.expr);
                self.visit_expr_mut(&mut i.index);
            }
            Expr::Match(m) => {
                self.visit_place(&mut m.expr);
                for arm in &mut m.arms {
                    self.visit_arm_mut(arm);
                }
            }
            Expr::MethodCall(call) => {
                match self.is_name(&call.receiver) {
                    Some(span) => {
                        if CONSUMING_METHODS.iter().any(|m| call.method == m) {
                            self.moved(span, false);
                        }
                    }
                    None => self.visit_expr_mut(&mut call.receiver),
                }
                for arg in &mut call.args {
                    self.visit_expr_mut(arg);
                }
            }
            Expr::Closure(c) if c.capture.is_some() => {
                let tokens = c.body.to_token_stream();
                match self.first_use(tokens) {
                    Some(span) => self.moved(span, true),
                    None => visit_mut::visit_expr_mut(self, expr),
                }
            }
            Expr::Async(a) if a.capture.is_some() => {
                let tokens = a.block.to_token_stream();
                match self.first_use(tokens) {
                    Some(span) => self.moved(span, true),
                    None => visit_mut::visit_expr_mut(self, expr),
                }
            }
            _ => visit_mut::visit_expr_mut(self, expr),
        }
    }

    fn visit_local_mut(&mut self, local: &mut syn::Local) {
        // `let _ = name;` does not move it.
        if matches!(local.pat, Pat::Wild(_)) {
            if let Some(init) = &mut local.init {
                if self.is_name(&init.expr).is_some() && init.diverge.is_none() {
                    return;
                }
            }
        }
        visit_mut::visit_local_mut(self, local);
    }

    fn visit_pat_ident_mut(&mut self, pat: &mut syn::PatIdent) {
        if pat.ident == *self.name {
            self.rebound = true;
        }
        visit_mut::visit_pat_ident_mut(self, pat);
    }

    fn visit_item_mut(&mut self, _: &mut Item) {
        // A nested item cannot see the fn's locals.
    }
}

/// Where the cleanup uses `?` for itself (not in a closure, an async block
/// or a nested item of its own, whose `?` is theirs).
pub fn question_marks(stmts: &[Stmt]) -> Vec<Span> {
    let mut finder = QuestionMarks(Vec::new());
    for stmt in stmts {
        finder.visit_stmt_mut(&mut stmt.clone());
    }
    finder.0
}

struct QuestionMarks(Vec<Span>);

impl VisitMut for QuestionMarks {
    fn visit_expr_try_mut(&mut self, expr: &mut syn::ExprTry) {
        self.0.push(expr.question_token.span);
        visit_mut::visit_expr_try_mut(self, expr);
    }

    fn visit_expr_closure_mut(&mut self, _: &mut syn::ExprClosure) {}

    fn visit_expr_async_mut(&mut self, _: &mut syn::ExprAsync) {}

    fn visit_expr_try_block_mut(&mut self, _: &mut syn::ExprTryBlock) {}

    fn visit_item_mut(&mut self, _: &mut Item) {}
}

/// Whether the statements hold the expansion of `#[tracing::instrument]` on
/// an `async fn` (its hidden span binding): the attribute was above
/// `#[cancellable]` and moved the body into a block of its own.
pub fn instrumented(stmts: &[Stmt]) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            TokenTree::Ident(ident) => ident == "__tracing_attr_span",
            TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    stmts.iter().any(|stmt| walk(stmt.to_token_stream()))
}

/// Turns every `on_cancel!` nested in the statements into the marker its
/// `macro_rules!` accepts silently (so it reports no error of its own and its
/// import counts as used); returns the span of the first one.
pub fn silence_nested_on_cancel(stmts: &mut [Stmt]) -> Option<Span> {
    struct Replace {
        first: Option<Span>,
    }
    impl VisitMut for Replace {
        fn visit_macro_mut(&mut self, mac: &mut syn::Macro) {
            let is_on_cancel = mac
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "on_cancel" && s.arguments.is_none());
            if is_on_cancel {
                self.first.get_or_insert_with(|| {
                    mac.path
                        .segments
                        .last()
                        .map_or_else(Span::call_site, |s| s.ident.span())
                });
                mac.tokens = quote::quote!(@__cancel_scope_consumed);
            }
        }
    }
    let mut replace = Replace { first: None };
    for stmt in stmts.iter_mut() {
        replace.visit_stmt_mut(stmt);
    }
    replace.first
}
