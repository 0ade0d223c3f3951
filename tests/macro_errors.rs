//! `#[rodario::actor]` refuses what it cannot serve, with a message that says what to write.
//! The expected messages are in `tests/ui/*.stderr` (regenerate with `TRYBUILD=overwrite`).

#[test]
fn actor_attribute_explains_its_refusals() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
