//! The MCP servers the tests run: our hostile fixture and the pinned npm servers.

use std::path::PathBuf;

use serde_json::{Value, json};

/// The fixture binary (`fixtures/mcp_fixture.rs`).
pub const FIXTURE: &str = env!("CARGO_BIN_EXE_mcp-fixture");

fn npm_bin(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp-servers/node_modules/.bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test, which installs the pinned MCP servers",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// `@modelcontextprotocol/server-everything`, pinned in tests/mcp-servers/package.json.
pub fn everything() -> String {
    npm_bin("mcp-server-everything")
}

/// `@modelcontextprotocol/server-filesystem`, pinned in tests/mcp-servers/package.json.
pub fn filesystem() -> String {
    npm_bin("mcp-server-filesystem")
}

/// A `POST /mcp/servers` body for the fixture in `mode` with extra arguments.
pub fn fixture_server(name: &str, mode: &str, extra: &[&str]) -> Value {
    let mut args = vec![mode.to_owned()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    json!({"name": name, "command": FIXTURE, "args": args, "timeout": 5})
}
