//! The built-in `echo` backend: answers with the last user message, without any network, so a
//! fresh install works end to end with no model at all.

use futures_util::StreamExt;

use super::{
    Backend, BackendConfig, BackendError, ChatEvent, ChatReply, ChatRequest, ChatStream,
    GenerationOptions, ModelInfo, Role,
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

/// The last user message of the conversation, or nothing.
fn last_user_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .map(|message| message.content.clone())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Backend for EchoBackend {
    fn default_model(&self) -> &str {
        &self.default_model
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError> {
        Ok(ChatReply {
            content: last_user_text(&request),
            model: request.model,
            usage: None,
            finish_reason: Some("stop".to_owned()),
            tool_calls: Vec::new(),
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let text = last_user_text(&request);
        // Word by word (spaces kept), like a model's tokens.
        let mut deltas: Vec<Result<ChatEvent, BackendError>> = text
            .split_inclusive(' ')
            .map(|word| Ok(ChatEvent::Delta(word.to_owned())))
            .collect();
        deltas.push(Ok(ChatEvent::Done {
            model: request.model,
            usage: None,
            finish_reason: Some("stop".to_owned()),
        }));
        Ok(futures_util::stream::iter(deltas).boxed())
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
