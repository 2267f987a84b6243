//! The fixture locator finds the binaries Cargo builds for this crate's own integration tests.
//! (This test also makes `cargo test --workspace` build them, before lit-mux's tests need them.)

#[test]
fn the_locator_finds_the_binaries_cargo_built() {
    assert_eq!(
        testkit::bins::mcp_fixture(),
        env!("CARGO_BIN_EXE_mcp-fixture")
    );
    assert_eq!(
        testkit::bins::passthrough_proxy(),
        env!("CARGO_BIN_EXE_passthrough-proxy")
    );
}
