//! The HTTP layer: axum, status codes, the API description, the OpenAI and MCP-endpoint wire
//! types. It calls the domain services and maps their errors to one JSON shape
//! ([`error::ApiError`]); no domain module imports anything from here.

pub mod api_description;
pub mod auth;
pub mod connection_service;
pub mod connections;
pub mod error;
pub mod extract;
pub mod host_header;
pub mod mcp_endpoint;
pub mod metrics;
pub mod openai;
pub mod resources;
pub mod router;
pub mod routes;
pub mod self_wake;
pub mod serve;
pub mod state;
pub mod whole_numbers;

pub use router::{router, with_layers};
pub use serve::{ServeLimits, ShutdownSignals, serve};
pub use state::AppState;
