//! Anthropic's Messages API: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version` (an SSE event stream when streamed), `GET {base_url}/v1/models` (paged:
//! every page is read, up to [`MAX_MODEL_PAGES`]).
//! The system prompt goes in the `system` field, never in `messages`.

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::upstream::{Upstream, UpstreamResponse};
use super::{
    Backend, BackendConfig, BackendError, ChatEvent, ChatMessage, ChatReply, ChatRequest,
    ChatStream, GenerationOptions, ImageSource, MessagePart, ModelInfo, Role, ToolCall, ToolChoice,
    Unsupported, Usage,
};
use crate::config::backends::AnthropicSettings;

pub struct AnthropicBackend {
    upstream: Upstream,
    drop_unsupported: bool,
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
            upstream: Upstream::new(name, config, error_message)?,
            drop_unsupported: config.drop_unsupported_params,
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
    ) -> Result<UpstreamResponse, BackendError> {
        self.check_options(&request.options)?;
        let (system, messages) = wire_messages(request);
        let options = &request.options;
        let mut body = json!({
            "model": request.model,
            // Required by the Messages API: the configured bound when the request sets none.
            "max_tokens": options.max_tokens.unwrap_or(u64::from(self.settings.max_tokens)),
            "messages": messages,
            "stream": stream,
        });
        if let Some(system) = system {
            body["system"] = json!(system);
        }
        if let Some(stop) = &options.stop {
            body["stop_sequences"] = json!(stop.0);
        }
        if let Some(temperature) = options.temperature {
            body["temperature"] = json!(temperature);
        }
        if let Some(top_p) = options.top_p {
            body["top_p"] = json!(top_p);
        }
        if let Some(user) = &options.user {
            body["metadata"] = json!({"user_id": user});
        }
        if !request.tools.is_empty()
            && let Some(choice) = tool_choice(options)
        {
            body["tool_choice"] = choice;
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "name": tool.name,
                        "description": tool.description,
                        "input_schema": tool.parameters,
                    })
                })
                .collect();
        }
        let url = format!("{}/v1/messages", self.settings.base_url);
        self.upstream
            .send(self.with_headers(self.upstream.client().post(url).json(&body)))
            .await
    }
}

/// The system prompt and the messages as the Messages API takes them. Only user and assistant
/// turns exist there: a system message of the history joins the system prompt; tool results are
/// `tool_result` blocks of a user turn; consecutive turns of one role become one turn of several
/// blocks, because a turn's tool results must all be in the very next user turn.
fn wire_messages(request: &ChatRequest) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<&str> = request.system.iter().map(String::as_str).collect();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let (role, blocks) = match (message.role, &message.answers) {
            (Role::System, _) => {
                system.push(&message.content);
                continue;
            }
            (_, Some(answer)) => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": answer.call_id,
                    "content": message.content,
                    "is_error": answer.is_error,
                })],
            ),
            (Role::Assistant, None) => {
                let mut blocks = Vec::with_capacity(message.tool_calls.len() + 1);
                if !message.content.is_empty() || message.tool_calls.is_empty() {
                    blocks.push(json!({"type": "text", "text": message.content}));
                }
                blocks.extend(message.tool_calls.iter().map(|call| {
                    let input = match &call.arguments {
                        object @ Value::Object(_) => object.clone(),
                        _ => json!({}),
                    };
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
                }));
                ("assistant", blocks)
            }
            (Role::User | Role::Tool, None) if message.images.is_empty() => (
                "user",
                vec![json!({"type": "text", "text": message.content})],
            ),
            (Role::User | Role::Tool, None) => ("user", content_blocks(message)),
        };
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, blocks)| match blocks.as_slice() {
            // A lone text block is sent as plain content, the common form.
            [block] if block["type"] == "text" => json!({"role": role, "content": block["text"]}),
            _ => json!({"role": role, "content": blocks}),
        })
        .collect();
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, messages)
}

