//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, LM Studio, OpenRouter):
//! `POST {base_url}/chat/completions` (SSE chunks ending with `data: [DONE]` when streamed) and
//! `GET {base_url}/models`, with `Authorization: Bearer` when a key is set.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::upstream::{Upstream, UpstreamResponse};
use super::{
    Backend, BackendConfig, BackendError, ChatEvent, ChatMessage, ChatReply, ChatRequest,
    ChatStream, GenerationOptions, MessagePart, ModelInfo, ResponseFormat, ToolCall, ToolChoice,
    Usage,
};
use crate::config::backends::OpenAiSettings;

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
            upstream: Upstream::new(name, config, error_message)?,
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
    ) -> Result<UpstreamResponse, BackendError> {
        let system = request.system.as_deref().map(|system| WireMessage {
            role: "system",
            content: Some(WireContent::Text(system)),
            tool_call_id: None,
            tool_calls: Vec::new(),
        });
        let body = WireChat {
            model: &request.model,
            messages: system
                .into_iter()
                .chain(request.messages.iter().map(wire_message))
                .collect(),
            stream,
            tools: (!request.tools.is_empty()).then(|| super::function_tools(&request.tools)),
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            options: wire_options(&request.options, !request.tools.is_empty()),
        };
        let url = format!("{}/chat/completions", self.base_url);
        self.upstream
            .send(self.authorized(self.upstream.client().post(url).json(&body)))
            .await
    }
}

/// A `/chat/completions` request body, serialized straight from the conversation (not built as
/// a `serde_json::Value` first: that was a map and a copy of every message's text, per call).
#[derive(Serialize)]
struct WireChat<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    options: WireOptions<'a>,
}

/// The options as `/chat/completions` takes them: OpenAI's own names and shapes. The length
/// bound goes as `max_tokens`, not `max_completion_tokens`: many compatible servers (vLLM,
/// llama.cpp, LM Studio) know only the older name, and OpenAI still takes it for chat models.
#[derive(Serialize)]
struct WireOptions<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
}

/// Every option as is. The tool choice and parallel calls go only along with tools: OpenAI
/// refuses them on a request without any (a turn lit-mux sends without tools has none to
/// choose from).
fn wire_options(options: &GenerationOptions, with_tools: bool) -> WireOptions<'_> {
    WireOptions {
        temperature: options.temperature,
        top_p: options.top_p,
        max_tokens: options.max_tokens,
        stop: options.stop.as_ref().map(|stop| stop.0.as_slice()),
        seed: options.seed,
        presence_penalty: options.presence_penalty,
        frequency_penalty: options.frequency_penalty,
        response_format: options.response_format.as_ref(),
        tool_choice: options
            .tool_choice
            .as_ref()
            .filter(|_| with_tools)
            .map(ToolChoice::openai_json),
        parallel_tool_calls: options.parallel_tool_calls.filter(|_| with_tools),
        user: options.user.as_deref(),
        logprobs: options.logprobs,
        top_logprobs: options.top_logprobs,
        n: options.n,
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// One message as `/chat/completions` takes it: tool calls with their arguments as a JSON
/// string, tool results answering a `tool_call_id`.
#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    /// `null` only for an answer that is tool calls alone.
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireCallOut<'a>>,
}

/// Text, or OpenAI's content parts for a message with images (rare, so built as values).
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<Value>),
}

/// A user message's text and images as OpenAI's content parts, in order; images as they came
/// (data URL or URL, and `detail`).
fn content_parts(message: &ChatMessage) -> WireContent<'_> {
    if message.images.is_empty() {
        return WireContent::Text(&message.content);
    }
    WireContent::Parts(
        message
            .parts()
            .map(|part| match part {
                MessagePart::Text(text) => json!({"type": "text", "text": text}),
                MessagePart::Image(image) => {
                    let mut url = json!({"url": image.source.as_url()});
                    if let Some(detail) = &image.detail {
                        url["detail"] = json!(detail);
                    }
                    json!({"type": "image_url", "image_url": url})
                }
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct WireCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionOut<'a>,
}

#[derive(Serialize)]
struct WireFunctionOut<'a> {
    name: &'a str,
    arguments: String,
}

fn wire_message(message: &ChatMessage) -> WireMessage<'_> {
    if let Some(answer) = &message.answers {
        return WireMessage {
            role: "tool",
            content: Some(WireContent::Text(&message.content)),
            tool_call_id: Some(&answer.call_id),
            tool_calls: Vec::new(),
        };
    }
    if message.tool_calls.is_empty() {
        return WireMessage {
            role: message.role.as_str(),
            content: Some(content_parts(message)),
            tool_call_id: None,
            tool_calls: Vec::new(),
        };
    }
    WireMessage {
        role: "assistant",
        content: (!message.content.is_empty()).then_some(WireContent::Text(&message.content)),
        tool_call_id: None,
        tool_calls: message
            .tool_calls
            .iter()
            .map(|call| WireCallOut {
                id: &call.id,
                kind: "function",
                function: WireFunctionOut {
                    name: &call.name,
                    arguments: call.arguments_text(),
                },
            })
            .collect(),
    }
}

