//! The tool catalog (every tool of every ready server) and calls to those tools.

use std::time::Instant;

use rmcp::model::{CallToolResult, Tool};
use serde::Serialize;

use super::slot::ServerState;
use super::{McpHub, lock};
use crate::mcp::McpError;

/// One tool in the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogTool {
    pub name: String,
    pub description: String,
    pub server: String,
    /// The tool's JSON Schema for its arguments.
    pub parameters: serde_json::Value,
}

/// One tool of a ready server exactly as the server described it (schemas, annotations, `_meta`),
/// for clients that speak MCP themselves.
#[derive(Debug, Clone)]
pub struct ServedTool {
    pub server: String,
    pub tool: Tool,
}

impl McpHub {
    /// Every tool of every ready server, ordered by server then tool name.
    pub fn catalog(&self) -> Vec<CatalogTool> {
        self.served_tools()
            .into_iter()
            .map(|served| CatalogTool {
                name: served.tool.name.to_string(),
                description: served
                    .tool
                    .description
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
                parameters: serde_json::Value::Object((*served.tool.input_schema).clone()),
                server: served.server,
            })
            .collect()
    }

    /// The same tools, in the same order, with everything their servers said about them.
    pub fn served_tools(&self) -> Vec<ServedTool> {
        let mut tools = Vec::new();
        for slot in self.slots() {
            let slot = lock(&slot);
            if slot.state != ServerState::Ready {
                continue;
            }
            tools.extend(slot.tools.iter().map(|tool| ServedTool {
                server: slot.config.name.clone(),
                tool: tool.clone(),
            }));
        }
        tools
    }

    /// Calls `tool` on `server`, counting the request and its failure.
    pub async fn call_tool(
        &self,
        server: &str,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, McpError> {
        self.inner.stats.total_requests.inc();
        let started = Instant::now();
        let result = self.call_tool_inner(server, tool, arguments).await;
        if result.as_ref().map_or(true, |r| r.is_error == Some(true)) {
            self.inner.stats.failed_requests.inc();
        }
        self.inner
            .stats
            .record_call(server, tool, &result, started.elapsed());
        result
    }

    async fn call_tool_inner(
        &self,
        server: &str,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, McpError> {
        let connection = {
            let slot = self.slot(server)?;
            let slot = lock(&slot);
            if let (ServerState::Exited, Some(exit)) = (slot.state, &slot.exit) {
                return Err(McpError::Died {
                    server: server.to_owned(),
                    exit: exit.description.clone(),
                    stderr_tail: String::new(),
                });
            }
            if slot.state != ServerState::Ready {
                return Err(McpError::NotReady {
                    server: server.to_owned(),
                    state: slot.state.to_string(),
                });
            }
            if !slot.tools.iter().any(|t| t.name == tool) {
                return Err(McpError::UnknownTool {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                });
            }
            slot.connection.clone().ok_or_else(|| McpError::NotReady {
                server: server.to_owned(),
                state: slot.state.to_string(),
            })?
        };
        connection.call_tool(tool, arguments).await
    }
}
