//! Errors under `/v1` in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so
//! OpenAI clients understand them; the status codes are lit-mux's usual ones ([`ApiError`]'s).
//!
//! Invariant: every error response under `/v1` has this shape, whoever produced it: the
//! handlers answer with [`OpenAiError`], and the router's last layer reshapes the rest (the
//! access checks, the body limits, unknown paths and methods, a panic) with [`reshape`].

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::chat::completion::CompletionError;
use crate::http::error::{ApiError, ErrorMessage};

/// Whether `path` is answered in OpenAI's shape.
pub fn serves(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// OpenAI's error shape.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenAiErrorBody {
    /// `{"message", "type", "param", "code"}`
    #[schema(value_type = Object)]
    error: (),
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    /// The request field at fault, when known.
    param: Option<String>,
    code: Option<&'static str>,
    retry_after: Option<String>,
}

/// Marks a response already in OpenAI's shape, so [`reshape`] leaves it alone.
#[derive(Debug, Clone, Copy)]
struct InOpenAiShape;

impl OpenAiError {
    /// An error whose `type` and `code` follow from its status, as OpenAI's API sends them.
    pub fn from_status(status: StatusCode, message: String) -> Self {
        let (kind, code) = match status.as_u16() {
            // OpenAI answers a missing or wrong key with this type and code.
            401 => ("invalid_request_error", Some("invalid_api_key")),
            403 => ("permission_error", None),
            429 => ("rate_limit_error", Some("rate_limit_exceeded")),
            400..=499 => ("invalid_request_error", None),
            _ => ("server_error", None),
        };
        Self {
            status,
            message,
            kind,
            param: None,
            code,
            retry_after: None,
        }
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: Option<String>) -> Self {
        self.param = param;
        self
    }
}

impl From<ApiError> for OpenAiError {
    fn from(err: ApiError) -> Self {
        let status = err.status();
        let retry_after = err.retry_after().map(str::to_owned);
        let message = match &err {
            ApiError::Internal(_) => "Internal server error".to_owned(),
            other => other.to_string(),
        };
        Self {
            retry_after,
            ..Self::from_status(status, message)
        }
    }
}

impl From<CompletionError> for OpenAiError {
    fn from(err: CompletionError) -> Self {
        match err {
            CompletionError::NotFound { message, code } => Self {
                code: Some(code),
                ..Self::from_status(StatusCode::NOT_FOUND, message)
            },
            CompletionError::Invalid(message) => ApiError::BadRequest(message).into(),
            CompletionError::InvalidField { field, message } => {
                Self::from(ApiError::BadRequest(message)).with_param(Some(field))
            }
            CompletionError::Backend(err) => ApiError::from(err).into(),
            CompletionError::Store(err) => ApiError::from(err).into(),
            CompletionError::Interrupted(why) => Self {
                code: Some(why.code()),
                ..Self::from_status(StatusCode::SERVICE_UNAVAILABLE, why.to_string())
            },
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::BAD_GATEWAY {
            tracing::warn!(status = %self.status, message = %self.message, "completion failed");
        }
        self.render()
    }
}

impl OpenAiError {
    fn render(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|retry| HeaderValue::from_str(&retry).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response.extensions_mut().insert(InOpenAiShape);
        response
    }
}

/// Gives an error response to a request for `method` `path` (under `/v1`) OpenAI's shape,
/// keeping its status, its message and its headers (`Retry-After`, `Allow`,
/// `WWW-Authenticate`). A response without a message (axum's and tower-http's own) says its
/// reason phrase; an unknown path says so as OpenAI does.
pub fn reshape(response: Response, method: &Method, path: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<InOpenAiShape>().is_some()
    {
        return response;
    }
    let message = match response.extensions().get::<ErrorMessage>() {
        Some(ErrorMessage(message)) => message.clone(),
        None if status == StatusCode::NOT_FOUND => format!("Invalid URL ({method} {path})"),
        None => status.canonical_reason().unwrap_or("Error").to_owned(),
    };
    let (mut parts, _body) = response.into_parts();
    let (replacement, body) = OpenAiError::from_status(status, message)
        .render()
        .into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.extend(replacement.headers);
    parts.extensions.insert(InOpenAiShape);
    Response::from_parts(parts, body)
}
