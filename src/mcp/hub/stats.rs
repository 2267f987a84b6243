//! The hub's counters: behind `/mcp/health` and, registered once, the metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rmcp::model::CallToolResult;
use serde::Serialize;

use crate::mcp::McpError;
use crate::telemetry::LatencyFamily;

/// Counters behind `/mcp/health` and the metrics: the same counters, registered in the metrics
/// registry by [`register`](Self::register). Cheap to clone (each is an `Arc`).
#[derive(Debug, Clone)]
pub struct Statistics {
    pub servers_created: Counter,
    pub servers_failed: Counter,
    pub servers_removed: Counter,
    pub restarts: Counter,
    pub total_requests: Counter,
    pub failed_requests: Counter,
    /// Tool calls by server, tool and outcome.
    tool_calls: Family<ToolLabels, Counter>,
    tool_latency: LatencyFamily<ToolTimeLabels>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    server: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolTimeLabels {
    server: String,
    tool: String,
}

impl Default for Statistics {
    fn default() -> Self {
        Self {
            servers_created: Counter::default(),
            servers_failed: Counter::default(),
            servers_removed: Counter::default(),
            restarts: Counter::default(),
            total_requests: Counter::default(),
            failed_requests: Counter::default(),
            tool_calls: Family::default(),
            tool_latency: crate::telemetry::latency_family(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatisticsView {
    pub servers_created: u64,
    pub servers_failed: u64,
    pub servers_removed: u64,
    /// Restarts by the API or after a failure (`lit_mux_mcp_restarts_total` in /metrics).
    pub restarts: u64,
    pub total_requests: u64,
    pub failed_requests: u64,
}

impl Statistics {
    pub(super) fn view(&self) -> StatisticsView {
        StatisticsView {
            servers_created: self.servers_created.get(),
            servers_failed: self.servers_failed.get(),
            servers_removed: self.servers_removed.get(),
            restarts: self.restarts.get(),
            total_requests: self.total_requests.get(),
            failed_requests: self.failed_requests.get(),
        }
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let counters = [
            (
                "mcp_server_starts",
                "MCP servers started successfully",
                &self.servers_created,
            ),
            (
                "mcp_server_start_failures",
                "MCP server starts that failed",
                &self.servers_failed,
            ),
            (
                "mcp_server_removals",
                "MCP servers removed",
                &self.servers_removed,
            ),
            (
                "mcp_restarts",
                "MCP server restarts, by the API or after a failure",
                &self.restarts,
            ),
            (
                "mcp_tool_requests",
                "Tool calls (/mcp/health total_requests)",
                &self.total_requests,
            ),
            (
                "mcp_tool_request_failures",
                "Tool calls that failed or returned an error result",
                &self.failed_requests,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "tool_calls",
            "Tool calls by server, tool and outcome",
            self.tool_calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Time a tool call took, by server and tool",
            self.tool_latency.clone(),
        );
    }

    /// Counts one call. Calls that reached no tool are counted under `_unknown`, so that
    /// made-up names cannot create label values.
    pub(super) fn record_call(
        &self,
        server: &str,
        tool: &str,
        result: &Result<CallToolResult, McpError>,
        elapsed: Duration,
    ) {
        let outcome = match result {
            Ok(result) if result.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(McpError::UnknownServer(_) | McpError::UnknownTool { .. }) => "unknown",
            Err(McpError::Timeout { .. }) => "timeout",
            Err(McpError::Died { .. }) => "died",
            Err(McpError::NotReady { .. } | McpError::Disabled) => "not_ready",
            Err(_) => "protocol_error",
        };
        let (server, tool) = if outcome == "unknown" {
            ("_unknown".to_owned(), "_unknown".to_owned())
        } else {
            (server.to_owned(), tool.to_owned())
        };
        self.tool_latency
            .get_or_create(&ToolTimeLabels {
                server: server.clone(),
                tool: tool.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.tool_calls
            .get_or_create(&ToolLabels {
                server,
                tool,
                outcome,
            })
            .inc();
    }
}
