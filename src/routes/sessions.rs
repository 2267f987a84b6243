//! `/sessions/…`: create, list, inspect and delete sessions; send and broadcast messages.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::chat::stream::ReplyEvent;
use crate::chat::{BroadcastMessage, CreateSession, MAX_PAGE, SendMessage};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::server::AppState;
use crate::store::{Message, Session};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list_sessions).post(create_session))
        .route("/sessions/{id}", get(get_session).delete(delete_session))
        .route("/sessions/{id}/messages", get(list_messages))
        .route("/sessions/{id}/message", post(send_message))
        .route("/sessions/{id}/broadcast", post(broadcast))
}

/// `?limit=&offset=`, as text so that a bad value gets our 422 rather than axum's plain 400.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
}

impl PageQuery {
    fn parse(&self, default_limit: i64) -> Result<(i64, i64), ApiError> {
        let number = |value: &Option<String>, name: &str, default: i64, max: i64| match value {
            None => Ok(default),
            Some(text) => match text.trim().parse::<i64>() {
                Ok(n) if (0..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::Unprocessable(format!(
                    "{name} must be an integer from 0 to {max}, got {text:?}"
                ))),
            },
        };
        Ok((
            number(&self.limit, "limit", default_limit, MAX_PAGE)?,
            number(&self.offset, "offset", 0, i64::MAX)?,
        ))
    }
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub message: String,
}

async fn create_session(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.chat.create_session(body).await?))
}

async fn list_sessions(
    State(state): State<AppState>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Vec<Session>>, ApiError> {
    let (limit, offset) = page.parse(100)?;
    Ok(Json(state.chat.store().list_sessions(limit, offset).await?))
}

async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.chat.store().session(&id).await?))
}

async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    state.chat.store().delete_session(&id).await?;
    Ok(Json(Deleted {
        message: format!("Session {id} deleted successfully"),
    }))
}

async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let (limit, offset) = page.parse(MAX_PAGE)?;
    let store = state.chat.store();
    // A missing session is a 404, not an empty list.
    store.session(&id).await?;
    Ok(Json(store.messages(&id, limit, offset).await?))
}

/// Answers JSON, or Server-Sent Events when the body says `"stream": true` or the client
/// accepts only `text/event-stream`.
async fn send_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    if body.stream || wants_event_stream(&headers) {
        let events = state.chat.send_streaming(&id, body).await?;
        return Ok(event_stream(events));
    }
    Ok(Json(state.chat.send(&id, body).await?).into_response())
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("text/event-stream"))
}

/// The events as SSE, each `event: NAME` with its JSON as `data`; comments keep idle
/// connections open through proxies.
fn event_stream(events: tokio::sync::mpsc::Receiver<ReplyEvent>) -> Response {
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        let event = events.recv().await?;
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

async fn broadcast(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BroadcastMessage>,
) -> Result<Response, ApiError> {
    if body.stream || wants_event_stream(&headers) {
        let events = state.chat.broadcast_streaming(&id, body).await?;
        return Ok(event_stream(events));
    }
    Ok(Json(state.chat.broadcast(&id, body).await?).into_response())
}
