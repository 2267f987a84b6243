//! Replies streamed as they are produced: the events a client receives, and the task that moves
//! a backend's stream to the client while keeping the session's history right.
//!
//! Invariants: an answer is stored exactly once, when its stream ends, however it ends — complete
//! (`done`), broken by the backend (`error`; what came is stored, marked incomplete), or abandoned
//! by the client (the backend request is dropped at once, which cancels it; what came is stored,
//! marked incomplete). A client that leaves during a tool round cancels the running call; that
//! call and those not yet run get the error result [`tools::CANCELLED_RESULT`], so every stored
//! call has its result and the history replays to native backends. When a tool loop is cut off
//! with no text of a later answer to keep, or a step of it cannot be stored, the stored answer
//! holding the last calls is marked incomplete instead (the user's message failed when there is
//! none); the plain loop ([`ChatService::answer_with_tools`]) leaves the same history.
//! A slow client slows the backend down (bounded channel) instead of making lit-mux buffer the
//! answer.

use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use futures_util::future::join_all;

use super::context::{STATUS_INCOMPLETE, STATUS_KEY};
use super::tool_call_scanner::{ScanEvent, ToolCallScanner};
use super::tools::{self, ToolSetup};
use super::{
    BroadcastMessage, CLIENT_LEFT, ChatError, ChatService, SendMessage, Turn, UnansweredGuard,
    client_left, reply_metadata,
};
use crate::backends::{BackendError, ChatEvent, ChatStream, ToolCall};
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
    /// The model called a tool; `server` is null when no server has the tool, and `tool` is
    /// then the name the model wrote.
    ToolCall {
        backend: String,
        server: Option<String>,
        tool: String,
        arguments: Value,
    },
    /// The tool's result, as fed back to the model.
    ToolResult {
        backend: String,
        server: Option<String>,
        tool: String,
        content: String,
        is_error: bool,
        duration_ms: u64,
    },
    /// The answer is complete and stored: the stored message.
    Done(Message),
    /// The backend failed; `status` is what the HTTP status would have been, `retry_after` the
    /// `Retry-After` a rate-limited backend gave.
    Error {
        backend: String,
        detail: String,
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
}

impl ReplyEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Delta { .. } => "delta",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::Done(_) => "done",
            Self::Error { .. } => "error",
        }
    }

    fn error(backend: &str, err: &BackendError) -> Self {
        let retry_after = match err {
            BackendError::RateLimited { retry_after, .. } => retry_after.clone(),
            _ => None,
        };
        Self::Error {
            backend: backend.to_owned(),
            detail: err.to_string(),
            status: crate::http::error::ApiError::from(err.clone())
                .status()
                .as_u16(),
            retry_after,
        }
    }
}