/// A message's text and images as blocks, in order: `base64` sources from data URLs, `url`
/// sources from URLs (Anthropic fetches those itself). Anthropic has no `detail`.
fn content_blocks(message: &ChatMessage) -> Vec<Value> {
    message
        .parts()
        .map(|part| match part {
            MessagePart::Text(text) => json!({"type": "text", "text": text}),
            MessagePart::Image(image) => {
                let source = match &image.source {
                    ImageSource::Base64 { media_type, data } => {
                        json!({"type": "base64", "media_type": media_type, "data": data})
                    }
                    ImageSource::Url(url) => json!({"type": "url", "url": url}),
                };
                json!({"type": "image", "source": source})
            }
        })
        .collect()
}

/// Anthropic's `tool_choice`: `auto`, `any` (OpenAI's `required`), `tool` with a name, `none`;
/// `parallel_tool_calls: false` is its `disable_parallel_tool_use` (`auto` when no choice is
/// given, and never on `none`, which calls no tool at all).
fn tool_choice(options: &GenerationOptions) -> Option<Value> {
    let mut choice = match &options.tool_choice {
        None if options.parallel_tool_calls == Some(false) => json!({"type": "auto"}),
        None => return None,
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
    };
    if options.parallel_tool_calls == Some(false) {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Some(choice)
}

/// What the Messages API has no field for.
const UNSUPPORTED: &[&str] = &[
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "logprobs",
    "top_logprobs",
    "n",
];

/// Anthropic's temperature range: narrower than OpenAI's.
const MAX_TEMPERATURE: f64 = 1.0;

/// Most bytes of `input_json_delta` one streamed tool call may assemble.
const MAX_STREAMED_INPUT: usize = 4 * 1024 * 1024;

/// Models asked for per page of `GET /v1/models`: the most the API allows.
const MODELS_PER_PAGE: &str = "1000";
/// Most pages of models read: a server that always says `has_more` must not keep us listing.
const MAX_MODEL_PAGES: usize = 10;

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
    id: Option<String>,
    name: Option<String>,
    input: Option<Value>,
}

impl Block {
    /// A `tool_use` block as a call; `input` is that of the block unless given.
    fn tool_call(self, input: Option<Value>) -> ToolCall {
        ToolCall {
            id: self
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(super::new_call_id),
            name: self.name.unwrap_or_default(),
            arguments: input.or(self.input).unwrap_or_else(|| json!({})),
        }
    }
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
    index: Option<usize>,
    content_block: Option<Block>,
    message: Option<Message>,
    delta: Option<Delta>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<WireModel>,
    #[serde(default)]
    has_more: bool,
    /// The cursor of the next page (`after_id`).
    last_id: Option<String>,
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

