//! Completions, as the OpenAI-compatible front door asks for them: one backend answers the
//! client's own conversation. The wire shapes live in `http::openai`; this is what they mean.
//!
//! Model ids are `backend/model` (`ollama/llama3.1`); a bare backend name means its default
//! model. Calls are stateless unless the request names a session: then the exchange (the
//! client's last user message and the answer) is appended to it. The client's own tools are
//! passed through and the model's calls come back to the client; or, when asked, lit-mux runs
//! its MCP tool loop ([`super::tool_loop`]) and the client gets the final answer.
//!
//! Invariants: a session's user message is stored before the backend is called, and marked
//! failed when the call fails or the client leaves before the answer; the answer is appended
//! once it is complete.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value, json};

use super::events::{EVENT_BUFFER, ReplyEvent};
use super::turn::{UnansweredGuard, reply_metadata};
use super::{ChatError, ChatService, Interruption, Turn, context};
use crate::backends::{
    Backend, BackendError, BackendLookupError, ChatEvent, ChatMessage, ChatReply, ChatRequest,
    GenerationOptions, ImageSource, Role, ToolCall, ToolSpec, Usage,
};
use crate::store::{Message, NewMessage, StoreError};

/// Why a completion request failed.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// Unknown model or session; `code` says which (`model_not_found`, `session_not_found`).
    #[error("{message}")]
    NotFound { message: String, code: &'static str },
    /// A request that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A value of the request's `field` that cannot work.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(StoreError),
    /// The answer was cut off while under way (the server is stopping).
    #[error("{0}")]
    Interrupted(Interruption),
}

impl From<StoreError> for CompletionError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::SessionNotFound(id) => Self::NotFound {
                message: format!("Session {id} not found"),
                code: "session_not_found",
            },
            other => Self::Store(other),
        }
    }
}

impl From<ChatError> for CompletionError {
    /// A tool loop's failure: the backend's, or the storage's (never reported as the backend's).
    fn from(err: ChatError) -> Self {
        match err {
            ChatError::SessionNotFound(id) => StoreError::SessionNotFound(id).into(),
            ChatError::InvalidRequest(message) | ChatError::InvalidValue(message) => {
                Self::Invalid(message)
            }
            ChatError::InvalidOption(invalid) => Self::InvalidField {
                field: invalid.option.to_owned(),
                message: invalid.message,
            },
            ChatError::Backend(err) => Self::Backend(err),
            ChatError::Store(err)
            | ChatError::AnswerNotStored(err)
            | ChatError::StepNotStored(err) => err.into(),
            ChatError::Interrupted(why) => Self::Interrupted(why),
        }
    }
}

/// The backend and model a completion's model id names.
pub struct CompletionTarget {
    backend_name: String,
    backend: Arc<dyn Backend>,
    model: String,
}

