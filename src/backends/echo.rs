//! The built-in `echo` backend: answers with the last user message, without any network, so a
//! fresh install works end to end with no model at all.
//!
//! With tools offered, a last user message that is exactly a tool call in JSON (the shape of
//! [`super::text_call`], e.g. `{"tool": "lookup", "arguments": {"q": "x"}}`) naming one of the
//! offered tools is answered with that call, natively; after the tool's result, echo answers
//! with the result. So a whole agent loop (the client's tools under `/v1`, or a session's MCP
//! tools in native mode) runs with no model. Images are echoed as a short description of each
//! (`[image: image/png, 68 bytes]`), in place, so a client can see what arrived.

use futures_util::StreamExt;
use serde_json::Value;

use super::{
    Backend, BackendConfig, BackendError, ChatEvent, ChatMessage, ChatReply, ChatRequest,
    ChatStream, GenerationOptions, ImageSource, MessagePart, ModelInfo, Role, ToolCall,
};

pub struct EchoBackend {
    default_model: String,
}

impl EchoBackend {
    pub fn new(config: &BackendConfig) -> Self {
        Self {
            default_model: config.default_model.clone(),
        }
    }
}

/// What echo answers.
enum Answer {
    Text(String),
    Call(ToolCall),
}

impl Answer {
    fn finish_reason(&self) -> String {
        match self {
            Self::Text(_) => "stop",
            Self::Call(_) => "tool_calls",
        }
        .to_owned()
    }
}

/// The results of the calls just made when the conversation ends with them; else the last
/// user message as a call of an offered tool, or as text.
fn answer(request: &ChatRequest) -> Answer {
    let results: Vec<&str> = request
        .messages
        .iter()
        .rev()
        .take_while(|message| message.answers.is_some())
        .map(|message| message.content.as_str())
        .collect();
    if !results.is_empty() {
        return Answer::Text(results.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    let Some(last_user) = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
    else {
        return Answer::Text(String::new());
    };
    match offered_call(request, last_user) {
        Some(call) => Answer::Call(call),
        None => Answer::Text(described(last_user)),
    }
}

/// The message as a call, when it is one in JSON and its tool is offered.
fn offered_call(request: &ChatRequest, message: &ChatMessage) -> Option<ToolCall> {
    if request.tools.is_empty() || !message.images.is_empty() {
        return None;
    }
    let (name, arguments) = super::text_call::parse(message.content.trim())?;
    request
        .tools
        .iter()
        .any(|tool| tool.name == name)
        .then(|| ToolCall {
            id: super::new_call_id(),
            name,
            arguments: Value::Object(arguments),
        })
}

/// The message's text with each image described where it was.
fn described(message: &ChatMessage) -> String {
    if message.images.is_empty() {
        return message.content.clone();
    }
    message
        .parts()
        .map(|part| match part {
            MessagePart::Text(text) => text.to_owned(),
            MessagePart::Image(image) => match &image.source {
                ImageSource::Base64 { media_type, data } => format!(
                    "[image: {media_type}, {} bytes]",
                    ImageSource::decoded_bytes(data)
                ),
                ImageSource::Url(url) => format!("[image: {url}]"),
            },
        })
        .collect()
}

#[async_trait::async_trait]
impl Backend for EchoBackend {
    fn default_model(&self) -> &str {
        &self.default_model
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError> {
        let answer = answer(&request);
        let finish_reason = Some(answer.finish_reason());
        let (content, tool_calls) = match answer {
            Answer::Text(text) => (text, Vec::new()),
            Answer::Call(call) => (String::new(), vec![call]),
        };
        Ok(ChatReply {
            content,
            model: request.model,
            usage: None,
            finish_reason,
            tool_calls,
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let answer = answer(&request);
        let finish_reason = Some(answer.finish_reason());
        let mut events: Vec<Result<ChatEvent, BackendError>> = match answer {
            // Word by word (spaces kept), like a model's tokens.
            Answer::Text(text) => text
                .split_inclusive(' ')
                .map(|word| Ok(ChatEvent::Delta(word.to_owned())))
                .collect(),
            Answer::Call(call) => vec![Ok(ChatEvent::ToolCall(call))],
        };
        events.push(Ok(ChatEvent::Done {
            model: request.model,
            usage: None,
            finish_reason,
        }));
        Ok(futures_util::stream::iter(events).boxed())
    }

    /// The echo answers the same whatever it is asked: every option is accepted and ignored.
    fn check_options(&self, _options: &GenerationOptions) -> Result<(), BackendError> {
        Ok(())
    }

    async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        Ok(vec![ModelInfo {
            name: self.default_model.clone(),
            display_name: "Echo (replies with your message)".to_owned(),
            size_mb: Some(0.0),
            digest: None,
        }])
    }

    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
