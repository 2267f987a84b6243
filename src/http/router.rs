//! The router: every route with its layers (access checks, body limits, CORS, tracing, metrics),
//! and the API description.
//!
//! Invariants: every response to a failed request is JSON, `{"detail"}` or OpenAI's shape under
//! `/v1` (the last layer gives each error its path's shape, also the plain-text ones of axum and
//! tower-http and the refusals of the access checks); a panic in a handler is a 500, never a
//! dropped connection.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::ServerConfig;
use crate::http::AppState;
use crate::http::api_description;
use crate::http::auth::{self, AccessPolicy};
use crate::http::error::{ApiError, detail_for_status};
use crate::http::extract::BodyLimit;
use crate::http::routes;

/// The whole API with its layers, ready to serve.
pub fn router(state: AppState) -> Router {
    let server = state.config.server.clone();
    let metrics = state.metrics.clone();
    let mcp_endpoint = crate::http::mcp_endpoint::service(
        state.mcp.clone(),
        &server,
        &state.config.mcp_endpoint,
        state.shutdown.clone(),
    );
    let (routes, api) = utoipa_axum::router::OpenApiRouter::with_openapi(api_description::base())
        .merge(routes::health::router())
        .merge(routes::mcp::router())
        .merge(routes::tools::router())
        .merge(routes::sessions::router())
        .merge(routes::backends::router())
        .merge(crate::http::openai::router())
        .split_for_parts();
    // Serialised once: the description's structs are dropped, the page loads it by URL.
    let api_json = axum::body::Bytes::from(api_description::render(&api).to_string());
    drop(api);
    let routes = routes
        .route(
            "/openapi.json",
            axum::routing::get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    api_json.clone(),
                )
            }),
        )
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .config(utoipa_swagger_ui::Config::from("/openapi.json")),
        )
        // Exactly `/mcp`: `/mcp/servers` and the rest stay ordinary routes. Before the route
        // layer, so that metrics label it `/mcp`.
        .route_service(
            crate::http::mcp_endpoint::PATH,
            tower::ServiceBuilder::new()
                .layer(middleware::from_fn(
                    crate::http::mcp_endpoint::malformed::answer_malformed,
                ))
                .service(mcp_endpoint),
        )
        .route_layer(middleware::from_fn(crate::http::metrics::tag_route))
        .with_state(state);
    // Outermost: every request is counted, those refused by the layers too.
    with_layers(routes, &server).layer(middleware::from_fn_with_state(
        metrics,
        crate::http::metrics::record_http,
    ))
}

/// Wraps `routes` in everything every endpoint shares: JSON errors for unknown routes and
/// methods, the body limit, access checks, the `Host` rule, panic recovery, request logging and CORS.
pub fn with_layers(routes: Router, server: &ServerConfig) -> Router {
    let limit = server.max_body_bytes;
    let policy = AccessPolicy::new(server);
    routes
        .fallback(|| async { detail_for_status(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Innermost first: each `.layer` wraps everything above it.
        .layer(axum::Extension(BodyLimit(limit)))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            BodyLimit(limit),
            reject_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(policy, auth::enforce))
        // Before the access checks, which read `Host`.
        .layer(middleware::from_fn(
            crate::http::host_header::require_valid_host,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::Internal("a request handler panicked".to_owned()).into_response()
        }))
        // Around every layer that can refuse a request, so that their answers get the shape too.
        .layer(middleware::from_fn(errors_in_family_shape))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
        // Outermost, so preflights are answered before auth and 401s still carry CORS headers.
        .layer(tower::util::option_layer(cors_layer(&server.cors_origins)))
}

/// Answers 413 at once for a body whose declared length is over the limit, whatever the route,
/// without reading it. Bodies of unknown length are cut off by `DefaultBodyLimit` as they are read.
async fn reject_declared_oversize(
    State(BodyLimit(limit)): State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {
            ApiError::PayloadTooLarge { limit }.into_response()
        }
        _ => next.run(request).await,
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Validated at config load; an origin that still fails to convert is simply not allowed.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::HeaderName::from_static("x-api-key"),
                header::HeaderName::from_static("x-session-id"),
                // The MCP streamable HTTP transport's own headers.
                header::HeaderName::from_static("mcp-session-id"),
                header::HeaderName::from_static("mcp-protocol-version"),
                header::HeaderName::from_static("last-event-id"),
            ])
            // A browser client must read the session id the answer to `initialize` carries.
            .expose_headers([header::HeaderName::from_static("mcp-session-id")])
            .max_age(Duration::from_secs(600)),
    )
}

/// Gives every error response the shape of its path's family: OpenAI's under `/v1`
/// ([`openai::errors::reshape`](crate::http::openai::errors::reshape)), `{"detail"}` elsewhere,
/// where an error that is not JSON (axum's own rejections, tower-http's limits) gets
/// `{"detail": "<reason phrase>"}`. Status and headers such as `Allow` are kept.
async fn errors_in_family_shape(request: Request, next: Next) -> Response {
    let openai = crate::http::openai::errors::serves(request.uri().path())
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if let Some((method, path)) = openai {
        return crate::http::openai::errors::reshape(response, &method, &path);
    }
    if is_json(&response) {
        return response;
    }
    let (mut parts, _body) = response.into_parts();
    let replacement = detail_for_status(status);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (replacement_parts, body) = replacement.into_parts();
    parts.headers.extend(replacement_parts.headers);
    Response::from_parts(parts, body)
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