impl CompletionTarget {
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// The model asked for (the backend's default when the id names none).
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// What a completion asks, in lit-mux's terms.
#[derive(Debug)]
pub struct CompletionRequest {
    /// The client's leading system (and developer) messages.
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// The client's own tools, passed through: the client runs the calls.
    pub tools: Vec<ToolSpec>,
    /// Append the exchange to this session.
    pub session_id: Option<String>,
    /// Run lit-mux's MCP tool loop for at most this many rounds (never with `tools`).
    pub mcp_tool_rounds: Option<u32>,
    /// Sampling and generation options, for every model call (each round of a tool loop).
    pub options: GenerationOptions,
}

/// A completion ready to run: the backend, the request, and where to record it.
pub struct Completion {
    backend_name: String,
    backend: Arc<dyn Backend>,
    request: ChatRequest,
    record: Option<Recorded>,
    service: ChatService,
    mcp_tool_rounds: Option<u32>,
}

/// The session the exchange is appended to, and its user message once stored.
struct Recorded {
    session_id: String,
    user_message: Option<Message>,
}

/// A completion's complete answer.
#[derive(Debug)]
pub enum CompletionAnswer {
    /// The backend's reply, its calls of the client's tools included.
    Reply(ChatReply),
    /// The final answer of lit-mux's tool loop, as stored (its metadata says how many rounds
    /// ran: `tool_iterations`, `max_tool_iterations_reached`).
    ToolLoop(Message),
}

/// One event of a streamed completion.
#[derive(Debug)]
pub enum CompletionEvent {
    /// More text.
    Delta(String),
    /// A call of the client's own tools; `index` counts the answer's calls from 0.
    ToolCall { index: usize, call: ToolCall },
    /// lit-mux's tool loop ran a step (the client sees only the answers).
    ToolStep,
    /// The backend's answer is complete; `called_tools` says whether it called any.
    Done {
        model: String,
        usage: Option<Usage>,
        finish_reason: Option<String>,
        called_tools: bool,
    },
    /// The final answer of lit-mux's tool loop, as stored.
    ToolLoopDone(Message),
    /// The completion failed after its stream started: the failure's message.
    Error(String),
    /// The completion was cut off after its stream started (the server is stopping): the
    /// stream's last event.
    Interrupted(Interruption),
}

/// A streamed completion's events, until it ends.
pub type CompletionStream = BoxStream<'static, CompletionEvent>;

impl ChatService {
    /// The backend and model `model_id` (`backend/model`, or a backend's name) names.
    pub fn completion_target(&self, model_id: &str) -> Result<CompletionTarget, CompletionError> {
        let (backend_name, model) = match model_id.split_once('/') {
            Some((backend, model)) if !model.trim().is_empty() => (backend, Some(model)),
            _ => (model_id.trim_end_matches('/'), None),
        };
        let backend = self.backends.client(backend_name).map_err(|err| {
            let reason = match err {
                BackendLookupError::Unknown(_) => "no such backend",
                BackendLookupError::Disabled(_) => "its backend is disabled",
            };
            CompletionError::NotFound {
                message: format!(
                    "The model `{model_id}` does not exist ({reason}); models are backend/model, \
                     e.g. {}",
                    self.backends
                        .enabled_names()
                        .iter()
                        .map(|name| format!("{name}/…"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                code: "model_not_found",
            }
        })?;
        let model = model.unwrap_or(backend.default_model()).to_owned();
        Ok(CompletionTarget {
            backend_name: backend_name.to_owned(),
            backend,
            model,
        })
    }

    /// Stores the completion's user message when it names a session, and returns it ready to
    /// run.
    pub async fn begin_completion(
        &self,
        target: CompletionTarget,
        request: CompletionRequest,
    ) -> Result<Completion, CompletionError> {
        let CompletionTarget {
            backend_name,
            backend,
            model,
        } = target;
        super::check_options(&request.options, backend.as_ref())?;
        let mut messages = request.messages;
        if request.tools.is_empty() {
            context::flatten_tool_messages(&mut messages);
        }
        let record = match request.session_id {
            Some(session_id) => {
                let session = self.store.session(&session_id).await?;
                let user_message = match messages.last() {
                    Some(last) if last.role == Role::User => Some(
                        self.store
                            .append_message(
                                &session.id,
                                NewMessage {
                                    role: "user",
                                    content: &last.content,
                                    backend: Some(&backend_name),
                                    model: Some(&model),
                                    metadata: user_metadata(last),
                                },
                            )
                            .await?,
                    ),
                    _ => None,
                };
                Some(Recorded {
                    session_id: session.id,
                    user_message,
                })
            }
            None => None,
        };
        Ok(Completion {
            backend_name,
            backend,
            request: ChatRequest {
                model,
                system: request.system,
                messages,
                tools: request.tools,
                options: request.options,
            },
            record,
            service: self.clone(),
            mcp_tool_rounds: request.mcp_tool_rounds,
        })
    }
}

impl Completion {
    /// The complete answer.
    pub async fn run(mut self) -> Result<CompletionAnswer, CompletionError> {
        if let Some(rounds) = self.mcp_tool_rounds {
            let (turn, setup, service) = self.into_turn(rounds);
            // The loop keeps and marks what it produced itself, the client gone or not.
            let answer = service.answer_with_tools(turn, setup).await?;
            return Ok(CompletionAnswer::ToolLoop(answer));
        }
        let started = std::time::Instant::now();
        // A client that leaves drops this future: the guard marks the stored question.
        let guard = self.unanswered_guard();
        let outcome = tokio::select! {
            () = self.service.stopping.cancelled() => None,
            outcome = self.backend.chat(self.request.clone()) => Some(outcome),
        };
        disarm(guard);
        let reply = match outcome {
            Some(Ok(reply)) => reply,
            None => {
                self.record_interrupted(Interruption::ShuttingDown).await;
                return Err(CompletionError::Interrupted(Interruption::ShuttingDown));
            }
            Some(Err(err)) => {
                self.record_failure(&err).await;
                return Err(err.into());
            }
        };
        let metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
        self.record_answer(&reply.content, &reply.model, &reply.tool_calls, metadata)
            .await?;
        Ok(CompletionAnswer::Reply(reply))
    }

    /// Opens the backend's stream; errors before its first byte are returned here, so that the
    /// client gets a plain error.
    pub async fn run_streaming(mut self) -> Result<CompletionStream, CompletionError> {
        if let Some(rounds) = self.mcp_tool_rounds {
            return self.stream_tool_loop(rounds).await;
        }
        let started = std::time::Instant::now();
        let guard = self.unanswered_guard();
        let events = match self.backend.chat_stream(self.request.clone()).await {
            Ok(events) => events,
            Err(err) => {
                disarm(guard);
                self.record_failure(&err).await;
                return Err(err.into());
            }
        };
        let state = StreamState {
            // Until the stream ends one way or another: a client that leaves drops it.
            unanswered: guard,
            completion: self,
            events,
            started,
            text: String::new(),
            calls: Vec::new(),
            finished: false,
        };
        Ok(futures_util::stream::unfold(state, |mut state| async move {
            let events = state.next_events().await?;
            Some((futures_util::stream::iter(events), state))
        })
        .flatten()
        .boxed())
    }

    /// lit-mux runs the tool calls; the client gets the text of every round as it comes.
    async fn stream_tool_loop(self, rounds: u32) -> Result<CompletionStream, CompletionError> {
        let (mut turn, mut setup, service) = self.into_turn(rounds);
        let opened = match service.open_stream(&mut turn, &mut setup).await {
            Ok(opened) => opened,
            Err(err) => {
                service.mark_failed(&mut turn, &err).await;
                return Err(err.into());
            }
        };
        let (events, mut receiver) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        let relay_service = service.clone();
        service.spawn(async move {
            relay_service
                .stream_reply(turn, setup, opened, events)
                .await
        });
        Ok(
            futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
                .map(|event| match event {
                    ReplyEvent::Delta { text, .. } => CompletionEvent::Delta(text),
                    ReplyEvent::ToolCall { .. } | ReplyEvent::ToolResult { .. } => {
                        CompletionEvent::ToolStep
                    }
                    ReplyEvent::Done(answer) => CompletionEvent::ToolLoopDone(answer),
                    ReplyEvent::Error {
                        error: ChatError::Interrupted(why),
                        ..
                    } => CompletionEvent::Interrupted(why),
                    ReplyEvent::Error { error, .. } => CompletionEvent::Error(error.to_string()),
                })
                .boxed(),
        )
    }

    /// The exchange as a turn of lit-mux's own tool loop, with its tools set up.
    fn into_turn(self, rounds: u32) -> (Turn, super::tools::ToolSetup, ChatService) {
        let user_message = self
            .record
            .as_ref()
            .and_then(|record| record.user_message.clone())
            .unwrap_or_else(|| {
                let content = self
                    .request
                    .messages
                    .last()
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                Message::unsaved(NewMessage {
                    role: "user",
                    content: &content,
                    backend: Some(&self.backend_name),
                    model: Some(&self.request.model),
                    metadata: Map::new(),
                })
            });
        let mut turn = Turn {
            session_id: self.record.map(|record| record.session_id),
            backend_name: self.backend_name,
            backend: self.backend,
            request: self.request,
            user_message,
            shares_user_message: false,
        };
        let setup = self.service.tool_setup(&turn, Some(true), rounds);
        ChatService::prepare_tools(&mut turn, &setup);
        (turn, setup, self.service)
    }

    /// Marks the session's question failed if dropped armed (the client left).
    fn unanswered_guard(&self) -> Option<UnansweredGuard> {
        let message = self.record.as_ref()?.user_message.as_ref()?;
        Some(UnansweredGuard::new(&self.service, message))
    }

    /// Appends the answer to the session, when there is one.
    async fn record_answer(
        &mut self,
        content: &str,
        model: &str,
        calls: &[ToolCall],
        mut metadata: Map<String, Value>,
    ) -> Result<(), CompletionError> {
        let Some(record) = &self.record else {
            return Ok(());
        };
        if !calls.is_empty() {
            metadata.insert(
                "tool_calls".to_owned(),
                json!(
                    calls
                        .iter()
                        .map(|c| json!({"id": c.id, "tool": c.name, "arguments": c.arguments}))
                        .collect::<Vec<_>>()
                ),
            );
        }
        metadata.insert("via".to_owned(), json!("/v1/chat/completions"));
        let answer = Message::unsaved(NewMessage {
            role: "assistant",
            content,
            backend: Some(&self.backend_name),
            model: Some(model),
            metadata,
        });
        let store = &self.service.store;
        match &record.user_message {
            // The question's `pending` status ends in the answer's commit.
            Some(question) => {
                let mut settled = question.metadata.clone();
                settled.remove(context::STATUS_KEY);
                store
                    .append_settling(
                        &record.session_id,
                        std::slice::from_ref(&answer),
                        &question.id,
                        &settled,
                    )
                    .await?;
            }
            None => {
                store
                    .append_messages(&record.session_id, std::slice::from_ref(&answer))
                    .await?;
            }
        }
        Ok(())
    }

    /// Marks the session's user message interrupted (it stays).
    async fn record_interrupted(&mut self, why: Interruption) {
        self.mark_question(context::STATUS_INTERRUPTED, why.to_string())
            .await;
    }

    /// Marks the session's user message failed (it stays).
    async fn record_failure(&mut self, err: &BackendError) {
        self.mark_question(context::STATUS_FAILED, err.to_string())
            .await;
    }

    /// Sets the `status` of the session's user message, with the `error` that ended it; a
    /// store error is only logged.
    async fn mark_question(&mut self, status: &str, error: String) {
        let Some(Recorded {
            user_message: Some(message),
            ..
        }) = self.record.as_mut()
        else {
            return;
        };
        let changes = Map::from_iter([
            (context::STATUS_KEY.to_owned(), json!(status)),
            ("error".to_owned(), json!(error)),
        ]);
        if let Err(store_err) = self
            .service
            .store
            .update_message_metadata(message, changes)
            .await
        {
            tracing::error!(%store_err, status, "cannot mark a message");
        }
    }
}

/// A streamed completion of the client's own conversation, in progress.
struct StreamState {
    unanswered: Option<UnansweredGuard>,
    completion: Completion,
    events: crate::backends::ChatStream,
    started: std::time::Instant,
    text: String,
    calls: Vec<ToolCall>,
    finished: bool,
}

impl StreamState {
    /// The events for the backend's next event; `None` once the stream is over.
    async fn next_events(&mut self) -> Option<Vec<CompletionEvent>> {
        if self.finished {
            return None;
        }
        let mut events = Vec::new();
        let next = tokio::select! {
            () = self.completion.service.stopping.cancelled() => {
                // The server's grace period is over: the stream's last event says so, and
                // dropping the backend's stream (with this state) cancels its request.
                self.finished = true;
                disarm(self.unanswered.take());
                self.completion.record_interrupted(Interruption::ShuttingDown).await;
                return Some(vec![CompletionEvent::Interrupted(Interruption::ShuttingDown)]);
            }
            next = self.events.next() => next,
        };
        match next {
            Some(Ok(ChatEvent::Delta(text))) => {
                self.text.push_str(&text);
                events.push(CompletionEvent::Delta(text));
            }
            Some(Ok(ChatEvent::ToolCall(call))) => {
                let index = self.calls.len();
                self.calls.push(call.clone());
                events.push(CompletionEvent::ToolCall { index, call });
            }
            Some(Ok(ChatEvent::Done {
                model,
                usage,
                finish_reason,
            })) => {
                self.finished = true;
                disarm(self.unanswered.take());
                let mut metadata = reply_metadata(self.started, &usage, &finish_reason);
                metadata.insert("streamed".to_owned(), json!(true));
                let (text, calls) = (std::mem::take(&mut self.text), self.calls.clone());
                let recorded = self
                    .completion
                    .record_answer(&text, &model, &calls, metadata)
                    .await;
                events.push(CompletionEvent::Done {
                    model,
                    usage,
                    finish_reason,
                    called_tools: !calls.is_empty(),
                });
                if let Err(err) = recorded {
                    events.push(CompletionEvent::Error(err.to_string()));
                }
            }
            Some(Err(err)) => {
                self.finished = true;
                disarm(self.unanswered.take());
                self.completion.record_failure(&err).await;
                events.push(CompletionEvent::Error(err.to_string()));
            }
            None => {
                self.finished = true;
            }
        }
        Some(events)
    }
}

/// A stored user message's metadata: where it came from, and its images described without
/// their data (media type and size, or the URL), so that a session's history stays small. The
/// history replayed to a model later carries the text only.
fn user_metadata(message: &ChatMessage) -> Map<String, Value> {
    let mut metadata = super::turn::pending();
    metadata.insert("via".to_owned(), json!("/v1/chat/completions"));
    if !message.images.is_empty() {
        let images = message
            .images
            .iter()
            .map(|image| match &image.source {
                ImageSource::Base64 { media_type, data } => json!({
                    "media_type": media_type,
                    "bytes": ImageSource::decoded_bytes(data),
                }),
                ImageSource::Url(url) => json!({"url": url}),
            })
            .collect();
        metadata.insert("images".to_owned(), Value::Array(images));
    }
    metadata
}

fn disarm(guard: Option<UnansweredGuard>) {
    if let Some(guard) = guard {
        guard.disarm();
    }
}
