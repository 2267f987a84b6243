//! Request extractors whose rejections are [`ApiError`]s, so a bad request body gets the same
//! `{"detail"}` shape as every other error instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

/// The body limit in force, put in request extensions by the server so that a 413 can say it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON request body.
///
/// Accepts `application/json`, any `+json` type, or no `Content-Type` at all (as FastAPI does,
/// for scripts that post a JSON string without a header). Other types get 415. Invalid JSON or a
/// wrong field type gets 422 naming the field path and the parser's message.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        // Every body taken this way is an object; serde would also fill a struct from an array
        // of its fields in order (`[["echo"], "name"]`), which no client means.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | None => parse_json(&bytes).map(ApiJson),
            Some(_) => Err(ApiError::Unprocessable(
                "Invalid request body: expected a JSON object".to_owned(),
            )),
        }
    }
}

/// The raw bytes of a body declared as JSON (or undeclared), for handlers that accept an empty
/// body too; the same checks and errors as [`ApiJson`].
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl<S> FromRequest<S> for JsonBytes
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or_default();
            if !is_json_content_type(content_type) {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Type must be application/json, not {content_type:?}"
                )));
            }
        }
        let limit = req.extensions().get::<BodyLimit>().map(|limit| limit.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match (rejection.status().as_u16(), limit) {
                (413, Some(limit)) => ApiError::PayloadTooLarge { limit },
                (413, None) => ApiError::Unprocessable("Request body too large".to_owned()),
                _ => ApiError::BadRequest(format!("Cannot read request body: {rejection}")),
            }
        })?;
        Ok(Self(bytes))
    }
}

/// A query string, whose rejection is a 422 naming the parameter (a repeated one, one of the
/// wrong type) rather than axum's plain-text 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| query_error(&rejection.body_text()))
    }
}

/// axum says `Failed to deserialize query string: duplicate field `limit``; a repeated
/// parameter is said as the client wrote it.
fn query_error(rejection: &str) -> ApiError {
    let reason = rejection
        .split_once(": ")
        .map_or(rejection, |(_, reason)| reason);
    if let Some(name) = reason
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return ApiError::Unprocessable(format!(
            "Invalid query: the parameter {name} is given more than once; give it once"
        ));
    }
    ApiError::Unprocessable(format!("Invalid query: {reason}"))
}

/// Parses a JSON body, naming the failing field path (`backends[0]`) in the message.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Unprocessable(
            "Request body is empty; expected a JSON object".to_owned(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "Invalid JSON"
        } else {
            "Invalid request body"
        };
        if path == "." {
            ApiError::Unprocessable(format!("{what}: {inner}"))
        } else {
            ApiError::Unprocessable(format!("{what}: {path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|err| {
        ApiError::Unprocessable(format!(
            "Invalid JSON: trailing data after the value: {err}"
        ))
    })?;
    Ok(value)
}

fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<u32>,
    }

    fn message(bytes: &[u8]) -> String {
        match parse_json::<Body>(bytes) {
            Ok(body) => format!("parsed {body:?}"),
            Err(err) => format!("{} {err}", err.status().as_u16()),
        }
    }

    #[test]
    fn json_errors_name_the_problem_and_the_field() {
        assert_eq!(
            message(b"{\"name\": \"a\", \"items\": [1, \"two\"]}"),
            "422 Invalid request body: items[1]: invalid type: string \"two\", expected u32 at line 1 column 32"
        );
        assert_eq!(
            message(b"{\"name\": "),
            "422 Invalid JSON: name: EOF while parsing a value at line 1 column 9"
        );
        assert_eq!(
            message(b"{\"items\": []}"),
            "422 Invalid request body: missing field `name` at line 1 column 13"
        );
        assert_eq!(
            message(b"  "),
            "422 Request body is empty; expected a JSON object"
        );
        assert!(
            message(b"{\"name\": \"a\", \"items\": []} x")
                .starts_with("422 Invalid JSON: trailing")
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
    }
}
