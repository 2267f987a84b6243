//! Ollama: `POST {host}/api/chat` (NDJSON when streamed), `GET {host}/api/tags` for the models
//! and for health. The system prompt goes first in `messages`.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::upstream::{Upstream, UpstreamResponse};
use super::{
    Backend, BackendConfig, BackendError, ChatEvent, ChatMessage, ChatReply, ChatRequest,
    ChatStream, GenerationOptions, ImageSource, ModelInfo, ResponseFormat, ToolCall, Unsupported,
    Usage,
};
use crate::config::backends::OllamaSettings;

pub struct OllamaBackend {
    upstream: Upstream,
    drop_unsupported: bool,
    host: String,
    default_model: String,
}

impl OllamaBackend {
    pub fn new(
        name: &str,
        config: &BackendConfig,
        settings: &OllamaSettings,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            upstream: Upstream::new(name, config, error_message)?,
            drop_unsupported: config.drop_unsupported_params,
            host: settings.host.clone(),
            default_model: config.default_model.clone(),
        })
    }

    fn chat_body(request: &ChatRequest, stream: bool) -> WireChat<'_> {
        let system = request.system.as_deref().map(|system| WireMessage {
            role: "system",
            content: system,
            tool_calls: Vec::new(),
            tool_name: None,
            tool_call_id: None,
            images: Vec::new(),
        });
        WireChat {
            model: &request.model,
            messages: system
                .into_iter()
                .chain(request.messages.iter().map(wire_message))
                .collect(),
            stream,
            tools: (!request.tools.is_empty()).then(|| super::function_tools(&request.tools)),
            options: WireOptions::of(&request.options),
            format: request.options.response_format.as_ref().and_then(format),
            logprobs: request.options.logprobs,
            top_logprobs: request.options.top_logprobs,
        }
    }

    async fn post_chat(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<UpstreamResponse, BackendError> {
        self.refuse_image_urls(request)?;
        self.check_options(&request.options)?;
        let url = format!("{}/api/chat", self.host);
        self.upstream
            .send(
                self.upstream
                    .client()
                    .post(url)
                    .json(&Self::chat_body(request, stream)),
            )
            .await
    }
}

impl OllamaBackend {
    /// Ollama takes images as base64 only, and lit-mux does not fetch URLs for the client.
    fn refuse_image_urls(&self, request: &ChatRequest) -> Result<(), BackendError> {
        let has_url = request
            .messages
            .iter()
            .flat_map(|message| &message.images)
            .any(|image| matches!(image.source, ImageSource::Url(_)));
        if has_url {
            return Err(BackendError::CannotTake {
                backend: self.upstream.backend().to_owned(),
                message: "Ollama takes images as data only: send the image as a data URL \
                       (data:image/png;base64,...) instead of its URL; lit-mux does not fetch \
                       URLs"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

/// An `/api/chat` request body, serialized straight from the conversation (as for OpenAI: no
/// `serde_json::Value` of every message first).
#[derive(Serialize)]
struct WireChat<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<WireOptions<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
}

/// The sampling options as `/api/chat` takes them, in its `options` object (the length bound
/// is `num_predict`).
#[derive(Serialize)]
struct WireOptions<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_predict: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
}

impl<'a> WireOptions<'a> {
    /// `None` when no option of the object is set: the request then has no `options`.
    fn of(options: &'a GenerationOptions) -> Option<Self> {
        let wire = Self {
            temperature: options.temperature,
            top_p: options.top_p,
            num_predict: options.max_tokens,
            stop: options.stop.as_ref().map(|stop| stop.0.as_slice()),
            seed: options.seed,
            presence_penalty: options.presence_penalty,
            frequency_penalty: options.frequency_penalty,
        };
        let any = wire.temperature.is_some()
            || wire.top_p.is_some()
            || wire.num_predict.is_some()
            || wire.stop.is_some()
            || wire.seed.is_some()
            || wire.presence_penalty.is_some()
            || wire.frequency_penalty.is_some();
        any.then_some(wire)
    }
}

/// Ollama's `format`: `"json"` for any JSON object, the schema itself for a JSON schema
/// (its name and strictness have no place there); nothing for text.
fn format(response_format: &ResponseFormat) -> Option<Value> {
    match response_format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json!("json")),
        ResponseFormat::JsonSchema { json_schema } => {
            Some(json_schema.schema.clone().unwrap_or_else(|| json!("json")))
        }
    }
}

/// What `/api/chat` has no field for.
const UNSUPPORTED: &[&str] = &["tool_choice", "parallel_tool_calls", "user", "n"];

/// One message as `/api/chat` takes it: tool calls with object arguments, tool results with
/// `tool_name`.
#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    /// A user message's images, base64 without a data URL's header; text and images are not
    /// interleaved on this wire: the images go with the message's whole text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<&'a str>,
}

