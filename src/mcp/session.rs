//! The client side of the MCP protocol over one connection, whatever transport carries it: the
//! handshake lit-mux makes (identity, protocol version), the bounded `tools/list` paging, tool
//! calls, and the end of rmcp's client task. A transport supplies rmcp's `Transport`; it adds
//! what only it knows (a process's exit, its stderr) around these calls.

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, Implementation, ProtocolVersion,
    Tool,
};
use rmcp::service::{NotificationContext, Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::IntoTransport;
use tokio::sync::mpsc;

/// The protocol version lit-mux asks for; older versions a server answers with are accepted.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_11_25;
/// How long ending rmcp's client task may take once the server is gone.
const PROTOCOL_SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Why a step of the handshake (`initialize`, `tools/list`) failed, in the API's words.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The connection ended: the server went away or closed its output. What became of it is
    /// the transport's to say.
    Closed,
    /// The server answered, but not in a way lit-mux can use: how, as the end of a sentence
    /// ("it refused initialize with error -32603: ...").
    Unusable(String),
}

impl HandshakeFailure {
    /// rmcp's reasons, with no type path or Debug text in them.
    fn of_initialize(err: rmcp::service::ClientInitializeError) -> Self {
        use rmcp::service::ClientInitializeError as E;
        match err {
            E::ConnectionClosed(_) | E::TransportError { .. } | E::Cancelled => Self::Closed,
            E::JsonRpcError(error) => Self::Unusable(format!(
                "it refused initialize with error {}: {}",
                error.code.0, error.message
            )),
            E::NoCompatibleProtocolVersion {
                server_supported, ..
            } => Self::Unusable(format!(
                "it speaks none of the protocol versions lit-mux does (it offers {})",
                server_supported
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Self::Unusable("its answer to initialize is not an initialize result".to_owned()),
        }
    }

    /// A failed request of the handshake after `initialize` (`tools/list`).
    pub fn of_request(what: &str, err: ServiceError) -> Self {
        match err {
            ServiceError::TransportClosed
            | ServiceError::TransportSend(_)
            | ServiceError::Cancelled { .. } => Self::Closed,
            ServiceError::McpError(error) => Self::Unusable(format!(
                "it refused {what} with error {}: {}",
                error.code.0, error.message
            )),
            _ => Self::Unusable(format!("its answer to {what} is not a {what} result")),
        }
    }
}

/// An initialized MCP session: rmcp's running client and what the server said about itself.
pub struct Session {
    name: String,
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, LitMuxClient>>>,
    peer: Peer<RoleClient>,
    /// `{name, version}` from the server's `initialize` answer (empty when it sent none).
    pub server_info: Implementation,
    /// The version the server answered with (empty when it sent no answer info).
    pub protocol_version: String,
}

impl Session {
    /// Runs the handshake (`initialize`, `notifications/initialized`) over `transport`. Each
    /// `notifications/tools/list_changed` of the server then sends on `tools_changed`. Not
    /// bounded in time: the caller bounds it, and dropping the future drops the transport.
    pub async fn open<T, E, A>(
        name: &str,
        transport: T,
        tools_changed: mpsc::Sender<()>,
    ) -> Result<Self, HandshakeFailure>
    where
        T: IntoTransport<RoleClient, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let handler = LitMuxClient { tools_changed };
        let service = rmcp::serve_client(handler, transport)
            .await
            .map_err(HandshakeFailure::of_initialize)?;
        let peer = service.peer().clone();
        let (server_info, protocol_version) = match service.peer_info() {
            Some(info) => (
                info.server_info
                    .clone()
                    .unwrap_or_else(|| Implementation::new("", "")),
                info.protocol_version.to_string(),
            ),
            None => (Implementation::new("", ""), String::new()),
        };
        Ok(Self {
            name: name.to_owned(),
            service: tokio::sync::Mutex::new(Some(service)),
            peer,
            server_info,
            protocol_version,
        })
    }

    /// Every page of `tools/list` (see [`list_every_tool`]).
    pub async fn list_tools(
        &self,
        max_bytes: usize,
    ) -> Result<Result<Vec<Tool>, String>, ServiceError> {
        list_every_tool(&self.peer, max_bytes).await
    }

    /// Calls a tool. Concurrent calls run side by side (multiplexed by JSON-RPC id); dropping
    /// the future makes rmcp send `notifications/cancelled`.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, ServiceError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        self.peer.call_tool(params).await
    }

    /// Ends rmcp's task, which drops the transport. Called once the server is gone, so the
    /// transport cannot stall this; the bound only guards against a bug. Idempotent.
    pub async fn close(&self) {
        if let Some(service) = self.service.lock().await.take()
            && tokio::time::timeout(PROTOCOL_SHUTDOWN_WAIT, service.cancel())
                .await
                .is_err()
        {
            tracing::warn!(server = %self.name, "the MCP client task did not end in time");
        }
    }
}

/// The most pages of `tools/list` one listing follows.
const MAX_TOOL_PAGES: usize = 1000;

/// Every page of `tools/list`, within bounds: rmcp's own pager follows `nextCursor` for as long as
/// a server hands one out, keeping every page, so a server that pages forever (or returns the
/// same cursor again) would fill lit-mux's memory until the timeout. Here a listing stops with an
/// error after [`MAX_TOOL_PAGES`] pages, or once the tools of all pages together take more than
/// `max_bytes` as JSON (the bound on one message: a catalog needs no more than a message may carry).
/// The outer error is the protocol's, the inner one that bound.
async fn list_every_tool(
    peer: &Peer<RoleClient>,
    max_bytes: usize,
) -> Result<Result<Vec<Tool>, String>, rmcp::service::ServiceError> {
    let mut tools = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = None;
    for _ in 0..MAX_TOOL_PAGES {
        let page = peer
            .list_tools(Some(
                rmcp::model::PaginatedRequestParams::default().with_cursor(cursor),
            ))
            .await?;
        bytes = bytes.saturating_add(serde_json::to_vec(&page.tools).map_or(0, |json| json.len()));
        if bytes > max_bytes {
            return Ok(Err(format!(
                "the tools listed take more than {max_bytes} bytes \
                 (mcp.max_message_bytes), {} tools so far",
                tools.len() + page.tools.len()
            )));
        }
        tools.extend(page.tools);
        match page.next_cursor {
            None => return Ok(Ok(tools)),
            Some(next) => cursor = Some(next),
        }
    }
    Ok(Err(format!(
        "still paging after {MAX_TOOL_PAGES} pages ({} tools so far)",
        tools.len()
    )))
}

/// Our side of the protocol: identifies as lit-mux, asks for 2025-11-25, and passes
/// `notifications/tools/list_changed` on.
pub struct LitMuxClient {
    tools_changed: mpsc::Sender<()>,
}

impl rmcp::ClientHandler for LitMuxClient {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("lit-mux", crate::VERSION),
        )
        .with_protocol_version(PROTOCOL_VERSION)
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // One pending refresh is enough; more notifications meanwhile add nothing.
        let _ = self.tools_changed.try_send(());
    }
}
