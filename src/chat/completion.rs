//! The OpenAI-compatible front door (`/v1/chat/completions`, `/v1/models`): OpenAI's request
//! and response shapes translated to and from lit-mux's backends, so that tools written for
//! OpenAI talk to any backend unchanged.
//!
//! Model ids are `backend/model` (`ollama/llama3.1`); a bare backend name means its default
//! model. Calls are stateless unless a `session_id` names a session: then the exchange (the
//! client's last user message and the answer) is appended to it. The client's own `tools` are
//! passed through and the model's calls come back to the client as OpenAI `tool_calls`.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::stream::ReplyEvent;
use super::tools::ToolSetup;
use super::{ChatService, Turn, UnansweredGuard, context, reply_metadata};
use crate::backends::{
    Backend, BackendError, BackendLookupError, ChatEvent, ChatMessage, ChatRequest, Role,
    ToolAnswer, ToolCall, ToolSpec, Usage,
};
use crate::store::{Message, NewMessage, StoreError};

/// Why a completion request failed, in OpenAI's terms.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// Unknown model or session (404).
    #[error("{message}")]
    NotFound { message: String, code: &'static str },
    /// A request OpenAI would refuse too (400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(StoreError),
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

/// `POST /v1/chat/completions`. Fields lit-mux has no use for (temperature, n, ...) are accepted
/// and ignored, as many OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub tools: Option<Vec<InTool>>,
    /// lit-mux's extension: append the exchange to this session.
    pub session_id: Option<String>,
    /// lit-mux's extensions: `{"use_tools": true}` runs lit-mux's own MCP tool loop.
    #[serde(default)]
    pub lit_mux: LitMuxOptions,
}

