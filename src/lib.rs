//! lit-mux: one HTTP endpoint in front of AI model backends and MCP tool servers.
//!
//! Layers, imports only going down (ARCHITECTURE.md): [`cli`] parses the command line and calls
//! [`app`], which builds the services and serves [`http`]; `http` calls the domain services
//! [`chat`], [`mcp`] and [`backends`]; they persist through [`store`]; everything reads the
//! typed [`config`]. [`logging`], [`telemetry`], [`tls`] and [`outgoing`] (how every
//! outgoing HTTP client is built) sit under all of them.

pub mod app;
pub mod backends;
pub mod chat;
pub mod cli;
pub mod config;
pub mod descriptor_limit;
pub mod http;
pub mod logging;
pub mod mcp;
pub mod outgoing;
pub mod store;
pub mod telemetry;
pub mod tls;

/// This build's version, as reported by `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
