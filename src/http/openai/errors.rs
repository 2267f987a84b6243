//! Errors under `/v1` in OpenAI's shape, `{"error": {"message", "type", "code"}}`, so OpenAI
//! clients understand them; the status codes are lit-mux's usual ones ([`ApiError`]'s).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::chat::completion::CompletionError;
use crate::http::error::ApiError;

/// OpenAI's error shape.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenAiErrorBody {
    /// `{"message", "type", "code"}`
    #[schema(value_type = Object)]
    error: (),
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
    retry_after: Option<String>,
}

impl From<ApiError> for OpenAiError {
    fn from(err: ApiError) -> Self {
        let status = err.status();
        let retry_after = err.retry_after().map(str::to_owned);
        let (kind, code) = match status.as_u16() {
            401 => ("authentication_error", Some("invalid_api_key")),
            403 => ("permission_error", None),
            404 => ("invalid_request_error", None),
            429 => ("rate_limit_error", Some("rate_limit_exceeded")),
            400..=499 => ("invalid_request_error", None),
            _ => ("api_error", None),
        };
        let message = match &err {
            ApiError::Internal(_) => "Internal server error".to_owned(),
            other => other.to_string(),
        };
        Self {
            status,
            message,
            kind,
            code,
            retry_after,
        }
    }
}

impl From<CompletionError> for OpenAiError {
    fn from(err: CompletionError) -> Self {
        match err {
            CompletionError::NotFound { message, code } => Self {
                status: StatusCode::NOT_FOUND,
                message,
                kind: "invalid_request_error",
                code: Some(code),
                retry_after: None,
            },
            CompletionError::Invalid(message) => ApiError::BadRequest(message).into(),
            CompletionError::Backend(err) => ApiError::from(err).into(),
            CompletionError::Store(err) => ApiError::from(err).into(),
            CompletionError::Interrupted(why) => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: why.to_string(),
                kind: "server_error",
                code: Some(why.code()),
                retry_after: None,
            },
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::BAD_GATEWAY {
            tracing::warn!(status = %self.status, message = %self.message, "completion failed");
        }
        let body =
            json!({"error": {"message": self.message, "type": self.kind, "code": self.code}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|retry| HeaderValue::from_str(&retry).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