#[derive(Debug, Default, Deserialize)]
pub struct LitMuxOptions {
    #[serde(default)]
    pub use_tools: bool,
    pub max_tool_iterations: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Vec<InToolCall>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// Text, or content parts of which the text ones are used.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Debug, Deserialize)]
pub struct InToolCall {
    pub id: String,
    pub function: InFunction,
}

#[derive(Debug, Deserialize)]
pub struct InFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct InTool {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: InToolFunction,
}

#[derive(Debug, Deserialize)]
pub struct InToolFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// A completion ready to run: the backend, the request, and where to record it.
pub struct Completion {
    pub id: String,
    pub created: u64,
    /// `backend/model`, as answered in `model`.
    pub model_id: String,
    backend_name: String,
    backend: std::sync::Arc<dyn Backend>,
    request: ChatRequest,
    include_usage: bool,
    record: Option<Recorded>,
    service: ChatService,
    /// Rounds of lit-mux's own tool loop, when the client asked for it.
    mcp_tool_rounds: Option<u32>,
}

/// The session the exchange is appended to, and its user message once stored.
struct Recorded {
    session_id: String,
    user_message: Option<Message>,
}

/// One chunk of a streamed completion, as OpenAI's `chat.completion.chunk` or an error.
pub type ChunkStream = BoxStream<'static, Value>;

impl ChatService {
    /// Checks a completion request and stores its user message when it names a session.
    pub async fn begin_completion(
        &self,
        request: CompletionRequest,
    ) -> Result<Completion, CompletionError> {
        let (backend_name, model) = match request.model.split_once('/') {
            Some((backend, model)) if !model.trim().is_empty() => (backend, Some(model)),
            _ => (request.model.trim_end_matches('/'), None),
        };
        let backend = self.backends.client(backend_name).map_err(|err| {
            let reason = match err {
                BackendLookupError::Unknown(_) => "no such backend",
                BackendLookupError::Disabled(_) => "its backend is disabled",
            };
            CompletionError::NotFound {
                message: format!(
                    "The model `{}` does not exist ({reason}); models are backend/model, e.g. \
                     {}",
                    request.model,
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
        let mcp_tool_rounds = if request.lit_mux.use_tools {
            if request
                .tools
                .as_ref()
                .is_some_and(|tools| !tools.is_empty())
            {
                return Err(CompletionError::Invalid(
                    "send either tools (the client runs them) or lit_mux.use_tools (lit-mux runs \
                     its MCP tools), not both"
                        .to_owned(),
                ));
            }
            Some(
                super::tools::max_iterations(request.lit_mux.max_tool_iterations)
                    .map_err(|err| CompletionError::Invalid(err.to_string()))?,
            )
        } else {
            None
        };
        let (system, messages) = conversation(request.messages)?;
        let tools = request
            .tools
            .unwrap_or_default()
            .into_iter()
            .map(|tool| {
                if tool.kind.as_deref().is_some_and(|kind| kind != "function") {
                    return Err(CompletionError::Invalid(format!(
                        "tool {} has type {:?}; only function tools are supported",
                        tool.function.name, tool.kind
                    )));
                }
                Ok(ToolSpec {
                    name: tool.function.name,
                    description: tool.function.description.unwrap_or_default(),
                    parameters: tool
                        .function
                        .parameters
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut messages = messages;
        if tools.is_empty() {
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
                                    backend: Some(backend_name),
                                    model: Some(&model),
                                    metadata: Map::from_iter([(
                                        "via".to_owned(),
                                        json!("/v1/chat/completions"),
                                    )]),
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
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model_id: format!("{backend_name}/{model}"),
            backend_name: backend_name.to_owned(),
            backend,
            request: ChatRequest {
                model,
                system,
                messages,
                tools,
            },
            include_usage: request
                .stream_options
                .is_some_and(|options| options.include_usage),
            record,
            service: self.clone(),
            mcp_tool_rounds,
        })
    }
}

/// The client's messages as lit-mux's: leading system (and developer) messages become the
/// system prompt, tool messages answer the call of the same id.
fn conversation(
    messages: Vec<InMessage>,
) -> Result<(Option<String>, Vec<ChatMessage>), CompletionError> {
    let mut system = Vec::new();
    let mut turns: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let text = match message.content {
            None => String::new(),
            Some(Content::Text(text)) => text,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match part.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        other => {
                            return Err(CompletionError::Invalid(format!(
                                "messages[{index}]: content parts of type {other:?} are not \
                                 supported; send text"
                            )));
                        }
                    }
                }
                text
            }
        };
        let role = match message.role.as_str() {
            "system" | "developer" if turns.is_empty() => {
                system.push(text);
                continue;
            }
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(CompletionError::Invalid(format!(
                    "messages[{index}].role: {other:?} is not one of system, developer, user, \
                     assistant, tool"
                )));
            }
        };
        let mut turn = ChatMessage::text(role, text);
        if role == Role::Assistant {
            turn.tool_calls = message
                .tool_calls
                .into_iter()
                .map(|call| ToolCall {
                    id: call.id,
                    name: call.function.name,
                    arguments: ToolCall::parse_arguments(
                        call.function.arguments.as_deref().unwrap_or(""),
                    ),
                })
                .collect();
        }
        if role == Role::Tool {
            let Some(call_id) = message.tool_call_id else {
                return Err(CompletionError::Invalid(format!(
                    "messages[{index}]: a tool message needs tool_call_id"
                )));
            };
            let name = turns
                .iter()
                .flat_map(|t| &t.tool_calls)
                .find(|call| call.id == call_id)
                .map(|call| call.name.clone())
                .or(message.name)
                .unwrap_or_default();
            turn.answers = Some(ToolAnswer {
                call_id,
                name,
                is_error: false,
            });
        }
        turns.push(turn);
    }
    if turns.is_empty() {
        return Err(CompletionError::Invalid(
            "messages must hold at least one user message".to_owned(),
        ));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, turns))
}

/// OpenAI's `finish_reason` for a backend's.
fn finish_reason(reason: Option<&str>, called_tools: bool) -> &'static str {
    if called_tools {
        return "tool_calls";
    }
    match reason {
        Some("length" | "max_tokens") => "length",
        Some("content_filter" | "refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.input_tokens.unwrap_or(0);
    let completion = usage.output_tokens.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn tool_calls_json(calls: &[ToolCall], streamed: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let mut wire = json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_text()},
            });
            if streamed {
                wire["index"] = json!(index);
            }
            wire
        })
        .collect()
}

