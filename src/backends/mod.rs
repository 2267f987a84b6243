//! AI model backends: one [`Backend`] trait, one module per wire format, and the
//! [`BackendRegistry`] that holds the configured backends by name.
//!
//! Invariants: every request to a model is bounded by the backend's connect, first-byte and total
//! timeouts; every body read from a peer is bounded in size; every upstream failure becomes one
//! [`BackendError`] naming the backend, which maps to exactly one HTTP status.

pub mod anthropic;
pub mod echo;
mod metered;
pub mod ollama;
pub mod openai;
pub mod options;
mod registry;
pub mod text_call;
mod upstream;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use crate::config::backends::{BackendConfig, BackendKind};
pub use metered::BackendMetrics;
pub use options::{
    GenerationOptions, InvalidOption, JsonSchemaFormat, ResponseFormat, StopSequences, ToolChoice,
    Unsupported,
};
pub use registry::{BackendEntry, BackendLookupError, BackendRegistry};

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// One message of the conversation sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// An assistant message's native tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: which call it answers.
    pub answers: Option<ToolAnswer>,
    /// A user message's images, in the order they were given; each sits at its place in
    /// `content` ([`Image::at`]), so wires with content arrays keep text and images in order.
    pub images: Vec<Image>,
}

impl ChatMessage {
    /// A message of plain text.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            answers: None,
            images: Vec::new(),
        }
    }

    /// The content as text and image parts in order: the text between images, each image at
    /// its place. Empty text is left out.
    pub fn parts(&self) -> impl Iterator<Item = MessagePart<'_>> {
        let mut from = 0;
        let mut parts = Vec::with_capacity(self.images.len() * 2 + 1);
        for image in &self.images {
            // `at` is checked when the image is placed; clamped anyway, never a panic.
            let at = image.at.clamp(from, self.content.len());
            if let Some(text) = self.content.get(from..at).filter(|t| !t.is_empty()) {
                parts.push(MessagePart::Text(text));
            }
            parts.push(MessagePart::Image(image));
            from = at;
        }
        if let Some(text) = self.content.get(from..).filter(|t| !t.is_empty()) {
            parts.push(MessagePart::Text(text));
        }
        parts.into_iter()
    }
}

/// A piece of a message's content, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MessagePart<'a> {
    Text(&'a str),
    Image(&'a Image),
}

/// An image given with a message. lit-mux never fetches a URL itself: a backend takes it as it
/// is or refuses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub source: ImageSource,
    /// OpenAI's `detail` (`auto`, `low`, `high`), passed on where the wire has it.
    pub detail: Option<String>,
    /// Where the image sits in the message's `content`: a byte offset on a character boundary.
    pub at: usize,
}

/// Where an image's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// The bytes, from a data URL: `image/png`, `image/jpeg`, `image/gif` or `image/webp`, and
    /// the base64 text as given (checked, not decoded).
    Base64 { media_type: String, data: String },
    /// An `http` or `https` URL, for the backend to fetch.
    Url(String),
}

impl ImageSource {
    /// The image as a data URL, or its URL.
    pub fn as_url(&self) -> String {
        match self {
            Self::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
            Self::Url(url) => url.clone(),
        }
    }

    /// The decoded size of base64 data: three bytes per four characters, less the padding.
    pub fn decoded_bytes(data: &str) -> usize {
        let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
        (data.len() / 4 * 3).saturating_sub(padding)
    }
}

/// A tool the model may call natively.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The provider-safe name (`server__tool`).
    pub name: String,
    pub description: String,
    /// The tool's JSON Schema for its arguments, passed through.
    pub parameters: serde_json::Value,
}

/// A tool call the model made natively.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The provider's id for the call (one is made up when the provider gives none).
    pub id: String,
    /// The tool's name as the model wrote it.
    pub name: String,
    /// Normally an object. Arguments that are not valid JSON are kept as the string the model
    /// wrote, so the loop can tell the model what was wrong.
    pub arguments: serde_json::Value,
}

impl ToolCall {
    /// The arguments as the wire formats that want a JSON string carry them.
    pub fn arguments_text(&self) -> String {
        match &self.arguments {
            serde_json::Value::String(raw) => raw.clone(),
            other => other.to_string(),
        }
    }

    /// Parses arguments a provider sent as a JSON string; an empty string means none.
    pub fn parse_arguments(text: &str) -> serde_json::Value {
        if text.trim().is_empty() {
            return serde_json::Value::Object(serde_json::Map::new());
        }
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
    }
}

/// What a `tool` message answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolAnswer {
    pub call_id: String,
    /// The name the call used.
    pub name: String,
    pub is_error: bool,
}

/// What a model is asked: the whole conversation, oldest first.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    /// Sent the way the wire format wants it (a first `system` message, or Anthropic's field).
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Tools offered natively; none when empty. Messages with tool calls or answers are only
    /// sent along with tools (see `chat::context::flatten_tool_messages`).
    pub tools: Vec<ToolSpec>,
    /// Sampling and generation options, checked against OpenAI's ranges; each backend maps
    /// them to its wire ([`Backend::check_options`] says first whether it can).
    pub options: GenerationOptions,
}

/// Token counts, when the backend reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

impl Usage {
    fn is_known(&self) -> bool {
        self.input_tokens.is_some() || self.output_tokens.is_some()
    }
}

/// A model's complete answer.
#[derive(Debug, Clone)]
pub struct ChatReply {
    pub content: String,
    /// The model that answered, as the backend reports it.
    pub model: String,
    pub usage: Option<Usage>,
    /// Why the model stopped (`stop`, `end_turn`, `length`...), when reported.
    pub finish_reason: Option<String>,
    /// Native tool calls, in the order the model made them.
    pub tool_calls: Vec<ToolCall>,
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// More text.
    Delta(String),
    /// A native tool call, complete (streamed arguments already assembled).
    ToolCall(ToolCall),
    /// The answer is complete.
    Done {
        model: String,
        usage: Option<Usage>,
        finish_reason: Option<String>,
    },
}

