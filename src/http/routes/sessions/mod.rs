//! `/sessions/…`: create, list, inspect and delete sessions; send and broadcast messages. The
//! JSON shapes are in [`wire`].

pub mod wire;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::chat::{MAX_PAGE, ReplyEvent};
use crate::http::AppState;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::store::Page;
use wire::{BroadcastMessage, BroadcastResponse, CreateSession, Message, SendMessage, Session};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(list_messages))
        .routes(routes!(send_message))
        .routes(routes!(broadcast))
}

/// `?limit=&offset=`, as text so that a bad value gets our 422 rather than axum's plain 400.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many, at most 1000.
    #[param(value_type = Option<u32>, minimum = 0, maximum = 1000, example = 100)]
    limit: Option<String>,
    /// How many to skip.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9223372036854775807_i64, example = 0)]
    offset: Option<String>,
}

impl PageQuery {
    /// The page asked for; `default_limit` when no `limit` is given (`None`: all).
    fn parse(&self, default_limit: Option<u64>) -> Result<Page, ApiError> {
        let number = |value: &Option<String>, name: &str, max: i64| match value {
            None => Ok(None),
            Some(text) => {
                let kind = match text.trim().parse::<i64>() {
                    Ok(n) if (0..=max).contains(&n) => return Ok(Some(n.unsigned_abs())),
                    Ok(n) if n < 0 => "greater_than_equal",
                    Ok(_) => "less_than_equal",
                    Err(_) => "int_parsing",
                };
                Err(ApiError::Invalid(vec![FieldError::new(
                    kind,
                    vec![json!("query"), json!(name)],
                    format!("{name} must be an integer from 0 to {max}, got \"{text}\""),
                    json!(text),
                )]))
            }
        };
        Ok(Page {
            limit: number(&self.limit, "limit", MAX_PAGE)?.or(default_limit),
            offset: number(&self.offset, "offset", i64::MAX)?.unwrap_or(0),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub message: String,
}

/// Creates a session with its backends.
#[utoipa::path(post, path = "/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 200, description = "Success", body = Session), (status = 400, description = "A value that cannot work", body = crate::http::error::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Malformed JSON or a wrong field type", body = crate::http::error::ErrorBody),
        (status = 503, description = "Storage unavailable (nothing was stored)", body = crate::http::error::ErrorBody),
        (status = 507, description = "Storage full (nothing was stored)", body = crate::http::error::ErrorBody)))]
async fn create_session(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        state.chat.create_session(body.try_into()?).await?.into(),
    ))
}

/// Sessions, newest first.
#[utoipa::path(get, path = "/sessions", tag = "sessions", params(PageQuery),
    responses((status = 200, description = "Success", body = Vec<Session>),
        (status = 422, description = "limit or offset out of its range, or given twice", body = crate::http::error::ErrorBody),
        (status = 503, description = "Storage unavailable", body = crate::http::error::ErrorBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Vec<Session>>, ApiError> {
    let page = page.parse(Some(100))?;
    let sessions = state.chat.store().list_sessions(page).await?;
    Ok(Json(sessions.into_iter().map(Session::from).collect()))
}

#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, description = "Success", body = Session), (status = 404, description = "Not found", body = crate::http::error::ErrorBody),
        (status = 503, description = "Storage unavailable", body = crate::http::error::ErrorBody)))]
async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.chat.store().session(&id).await?.into()))
}

#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, description = "Success", body = Deleted), (status = 404, description = "Not found", body = crate::http::error::ErrorBody),
        (status = 503, description = "Storage unavailable (nothing was deleted)", body = crate::http::error::ErrorBody),
        (status = 507, description = "Storage full (nothing was deleted)", body = crate::http::error::ErrorBody)))]
async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    state.chat.store().delete_session(&id).await?;
    Ok(Json(Deleted {
        message: format!("Session {id} deleted successfully"),
    }))
}

/// The session's messages, oldest first: the whole conversation unless `limit` is given (the
/// predecessor's clients read it whole; a default page would silently leave out the newest).
#[utoipa::path(get, path = "/sessions/{id}/messages", tag = "sessions", params(("id" = String, Path), PageQuery),
    responses((status = 200, description = "Success", body = Vec<Message>), (status = 404, description = "Not found", body = crate::http::error::ErrorBody),
        (status = 422, description = "limit or offset out of its range, or given twice", body = crate::http::error::ErrorBody),
        (status = 503, description = "Storage unavailable", body = crate::http::error::ErrorBody)))]
