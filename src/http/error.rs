//! The one error type of the HTTP API and its wire shape, as the FastAPI predecessor answered:
//! `{"detail": "<message>"}`, with the status chosen by the variant; for 422 FastAPI's list of
//! validation errors, `{"detail": [{"type", "loc", "msg", "input"}]}` ([`FieldError`]).
//!
//! Domain errors (`McpError`, `BackendError`, `StoreError`, `ChatError`) convert into
//! [`ApiError`] with one `From` each; handlers return `Result<_, ApiError>` and never build error
//! bodies themselves. A failure reported inside a response already under way (a stream's `error`
//! event, a broadcast's entry) goes through the same mapping ([`Reported`]), so it carries the
//! status it would have had alone.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// Every error the API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is understood but not acceptable (bad value, unknown reference).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// The client did not send its request in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("Request body too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A value of the request is not acceptable, where no field can be named: answered as one
    /// [`FieldError`] at `["body"]`.
    #[error("{0}")]
    Unprocessable(String),
    /// The body is not valid JSON, or a field of the body or query is missing or wrong.
    #[error("{}", messages(.0))]
    Invalid(Vec<FieldError>),
    /// A model backend is rate limited; `retry_after` is passed on as its `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Option<String>,
    },
    /// A peer (model backend, MCP server) failed.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    GatewayTimeout(String),
    /// The storage has no room for the write.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A bug or an unexpected local failure; the message is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) | Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` to pass on: a rate-limited backend's.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::TooManyRequests { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }

    /// The `detail` sent to the client: FastAPI's list of validation errors for a 422, else
    /// the text (internal details stay in the log).
    fn detail(self) -> Value {
        match self {
            Self::Internal(_) => json!("Internal server error"),
            Self::Invalid(errors) => json!(errors),
            Self::Unprocessable(message) => json!([FieldError::new(
                "value_error",
                vec![json!("body")],
                message,
                Value::Null
            )]),
            other => json!(other.to_string()),
        }
    }
}

/// One validation error, as FastAPI (pydantic) reports it: `type` from its vocabulary
/// (`missing`, `string_type`, `int_parsing`, `json_invalid`, `extra_forbidden`, `value_error`,
/// ...), `loc` the place (`["body", "backends", 0]`, `["query", "limit"]`), `msg` lit-mux's own
/// sentence, `input` the value found there (null when there is none).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub loc: Vec<Value>,
    pub msg: String,
    #[schema(value_type = Object)]
    pub input: Value,
}

impl FieldError {
    pub fn new(kind: &'static str, loc: Vec<Value>, msg: String, input: Value) -> Self {
        Self {
            kind,
            loc,
            msg,
            input,
        }
    }
}