/// How a streamed tool step ended.
enum StepEnd {
    /// The result is stored and sent.
    Done,
    /// The client left; `stored` says whether a result (the real one, or the cancelled one of
    /// the call it cut off) is stored for this call.
    ClientLeft { stored: bool },
    /// The result could not be stored.
    Failed(BackendError),
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
        let max_rounds = tools::max_iterations(request.max_tool_iterations)?;
        let mut turn = self.begin_turn(session_id, &request).await?;
        let mut setup = self.tool_setup(&turn, request.use_tools, max_rounds);
        Self::prepare_tools(&mut turn, &setup);
        let guard = UnansweredGuard::new(self, &turn.user_message);
        let started = Instant::now();
        let opened = match turn.backend.chat_stream(turn.request.clone()).await {
            Err(err) if self.fall_back_to_prompt(&mut turn, &mut setup, &err) => {
                turn.backend.chat_stream(turn.request.clone()).await
            }
            other => other,
        };
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
        self.spawn(async move { service.relay(turn, stream, started, events, &setup).await });
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
        self.spawn(async move {
            let streams: Vec<_> = turns
                .into_iter()
                .map(|(mut turn, mut setup)| {
                    let (service, events) = (service.clone(), events.clone());
                    async move {
                        let backend = turn.backend_name.clone();
                        let started = Instant::now();
                        let opened = match turn.backend.chat_stream(turn.request.clone()).await {
                            Err(err)
                                if service.fall_back_to_prompt(&mut turn, &mut setup, &err) =>
                            {
                                turn.backend.chat_stream(turn.request.clone()).await
                            }
                            other => other,
                        };
                        let answered = match opened {
                            Ok(stream) => {
                                service.relay(turn, stream, started, events, &setup).await
                            }
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

    /// Moves `stream` to `events`, then stores the answer however the stream ended; with
    /// tools, runs the calls the answer holds and streams the model's next answer, round after
    /// round. Returns whether a final answer was stored.
    pub(crate) async fn relay(
        &self,
        mut turn: Turn,
        mut stream: ChatStream,
        mut started: Instant,
        events: mpsc::Sender<ReplyEvent>,
        setup: &ToolSetup,
    ) -> bool {
        let mut round = 0;
        // The stored answer holding the latest round's calls.
        let mut call_answer: Option<Message> = None;
        loop {
            let (text, calls, ending) = self
                .relay_round(&turn, &mut stream, started, &events, setup)
                .await;
            // Dropping the backend's stream closes its connection: the backend stops generating.
            drop(stream);
            match ending {
                Ending::Complete { model, metadata }
                    if !calls.is_empty() && round < setup.max_rounds =>
                {
                    round += 1;
                    let mut calls = calls;
                    let notice = tools::skipped_notice(tools::limit_calls(&mut calls));
                    let answer = match self
                        .store_call_answer(&mut turn, &text, &model, metadata, &calls, setup)
                        .await
                    {
                        Ok(answer) => call_answer.insert(answer),
                        Err(err) => {
                            self.mark_cut_short(&mut turn, call_answer.as_mut(), &err)
                                .await;
                            let _ = events
                                .send(ReplyEvent::error(&turn.backend_name, &err))
                                .await;
                            return false;
                        }
                    };
                    for (at, call) in calls.iter().enumerate() {
                        let notice = tools::notice_for(&notice, at, &calls);
                        match self
                            .streamed_tool_step(&mut turn, call, setup, notice, &events)
                            .await
                        {
                            StepEnd::Done => {}
                            StepEnd::ClientLeft { stored } => {
                                let unanswered = &calls[at + usize::from(stored)..];
                                self.store_cancelled_calls(&turn, unanswered, setup).await;
                                self.mark_incomplete(&turn, answer, CLIENT_LEFT).await;
                                return false;
                            }
                            StepEnd::Failed(err) => {
                                self.mark_cut_short(&mut turn, Some(answer), &err).await;
                                let _ = events
                                    .send(ReplyEvent::error(&turn.backend_name, &err))
                                    .await;
                                return false;
                            }
                        }
                    }
                    started = Instant::now();
                    stream = match turn.backend.chat_stream(turn.request.clone()).await {
                        Ok(next) => next,
                        Err(err) => {
                            self.mark_incomplete(&turn, answer, &err.to_string()).await;
                            let _ = events
                                .send(ReplyEvent::error(&turn.backend_name, &err))
                                .await;
                            return false;
                        }
                    };
                }
                Ending::Complete {
                    model,
                    mut metadata,
                } => {
                    if !calls.is_empty() {
                        metadata.insert("max_tool_iterations_reached".to_owned(), json!(true));
                    }
                    if round > 0 {
                        metadata.insert("tool_iterations".to_owned(), json!(round));
                    }
                    let event = match self.store_answer(&turn, &text, &model, metadata).await {
                        Ok(message) => ReplyEvent::Done(message),
                        Err(err) => {
                            let detail = format!("the answer could not be stored: {err}");
                            let err = BackendError::Failed {
                                backend: turn.backend_name.clone(),
                                message: detail.clone(),
                            };
                            self.mark_cut_short(&mut turn, call_answer.as_mut(), &err)
                                .await;
                            ReplyEvent::Error {
                                backend: turn.backend_name.clone(),
                                detail,
                                status: 500,
                                retry_after: None,
                            }
                        }
                    };
                    let answered = matches!(event, ReplyEvent::Done(_));
                    let _ = events.send(event).await;
                    return answered;
                }
                Ending::Broken(err) => {
                    self.keep_partial(&mut turn, &text, &err.to_string(), started)
                        .await;
                    if text.is_empty() {
                        self.mark_cut_short(&mut turn, call_answer.as_mut(), &err)
                            .await;
                    }
                    let _ = events
                        .send(ReplyEvent::error(&turn.backend_name, &err))
                        .await;
                    return false;
                }
                Ending::Abandoned => {
                    self.keep_partial(&mut turn, &text, CLIENT_LEFT, started)
                        .await;
                    if text.is_empty() {
                        match call_answer.as_mut() {
                            Some(answer) => self.mark_incomplete(&turn, answer, CLIENT_LEFT).await,
                            None => {
                                let err = client_left(&turn.backend_name);
                                self.mark_failed(&mut turn, &err).await;
                            }
                        }
                    }
                    return false;
                }
            }
        }
    }

    /// One answer of the model: its text, sent on as deltas except the tool calls found in it,
    /// and how it ended.
    async fn relay_round(
        &self,
        turn: &Turn,
        stream: &mut ChatStream,
        // When the backend was asked: the wait for its first byte is part of the answer's time.
        started: Instant,
        events: &mpsc::Sender<ReplyEvent>,
        setup: &ToolSetup,
    ) -> (String, Vec<ToolCall>, Ending) {
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut scanner = setup.scans_text().then(ToolCallScanner::new);
        let ending = loop {
            tokio::select! {
                biased;
                () = events.closed() => break Ending::Abandoned,
                event = stream.next() => match event {
                    Some(Ok(ChatEvent::Delta(delta))) => {
                        text.push_str(&delta);
                        let found = match &mut scanner {
                            Some(scanner) => scanner.push(&delta),
                            None => vec![ScanEvent::Text(delta)],
                        };
                        if !self.pass_on(turn, found, &mut calls, events).await {
                            break Ending::Abandoned;
                        }
                    }
                    // Native calls: announced when they run, after the answer is complete.
                    Some(Ok(ChatEvent::ToolCall(call))) => calls.push(call),
                    Some(Ok(ChatEvent::Done { model, usage, finish_reason })) => {
                        let rest = scanner.as_mut().map(ToolCallScanner::finish).unwrap_or_default();
                        if !self.pass_on(turn, rest, &mut calls, events).await {
                            break Ending::Abandoned;
                        }
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
        (text, calls, ending)
    }

    /// Sends scanned text on as deltas and keeps the calls; false when the client is gone.
    async fn pass_on(
        &self,
        turn: &Turn,
        found: Vec<ScanEvent>,
        calls: &mut Vec<ToolCall>,
        events: &mpsc::Sender<ReplyEvent>,
    ) -> bool {
        for item in found {
            match item {
                ScanEvent::Text(text) if text.is_empty() => {}
                ScanEvent::Text(text) => {
                    let event = ReplyEvent::Delta {
                        backend: turn.backend_name.clone(),
                        text,
                    };
                    if events.send(event).await.is_err() {
                        return false;
                    }
                }
                ScanEvent::Call(call) => calls.push(tools::from_text(call)),
            }
        }
        true
    }

    /// Runs one call with its `tool_call` and `tool_result` events, `notice` following the
    /// result (see [`ChatService::record_step`]); a client that leaves cancels the running call,
    /// whose cancelled result is then stored.
    async fn streamed_tool_step(
        &self,
        turn: &mut Turn,
        call: &ToolCall,
        setup: &ToolSetup,
        notice: Option<&str>,
        events: &mpsc::Sender<ReplyEvent>,
    ) -> StepEnd {
        let (server, tool) = tools::target_names(call, setup);
        let announced = ReplyEvent::ToolCall {
            backend: turn.backend_name.clone(),
            server,
            tool,
            arguments: call.arguments.clone(),
        };
        if events.send(announced).await.is_err() {
            return StepEnd::ClientLeft { stored: false };
        }
        let backend = turn.backend_name.clone();
        let started = Instant::now();
        let ran = tokio::select! {
            biased;
            () = events.closed() => None,
            step = self.run_call(call, setup) => Some(step),
        };
        let Some(step) = ran else {
            // The call's future is dropped: the MCP request is cancelled.
            let ran_ms = started.elapsed().as_millis() as u64;
            self.store_cancelled_call(turn, call, setup, ran_ms, CLIENT_LEFT)
                .await;
            return StepEnd::ClientLeft { stored: true };
        };
        match self.record_step(turn, call, setup, step, notice).await {
            Ok(step) => {
                let result = ReplyEvent::ToolResult {
                    backend,
                    server: step.server,
                    tool: step.tool,
                    content: step.outcome.text,
                    is_error: step.outcome.is_error,
                    duration_ms: step.outcome.duration_ms,
                };
                match events.send(result).await {
                    Ok(()) => StepEnd::Done,
                    Err(_) => StepEnd::ClientLeft { stored: true },
                }
            }
            Err(err) => StepEnd::Failed(err),
        }
    }

    /// Marks what a reply cut short by `err` leaves, as the plain loop does: the stored answer
    /// holding its latest calls incomplete, else the user's message failed.
    async fn mark_cut_short(
        &self,
        turn: &mut Turn,
        call_answer: Option<&mut Message>,
        err: &BackendError,
    ) {
        match call_answer {
            Some(answer) => self.mark_incomplete(turn, answer, &err.to_string()).await,
            None => self.mark_failed(turn, err).await,
        }
    }

    /// Stores the text an interrupted answer got to, marked incomplete (nothing when empty).
    async fn keep_partial(&self, turn: &mut Turn, text: &str, reason: &str, started: Instant) {
        if text.is_empty() {
            return;
        }
        let mut metadata = reply_metadata(started, &None, &None);
        metadata.insert(STATUS_KEY.to_owned(), json!(STATUS_INCOMPLETE));
        metadata.insert("error".to_owned(), json!(reason));
        metadata.insert("streamed".to_owned(), json!(true));
        let model = turn.request.model.clone();
        if let Err(err) = self.store_answer(turn, text, &model, metadata).await {
            tracing::error!(%err, "cannot store a partial answer");
        }
    }
}
