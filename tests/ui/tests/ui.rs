//! Compile errors, each spanned at the user's code (trybuild). Refresh the
//! `.stderr` files with `TRYBUILD=overwrite cargo test --test ui` after a
//! compiler upgrade, and read the diff before committing it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("*.rs");
    t.pass("pass/*.rs");
}
