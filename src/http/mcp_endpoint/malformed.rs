//! What `/mcp` answers to a body that is not a JSON-RPC message: a JSON-RPC error, as the MCP
//! transport asks (HTTP 400 with an error response without an id), rather than rmcp's plain-text
//! `415 Unsupported Media Type` for a body it cannot read as a message.
//!
//! Invariant: a `POST /mcp` declared as JSON is read here, within the body limit, and handed to
//! rmcp whole, so rmcp never fails reading it (which it would answer with a 500); a body rmcp
//! refuses to parse is answered with `-32700 Parse error` (not JSON) or `-32600 Invalid
//! Request` (JSON, but not a message), naming the request's `id` when it has a usable one.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::ClientJsonRpcMessage;
use serde_json::{Value, json};

/// JSON-RPC's code for text that is not JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for JSON that is not a valid request.
const INVALID_REQUEST: i64 = -32600;

/// Middleware in front of rmcp's service on `/mcp`.
pub async fn answer_malformed(request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !declares_json(&request) {
        // rmcp answers other methods and content types itself (405, 406, 415): not JSON-RPC.
        return next.run(request).await;
    }
    let (head, body) = request.into_parts();
    // Through axum's extractor, so that the router's body limit applies (413 beyond it).
    let read = Bytes::from_request(Request::from_parts(head.clone(), body), &()).await;
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(rejection) => {
            let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                INVALID_REQUEST
            } else {
                PARSE_ERROR
            };
            return error(rejection.status(), Value::Null, code, rejection.body_text());
        }
    };
    // A cheap handle: kept only to explain a body rmcp refuses.
    let kept = bytes.clone();
    let response = next.run(Request::from_parts(head, Body::from(bytes))).await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // The content type was JSON, so rmcp could not read the body as a message.
        return not_a_message(&kept);
    }
    response
}

fn declares_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The JSON-RPC error for a body that is no message: why, and the request's id if usable.
fn not_a_message(body: &[u8]) -> Response {
    let value = match serde_json::from_slice::<Value>(body) {
        Ok(value) => value,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                format!("Parse error: {err}"),
            );
        }
    };
    let why = match serde_json::from_slice::<ClientJsonRpcMessage>(body) {
        Err(err) => err.to_string(),
        Ok(_) => "not accepted as a message".to_owned(),
    };
    let id = match value.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    error(
        StatusCode::BAD_REQUEST,
        id,
        INVALID_REQUEST,
        format!(
            "Invalid Request: expected one JSON-RPC 2.0 request, notification or response: {why}"
        ),
    )
}

fn error(status: StatusCode, id: Value, code: i64, message: String) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}
