//! What `/mcp` answers to a request it refuses: a JSON-RPC error with the transport's status,
//! never plain text. A body that is not a JSON-RPC message gets HTTP 400 with `-32700 Parse
//! error` (not JSON) or `-32600 Invalid Request` (JSON, but not one message: `{}`, `[]`, `123`,
//! a batch, a message with fields of the wrong type), where rmcp would answer `415 Unsupported
//! Media Type` in plain text; rmcp's other refusals (406 for `Accept`, 415 for a body not
//! declared JSON, 400 without a session id, 404 for an unknown session, 405) keep their status
//! and carry their text in a JSON-RPC error.
//!
//! Invariant: a `POST /mcp` declared as JSON is read here, within the body limit, and handed to
//! rmcp whole, so rmcp never fails reading it (which it would answer with a 500); every error
//! answer names the request's `id` when the body has a usable one, else `null`.

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
/// JSON-RPC's code for an implementation-defined server error: a refusal of the transport.
const TRANSPORT_REFUSAL: i64 = -32000;
/// The code MCP's reference servers use for an unknown or ended session.
pub(super) const SESSION_NOT_FOUND: i64 = -32001;
/// Longest refusal text of rmcp's that is passed on; they are one short line.
const REFUSAL_TEXT_BYTES: usize = 4096;

/// Middleware in front of rmcp's service on `/mcp`.
pub async fn answer_malformed(request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !declares_json(&request) {
        let response = next.run(request).await;
        return in_json_rpc(response, Value::Null).await;
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
    in_json_rpc(response, usable_id(&kept)).await
}

fn declares_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// rmcp's plain-text refusal as a JSON-RPC error with the same status and headers (`Allow`);
/// any other response as it is.
async fn in_json_rpc(response: Response, id: Value) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REFUSAL_TEXT_BYTES)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_owned());
    let code = if status == StatusCode::NOT_FOUND {
        SESSION_NOT_FOUND
    } else {
        TRANSPORT_REFUSAL
    };
    let (replacement, body) = error(status, id, code, text).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.extend(replacement.headers);
    Response::from_parts(parts, body)
}

/// The request's `id`, when the body is an object with a string or number one.
fn usable_id(body: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Value,
    }
    match serde_json::from_slice::<WithId>(body) {
        Ok(WithId {
            id: id @ (Value::String(_) | Value::Number(_)),
        }) => id,
        _ => Value::Null,
    }
}

/// The JSON-RPC error for a body that is no message: why, and the request's id if usable.
fn not_a_message(body: &[u8]) -> Response {
    if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            PARSE_ERROR,
            format!("Parse error: {err}"),
        );
    }
    let why = match serde_json::from_slice::<ClientJsonRpcMessage>(body) {
        Err(err) => err.to_string(),
        Ok(_) => "not accepted as a message".to_owned(),
    };
    error(
        StatusCode::BAD_REQUEST,
        usable_id(body),
        INVALID_REQUEST,
        format!(
            "Invalid Request: expected one JSON-RPC 2.0 request, notification or response: {why}"
        ),
    )
}

/// A JSON-RPC error response with `status`.
pub(super) fn error(status: StatusCode, id: Value, code: i64, message: String) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}
