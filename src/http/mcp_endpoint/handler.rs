//! lit-mux as an MCP server itself (served over streamable HTTP at `/mcp`): every tool of every
//! ready child, named `server__tool` as for native tool calling, and `tools/call` routed to the
//! child through the hub, which counts it like any other call.
//!
//! Invariants:
//! - A name maps back through the catalog as it is at the call, never by splitting it: a name
//!   from a stale list fails with "unknown tool", it never reaches a different tool.
//! - Clients hear `notifications/tools/list_changed` whenever the catalog may have changed since
//!   their session (or subscription) began: through the session's standalone stream for
//!   protocol versions up to 2025-11-25, through `subscriptions/listen` from 2026-07-28.
//! - Every change watcher ends with its session or subscription, or when lit-mux shuts down.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, ListToolsResult, PaginatedRequestParams, ResultType, ServerCapabilities,
    ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::mcp::McpError;
use crate::mcp::hub::{McpHub, ServedTool};
use crate::mcp::tool_names::ToolNames;

/// The handler of one MCP session (or of one request, for protocol versions without sessions).
pub struct McpEndpoint {
    hub: McpHub,
    shutdown: CancellationToken,
    /// Subscribed when the session began, so a change before its watcher starts is not missed.
    changes: watch::Receiver<u64>,
    /// Cancelled when rmcp drops this handler, which it does when the session ends.
    session_ended: CancellationToken,
    _session: DropGuard,
}

impl McpEndpoint {
    /// A handler for a new session; `shutdown` ends its change notifications.
    pub fn new(hub: McpHub, shutdown: CancellationToken) -> Self {
        let session_ended = CancellationToken::new();
        Self {
            changes: hub.catalog_changes(),
            hub,
            shutdown,
            _session: session_ended.clone().drop_guard(),
            session_ended,
        }
    }
}

/// The catalog with the names clients see.
fn exposed_catalog(hub: &McpHub) -> (Vec<ServedTool>, ToolNames) {
    let tools = hub.served_tools();
    let names = ToolNames::of(
        tools
            .iter()
            .map(|served| (served.server.as_str(), served.tool.name.as_ref())),
    );
    (tools, names)
}

impl ServerHandler for McpEndpoint {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("lit-mux", crate::VERSION))
        .with_instructions(
            "The tools of every MCP server lit-mux runs, named server__tool; the list changes \
             as servers start, stop or change their tools.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (tools, names) = exposed_catalog(&self.hub);
        let listed = tools
            .into_iter()
            .enumerate()
            .filter_map(|(position, served)| {
                let mut tool = served.tool;
                tool.name = names.name(position)?.to_owned().into();
                Some(tool)
            })
            .collect();
        Ok(ListToolsResult::with_all_items(listed))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (tools, names) = exposed_catalog(&self.hub);
        let Some(served) = names.find(&request.name).and_then(|at| tools.get(at)) else {
            return Err(unknown_tool(&request.name));
        };
        let call = self
            .hub
            .call_tool(&served.server, &served.tool.name, request.arguments);
        // rmcp only signals a client's cancellation; dropping the call is what stops it (the
        // child is sent notifications/cancelled).
        let outcome = tokio::select! {
            outcome = call => outcome,
            () = context.ct.cancelled() => {
                return Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "cancelled by the client", None));
            }
        };
        match outcome {
            Ok(mut result) => {
                // A child on an older protocol sends no `resultType`, which 2026-07-28 requires;
                // a result that reached us is complete. rmcp drops it again for older clients.
                result.result_type = Some(ResultType::COMPLETE);
                Ok(result.into())
            }
            Err(McpError::UnknownServer(_) | McpError::UnknownTool { .. }) => {
                // Removed or changed since the catalog was read.
                Err(unknown_tool(&request.name))
            }
            // The child's own JSON-RPC error (e.g. arguments it rejects) is passed on as it is.
            Err(McpError::Protocol {
                code: Some(code),
                message,
                ..
            }) => Err(ErrorData::new(ErrorCode(code), message, None)),
            // The tool could not run (timeout, died, not ready): the caller should read why.
            Err(failure) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(failure.to_string())]).into())
            }
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // The watcher must not hold this handler: it is dropped when the session ends, and
        // that is what stops the watcher.
        tokio::spawn(notify_session_of_changes(
            context.peer,
            self.changes.clone(),
            self.session_ended.clone(),
            self.shutdown.clone(),
        ));
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        if subscription.accepted().tools_list_changed != Some(true) {
            subscription.cancelled().await;
            return Ok(());
        }
        let mut changes = self.changes.clone();
        loop {
            tokio::select! {
                () = subscription.cancelled() => return Ok(()),
                // Returning ends the subscription gracefully: the client sees a final result.
                () = self.shutdown.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() || subscription.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn unknown_tool(name: &str) -> ErrorData {
    ErrorData::invalid_params(format!("Unknown tool: {name}"), None)
}

/// Sends `notifications/tools/list_changed` to a session at each catalog change until the
/// session ends, its transport closes, or lit-mux shuts down.
async fn notify_session_of_changes(
    peer: Peer<RoleServer>,
    mut changes: watch::Receiver<u64>,
    session_ended: CancellationToken,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = session_ended.cancelled() => return,
            () = shutdown.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() || peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
        }
    }
}