/// A streamed answer: text deltas and tool calls, then exactly one `Done` unless an error ends
/// it first.
pub type ChatStream = BoxStream<'static, Result<ChatEvent, BackendError>>;

/// A model a backend offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub display_name: String,
    pub size_mb: Option<f64>,
    pub digest: Option<String>,
}

/// Everything that can go wrong talking to a model backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("backend {backend} is unreachable: {message}")]
    Unreachable { backend: String, message: String },
    #[error("backend {backend} timed out: {} within {secs} s{}", .stage.what(), .stage.setting())]
    Timeout {
        backend: String,
        stage: TimeoutStage,
        secs: u64,
    },
    /// The backend answered with an error status.
    #[error("backend {backend} answered {status}: {message}")]
    Upstream {
        backend: String,
        status: u16,
        message: String,
    },
    /// The backend answered 429; `retry_after` is its `Retry-After` header, passed on as is.
    #[error("backend {backend} is rate limited (429): {message}")]
    RateLimited {
        backend: String,
        message: String,
        retry_after: Option<String>,
    },
    /// The backend reported a failure inside an answer that had started well.
    #[error("backend {backend} failed: {message}")]
    Failed { backend: String, message: String },
    /// The request asks for something the backend cannot take (an option its API lacks, a
    /// value outside its range, an image in a form its wire cannot carry): the client's to change.
    #[error("backend {backend}: {message}")]
    CannotTake { backend: String, message: String },
    /// The backend answered something that is not its API's format.
    #[error("backend {backend} sent an invalid response: {message}")]
    InvalidResponse { backend: String, message: String },
}

/// Which of a backend's time limits ran out; shown as what did not happen in time and the
/// setting that bounds it, so the message says what to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutStage {
    /// `connect_timeout_secs`.
    Connect,
    /// `first_byte_timeout_secs`: until the answer's headers.
    FirstByte,
    /// `timeout_secs`: the whole request, to the answer's last byte.
    Total,
    /// Listing the models, bounded by lit-mux itself.
    ListingModels,
    /// Waiting for one of the backend's `max_connections`, bounded by the first-byte timeout.
    ConnectionSlot,
}

impl TimeoutStage {
    /// What did not happen in time.
    fn what(self) -> &'static str {
        match self {
            Self::Connect => "no connection",
            Self::FirstByte => "no answer",
            Self::Total => "the answer was not complete",
            Self::ListingModels => "no list of models",
            Self::ConnectionSlot => "no free connection (all max_connections in use)",
        }
    }

    /// ` (the setting)` that bounds this stage, when there is one.
    fn setting(self) -> &'static str {
        match self {
            Self::Connect => " (connect_timeout_secs)",
            Self::FirstByte => " (first_byte_timeout_secs)",
            Self::Total => " (timeout_secs)",
            Self::ListingModels => "",
            Self::ConnectionSlot => " (first_byte_timeout_secs)",
        }
    }
}

/// A model backend: one implementation per wire format.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// The model used when neither the request nor the session names one.
    fn default_model(&self) -> &str;
    /// The complete answer to `request`.
    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError>;
    /// The answer to `request` as it is produced.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError>;
    /// Whether the backend can honour `options` (the same check its calls make), so a request
    /// it would refuse is refused before anything is stored.
    fn check_options(&self, options: &GenerationOptions) -> Result<(), BackendError>;
    /// The models the backend offers.
    async fn models(&self) -> Result<Vec<ModelInfo>, BackendError>;
    /// Whether the backend answers; the cheapest request its API has.
    async fn health(&self) -> Result<(), BackendError> {
        self.models().await.map(|_| ())
    }
}

/// Ends `events` at its `Done` or its first error; a stream that stops before either yields
/// `cut_off`, so a dropped connection is never mistaken for a complete answer.
pub(crate) fn until_done(
    events: impl futures_util::Stream<Item = Result<ChatEvent, BackendError>> + Send + 'static,
    cut_off: BackendError,
) -> ChatStream {
    use futures_util::StreamExt;
    let state = (events.boxed(), Some(cut_off));
    futures_util::stream::unfold(state, |(mut events, cut_off)| async move {
        // `cut_off` is taken once the stream has ended, one way or another.
        let cut_off = cut_off?;
        match events.next().await {
            Some(Ok(event @ ChatEvent::Done { .. })) => Some((Ok(event), (events, None))),
            Some(Ok(delta)) => Some((Ok(delta), (events, Some(cut_off)))),
            Some(Err(err)) => Some((Err(err), (events, None))),
            None => Some((Err(cut_off), (events, None))),
        }
    })
    .boxed()
}

/// An id for a call the provider gave none (Ollama before 0.12): unique, provider-safe.
pub(crate) fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// Tools the way Ollama and OpenAI take them: `{"type": "function", "function": {...}}`.
pub(crate) fn function_tools(tools: &[ToolSpec]) -> serde_json::Value {
    serde_json::Value::Array(
        tools
            .iter()
            .map(|tool| {
                serde_json::json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }
                })
            })
            .collect(),
    )
}

impl BackendError {
    /// The error's kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Upstream { .. } => "upstream_error",
            Self::RateLimited { .. } => "rate_limited",
            Self::Failed { .. } => "failed",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::CannotTake { .. } => "cannot_take",
        }
    }
}

/// Bytes as megabytes, to one decimal.
pub(crate) fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}