fn wire_message(message: &ChatMessage) -> WireMessage<'_> {
    WireMessage {
        role: message.role.as_str(),
        content: &message.content,
        // Rare (a native tool step), so built as values.
        tool_calls: message
            .tool_calls
            .iter()
            .map(|call| {
                let arguments = match &call.arguments {
                    object @ Value::Object(_) => object.clone(),
                    _ => json!({}),
                };
                json!({"id": call.id, "function": {"name": call.name, "arguments": arguments}})
            })
            .collect(),
        tool_name: message.answers.as_ref().map(|answer| answer.name.as_str()),
        tool_call_id: message
            .answers
            .as_ref()
            .map(|answer| answer.call_id.as_str()),
        images: message
            .images
            .iter()
            .filter_map(|image| match &image.source {
                ImageSource::Base64 { data, .. } => Some(data.as_str()),
                // Refused before the request is built (`refuse_image_urls`).
                ImageSource::Url(_) => None,
            })
            .collect(),
    }
}

/// Ollama's errors are `{"error": "..."}`.
fn error_message(body: &Value) -> Option<String> {
    body.get("error")?.as_str().map(str::to_owned)
}

/// One object of `/api/chat`, streamed or not.
#[derive(Debug, Deserialize)]
struct ChatChunk {
    model: Option<String>,
    message: Option<ChunkMessage>,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    /// An object; some Ollama-compatible servers send a JSON string.
    #[serde(default)]
    arguments: Value,
}

impl From<WireToolCall> for ToolCall {
    fn from(call: WireToolCall) -> Self {
        let arguments = match call.function.arguments {
            Value::String(text) => ToolCall::parse_arguments(&text),
            Value::Null => json!({}),
            other => other,
        };
        ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(super::new_call_id),
            name: call.function.name,
            arguments,
        }
    }
}

impl ChatChunk {
    fn usage(&self) -> Option<Usage> {
        let usage = Usage {
            input_tokens: self.prompt_eval_count,
            output_tokens: self.eval_count,
        };
        usage.is_known().then_some(usage)
    }
}

#[derive(Debug, Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    name: String,
    size: Option<u64>,
    digest: Option<String>,
    details: Option<TagDetails>,
}

#[derive(Debug, Deserialize)]
struct TagDetails {
    parameter_size: Option<String>,
    quantization_level: Option<String>,
}

#[async_trait::async_trait]
impl Backend for OllamaBackend {
    fn default_model(&self) -> &str {
        &self.default_model
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError> {
        let response = self.post_chat(&request, false).await?;
        let chunk: ChatChunk = self.upstream.json(response).await?;
        if let Some(error) = chunk.error {
            return Err(BackendError::Failed {
                backend: self.upstream.backend().to_owned(),
                message: error,
            });
        }
        let usage = chunk.usage();
        let Some(message) = chunk.message else {
            return Err(self.upstream.invalid("no message in the answer".to_owned()));
        };
        Ok(ChatReply {
            content: message.content,
            model: chunk.model.unwrap_or(request.model),
            usage,
            finish_reason: chunk.done_reason,
            tool_calls: message.tool_calls.into_iter().map(ToolCall::from).collect(),
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let response = self.post_chat(&request, true).await?;
        let upstream = self.upstream.clone();
        let requested_model = request.model;
        let events = self
            .upstream
            .ndjson(response)
            .map(move |line| {
                let chunk: ChatChunk = serde_json::from_value(line?)
                    .map_err(|err| upstream.invalid(format!("bad stream object: {err}")))?;
                if let Some(error) = chunk.error {
                    return Err(BackendError::Failed {
                        backend: upstream.backend().to_owned(),
                        message: error,
                    });
                }
                let mut events = Vec::with_capacity(2);
                let usage = chunk.usage();
                if let Some(message) = chunk.message {
                    if !message.content.is_empty() {
                        events.push(Ok(ChatEvent::Delta(message.content)));
                    }
                    // Ollama sends each call whole, in one chunk.
                    events.extend(
                        message
                            .tool_calls
                            .into_iter()
                            .map(|call| Ok(ChatEvent::ToolCall(call.into()))),
                    );
                }
                if chunk.done {
                    events.push(Ok(ChatEvent::Done {
                        usage,
                        model: chunk.model.unwrap_or_else(|| requested_model.clone()),
                        finish_reason: chunk.done_reason,
                    }));
                }
                Ok(events)
            })
            .flat_map(|result| {
                futures_util::stream::iter(match result {
                    Ok(events) => events,
                    Err(err) => vec![Err(err)],
                })
            });
        Ok(super::until_done(events, self.upstream.cut_off()))
    }

    fn check_options(&self, options: &GenerationOptions) -> Result<(), BackendError> {
        Unsupported {
            backend: self.upstream.backend(),
            drop: self.drop_unsupported,
        }
        .refuse(&options.asked(), UNSUPPORTED)
    }

    async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let url = format!("{}/api/tags", self.host);
        let response = self.upstream.send(self.upstream.client().get(url)).await?;
        let tags: Tags = self.upstream.json(response).await?;
        Ok(tags
            .models
            .into_iter()
            .map(|tag| {
                let details: Vec<String> = tag
                    .details
                    .iter()
                    .flat_map(|d| [d.parameter_size.clone(), d.quantization_level.clone()])
                    .flatten()
                    .collect();
                let display_name = if details.is_empty() {
                    tag.name.clone()
                } else {
                    format!("{} ({})", tag.name, details.join(", "))
                };
                ModelInfo {
                    display_name,
                    size_mb: tag.size.map(super::megabytes),
                    digest: tag.digest,
                    name: tag.name,
                }
            })
            .collect())
    }
}
