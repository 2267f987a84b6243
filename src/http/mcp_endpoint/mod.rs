//! `/mcp`: lit-mux's own MCP server ([`McpEndpoint`]) over the streamable HTTP transport, rmcp's
//! tower service mounted on the one path.
//!
//! Invariants: the router's access checks guard it like every route (the API key; without a key,
//! loopback `Host` headers only; cross-origin requests refused), so rmcp's own `Host` check is
//! off rather than a second, differently configured one; its streams end when lit-mux shuts
//! down, so they do not hold the graceful shutdown for its whole grace period.

pub mod handler;
pub mod malformed;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{ContentBuilder, Object, Required, ResponseBuilder, Type};

use crate::config::ServerConfig;
use crate::mcp::hub::McpHub;
use handler::McpEndpoint;

/// Where the endpoint is mounted.
pub const PATH: &str = "/mcp";

/// The endpoint as a tower service; `shutdown` ends its sessions and streams.
pub fn service(
    hub: McpHub,
    server: &ServerConfig,
    shutdown: CancellationToken,
) -> StreamableHttpService<McpEndpoint, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(server.max_body_bytes)
        .with_cancellation_token(shutdown.child_token());
    StreamableHttpService::new(
        move || Ok(McpEndpoint::new(hub.clone(), shutdown.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// `/mcp` in the API description: rmcp's service has no handler annotations to derive it from.
pub fn describe(paths: &mut Paths) {
    let session_header = |required: Required| {
        ParameterBuilder::new()
            .name("Mcp-Session-Id")
            .parameter_in(ParameterIn::Header)
            .required(required)
            .description(Some(
                "The session, as the answer to `initialize` named it (protocol versions up to \
                 2025-11-25)",
            ))
            .schema(Some(Object::with_type(Type::String)))
            .build()
    };
    let json = || {
        ContentBuilder::new()
            .schema(Some(Object::with_type(Type::Object)))
            .build()
    };
    let event_stream = || {
        ContentBuilder::new()
            .schema(Some(Object::with_type(Type::String)))
            .build()
    };
    let status = |text: &str| ResponseBuilder::new().description(text).build();

    paths.add_path_operation(
        PATH,
        vec![HttpMethod::Post],
        OperationBuilder::new()
            .tag("mcp")
            .summary(Some("Send an MCP message to lit-mux's own MCP server"))
            .description(Some(
                "Model Context Protocol, streamable HTTP transport: one JSON-RPC message per \
                 request, `Accept: application/json, text/event-stream`. `tools/list` lists every \
                 tool of every ready MCP server as `server__tool`, `tools/call` calls it; \
                 `notifications/tools/list_changed` follows catalog changes.",
            ))
            .parameter(session_header(Required::False))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content("application/json", json())
                    .build(),
            ))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The answer, as JSON or as a stream of events")
                    .content("application/json", json())
                    .content("text/event-stream", event_stream())
                    .build(),
            )
            .response("202", status("A notification or response, accepted"))
            .response(
                "400",
                status("Not a JSON-RPC message, or a session id is missing"),
            )
            .response("401", status("Missing or wrong API key"))
            .response("404", status("Unknown or ended session"))
            .response(
                "406",
                status("Accept does not allow JSON and event streams"),
            )
            .response("413", status("Body over server.max_body_bytes")),
    );
    paths.add_path_operation(
        PATH,
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("mcp")
            .summary(Some("Open a session's stream of server messages"))
            .description(Some(
                "Server-Sent Events carrying the messages not tied to a request, such as \
                 `notifications/tools/list_changed`. Needs `Accept: text/event-stream`.",
            ))
            .parameter(session_header(Required::True))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The stream")
                    .content("text/event-stream", event_stream())
                    .build(),
            )
            .response("400", status("No session id"))
            .response("401", status("Missing or wrong API key"))
            .response("404", status("Unknown or ended session"))
            .response("406", status("Accept does not allow event streams")),
    );
    paths.add_path_operation(
        PATH,
        vec![HttpMethod::Delete],
        OperationBuilder::new()
            .tag("mcp")
            .summary(Some("End a session"))
            .parameter(session_header(Required::True))
            .response("202", status("Ended"))
            .response("400", status("No session id"))
            .response("401", status("Missing or wrong API key")),
    );
}
