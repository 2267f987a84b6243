//! The state every handler can reach.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backends::BackendRegistry;
use crate::chat::ChatService;
use crate::config::Config;
use crate::mcp::hub::McpHub;

/// What every handler can reach. Cheap to clone: a set of `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub mcp: McpHub,
    pub backends: BackendRegistry,
    pub chat: ChatService,
    /// Read by `/health` only; requests reach the store through `chat`.
    pub store: crate::store::SharedStore,
    pub metrics: crate::http::metrics::Metrics,
    /// Cancelled when shutdown begins: ends long-lived streams (`/mcp`'s) that would otherwise
    /// hold the graceful shutdown for its whole grace period.
    pub shutdown: CancellationToken,
}
