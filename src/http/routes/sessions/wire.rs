//! The JSON of `/sessions/…`: request bodies, converted to the chat service's requests, and
//! responses (sessions, messages, broadcasts, a streamed reply's events), converted from its
//! results. The names and doc comments are the API description's (`/openapi.json`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::{self, BroadcastOutcome, ReplyEvent};
use crate::http::error::Reported;
use crate::store;

/// `POST /sessions`. Unknown fields are ignored, as the predecessor did.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"backends": ["echo"], "name": "demo", "metadata": {"system_prompt": "Be brief."}}))]
pub struct CreateSession {
    /// Configured, enabled backends (`GET /backends`); repeated names count once.
    #[schema(min_items = 1, example = json!(["echo"]))]
    pub backends: Vec<String>,
    pub name: Option<String>,
    /// Free-form; `system_prompt`, `model` and `<backend>_model` are read by the chat.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

impl From<CreateSession> for chat::CreateSession {
    fn from(body: CreateSession) -> Self {
        Self {
            backends: body.backends,
            name: body.name,
            metadata: body.metadata,
        }
    }
}

/// `POST /sessions/{id}/message`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"content": "Hello", "backend": "echo"}))]
pub struct SendMessage {
    /// Answer with Server-Sent Events as the reply is produced.
    #[serde(default)]
    pub stream: bool,
    /// Not empty nor only white space.
    #[schema(min_length = 1, pattern = r"\S", example = "Hello")]
    pub content: String,
    /// One of the session's backends (default: its first).
    #[schema(example = "echo")]
    pub backend: Option<String>,
    pub model: Option<String>,
    /// Whether the model may call MCP tools (default: yes, when there are any).
    pub use_tools: Option<bool>,
    /// Tool rounds at most (default 20).
    #[schema(minimum = 0, maximum = 100)]
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub max_tool_iterations: Option<u32>,
}

impl From<SendMessage> for chat::SendMessage {
    fn from(body: SendMessage) -> Self {
        Self {
            content: body.content,
            backend: body.backend,
            model: body.model,
            use_tools: body.use_tools,
            max_tool_iterations: body.max_tool_iterations,
        }
    }
}

/// `POST /sessions/{id}/broadcast`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"content": "Hello", "backends": ["echo"]}))]
pub struct BroadcastMessage {
    /// Answer with Server-Sent Events, every backend's interleaved.
    #[serde(default)]
    pub stream: bool,
    /// Not empty nor only white space.
    #[schema(min_length = 1, pattern = r"\S", example = "Hello")]
    pub content: String,
    /// Some of the session's backends (default: all of them).
    #[schema(min_items = 1, example = json!(["echo"]))]
    pub backends: Option<Vec<String>>,
    /// Whether the models may call MCP tools (default: yes, when there are any); each backend
    /// runs its own tool loop.
    pub use_tools: Option<bool>,
    /// Tool rounds at most, per backend (default 20).
    #[schema(minimum = 0, maximum = 100)]
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub max_tool_iterations: Option<u32>,
}

impl From<BroadcastMessage> for chat::BroadcastMessage {
    fn from(body: BroadcastMessage) -> Self {
        Self {
            content: body.content,
            backends: body.backends,
            use_tools: body.use_tools,
            max_tool_iterations: body.max_tool_iterations,
        }
    }
}

/// A session as the API shows it (the predecessor's `SessionResponse`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub name: Option<String>,
    pub backends: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub message_count: i64,
}

impl From<store::Session> for Session {
    fn from(session: store::Session) -> Self {
        Self {
            id: session.id,
            name: session.name,
            backends: session.backends,
            created_at: session.created_at,
            updated_at: session.updated_at,
            metadata: session.metadata,
            message_count: session.message_count,
        }
    }
}

/// A message as the API shows it (the predecessor's `MessageResponse`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub content: String,
    pub role: String,
    pub backend: Option<String>,
    pub model: Option<String>,
    pub timestamp: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl From<store::Message> for Message {
    fn from(message: store::Message) -> Self {
        Self {
            id: message.id,
            content: message.content,
            role: message.role,
            backend: message.backend,
            model: message.model,
            timestamp: message.timestamp,
            metadata: message.metadata,
        }
    }
}

/// A broadcast's answer: the user's message, then every backend's outcome.
#[derive(Debug, Serialize)]
pub struct BroadcastResponse {
    pub user_message: Message,
    pub responses: Vec<Outcome>,
}

impl From<chat::BroadcastResponse> for BroadcastResponse {
    fn from(response: chat::BroadcastResponse) -> Self {
        Self {
            user_message: response.user_message.into(),
            responses: response.responses.into_iter().map(Outcome::from).collect(),
        }
    }
}

/// One backend's outcome in a broadcast.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Answered {
        backend: String,
        message: Message,
    },
    Failed {
        backend: String,
        error: String,
        /// The HTTP status this failure would have had alone.
        status: u16,
        /// For a rate-limited backend (429), its `Retry-After`, as a message alone would pass on.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
}

impl From<BroadcastOutcome> for Outcome {
    fn from(outcome: BroadcastOutcome) -> Self {
        match outcome {
            BroadcastOutcome::Answered { backend, message } => Self::Answered {
                backend,
                message: message.into(),
            },
            BroadcastOutcome::Failed { backend, error } => {
                let reported = Reported::new(error);
                Self::Failed {
                    backend,
                    error: reported.detail,
                    status: reported.status,
                    retry_after: reported.retry_after,
                }
            }
        }
    }
}

/// One Server-Sent Event of a streamed reply, as its `data`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Event {
    Delta {
        backend: String,
        text: String,
    },
    /// `server` is null when no server has the tool, and `tool` is then the name the model
    /// wrote.
    ToolCall {
        backend: String,
        server: Option<String>,
        tool: String,
        arguments: Value,
    },
    ToolResult {
        backend: String,
        server: Option<String>,
        tool: String,
        content: String,
        is_error: bool,
        duration_ms: u64,
    },
    /// The stored answer.
    Done(Message),
    /// `status` is what the HTTP status would have been, `retry_after` the `Retry-After` a
    /// rate-limited backend gave.
    Error {
        backend: String,
        detail: String,
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
}

impl Event {
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
}

impl From<ReplyEvent> for Event {
    fn from(event: ReplyEvent) -> Self {
        match event {
            ReplyEvent::Delta { backend, text } => Self::Delta { backend, text },
            ReplyEvent::ToolCall {
                backend,
                server,
                tool,
                arguments,
            } => Self::ToolCall {
                backend,
                server,
                tool,
                arguments,
            },
            ReplyEvent::ToolResult {
                backend,
                server,
                tool,
                content,
                is_error,
                duration_ms,
            } => Self::ToolResult {
                backend,
                server,
                tool,
                content,
                is_error,
                duration_ms,
            },
            ReplyEvent::Done(message) => Self::Done(message.into()),
            ReplyEvent::Error { backend, error } => {
                let reported = Reported::new(error);
                Self::Error {
                    backend,
                    detail: reported.detail,
                    status: reported.status,
                    retry_after: reported.retry_after,
                }
            }
        }
    }
}