async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let page = page.parse(None)?;
    let store = state.chat.store();
    // A missing session is a 404, not an empty list.
    store.session(&id).await?;
    let messages = store.messages(&id, page).await?;
    Ok(Json(messages.into_iter().map(Message::from).collect()))
}

/// Answers JSON, or Server-Sent Events when the body says `"stream": true` or the client
/// accepts only `text/event-stream`.
#[utoipa::path(post, path = "/sessions/{id}/message", tag = "sessions", params(("id" = String, Path)),
    request_body = SendMessage,
    responses((status = 200, description = "The stored answer; with stream, the events delta, tool_call, tool_result, done, error", content((Message = "application/json"), (Object = "text/event-stream"))),
        (status = 400, description = "A value that cannot work", body = crate::http::error::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Malformed JSON or a wrong field type", body = crate::http::error::ErrorBody),
        (status = 404, description = "Unknown session", body = crate::http::error::ErrorBody),
        (status = 429, description = "The backend is rate limited (Retry-After passed on)", body = crate::http::error::ErrorBody),
        (status = 502, description = "The backend failed", body = crate::http::error::ErrorBody),
        (status = 504, description = "The backend timed out", body = crate::http::error::ErrorBody),
        (status = 503, description = "Storage unavailable (nothing was stored)", body = crate::http::error::ErrorBody),
        (status = 507, description = "Storage full (nothing was stored)", body = crate::http::error::ErrorBody)))]
async fn send_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    if body.stream || wants_event_stream(&headers) {
        let events = state.chat.send_streaming(&id, body.try_into()?).await?;
        return Ok(event_stream(events));
    }
    let answer = Message::from(state.chat.send(&id, body.try_into()?).await?);
    Ok(Json(answer).into_response())
}

/// A client that also accepts JSON (`application/json, text/event-stream`, as MCP clients send)
/// gets JSON unless it asks for a stream in the body.
fn wants_event_stream(headers: &HeaderMap) -> bool {
    let accepted: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|media| media.split(';').next().unwrap_or_default().trim())
        .collect();
    accepted.contains(&"text/event-stream")
        && !accepted
            .iter()
            .any(|media| matches!(*media, "application/json" | "application/*" | "*/*"))
}

/// The events as SSE, each `event: NAME` with its JSON as `data`; comments keep idle
/// connections open through proxies.
fn event_stream(events: tokio::sync::mpsc::Receiver<ReplyEvent>) -> Response {
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        let event = wire::Event::from(events.recv().await?);
        let sse = Event::default()
            .event(event.name())
            .json_data(&event)
            .unwrap_or_else(|_| Event::default().event("error").data("{}"));
        Some((Ok::<_, std::convert::Infallible>(sse), events))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Sends one message to several backends at once; every answer is stored.
#[utoipa::path(post, path = "/sessions/{id}/broadcast", tag = "sessions", params(("id" = String, Path)),
    request_body = BroadcastMessage,
    responses((status = 200, description = "Every backend's answer or error; with stream, their events interleaved", content((Object = "application/json"), (Object = "text/event-stream"))),
        (status = 400, description = "A value that cannot work", body = crate::http::error::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Malformed JSON or a wrong field type", body = crate::http::error::ErrorBody), (status = 404, description = "Not found", body = crate::http::error::ErrorBody),
        (status = 503, description = "Storage unavailable (nothing was stored)", body = crate::http::error::ErrorBody),
        (status = 507, description = "Storage full (nothing was stored)", body = crate::http::error::ErrorBody)))]
async fn broadcast(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BroadcastMessage>,
) -> Result<Response, ApiError> {
    if body.stream || wants_event_stream(&headers) {
        let events = state
            .chat
            .broadcast_streaming(&id, body.try_into()?)
            .await?;
        return Ok(event_stream(events));
    }
    let answers = BroadcastResponse::from(state.chat.broadcast(&id, body.try_into()?).await?);
    Ok(Json(answers).into_response())
}
