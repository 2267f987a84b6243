//! The JSON of `/sessions/…`: request bodies, converted to the chat service's requests, and
//! responses (sessions, messages, broadcasts, a streamed reply's events), converted from its
//! results. The names and doc comments are the API description's (`/openapi.json`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backends::{self, ResponseFormat, StopSequences, ToolChoice};
use crate::chat::{self, BroadcastOutcome, ReplyEvent};
use crate::http::error::{ApiError, Reported};
use crate::store;

/// Sampling and generation options, in OpenAI's names and shapes. A session's are the defaults
/// of its messages; a message's override them option by option. Unknown names are refused
/// (422); values outside OpenAI's ranges, or that the backend's API cannot honour, get 400.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct GenerationOptions {
    /// 0 to 2 (0 to 1 on Anthropic).
    pub temperature: Option<f64>,
    /// 0 to 1.
    pub top_p: Option<f64>,
    /// The answer's length bound in tokens.
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub max_tokens: Option<u64>,
    /// The same bound under OpenAI's newer name; two different values are refused.
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub max_completion_tokens: Option<u64>,
    /// One string or up to 4.
    #[schema(value_type = Option<Object>)]
    pub stop: Option<StopSequences>,
    pub seed: Option<i64>,
    /// -2 to 2.
    pub presence_penalty: Option<f64>,
    /// -2 to 2.
    pub frequency_penalty: Option<f64>,
    /// `{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {name,
    /// schema, strict}}`.
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<ResponseFormat>,
    /// `auto`, `none`, `required`, or `{"type": "function", "function": {"name"}}`.
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    /// The end user, for the provider's abuse monitoring.
    pub user: Option<String>,
    pub logprobs: Option<bool>,
    /// 0 to 20, with logprobs.
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub top_logprobs: Option<u32>,
    /// 1: lit-mux answers with one choice.
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub n: Option<u32>,
    /// Names that are not options, refused all together.
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
}

impl TryFrom<GenerationOptions> for backends::GenerationOptions {
    type Error = ApiError;

    fn try_from(options: GenerationOptions) -> Result<Self, ApiError> {
        if !options.unknown.is_empty() {
            let mut names: Vec<&str> = options.unknown.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(ApiError::Unprocessable(format!(
                "options: unknown option(s) {}; the options are {}",
                names.join(", "),
                backends::GenerationOptions::NAMES.join(", ")
            )));
        }
        let max_tokens = match (options.max_tokens, options.max_completion_tokens) {
            (Some(old), Some(new)) if old != new => {
                return Err(ApiError::BadRequest(format!(
                    "options: max_tokens ({old}) and max_completion_tokens ({new}) are the same \
                     bound; send one of them"
                )));
            }
            (old, new) => new.or(old),
        };
        Ok(Self {
            temperature: options.temperature,
            top_p: options.top_p,
            max_tokens,
            stop: options.stop,
            seed: options.seed,
            presence_penalty: options.presence_penalty,
            frequency_penalty: options.frequency_penalty,
            response_format: options.response_format,
            tool_choice: options.tool_choice,
            parallel_tool_calls: options.parallel_tool_calls,
            user: options.user,
            logprobs: options.logprobs,
            top_logprobs: options.top_logprobs,
            n: options.n,
        })
    }
}

/// The options of a request body, none when it has none.
fn options(given: Option<GenerationOptions>) -> Result<backends::GenerationOptions, ApiError> {
    given.map_or_else(|| Ok(Default::default()), TryInto::try_into)
}

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
    /// Default generation options of the session's messages.
    pub options: Option<GenerationOptions>,
}

impl TryFrom<CreateSession> for chat::CreateSession {
    type Error = ApiError;

    fn try_from(body: CreateSession) -> Result<Self, ApiError> {
        Ok(Self {
            backends: body.backends,
            name: body.name,
            metadata: body.metadata,
            options: options(body.options)?,
        })
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
    /// Over the session's options, option by option.
    pub options: Option<GenerationOptions>,
}

impl TryFrom<SendMessage> for chat::SendMessage {
    type Error = ApiError;

    fn try_from(body: SendMessage) -> Result<Self, ApiError> {
        Ok(Self {
            content: body.content,
            backend: body.backend,
            model: body.model,
            use_tools: body.use_tools,
            max_tool_iterations: body.max_tool_iterations,
            options: options(body.options)?,
        })
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
    /// Over the session's options, option by option; for every backend.
    pub options: Option<GenerationOptions>,
}

impl TryFrom<BroadcastMessage> for chat::BroadcastMessage {
    type Error = ApiError;

    fn try_from(body: BroadcastMessage) -> Result<Self, ApiError> {
        Ok(Self {
            content: body.content,
            backends: body.backends,
            use_tools: body.use_tools,
            max_tool_iterations: body.max_tool_iterations,
            options: options(body.options)?,
        })
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
    /// Default generation options of its messages (only those set).
    #[schema(value_type = Object)]
    pub options: Map<String, Value>,
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
            options: session.options,
            message_count: session.message_count,
        }
    }
}

/// The `backend` of every user message, as the predecessor wrote it.
const USER_BACKEND: &str = "client";
/// Metadata key of the backend a user message was sent to (a broadcast's are in `broadcast`).
const ADDRESSED_BACKEND_KEY: &str = "addressed_backend";
/// Metadata key of the model that wrote an answer, where the predecessor put it.
const MODEL_KEY: &str = "model";

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

/// As the predecessor wrote them: a user message's `backend` is `"client"` (the backend it was
/// sent to is metadata `addressed_backend`), an answer's metadata carries its `model`. Derived
/// from the stored columns on the way out, so rows of every age read the same way and the store
/// keeps the backend each message belongs to (which history a backend is sent).
impl From<store::Message> for Message {
    fn from(message: store::Message) -> Self {
        let mut metadata = message.metadata;
        let backend = match message.role.as_str() {
            "user" => {
                if let Some(addressed) = message.backend.filter(|name| name != USER_BACKEND) {
                    metadata
                        .entry(ADDRESSED_BACKEND_KEY)
                        .or_insert(Value::String(addressed));
                }
                Some(USER_BACKEND.to_owned())
            }
            "assistant" => {
                if let Some(model) = &message.model {
                    metadata
                        .entry(MODEL_KEY)
                        .or_insert_with(|| Value::String(model.clone()));
                }
                message.backend
            }
            _ => message.backend,
        };
        Self {
            id: message.id,
            content: message.content,
            role: message.role,
            backend,
            model: message.model,
            timestamp: message.timestamp,
            metadata,
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
    /// rate-limited backend gave; `interrupted` and `code` (`server_shutting_down`) are set on
    /// the last event of a reply the server's stopping cut off.
    Error {
        backend: String,
        detail: String,
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<&'static str>,
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
                let interruption = match &error {
                    crate::chat::ChatError::Interrupted(why) => Some(*why),
                    _ => None,
                };
                let reported = Reported::new(error);
                Self::Error {
                    backend,
                    detail: reported.detail,
                    status: reported.status,
                    retry_after: reported.retry_after,
                    interrupted: interruption.is_some(),
                    code: interruption.map(crate::chat::Interruption::code),
                }
            }
        }
    }
}
