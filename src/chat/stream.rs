//! Replies streamed as they are produced: the events a client receives, and the task that moves
//! a backend's stream to the client while keeping the session's history right.
//!
//! Invariants: an answer is stored exactly once, when its stream ends, however it ends — complete
//! (`done`), broken by the backend (`error`; what came is stored, marked incomplete), or abandoned
//! by the client (the backend request is dropped at once, which cancels it; what came is stored,
//! marked incomplete). A slow client slows the backend down (bounded channel) instead of making
//! lit-mux buffer the answer.

use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use futures_util::future::join_all;

use super::{
    BroadcastMessage, ChatError, ChatService, SendMessage, Turn, UnansweredGuard, reply_metadata,
};
use crate::backends::{BackendError, ChatEvent, ChatStream};
use crate::store::Message;

/// Events in flight between a backend and a slow client, per stream.
const EVENT_BUFFER: usize = 64;

/// One Server-Sent Event of a streamed reply. Every event names its backend, so that the
/// interleaved events of a broadcast can be told apart.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ReplyEvent {
    /// More text of the answer.
    Delta { backend: String, text: String },
    /// The answer is complete and stored: the stored message.
    Done(Message),
    /// The backend failed; `status` is what the HTTP status would have been.
    Error {
        backend: String,
        detail: String,
        status: u16,
    },
}

impl ReplyEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Delta { .. } => "delta",
            Self::Done(_) => "done",
            Self::Error { .. } => "error",
        }
    }

    fn error(backend: &str, err: &BackendError) -> Self {
        Self::Error {
            backend: backend.to_owned(),
            detail: err.to_string(),
            status: crate::error::ApiError::from(err.clone()).status().as_u16(),
        }
    }
}

/// How a streamed answer ended.
enum Ending {
    Complete {
        model: String,
        metadata: Map<String, Value>,
    },
    Broken(BackendError),
    Abandoned,
}

impl ChatService {
    /// Like [`send`](ChatService::send), but answers with the events of the reply as the backend
    /// produces them. Errors before the backend's first byte (bad request, backend down or
    /// refusing) are returned here, so the client gets them as a plain HTTP error.
    pub async fn send_streaming(
        &self,
        session_id: &str,
        request: SendMessage,
    ) -> Result<mpsc::Receiver<ReplyEvent>, ChatError> {
        let mut turn = self.begin_turn(session_id, &request).await?;
        let guard = UnansweredGuard::new(&self.store, &turn.user_message);
        let started = Instant::now();
        let opened = turn.backend.chat_stream(turn.request.clone()).await;
        guard.disarm();
        let stream = match opened {
            Ok(stream) => stream,
            Err(err) => {
                self.mark_failed(&mut turn, &err).await;
                return Err(err.into());
            }
        };
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let service = self.clone();
        tokio::spawn(async move { service.relay(turn, stream, started, events).await });
        Ok(receiver)
    }

    /// Like [`broadcast`](ChatService::broadcast), but streams every backend's events,
    /// interleaved as they come. A backend that fails to start gets its `error` event; the
    /// others go on.
    pub async fn broadcast_streaming(
        &self,
        session_id: &str,
        request: BroadcastMessage,
    ) -> Result<mpsc::Receiver<ReplyEvent>, ChatError> {
        let (mut user_message, turns) = self.begin_broadcast(session_id, &request).await?;
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let service = self.clone();
        let asked = turns.len();
        tokio::spawn(async move {
            let streams: Vec<_> = turns
                .into_iter()
                .map(|turn| {
                    let (service, events) = (service.clone(), events.clone());
                    async move {
                        let backend = turn.backend_name.clone();
                        let started = Instant::now();
                        let answered = match turn.backend.chat_stream(turn.request.clone()).await {
                            Ok(stream) => service.relay(turn, stream, started, events).await,
                            Err(err) => {
                                let _ = events.send(ReplyEvent::error(&backend, &err)).await;
                                false
                            }
                        };
                        (!answered).then_some(backend)
                    }
                })
                .collect();
            // Each relay holds its own sender: the stream ends when the last one is done.
            drop(events);
            let failed: Vec<String> = join_all(streams).await.into_iter().flatten().collect();
            service
                .record_broadcast_failures(&mut user_message, &failed, asked)
                .await;
        });
        Ok(receiver)
    }

    /// Moves `stream` to `events`, then stores the answer however the stream ended; whether
    /// the answer was complete.
    pub(crate) async fn relay(
        &self,
        mut turn: Turn,
        mut stream: ChatStream,
        started: Instant,
        events: mpsc::Sender<ReplyEvent>,
    ) -> bool {
        let mut text = String::new();
        let ending = loop {
            tokio::select! {
                biased;
                () = events.closed() => break Ending::Abandoned,
                event = stream.next() => match event {
                    Some(Ok(ChatEvent::Delta(delta))) => {
                        text.push_str(&delta);
                        let event = ReplyEvent::Delta {
                            backend: turn.backend_name.clone(),
                            text: delta,
                        };
                        if events.send(event).await.is_err() {
                            break Ending::Abandoned;
                        }
                    }
                    Some(Ok(ChatEvent::Done { model, usage, finish_reason })) => {
                        let mut metadata = reply_metadata(started, &usage, &finish_reason);
                        metadata.insert("streamed".to_owned(), json!(true));
                        break Ending::Complete { model, metadata };
                    }
                    Some(Err(err)) => break Ending::Broken(err),
                    // `until_done` ends every stream with Done or an error; this is a guard.
                    None => break Ending::Broken(BackendError::InvalidResponse {
                        backend: turn.backend_name.clone(),
                        message: "the answer ended before it was complete".to_owned(),
                    }),
                },
            }
        };
        // Dropping the backend's stream closes its connection: the backend stops generating.
        drop(stream);
        let answered = matches!(ending, Ending::Complete { .. });
        match ending {
            Ending::Complete { model, metadata } => {
                let event = match self.store_answer(&turn, &text, &model, metadata).await {
                    Ok(message) => ReplyEvent::Done(message),
                    Err(err) => ReplyEvent::Error {
                        backend: turn.backend_name.clone(),
                        detail: format!("the answer could not be stored: {err}"),
                        status: 500,
                    },
                };
                let _ = events.send(event).await;
            }
            Ending::Broken(err) => {
                self.keep_partial(&mut turn, &text, &err.to_string(), started)
                    .await;
                if text.is_empty() {
                    self.mark_failed(&mut turn, &err).await;
                }
                let _ = events
                    .send(ReplyEvent::error(&turn.backend_name, &err))
                    .await;
            }
            Ending::Abandoned => {
                let reason = "the client disconnected before the answer was complete";
                self.keep_partial(&mut turn, &text, reason, started).await;
                if text.is_empty() {
                    let err = BackendError::Failed {
                        backend: turn.backend_name.clone(),
                        message: reason.to_owned(),
                    };
                    self.mark_failed(&mut turn, &err).await;
                }
            }
        }
        answered
    }

    /// Stores the text an interrupted answer got to, marked incomplete (nothing when empty).
    async fn keep_partial(&self, turn: &mut Turn, text: &str, reason: &str, started: Instant) {
        if text.is_empty() {
            return;
        }
        let mut metadata = reply_metadata(started, &None, &None);
        metadata.insert("status".to_owned(), json!("incomplete"));
        metadata.insert("error".to_owned(), json!(reason));
        metadata.insert("streamed".to_owned(), json!(true));
        let model = turn.request.model.clone();
        if let Err(err) = self.store_answer(turn, text, &model, metadata).await {
            tracing::error!(%err, "cannot store a partial answer");
        }
    }
}
