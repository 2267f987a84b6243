//! lit-mux's integration tests, one binary with a module per area, so that lit-mux and the
//! fixtures are linked once. Most drive the real `lit-mux` binary in a temporary HOME
//! (`support`) against fake providers and MCP servers from `lit-mux-testkit`
//! (`crates/testkit`); `request_layers` and `backend_streams` call the library in process.
//!
//! One area: `cargo test --test it sessions::`; one test: add its name.

mod support;

mod backend_failures;
mod backend_streams;
mod bounds;
mod config_and_cli;
mod connections;
mod fake_backends_selfcheck;
mod host_header;
mod hostile_backends;
mod hostile_bodies;
mod http_api;
mod mcp_endpoint;
mod mcp_endpoint_sessions;
mod mcp_health;
mod mcp_hostile_children;
mod mcp_lifecycle;
mod mcp_policy;
mod mcp_real_servers;
mod mcp_spawn;
mod metrics;
mod native_tools;
mod openai_api;
mod openapi;
mod predecessor_compat;
mod request_layers;
mod sampling_options;
mod schemathesis;
mod sessions;
mod streaming;
mod tool_loop;
