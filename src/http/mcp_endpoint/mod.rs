//! `/mcp`: lit-mux's own MCP server ([`McpEndpoint`]) over the streamable HTTP transport, rmcp's
//! tower service mounted on the one path.
//!
//! Invariants: the router's access checks guard it like every route (the API key; without a key,
//! loopback `Host` headers only; cross-origin requests refused), so rmcp's own `Host` check is
//! off rather than a second, differently configured one; its streams end when lit-mux shuts
//! down, so they do not hold the graceful shutdown for its whole grace period; there are at
//! most `mcp_endpoint.max_sessions` sessions ([`sessions`]), and an `initialize` that would pass
//! the cap while every session is busy is answered 503 with a JSON-RPC error; `DELETE` answers
//! 204 for a session it ended and 404 for one unknown or already ended.

pub mod handler;
pub mod malformed;
pub mod sessions;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{ContentBuilder, Object, Required, ResponseBuilder, Type};

use crate::config::{McpEndpointConfig, ServerConfig};
use crate::mcp::hub::McpHub;
use handler::McpEndpoint;
use sessions::{CappedSessions, SessionsFull};

/// Where the endpoint is mounted.
pub const PATH: &str = "/mcp";

/// JSON-RPC's code for an implementation-defined server error: here, no room for a session.
const SERVER_BUSY: i64 = -32000;

/// The endpoint as a tower service; `shutdown` ends its sessions and streams.
pub fn service(
    hub: McpHub,
    server: &ServerConfig,
    endpoint: &McpEndpointConfig,
    shutdown: CancellationToken,
) -> McpEndpointService {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(server.max_body_bytes)
        .with_cancellation_token(shutdown.child_token());
    let sessions = Arc::new(CappedSessions::new(endpoint.max_sessions));
    McpEndpointService {
        rmcp: StreamableHttpService::new(
            move || Ok(McpEndpoint::new(hub.clone(), shutdown.clone())),
            Arc::clone(&sessions),
            config,
        ),
        sessions,
        max_body_bytes: server.max_body_bytes,
    }
}

/// rmcp's streamable HTTP service, with `initialize` over the session cap answered 503.
#[derive(Clone)]
pub struct McpEndpointService {
    rmcp: StreamableHttpService<McpEndpoint, CappedSessions>,
    sessions: Arc<CappedSessions>,
    max_body_bytes: usize,
}

impl tower::Service<Request> for McpEndpointService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.answer(request).await) })
    }
}

impl McpEndpointService {
    async fn answer(self, request: Request) -> Response {
        if request.method() == Method::DELETE {
            return self.end_session(request).await;
        }
        let may_create_session =
            request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
        if !may_create_session {
            return self.rmcp.handle(request).await.into_response();
        }
        let request = if self.sessions.is_full_of_busy_sessions() {
            // Refused here with the request's id when it is an `initialize`; anything else
            // (a stateless request) goes on.
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, self.max_body_bytes).await else {
                return self.sessions_full(serde_json::Value::Null);
            };
            #[derive(serde::Deserialize)]
            struct Envelope {
                method: Option<String>,
                #[serde(default)]
                id: serde_json::Value,
            }
            if let Ok(Envelope {
                method: Some(method),
                id,
            }) = serde_json::from_slice::<Envelope>(&bytes)
                && method == "initialize"
            {
                return self.sessions_full(id);
            }
            Request::from_parts(parts, Body::from(bytes))
        } else {
            request
        };
        // A session that became busy since the check above is refused inside rmcp, which would
        // answer 500: told apart here and answered like the rest.
        let (response, refused) = CappedSessions::refusals_seen(self.rmcp.handle(request)).await;
        if refused {
            return self.sessions_full(serde_json::Value::Null);
        }
        response.into_response()
    }

    /// `DELETE`: 204 once the session is ended, 404 for one unknown or already ended (rmcp
    /// answers 202 to both, which clients take for a failure); rmcp's own refusals as they are.
    async fn end_session(self, request: Request) -> Response {
        let (response, closed) = CappedSessions::close_seen(self.rmcp.handle(request)).await;
        let response = response.into_response();
        match closed {
            Some(true) if response.status().is_success() => StatusCode::NO_CONTENT.into_response(),
            Some(false) => malformed::error(
                StatusCode::NOT_FOUND,
                serde_json::Value::Null,
                malformed::SESSION_NOT_FOUND,
                "Not Found: Session not found".to_owned(),
            ),
            _ => response,
        }
    }

    fn sessions_full(&self, id: serde_json::Value) -> Response {
        let full = SessionsFull {
            max_sessions: self.sessions.max_sessions(),
        };
        tracing::warn!("{full}");
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": SERVER_BUSY, "message": full.to_string()},
        });
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
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
            .response("413", status("Body over server.max_body_bytes"))
            .response("415", status("Content-Type is not application/json"))
            .response(
                "503",
                ResponseBuilder::new()
                    .description(
                        "An `initialize` while all mcp_endpoint.max_sessions sessions are busy: \
                         a JSON-RPC error",
                    )
                    .content("application/json", json())
                    .build(),
            ),
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
            .response("204", status("Ended"))
            .response("400", status("No session id"))
            .response("401", status("Missing or wrong API key"))
            .response("404", status("Unknown or ended session")),
    );
}
