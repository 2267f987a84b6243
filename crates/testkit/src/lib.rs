//! What lit-mux's integration tests and benchmarks run against, none of it specific to lit-mux:
//! fake model providers speaking the Ollama, OpenAI and Anthropic wire formats
//! ([`fake_backends`]), a reader of Server-Sent Events ([`sse`]), what `/proc` says about
//! processes ([`processes`]), and the paths of this crate's own fixture binaries ([`bins`]:
//! `mcp-fixture`, a misbehaving MCP server, and `passthrough-proxy`, the benchmarks' floor).
//!
//! lit-mux takes this crate as a dev-dependency only, so installing or building lit-mux never
//! builds the fixtures.

// A fixture that meets the unexpected fails the test that uses it, loudly and at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bins;
pub mod fake_backends;
pub mod processes;
pub mod sse;
