//! The OpenAI-compatible front door: `POST /v1/chat/completions` and `GET /v1/models`. The
//! handlers translate OpenAI's shapes ([`wire`]) to the chat service's completions and back;
//! errors use OpenAI's shape ([`errors`]).

mod content;
pub mod errors;
pub mod wire;

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, parse_json};
use errors::{OpenAiError, OpenAiErrorBody};
use wire::{ChatCompletionRequest, CompletionHead};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_completions))
        .routes(routes!(list_models))
}

/// JSON, or `chat.completion.chunk` events ending with `data: [DONE]` when `stream` is set.
/// `X-Session-Id` does what the body's `session_id` does; `X-Lit-Mux-Use-Tools: true` what
/// `lit_mux.use_tools` does.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    params(("X-Session-Id" = Option<String>, Header, description = "Append the exchange to this session"),
        ("X-Lit-Mux-Use-Tools" = Option<String>, Header, pattern = "^\\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0|[Yy][Ee][Ss]|[Nn][Oo])\\s*$",
            description = "Run lit-mux's MCP tool loop: true, false, 1, 0, yes or no, any case")),
    request_body(content = Object, description = "OpenAI's chat completion request; model is backend/model"),
    responses((status = 200, description = "chat.completion, or chat.completion.chunk events then [DONE]", content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "A value that cannot work", body = OpenAiErrorBody), (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 404, description = "Unknown model or session", body = OpenAiErrorBody),
        (status = 422, description = "Malformed JSON or a wrong field type", body = OpenAiErrorBody), (status = 429, description = "Rate limited upstream", body = OpenAiErrorBody),
        (status = 502, description = "A peer failed", body = OpenAiErrorBody), (status = 504, description = "Timed out", body = OpenAiErrorBody),
        (status = 503, description = "Storage unavailable (with a session)", body = OpenAiErrorBody),
        (status = 507, description = "Storage full (with a session)", body = OpenAiErrorBody)))]
async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBytes, ApiError>,
) -> Result<Response, OpenAiError> {
    let JsonBytes(bytes) = body?;
    let mut request = parse_request(&bytes)?;
    if request.session_id.is_none()
        && let Some(id) = headers.get("x-session-id").and_then(|v| v.to_str().ok())
    {
        request.session_id = Some(id.to_owned());
    }
    if use_tools_header(&headers)? == Some(true) {
        request.lit_mux.use_tools = true;
    }
    let target = state.chat.completion_target(&request.model)?;
    let streamed = request.stream;
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|options| options.include_usage);
    let head = CompletionHead::new(&target, include_usage);
    let completion = state
        .chat
        .begin_completion(target, request.into_completion()?)
        .await?;
    if !streamed {
        return Ok(Json(head.completion(completion.run().await?)).into_response());
    }
    let chunks = head.chunks(completion.run_streaming().await?);
    let events = chunks
        .map(|chunk| Ok::<_, Infallible>(Event::default().data(chunk.to_string())))
        .chain(futures_util::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The request in `bytes`; a body that is not one names the field at fault (`param`) when it
/// can: the first field of the failing path, or the missing one.
fn parse_request(bytes: &[u8]) -> Result<ChatCompletionRequest, OpenAiError> {
    // Only an object is a request: serde would also fill it from an array of its fields.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::Unprocessable(
            "Invalid request body: expected a JSON object".to_owned(),
        )
        .into());
    }
    parse_json(bytes).map_err(|err| OpenAiError::from(err).with_param(offending_field(bytes)))
}

/// The top-level field a request body fails at, if the failure is in one (a wrong type or a
/// missing field; not JSON that does not parse).
fn offending_field(bytes: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let err =
        serde_path_to_error::deserialize::<_, ChatCompletionRequest>(&mut deserializer).err()?;
    // Text that is not JSON is no field's fault.
    if err.inner().is_syntax() || err.inner().is_eof() {
        return None;
    }
    if let Some(serde_path_to_error::Segment::Map { key }) = err.path().iter().next() {
        return Some(key.clone());
    }
    // serde names a missing field only in its message: "missing field `messages`".
    let message = err.inner().to_string();
    let missing = message.strip_prefix("missing field `")?;
    missing.split('`').next().map(str::to_owned)
}

/// `X-Lit-Mux-Use-Tools` as a yes or no; a value that is neither is refused, not taken as no.
fn use_tools_header(headers: &HeaderMap) -> Result<Option<bool>, ApiError> {
    let Some(value) = headers.get(USE_TOOLS_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(Some(true)),
        "false" | "0" | "no" => Ok(Some(false)),
        _ => Err(ApiError::BadRequest(format!(
            "{USE_TOOLS_HEADER} must be one of true, false, 1, 0, yes, no (any case), got \"{text}\""
        ))),
    }
}

const USE_TOOLS_HEADER: &str = "X-Lit-Mux-Use-Tools";

/// Every enabled backend's models as `backend/model`, listed concurrently; a backend that
/// cannot list them still offers its default model.
#[utoipa::path(get, path = "/v1/models", tag = "openai", operation_id = "openai_list_models",
    responses((status = 200, description = "{object: list, data: [{id: backend/model, ...}]}", body = Object)))]
async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let lists = state.backends.entries().map(|entry| async move {
        let listed = entry.models().await?;
        let mut ids: Vec<String> = listed
            .map(|models| models.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default();
        if !ids.contains(&entry.config.default_model) {
            ids.insert(0, entry.config.default_model.clone());
        }
        Some((entry.name.clone(), ids))
    });
    let data: Vec<Value> = join_all(lists)
        .await
        .into_iter()
        .flatten()
        .flat_map(|(backend, models)| {
            models.into_iter().map(move |model| {
                json!({
                    "id": format!("{backend}/{model}"),
                    "object": "model",
                    "created": 0,
                    "owned_by": backend,
                })
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}
