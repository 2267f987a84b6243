//! lit-mux: one HTTP endpoint in front of AI model backends and MCP tool servers.
//!
//! The binary (`src/main.rs`) only parses the command line and hands over to [`cli::run`].

pub mod auth;
pub mod backends;
pub mod chat;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod extract;
pub mod mcp;
pub mod metrics;
pub mod resources;
pub mod routes;
pub mod self_wake;
pub mod server;
pub mod store;

/// This build's version, as reported by `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
