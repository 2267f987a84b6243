//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, LM Studio, OpenRouter):
//! `POST {base_url}/chat/completions` (SSE chunks ending with `data: [DONE]` when streamed) and
//! `GET {base_url}/models`, with `Authorization: Bearer` when a key is set.

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::OpenAiSettings;
use super::upstream::Upstream;
use super::{
    Backend, BackendConfig, BackendError, ChatEvent, ChatReply, ChatRequest, ChatStream, ModelInfo,
    Usage,
};

pub struct OpenAiBackend {
    upstream: Upstream,
    base_url: String,
    api_key: Option<String>,
    default_model: String,
}

impl OpenAiBackend {
    pub fn new(
        name: &str,
        config: &BackendConfig,
        settings: &OpenAiSettings,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            upstream: Upstream::new(name, config.timeouts, error_message)?,
            base_url: settings.base_url.clone(),
            api_key: settings.api_key.clone(),
            default_model: config.default_model.clone(),
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn post_chat(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, BackendError> {
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if let Some(system) = &request.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.extend(
            request
                .messages
                .iter()
                .map(|m| json!({"role": m.role.as_str(), "content": m.content})),
        );
        let mut body = json!({"model": request.model, "messages": messages, "stream": stream});
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let url = format!("{}/chat/completions", self.base_url);
        self.upstream
            .send(self.authorized(self.upstream.client().post(url).json(&body)))
            .await
    }
}

/// OpenAI's errors are `{"error": {"message": ...}}`; some compatible servers put a string
/// in `error`, or answer FastAPI-style `{"detail": ...}`.
fn error_message(body: &Value) -> Option<String> {
    match body.get("error") {
        Some(Value::String(message)) => Some(message.clone()),
        Some(error) => error.get("message")?.as_str().map(str::to_owned),
        None => ["detail", "message"]
            .iter()
            .find_map(|key| body.get(*key)?.as_str().map(str::to_owned)),
    }
}

#[derive(Debug, Deserialize)]
struct Completion {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<ChoiceMessage>,
    delta: Option<ChoiceMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Self {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<WireModel>,
}

#[derive(Debug, Deserialize)]
struct WireModel {
    id: String,
}

/// What a stream has said so far that its `Done` must carry.
struct StreamSummary {
    model: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

#[async_trait::async_trait]
impl Backend for OpenAiBackend {
    fn default_model(&self) -> &str {
        &self.default_model
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError> {
        let response = self.post_chat(&request, false).await?;
        let body: Value = self.upstream.json(response).await?;
        if let Some(message) = body.get("error").and_then(|_| error_message(&body)) {
            return Err(BackendError::Failed {
                backend: self.upstream.backend().to_owned(),
                message,
            });
        }
        let completion: Completion =
            serde_json::from_value(body).map_err(|err| self.upstream.invalid(err.to_string()))?;
        let Some(choice) = completion.choices.into_iter().next() else {
            return Err(self.upstream.invalid("no choices in the answer".to_owned()));
        };
        Ok(ChatReply {
            content: choice
                .message
                .and_then(|message| message.content)
                .unwrap_or_default(),
            model: completion.model.unwrap_or(request.model),
            usage: completion.usage.map(Usage::from),
            finish_reason: choice.finish_reason,
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let response = self.post_chat(&request, true).await?;
        let upstream = self.upstream.clone();
        let mut summary = StreamSummary {
            model: request.model,
            finish_reason: None,
            usage: None,
        };
        let events = self.upstream.sse(response).map(move |event| {
            let event = event?;
            if event.data.trim() == "[DONE]" {
                return Ok(vec![ChatEvent::Done {
                    model: summary.model.clone(),
                    usage: summary.usage,
                    finish_reason: summary.finish_reason.clone(),
                }]);
            }
            let body: Value = serde_json::from_str(&event.data)
                .map_err(|err| upstream.invalid(format!("bad stream chunk: {err}")))?;
            if body.get("error").is_some() {
                return Err(BackendError::Failed {
                    backend: upstream.backend().to_owned(),
                    message: error_message(&body).unwrap_or_else(|| body.to_string()),
                });
            }
            let chunk: Completion = serde_json::from_value(body)
                .map_err(|err| upstream.invalid(format!("bad stream chunk: {err}")))?;
            if let Some(model) = chunk.model {
                summary.model = model;
            }
            if let Some(usage) = chunk.usage {
                summary.usage = Some(usage.into());
            }
            let mut deltas = Vec::new();
            for choice in chunk.choices {
                if let Some(reason) = choice.finish_reason {
                    summary.finish_reason = Some(reason);
                }
                if let Some(text) = choice.delta.and_then(|delta| delta.content)
                    && !text.is_empty()
                {
                    deltas.push(ChatEvent::Delta(text));
                }
            }
            Ok(deltas)
        });
        let flat = events.flat_map(|result| {
            futures_util::stream::iter(match result {
                Ok(events) => events.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            })
        });
        Ok(super::until_done(flat, self.upstream.cut_off()))
    }

    async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let url = format!("{}/models", self.base_url);
        let response = self
            .upstream
            .send(self.authorized(self.upstream.client().get(url)))
            .await?;
        let list: ModelList = self.upstream.json(response).await?;
        Ok(list
            .data
            .into_iter()
            .map(|model| ModelInfo {
                display_name: model.id.clone(),
                name: model.id,
                size_mb: None,
                digest: None,
            })
            .collect())
    }
}
