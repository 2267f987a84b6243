//! Request extractors whose rejections are [`ApiError`]s, so a bad request body gets the same
//! `{"detail"}` shape as every other error instead of axum's plain-text rejections: for a body
//! that is not JSON or does not fit, FastAPI's list of validation errors ([`FieldError`]), each
//! with the place serde's path names and the value found there.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::http::error::{ApiError, FieldError};

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
            Some(_) => Err(ApiError::Invalid(vec![FieldError::new(
                "model_attributes_type",
                vec![json!("body")],
                "Invalid request body: expected a JSON object".to_owned(),
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )])),
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
                    "Content-Type must be application/json, not \"{content_type}\""
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
        return ApiError::Invalid(vec![FieldError::new(
            "duplicate_parameter",
            vec![json!("query"), json!(name)],
            format!("Invalid query: the parameter {name} is given more than once; give it once"),
            Value::Null,
        )]);
    }
    ApiError::Invalid(vec![FieldError::new(
        "value_error",
        vec![json!("query")],
        format!("Invalid query: {reason}"),
        Value::Null,
    )])
}

/// Parses a JSON body, naming the failing field path (`backends[0]`) in the message and in the
/// error's `loc`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "missing",
            vec![json!("body")],
            "Request body is empty; expected a JSON object".to_owned(),
            Value::Null,
        )]));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| ApiError::Invalid(vec![body_error(bytes, err)]))?;
    deserializer.end().map_err(|err| {
        ApiError::Invalid(vec![FieldError::new(
            "json_invalid",
            vec![json!("body"), json!(offset(bytes, &err))],
            format!("Invalid JSON: trailing data after the value: {err}"),
            Value::Null,
        )])
    })?;
    Ok(value)
}

/// The validation error of a body serde refused: where, of which kind, with the value there.
fn body_error(bytes: &[u8], err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let mut loc = vec![json!("body")];
    for segment in err.path().iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => loc.push(json!(index)),
            serde_path_to_error::Segment::Map { key } => loc.push(json!(key)),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    let path = err.path().to_string();
    let inner = err.into_inner();
    let syntax = inner.is_syntax() || inner.is_eof();
    let what = if syntax {
        "Invalid JSON"
    } else {
        "Invalid request body"
    };
    let msg = if path == "." {
        format!("{what}: {inner}")
    } else {
        format!("{what}: {path}: {inner}")
    };
    if syntax {
        // FastAPI's `loc` of a JSON error is the position in the body, not a field.
        return FieldError::new(
            "json_invalid",
            vec![json!("body"), json!(offset(bytes, &inner))],
            msg,
            Value::Null,
        );
    }
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let mut input = loc[1..]
        .iter()
        .try_fold(&body, |value, step| match step {
            Value::Number(index) => value.get(index.as_u64()? as usize),
            Value::String(key) => value.get(key),
            _ => None,
        })
        .cloned()
        .unwrap_or(Value::Null);
    let text = inner.to_string();
    let kind = match field_named(&text, "missing field `") {
        Some(field) => {
            // FastAPI's input of a missing field is the object it is missing from.
            loc.push(json!(field));
            "missing"
        }
        None => match field_named(&text, "unknown field `") {
            Some(field) => {
                if loc.last() != Some(&json!(field)) {
                    loc.push(json!(field));
                    input = input.get(field).cloned().unwrap_or(Value::Null);
                }
                "extra_forbidden"
            }
            None => kind_of(&text),
        },
    };
    FieldError::new(kind, loc, msg, input)
}

/// The field serde's message names after `prefix` (`missing field `name``).
fn field_named<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.strip_prefix(prefix)?.split('`').next()
}

/// FastAPI's `type` for serde's message of a value of the wrong type or value.
fn kind_of(text: &str) -> &'static str {
    if text.starts_with("unknown variant") {
        return "enum";
    }
    let Some(rest) = text.strip_prefix("invalid type: ") else {
        return "value_error";
    };
    let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let expected = expected.split(" at line ").next().unwrap_or_default();
    let from_string = found.starts_with("string");
    let integer = [
        "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize",
    ]
    .contains(&expected)
        || expected.contains("integer");
    match () {
        () if expected.contains("string") || expected.contains("char") => "string_type",
        () if integer && from_string => "int_parsing",
        () if integer && found.starts_with("floating point") => "int_from_float",
        () if integer => "int_type",
        () if matches!(expected, "f32" | "f64") && from_string => "float_parsing",
        () if matches!(expected, "f32" | "f64") => "float_type",
        () if expected.contains("bool") && from_string => "bool_parsing",
        () if expected.contains("bool") => "bool_type",
        () if expected.contains("sequence") || expected.contains("tuple") => "list_type",
        () if expected.starts_with("struct") => "model_attributes_type",
        () if expected.contains("map") => "dict_type",
        () => "value_error",
    }
}

/// The position serde's error points at, counted in bytes from the start of the body as Python's
/// `json` counts it (in characters: the same for ASCII). serde's column is the 1-based column of
/// the offending byte, or the number of bytes read at the end of the input.
fn offset(bytes: &[u8], err: &serde_json::Error) -> usize {
    let line_start: usize = bytes
        .split_inclusive(|b| *b == b'\n')
        .take(err.line().saturating_sub(1))
        .map(<[u8]>::len)
        .sum();
    if err.is_eof() {
        line_start + err.column()
    } else {
        (line_start + err.column()).saturating_sub(1)
    }
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

    /// `(type, loc, input)` of the one field error of `bytes`.
    fn field_error(bytes: &[u8]) -> (&'static str, Value, Value) {
        match parse_json::<Body>(bytes) {
            Err(ApiError::Invalid(errors)) if errors.len() == 1 => {
                let error = errors[0].clone();
                (error.kind, json!(error.loc), error.input)
            }
            other => (
                "unexpected",
                json!(format!("{:?}", other.map(|_| ()))),
                Value::Null,
            ),
        }
    }

    #[test]
    fn json_errors_carry_fastapi_types_and_places() {
        assert_eq!(
            field_error(b"{\"name\": \"a\", \"items\": [1, \"two\"]}"),
            ("int_parsing", json!(["body", "items", 1]), json!("two"))
        );
        assert_eq!(
            field_error(b"{\"name\": 5, \"items\": []}"),
            ("string_type", json!(["body", "name"]), json!(5))
        );
        assert_eq!(
            field_error(b"{\"items\": []}"),
            ("missing", json!(["body", "name"]), json!({"items": []}))
        );
        assert_eq!(
            field_error(b"{\"name\": \"a\", \"items\": {}}"),
            ("list_type", json!(["body", "items"]), json!({}))
        );
        assert_eq!(
            field_error(b"{\"name\": "),
            ("json_invalid", json!(["body", 9]), Value::Null)
        );
        assert_eq!(
            field_error(b"  "),
            ("missing", json!(["body"]), Value::Null)
        );
    }

    #[test]
    fn an_unknown_field_is_extra_forbidden_at_its_name() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Strict {
            name: String,
        }
        let Err(ApiError::Invalid(errors)) = parse_json::<Strict>(b"{\"name\": \"a\", \"x\": 1}")
        else {
            unreachable!("an unknown field is refused")
        };
        assert_eq!(
            (
                errors[0].kind,
                json!(errors[0].loc),
                errors[0].input.clone()
            ),
            ("extra_forbidden", json!(["body", "x"]), json!(1))
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