impl Completion {
    /// The complete answer as a `chat.completion`.
    pub async fn run(mut self) -> Result<Value, CompletionError> {
        if let Some(rounds) = self.mcp_tool_rounds {
            return self.run_tool_loop(rounds).await;
        }
        let started = std::time::Instant::now();
        // A client that leaves drops this future: the guard marks the stored question.
        let guard = self.unanswered_guard();
        let outcome = self.backend.chat(self.request.clone()).await;
        disarm(guard);
        let reply = match outcome {
            Ok(reply) => reply,
            Err(err) => {
                self.record_failure(&err).await;
                return Err(err.into());
            }
        };
        let metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
        self.record_answer(&reply.content, &reply.model, &reply.tool_calls, metadata)
            .await?;
        let mut message = json!({"role": "assistant", "content": reply.content});
        if !reply.tool_calls.is_empty() {
            message["tool_calls"] = tool_calls_json(&reply.tool_calls, false);
            if reply.content.is_empty() {
                message["content"] = Value::Null;
            }
        }
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": format!("{}/{}", self.backend_name, reply.model),
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(
                    reply.finish_reason.as_deref(),
                    !reply.tool_calls.is_empty(),
                ),
                "logprobs": null,
            }],
        });
        if let Some(usage) = &reply.usage {
            body["usage"] = usage_json(usage);
        }
        Ok(body)
    }

    /// Opens the backend's stream; errors before its first byte are returned here, so that the
    /// client gets a plain HTTP error.
    pub async fn run_streaming(mut self) -> Result<ChunkStream, CompletionError> {
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
            sent_role: false,
            finished: false,
        };
        Ok(futures_util::stream::unfold(state, |mut state| async move {
            let chunk = state.next_chunks().await?;
            Some((futures_util::stream::iter(chunk), state))
        })
        .flatten()
        .boxed())
    }

    /// The exchange as a turn of lit-mux's own tool loop, with its tools set up.
    fn into_turn(self, rounds: u32) -> (Turn, ToolSetup, ChatService, CompletionHead) {
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
        let requested_model = self.request.model.clone();
        let mut turn = Turn {
            session_id: self.record.map(|record| record.session_id),
            backend_name: self.backend_name.clone(),
            backend: self.backend,
            request: self.request,
            user_message,
            shares_user_message: false,
        };
        let setup = self.service.tool_setup(&turn, Some(true), rounds);
        ChatService::prepare_tools(&mut turn, &setup);
        let head = CompletionHead {
            id: self.id,
            created: self.created,
            backend_name: self.backend_name,
            requested_model,
            include_usage: self.include_usage,
        };
        (turn, setup, self.service, head)
    }

    /// lit-mux runs the tool calls; the client gets the final answer.
    async fn run_tool_loop(self, rounds: u32) -> Result<Value, CompletionError> {
        let (turn, setup, service, head) = self.into_turn(rounds);
        // The loop keeps and marks what it produced itself, the client gone or not.
        let answer = service.answer_with_tools(turn, setup).await?;
        let usage = stored_usage(&answer);
        let model = answer.model.clone().unwrap_or_default();
        let mut body = json!({
            "id": head.id,
            "object": "chat.completion",
            "created": head.created,
            "model": format!("{}/{model}", head.backend_name),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.content},
                "finish_reason": finish_reason(
                    answer.metadata.get("finish_reason").and_then(Value::as_str),
                    false,
                ),
                "logprobs": null,
            }],
            "lit_mux": lit_mux_summary(&answer),
        });
        if let Some(usage) = usage {
            body["usage"] = usage_json(&usage);
        }
        Ok(body)
    }

    /// lit-mux runs the tool calls; the client gets the text of every round as it comes.
    async fn stream_tool_loop(self, rounds: u32) -> Result<ChunkStream, CompletionError> {
        let (mut turn, mut setup, service, head) = self.into_turn(rounds);
        let started = std::time::Instant::now();
        let opened = match turn.backend.chat_stream(turn.request.clone()).await {
            Err(err) if service.fall_back_to_prompt(&mut turn, &mut setup, &err) => {
                turn.backend.chat_stream(turn.request.clone()).await
            }
            other => other,
        };
        let stream = match opened {
            Ok(stream) => stream,
            Err(err) => {
                service.mark_failed(&mut turn, &err).await;
                return Err(err.into());
            }
        };
        let (events, mut receiver) = tokio::sync::mpsc::channel(64);
        let relay_service = service.clone();
        service.spawn(async move {
            relay_service
                .relay(turn, stream, started, events, &setup)
                .await
        });
        let mut sent_role = false;
        Ok(
            futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
                .flat_map(move |event| {
                    let mut chunks = Vec::new();
                    if !sent_role {
                        sent_role = true;
                        chunks.push(head.chunk(
                            "",
                            json!({"role": "assistant", "content": ""}),
                            None,
                        ));
                    }
                    match event {
                        ReplyEvent::Delta { text, .. } => {
                            chunks.push(head.chunk("", json!({"content": text}), None));
                        }
                        ReplyEvent::Done(answer) => {
                            let model = answer.model.clone().unwrap_or_default();
                            let finish = finish_reason(
                                answer.metadata.get("finish_reason").and_then(Value::as_str),
                                false,
                            );
                            let mut last = head.chunk(&model, json!({}), Some(finish));
                            last["lit_mux"] = lit_mux_summary(&answer);
                            chunks.push(last);
                            if head.include_usage
                                && let Some(usage) = stored_usage(&answer)
                            {
                                let mut usage_chunk = head.chunk(&model, json!({}), None);
                                usage_chunk["choices"] = json!([]);
                                usage_chunk["usage"] = usage_json(&usage);
                                chunks.push(usage_chunk);
                            }
                        }
                        ReplyEvent::Error { detail, .. } => {
                            chunks.push(error_chunk(&detail, "api_error"));
                        }
                        // The tool steps are lit-mux's business: the client sees the answers.
                        ReplyEvent::ToolCall { .. } | ReplyEvent::ToolResult { .. } => {}
                    }
                    futures_util::stream::iter(chunks)
                })
                .boxed(),
        )
    }

    fn chunk(&self, model: &str, delta: Value, finish: Option<&str>) -> Value {
        chunk_json(
            &self.id,
            self.created,
            &self.backend_name,
            model,
            delta,
            finish,
        )
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
        self.service
            .store
            .append_message(
                &record.session_id,
                NewMessage {
                    role: "assistant",
                    content,
                    backend: Some(&self.backend_name),
                    model: Some(model),
                    metadata,
                },
            )
            .await?;
        Ok(())
    }

    /// Marks the session's user message failed (it stays); a store error is only logged.
    async fn record_failure(&mut self, err: &BackendError) {
        let Some(Recorded {
            user_message: Some(message),
            ..
        }) = self.record.as_mut()
        else {
            return;
        };
        let changes = Map::from_iter([
            (
                context::STATUS_KEY.to_owned(),
                json!(context::STATUS_FAILED),
            ),
            ("error".to_owned(), json!(err.to_string())),
        ]);
        if let Err(store_err) = self
            .service
            .store
            .update_message_metadata(message, changes)
            .await
        {
            tracing::error!(%store_err, "cannot mark a message as failed");
        }
    }
}