    /// A temperature above Anthropic's range is refused whatever `drop_unsupported_params`
    /// says: it is a value the API has, out of its range, not an option it lacks.
    fn check_options(&self, options: &GenerationOptions) -> Result<(), BackendError> {
        if let Some(temperature) = options.temperature.filter(|t| *t > MAX_TEMPERATURE) {
            return Err(BackendError::CannotTake {
                backend: self.upstream.backend().to_owned(),
                message: format!(
                    "temperature must be from 0 to {MAX_TEMPERATURE} on Anthropic's API, got \
                     {temperature}"
                ),
            });
        }
        Unsupported {
            backend: self.upstream.backend(),
            drop: self.drop_unsupported,
        }
        .refuse(&options.asked(), UNSUPPORTED)
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError> {
        let response = self.post_messages(&request, false).await?;
        let body: Value = self.upstream.json(response).await?;
        if let Some(message) = body
            .get("type")
            .filter(|kind| *kind == "error")
            .and_then(|_| error_message(&body))
        {
            return Err(BackendError::Failed {
                backend: self.upstream.backend().to_owned(),
                message,
            });
        }
        // Anything else without content blocks is not a message (a proxy's JSON, say): it must
        // not pass for an empty answer.
        if !body.get("content").is_some_and(Value::is_array) {
            return Err(self
                .upstream
                .invalid("no content blocks in the answer".to_owned()));
        }
        let message: Message =
            serde_json::from_value(body).map_err(|err| self.upstream.invalid(err.to_string()))?;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for block in message.content {
            match block.kind.as_str() {
                "text" => content.push_str(block.text.as_deref().unwrap_or_default()),
                "tool_use" => tool_calls.push(block.tool_call(None)),
                _ => {}
            }
        }
        Ok(ChatReply {
            tool_calls,
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
        // The tool_use block being streamed: its start, and its input so far.
        let mut open_call: Option<(usize, Block, String)> = None;
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
                "content_block_start" => {
                    if let Some(block) = parsed.content_block
                        && block.kind == "tool_use"
                    {
                        open_call = Some((parsed.index.unwrap_or_default(), block, String::new()));
                    }
                    Ok(None)
                }
                "content_block_delta" => {
                    let Some(delta) = parsed.delta else {
                        return Ok(None);
                    };
                    match delta.kind.as_deref() {
                        Some("text_delta") => Ok(delta
                            .text
                            .filter(|text| !text.is_empty())
                            .map(ChatEvent::Delta)),
                        Some("input_json_delta") => {
                            if let (Some((_, _, input)), Some(piece)) =
                                (open_call.as_mut(), delta.partial_json)
                            {
                                input.push_str(&piece);
                                if input.len() > MAX_STREAMED_INPUT {
                                    return Err(upstream.invalid(format!(
                                        "tool input over {MAX_STREAMED_INPUT} bytes"
                                    )));
                                }
                            }
                            Ok(None)
                        }
                        _ => Ok(None),
                    }
                }
                "content_block_stop" => {
                    let stops_call = matches!(
                        (&open_call, parsed.index),
                        (Some((open, _, _)), Some(index)) if *open == index
                    ) || (open_call.is_some() && parsed.index.is_none());
                    if !stops_call {
                        return Ok(None);
                    }
                    Ok(open_call.take().map(|(_, block, input)| {
                        // `input` streams as JSON text; the start block's own `input` is `{}`.
                        let input =
                            (!input.trim().is_empty()).then(|| ToolCall::parse_arguments(&input));
                        ChatEvent::ToolCall(block.tool_call(input))
                    }))
                }
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
                // ping, and event types added after this was written.
                _ => Ok(None),
            }
        });
        let events = events.filter_map(|result| futures_util::future::ready(result.transpose()));
        Ok(super::until_done(events, self.upstream.cut_off()))
    }

    /// Every page of the list, following `has_more` with `after_id`; stops early (keeping what
    /// it read) at an empty page, a cursor that does not move, or [`MAX_MODEL_PAGES`].
    async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let first_page = format!("{}/v1/models", self.settings.base_url);
        let mut url =
            reqwest::Url::parse(&first_page).map_err(|err| BackendError::Unreachable {
                backend: self.upstream.backend().to_owned(),
                message: format!("bad URL {first_page}: {err}"),
            })?;
        let mut models = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_MODEL_PAGES {
            {
                let mut query = url.query_pairs_mut();
                query.clear().append_pair("limit", MODELS_PER_PAGE);
                if let Some(after) = &after {
                    query.append_pair("after_id", after);
                }
            }
            let response = self
                .upstream
                .send(self.with_headers(self.upstream.client().get(url.clone())))
                .await?;
            let page: ModelList = self.upstream.json(response).await?;
            let next = page.last_id.filter(|last| {
                page.has_more && !page.data.is_empty() && after.as_ref() != Some(last)
            });
            models.extend(page.data.into_iter().map(|model| ModelInfo {
                display_name: model.display_name.unwrap_or_else(|| model.id.clone()),
                name: model.id,
                size_mb: None,
                digest: None,
            }));
            match next {
                Some(last) => after = Some(last),
                None => return Ok(models),
            }
        }
        tracing::warn!(
            backend = self.upstream.backend(),
            pages = MAX_MODEL_PAGES,
            "the model list has more pages than are read; the rest is left out"
        );
        Ok(models)
    }
}