/// The messages of `errors`, as one line: the text of [`ApiError::Invalid`] where a string is
/// wanted (the log, `/v1`'s OpenAI-shaped errors).
fn messages(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|error| error.msg.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<crate::mcp::McpError> for ApiError {
    fn from(err: crate::mcp::McpError) -> Self {
        use crate::mcp::McpError as E;
        let message = err.to_string();
        match err {
            E::UnknownServer(_) | E::UnknownTool { .. } => Self::NotFound(message),
            E::AlreadyExists(_) => Self::Conflict(message),
            E::InvalidRequest(_) => Self::BadRequest(message),
            E::OutOfRange { .. } => Self::Unprocessable(message),
            // The server rejected the call's method or arguments: the caller's mistake.
            E::Protocol {
                code: Some(-32602 | -32601),
                ..
            } => Self::BadRequest(message),
            E::NotAllowed(_) => Self::Forbidden(message),
            E::StartFailed { .. } | E::Died { .. } | E::Protocol { .. } => {
                Self::BadGateway(message)
            }
            E::NotReady { .. } | E::Disabled => Self::ServiceUnavailable(message),
            E::Timeout { .. } => Self::GatewayTimeout(message),
        }
    }
}

impl From<crate::backends::BackendError> for ApiError {
    fn from(err: crate::backends::BackendError) -> Self {
        use crate::backends::BackendError as E;
        let message = err.to_string();
        match err {
            E::RateLimited { retry_after, .. } => Self::TooManyRequests {
                message,
                retry_after,
            },
            E::Timeout { .. } => Self::GatewayTimeout(message),
            E::CannotTake { .. } => Self::BadRequest(message),
            E::Unreachable { .. }
            | E::Upstream { .. }
            | E::Failed { .. }
            | E::InvalidResponse { .. } => Self::BadGateway(message),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// A failure of the storage is the server's state, not a peer's (never 502): 503 while it
    /// cannot be read or written, 507 when it is full.
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        let message = err.to_string();
        match err {
            E::SessionNotFound(id) => Self::NotFound(format!("Session {id} not found")),
            E::Unavailable(_) | E::Closed => Self::ServiceUnavailable(message),
            E::Full(_) => Self::InsufficientStorage(message),
            E::Open { .. } | E::Refused(_) | E::Corrupt(_) => Self::Internal(message),
        }
    }
}

impl From<crate::chat::ChatError> for ApiError {
    fn from(err: crate::chat::ChatError) -> Self {
        use crate::chat::ChatError as E;
        match err {
            E::SessionNotFound(_) => Self::NotFound(err.to_string()),
            E::InvalidRequest(message) => Self::BadRequest(message),
            E::InvalidValue(message) => Self::Unprocessable(message),
            E::InvalidOption(invalid) => Self::BadRequest(invalid.message),
            E::Backend(err) => err.into(),
            E::Store(err) => err.into(),
            E::Interrupted(_) => Self::ServiceUnavailable(err.to_string()),
            // The store's status (never the backend's), with the whole message.
            E::AnswerNotStored(ref store) | E::StepNotStored(ref store) => {
                match ApiError::from(store.clone()) {
                    Self::ServiceUnavailable(_) => Self::ServiceUnavailable(err.to_string()),
                    Self::InsufficientStorage(_) => Self::InsufficientStorage(err.to_string()),
                    // The session was deleted while its answer was on the way.
                    Self::NotFound(_) => Self::NotFound(err.to_string()),
                    _ => Self::Internal(err.to_string()),
                }
            }
        }
    }
}

/// A domain failure reported inside a response already under way: its message, and the status
/// and `Retry-After` it would have had as a response of its own. The message is the domain's
/// own, also for a local failure: the response it is part of already succeeded.
#[derive(Debug)]
pub struct Reported {
    pub detail: String,
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Reported {
    pub fn new<E>(err: E) -> Self
    where
        E: std::fmt::Display + Into<ApiError>,
    {
        let detail = err.to_string();
        let api: ApiError = err.into();
        Self {
            detail,
            status: api.status().as_u16(),
            retry_after: api.retry_after().map(str::to_owned),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(message) = &self {
            tracing::error!(%message, "internal error");
        }
        let status = self.status();
        let retry_after = self
            .retry_after()
            .and_then(|retry_after| HeaderValue::from_str(retry_after).ok());
        // The plain sentence, for the layer that answers `/v1` in OpenAI's shape.
        let message = match &self {
            Self::Internal(_) => "Internal server error".to_owned(),
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({"detail": self.detail()}))).into_response();
        response.extensions_mut().insert(ErrorMessage(message));
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, ApiKey header=\"X-API-Key\""),
            );
        }
        response
    }
}

/// The client-facing message of an error response, kept beside its body so that the router's
/// last layer can give it the shape of the path's family (OpenAI's under `/v1`).
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

/// The `{"detail"}` body for a status that no handler produced (axum or tower-http did),
/// using the standard reason phrase as FastAPI does (`"Not Found"`, `"Method Not Allowed"`).
pub fn detail_for_status(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    (
        status,
        Json(ErrorBody {
            detail: reason.to_owned(),
        }),
    )
        .into_response()
}