/// Most bytes of arguments one streamed call may assemble, and most calls per answer: a
/// misbehaving server cannot make us buffer without end.
const MAX_STREAMED_ARGUMENTS: usize = 4 * 1024 * 1024;
const MAX_STREAMED_CALLS: usize = 256;

/// A call being assembled from stream chunks.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
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
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

/// A tool call, whole (`message`) or a piece of one (`delta`, placed by `index`).
#[derive(Debug, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: Option<String>,
    arguments: Option<String>,
}

impl From<WireToolCall> for ToolCall {
    fn from(call: WireToolCall) -> Self {
        let function = call.function.unwrap_or(WireFunction {
            name: None,
            arguments: None,
        });
        ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(super::new_call_id),
            name: function.name.unwrap_or_default(),
            arguments: ToolCall::parse_arguments(function.arguments.as_deref().unwrap_or("")),
        }
    }
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

/// What a stream has said so far that its `Done` must carry, and the calls being assembled.
struct StreamSummary {
    model: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    calls: std::collections::BTreeMap<usize, PartialCall>,
}

impl StreamSummary {
    /// Adds a piece of a streamed call.
    fn add_piece(&mut self, piece: WireToolCall, upstream: &Upstream) -> Result<(), BackendError> {
        if !self.calls.contains_key(&piece.index) && self.calls.len() >= MAX_STREAMED_CALLS {
            return Err(upstream.invalid(format!("more than {MAX_STREAMED_CALLS} tool calls")));
        }
        let call = self.calls.entry(piece.index).or_default();
        if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(function) = piece.function {
            if let Some(name) = function.name {
                call.name.push_str(&name);
            }
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(&arguments);
            }
        }
        if call.arguments.len() > MAX_STREAMED_ARGUMENTS {
            return Err(upstream.invalid(format!(
                "tool call arguments over {MAX_STREAMED_ARGUMENTS} bytes"
            )));
        }
        Ok(())
    }

    /// The assembled calls, in index order; none are left.
    fn take_calls(&mut self) -> Vec<ChatEvent> {
        std::mem::take(&mut self.calls)
            .into_values()
            .map(|call| {
                ChatEvent::ToolCall(ToolCall {
                    id: if call.id.is_empty() {
                        super::new_call_id()
                    } else {
                        call.id
                    },
                    name: call.name,
                    arguments: ToolCall::parse_arguments(&call.arguments),
                })
            })
            .collect()
    }
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
        let (content, tool_calls) = match choice.message {
            Some(message) => (
                message.content.unwrap_or_default(),
                message.tool_calls.into_iter().map(ToolCall::from).collect(),
            ),
            None => (String::new(), Vec::new()),
        };
        Ok(ChatReply {
            content,
            model: completion.model.unwrap_or(request.model),
            usage: completion.usage.map(Usage::from),
            finish_reason: choice.finish_reason,
            tool_calls,
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let response = self.post_chat(&request, true).await?;
        let upstream = self.upstream.clone();
        let mut summary = StreamSummary {
            model: request.model,
            finish_reason: None,
            usage: None,
            calls: std::collections::BTreeMap::new(),
        };
        let events = self.upstream.sse(response).map(move |event| {
            let event = event?;
            if event.data.trim() == "[DONE]" {
                let mut last = summary.take_calls();
                last.push(ChatEvent::Done {
                    model: summary.model.clone(),
                    usage: summary.usage,
                    finish_reason: summary.finish_reason.clone(),
                });
                return Ok(last);
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
                if let Some(delta) = choice.delta {
                    if let Some(text) = delta.content
                        && !text.is_empty()
                    {
                        deltas.push(ChatEvent::Delta(text));
                    }
                    for piece in delta.tool_calls {
                        summary.add_piece(piece, &upstream)?;
                    }
                }
                // The calls are complete when the choice finishes (or at `[DONE]`, for servers
                // that never say why they stopped).
                if let Some(reason) = choice.finish_reason {
                    summary.finish_reason = Some(reason);
                    deltas.extend(summary.take_calls());
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

    /// OpenAI's API has every option.
    fn check_options(&self, _options: &GenerationOptions) -> Result<(), BackendError> {
        Ok(())
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
