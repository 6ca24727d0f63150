//! Compile errors, each spanned at the user's code (trybuild). The cases are
//! `tests/ui/*.rs` (this package's folder) and `tests/ui/pass/*.rs`. Refresh
//! the `.stderr` files with `TRYBUILD=overwrite cargo test --test ui` after a
//! compiler upgrade or a change of a message, and read the diff before
//! committing it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("*.rs");
    t.pass("pass/*.rs");
}