/// What every chunk of a completion names.
struct CompletionHead {
    id: String,
    created: u64,
    backend_name: String,
    requested_model: String,
    include_usage: bool,
}

impl CompletionHead {
    /// A chunk; `model` empty means the model asked for (the answer names the one used).
    fn chunk(&self, model: &str, delta: Value, finish: Option<&str>) -> Value {
        let model = if model.is_empty() {
            &self.requested_model
        } else {
            model
        };
        chunk_json(
            &self.id,
            self.created,
            &self.backend_name,
            model,
            delta,
            finish,
        )
    }
}

fn chunk_json(
    id: &str,
    created: u64,
    backend: &str,
    model: &str,
    delta: Value,
    finish: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": format!("{backend}/{model}"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

/// The usage recorded in an answer's metadata.
fn stored_usage(answer: &Message) -> Option<Usage> {
    serde_json::from_value(answer.metadata.get("usage")?.clone()).ok()
}

/// What lit-mux's loop did, for clients that care (`tool_iterations`, and whether the limit
/// was reached).
fn lit_mux_summary(answer: &Message) -> Value {
    json!({
        "tool_iterations": answer.metadata.get("tool_iterations").cloned().unwrap_or(json!(0)),
        "max_tool_iterations_reached": answer
            .metadata
            .get("max_tool_iterations_reached")
            .cloned()
            .unwrap_or(json!(false)),
    })
}

/// A streamed completion in progress.
struct StreamState {
    unanswered: Option<UnansweredGuard>,
    completion: Completion,
    events: crate::backends::ChatStream,
    started: std::time::Instant,
    text: String,
    calls: Vec<ToolCall>,
    sent_role: bool,
    finished: bool,
}

impl StreamState {
    /// The chunks for the backend's next event; `None` once the stream is over.
    async fn next_chunks(&mut self) -> Option<Vec<Value>> {
        if self.finished {
            return None;
        }
        let model = self.completion.request.model.clone();
        let mut chunks = Vec::new();
        if !self.sent_role {
            self.sent_role = true;
            chunks.push(self.completion.chunk(
                &model,
                json!({"role": "assistant", "content": ""}),
                None,
            ));
        }
        match self.events.next().await {
            Some(Ok(ChatEvent::Delta(text))) => {
                self.text.push_str(&text);
                chunks.push(
                    self.completion
                        .chunk(&model, json!({"content": text}), None),
                );
            }
            Some(Ok(ChatEvent::ToolCall(call))) => {
                let index = self.calls.len();
                let mut wire = tool_calls_json(std::slice::from_ref(&call), true);
                wire[0]["index"] = json!(index);
                self.calls.push(call);
                chunks.push(
                    self.completion
                        .chunk(&model, json!({"tool_calls": wire}), None),
                );
            }
            Some(Ok(ChatEvent::Done {
                model,
                usage,
                finish_reason: reason,
            })) => {
                self.finished = true;
                disarm(self.unanswered.take());
                let finish = finish_reason(reason.as_deref(), !self.calls.is_empty());
                chunks.push(self.completion.chunk(&model, json!({}), Some(finish)));
                if self.completion.include_usage
                    && let Some(usage) = &usage
                {
                    let mut last = self.completion.chunk(&model, json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = usage_json(usage);
                    chunks.push(last);
                }
                let mut metadata = reply_metadata(self.started, &usage, &reason);
                metadata.insert("streamed".to_owned(), json!(true));
                let (text, calls) = (self.text.clone(), self.calls.clone());
                if let Err(err) = self
                    .completion
                    .record_answer(&text, &model, &calls, metadata)
                    .await
                {
                    chunks.push(error_chunk(&err.to_string(), "api_error"));
                }
            }
            Some(Err(err)) => {
                self.finished = true;
                disarm(self.unanswered.take());
                self.completion.record_failure(&err).await;
                chunks.push(error_chunk(&err.to_string(), "api_error"));
            }
            None => {
                self.finished = true;
            }
        }
        Some(chunks)
    }
}

fn disarm(guard: Option<UnansweredGuard>) {
    if let Some(guard) = guard {
        guard.disarm();
    }
}

/// An error inside a stream, the way OpenAI sends one.
fn error_chunk(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": null}})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message(role: &str, content: Value) -> InMessage {
        serde_json::from_value(json!({"role": role, "content": content})).unwrap()
    }

    #[test]
    fn system_messages_lead_and_tool_results_answer_their_call() {
        let messages: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":2}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
        ]))
        .unwrap();
        let (system, turns) = conversation(messages).unwrap();
        assert_eq!(system.as_deref(), Some("be brief"));
        assert_eq!(turns[0].content, "what is 2+2?");
        assert_eq!(turns[1].tool_calls[0].arguments, json!({"a": 2, "b": 2}));
        let answer = turns[2].answers.as_ref().unwrap();
        assert_eq!(
            (answer.call_id.as_str(), answer.name.as_str()),
            ("c1", "add")
        );
    }

    #[test]
    fn images_roles_and_empty_conversations_are_refused() {
        let image = message(
            "user",
            json!([{"type": "image_url", "image_url": {"url": "x"}}]),
        );
        assert!(matches!(
            conversation(vec![image]),
            Err(CompletionError::Invalid(_))
        ));
        assert!(matches!(
            conversation(vec![message("wizard", json!("hi"))]),
            Err(CompletionError::Invalid(_))
        ));
        assert!(matches!(
            conversation(vec![message("system", json!("only"))]),
            Err(CompletionError::Invalid(_))
        ));
    }

    #[test]
    fn finish_reasons_use_openai_names() {
        assert_eq!(finish_reason(Some("end_turn"), false), "stop");
        assert_eq!(finish_reason(Some("max_tokens"), false), "length");
        assert_eq!(finish_reason(Some("tool_use"), true), "tool_calls");
    }
}
