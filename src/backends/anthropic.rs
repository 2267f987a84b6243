//! Anthropic's Messages API: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version` (an SSE event stream when streamed), `GET {base_url}/v1/models`.
//! The system prompt goes in the `system` field, never in `messages`.

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::AnthropicSettings;
use super::upstream::Upstream;
use super::{
    Backend, BackendConfig, BackendError, ChatEvent, ChatReply, ChatRequest, ChatStream, ModelInfo,
    Role, Usage,
};

pub struct AnthropicBackend {
    upstream: Upstream,
    settings: AnthropicSettings,
    default_model: String,
}

impl AnthropicBackend {
    pub fn new(
        name: &str,
        config: &BackendConfig,
        settings: &AnthropicSettings,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            upstream: Upstream::new(name, config.timeouts, error_message)?,
            settings: settings.clone(),
            default_model: config.default_model.clone(),
        })
    }

    fn with_headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header("x-api-key", &self.settings.api_key)
            .header("anthropic-version", &self.settings.version)
    }

    async fn post_messages(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, BackendError> {
        // Only user and assistant turns exist here; a system message of the history joins the
        // system prompt.
        let mut system: Vec<&str> = request.system.iter().map(String::as_str).collect();
        let mut messages = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            let role = match message.role {
                Role::System => {
                    system.push(&message.content);
                    continue;
                }
                Role::Assistant => "assistant",
                Role::User | Role::Tool => "user",
            };
            messages.push(json!({"role": role, "content": message.content}));
        }
        let mut body = json!({
            "model": request.model,
            "max_tokens": self.settings.max_tokens,
            "messages": messages,
            "stream": stream,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        let url = format!("{}/v1/messages", self.settings.base_url);
        self.upstream
            .send(self.with_headers(self.upstream.client().post(url).json(&body)))
            .await
    }
}

/// Anthropic's errors are `{"type": "error", "error": {"type", "message"}}`.
fn error_message(body: &Value) -> Option<String> {
    let error = body.get("error")?;
    let message = error.get("message")?.as_str()?;
    Some(match error.get("type").and_then(Value::as_str) {
        Some(kind) => format!("{kind}: {message}"),
        None => message.to_owned(),
    })
}

#[derive(Debug, Deserialize)]
struct Message {
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// One event of the stream; the fields used by any event type.
#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    message: Option<Message>,
    delta: Option<Delta>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<WireModel>,
}

#[derive(Debug, Deserialize)]
struct WireModel {
    id: String,
    display_name: Option<String>,
}

#[async_trait::async_trait]
impl Backend for AnthropicBackend {
    fn default_model(&self) -> &str {
        &self.default_model
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError> {
        let response = self.post_messages(&request, false).await?;
        let message: Message = self.upstream.json(response).await?;
        let content = message
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .filter_map(|block| block.text.as_deref())
            .collect::<String>();
        Ok(ChatReply {
            content,
            model: message.model.unwrap_or(request.model),
            usage: message.usage.map(|usage| Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
            }),
            finish_reason: message.stop_reason,
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let response = self.post_messages(&request, true).await?;
        let upstream = self.upstream.clone();
        let mut model = request.model;
        let mut usage = Usage::default();
        let mut finish_reason = None;
        let events = self.upstream.sse(response).map(move |event| {
            let event = event?;
            let parsed: StreamEvent = serde_json::from_str(&event.data)
                .map_err(|err| upstream.invalid(format!("bad stream event: {err}")))?;
            match parsed.kind.as_str() {
                "message_start" => {
                    if let Some(message) = parsed.message {
                        if let Some(name) = message.model {
                            model = name;
                        }
                        if let Some(start) = message.usage {
                            usage.input_tokens = start.input_tokens;
                        }
                    }
                    Ok(None)
                }
                "content_block_delta" => Ok(parsed
                    .delta
                    .filter(|delta| delta.kind.as_deref() == Some("text_delta"))
                    .and_then(|delta| delta.text)
                    .filter(|text| !text.is_empty())
                    .map(ChatEvent::Delta)),
                "message_delta" => {
                    if let Some(reason) = parsed.delta.and_then(|delta| delta.stop_reason) {
                        finish_reason = Some(reason);
                    }
                    if let Some(output) = parsed.usage.and_then(|usage| usage.output_tokens) {
                        usage.output_tokens = Some(output);
                    }
                    Ok(None)
                }
                "message_stop" => Ok(Some(ChatEvent::Done {
                    model: model.clone(),
                    usage: usage.is_known().then_some(usage),
                    finish_reason: finish_reason.clone(),
                })),
                "error" => Err(BackendError::Failed {
                    backend: upstream.backend().to_owned(),
                    message: serde_json::from_str::<Value>(&event.data)
                        .ok()
                        .and_then(|body| error_message(&body))
                        .unwrap_or(event.data),
                }),
                // ping, content_block_start/stop, and event types added after this was written.
                _ => Ok(None),
            }
        });
        let events = events.filter_map(|result| futures_util::future::ready(result.transpose()));
        Ok(super::until_done(events, self.upstream.cut_off()))
    }

    async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let url = format!("{}/v1/models", self.settings.base_url);
        let response = self
            .upstream
            .send(self.with_headers(self.upstream.client().get(url)))
            .await?;
        let list: ModelList = self.upstream.json(response).await?;
        Ok(list
            .data
            .into_iter()
            .map(|model| ModelInfo {
                display_name: model.display_name.unwrap_or_else(|| model.id.clone()),
                name: model.id,
                size_mb: None,
                digest: None,
            })
            .collect())
    }
}
