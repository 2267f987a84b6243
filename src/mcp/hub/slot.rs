//! A server's slot in the registry, and the states it goes through.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rmcp::model::Tool;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::McpServerConfig;
use crate::mcp::connection::{ExitInfo, McpConnection};

/// Where a server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Starting,
    Ready,
    /// The server went away by itself (see `exit_status`).
    Exited,
    /// It could not be started (see `last_error`).
    Failed,
    Stopping,
}

impl ServerState {
    pub const ALL: [ServerState; 5] = [
        Self::Starting,
        Self::Ready,
        Self::Exited,
        Self::Failed,
        Self::Stopping,
    ];
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
        };
        f.write_str(text)
    }
}

/// A server's slot: its config and what is known of its current connection.
pub(super) struct Slot {
    pub(super) config: McpServerConfig,
    pub(super) state: ServerState,
    /// The last connection, kept after it ended so that its facts and logs stay visible.
    pub(super) connection: Option<Arc<dyn McpConnection>>,
    pub(super) tools: Vec<Tool>,
    /// Bumped at each (re)start so a stale supervisor never updates a newer connection's slot.
    pub(super) generation: u64,
    pub(super) restarts: u32,
    pub(super) recent_restarts: VecDeque<Instant>,
    pub(super) exit: Option<ExitInfo>,
    pub(super) last_error: Option<String>,
    /// Cancelled when the slot is removed: ends its supervisor and any pending restart.
    pub(super) removed: CancellationToken,
}

impl Slot {
    pub(super) fn new(config: McpServerConfig) -> Self {
        Self {
            config,
            state: ServerState::Starting,
            connection: None,
            tools: Vec::new(),
            generation: 0,
            restarts: 0,
            recent_restarts: VecDeque::new(),
            exit: None,
            last_error: None,
            removed: CancellationToken::new(),
        }
    }
}
