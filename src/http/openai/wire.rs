//! OpenAI's chat completion shapes: the request as clients send it, translated to a
//! [`CompletionRequest`], and the answer as a `chat.completion` or as `chat.completion.chunk`
//! events. Unknown request fields are accepted and ignored, as many OpenAI-compatible servers
//! do.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::content;
use crate::backends::options::MAX_TOKENS;
use crate::backends::{
    ChatMessage, GenerationOptions, ResponseFormat, Role, StopSequences, ToolAnswer, ToolCall,
    ToolChoice, ToolSpec, Usage,
};
use crate::chat::completion::{
    CompletionAnswer, CompletionError, CompletionEvent, CompletionRequest, CompletionStream,
    CompletionTarget,
};
use crate::store::Message;

/// `POST /v1/chat/completions`. Fields lit-mux has no use for are accepted and ignored, as many
/// OpenAI-compatible servers do; the sampling and generation options reach the backend, checked
/// against OpenAI's ranges and against what the backend's API can honour.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub tools: Option<Vec<InTool>>,
    /// lit-mux's extension: append the exchange to this session.
    pub session_id: Option<String>,
    /// lit-mux's extensions: `{"use_tools": true}` runs lit-mux's own MCP tool loop.
    #[serde(default)]
    pub lit_mux: LitMuxOptions,
    // The options are fields of their own: `flatten` would buffer the messages.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub max_completion_tokens: Option<u64>,
    pub stop: Option<StopSequences>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub response_format: Option<ResponseFormat>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub user: Option<String>,
    pub logprobs: Option<bool>,
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub top_logprobs: Option<u64>,
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub n: Option<u64>,
}

impl ChatCompletionRequest {
    /// The generation options, taken out of the request; their ranges are the chat service's
    /// to check.
    fn take_options(&mut self) -> Result<GenerationOptions, CompletionError> {
        let bounds = [
            ("max_tokens", self.max_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
        ];
        for (field, value) in bounds {
            if let Some(value) = value.filter(|v| !(1..=MAX_TOKENS).contains(v)) {
                return Err(invalid(
                    field,
                    format!("{field} must be from 1 to {MAX_TOKENS}, got {value}"),
                ));
            }
        }
        // The same bound under its old and new name: two different values are a client's
        // mistake that no choice between them would fix silently.
        let max_tokens = match (self.max_tokens, self.max_completion_tokens) {
            (Some(old), Some(new)) if old != new => {
                return Err(CompletionError::Invalid(format!(
                    "max_tokens ({old}) and max_completion_tokens ({new}) are the same bound; \
                     send one of them"
                )));
            }
            (old, new) => new.or(old),
        };
        // Counts beyond u32 are out of range all the same: the check names the range.
        let count = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
        Ok(GenerationOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens,
            stop: self.stop.take(),
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            response_format: self.response_format.take(),
            tool_choice: self.tool_choice.take(),
            parallel_tool_calls: self.parallel_tool_calls,
            user: self.user.take(),
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs.map(count),
            n: self.n.map(count),
        })
    }
}

/// A value of the request's `field` that cannot work.
fn invalid(field: &str, message: String) -> CompletionError {
    CompletionError::InvalidField {
        field: field.to_owned(),
        message,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LitMuxOptions {
    #[serde(default)]
    pub use_tools: bool,
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub max_tool_iterations: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Vec<InToolCall>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// Text, or content parts: text and images ([`content`]).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Debug, Deserialize)]
pub struct InToolCall {
    pub id: String,
    pub function: InFunction,
}

#[derive(Debug, Deserialize)]
pub struct InFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct InTool {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: InToolFunction,
}

#[derive(Debug, Deserialize)]
pub struct InToolFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

impl ChatCompletionRequest {
    /// The request in lit-mux's terms, checking what OpenAI would refuse too. Called once the
    /// model is found, so that an unknown model is reported first.
    pub fn into_completion(mut self) -> Result<CompletionRequest, CompletionError> {
        let options = self.take_options()?;
        let mcp_tool_rounds = if self.lit_mux.use_tools {
            if self.tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
                return Err(invalid(
                    "tools",
                    "send either tools (the client runs them) or lit_mux.use_tools (lit-mux runs \
                     its MCP tools), not both"
                        .to_owned(),
                ));
            }
            Some(
                crate::chat::tools::max_iterations(self.lit_mux.max_tool_iterations)
                    .map_err(|err| invalid("lit_mux", err.to_string()))?,
            )
        } else {
            None
        };
        let (system, messages) = conversation(self.messages)?;
        let tools = self
            .tools
            .unwrap_or_default()
            .into_iter()
            .map(|tool| {
                if let Some(kind) = tool.kind.as_deref().filter(|kind| *kind != "function") {
                    return Err(invalid(
                        "tools",
                        format!(
                            "tool {} has type \"{kind}\"; only function tools are supported",
                            tool.function.name
                        ),
                    ));
                }
                Ok(ToolSpec {
                    name: tool.function.name,
                    description: tool.function.description.unwrap_or_default(),
                    parameters: tool
                        .function
                        .parameters
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompletionRequest {
            system,
            messages,
            tools,
            session_id: self.session_id,
            mcp_tool_rounds,
            options,
        })
    }
}

/// The client's messages as lit-mux's: leading system (and developer) messages become the
/// system prompt, tool messages answer the call of the same id.
pub(crate) fn conversation(
    messages: Vec<InMessage>,
) -> Result<(Option<String>, Vec<ChatMessage>), CompletionError> {
    let mut system = Vec::new();
    let mut turns: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let content::Parts { text, images } = match message.content {
            None => content::Parts::default(),
            Some(Content::Text(text)) => content::Parts {
                text,
                images: Vec::new(),
            },
            Some(Content::Parts(parts)) => content::parts(index, parts)?,
        };
        if !images.is_empty() && message.role != "user" {
            return Err(CompletionError::Invalid(format!(
                "messages[{index}]: images are accepted in user messages only"
            )));
        }
        let role = match message.role.as_str() {
            "system" | "developer" if turns.is_empty() => {
                system.push(text);
                continue;
            }
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(invalid(
                    "messages",
                    format!(
                        "messages[{index}].role: \"{other}\" is not one of system, developer, \
                         user, assistant, tool"
                    ),
                ));
            }
        };
        let mut turn = ChatMessage::text(role, text);
        turn.images = images;
        if role == Role::Assistant {
            turn.tool_calls = message
                .tool_calls
                .into_iter()
                .map(|call| ToolCall {
                    id: call.id,
                    name: call.function.name,
                    arguments: ToolCall::parse_arguments(
                        call.function.arguments.as_deref().unwrap_or(""),
                    ),
                })
                .collect();
        }
        if role == Role::Tool {
            let Some(call_id) = message.tool_call_id else {
                return Err(invalid(
                    "messages",
                    format!("messages[{index}]: a tool message needs tool_call_id"),
                ));
            };
            let name = turns
                .iter()
                .flat_map(|t| &t.tool_calls)
                .find(|call| call.id == call_id)
                .map(|call| call.name.clone())
                .or(message.name)
                .unwrap_or_default();
            turn.answers = Some(ToolAnswer {
                call_id,
                name,
                is_error: false,
            });
        }
        turns.push(turn);
    }
    if turns.is_empty() {
        return Err(invalid(
            "messages",
            "messages must hold at least one user message".to_owned(),
        ));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, turns))
}

/// OpenAI's `finish_reason` for a backend's.
fn finish_reason(reason: Option<&str>, called_tools: bool) -> &'static str {
    if called_tools {
        return "tool_calls";
    }
    match reason {
        Some("length" | "max_tokens") => "length",
        Some("content_filter" | "refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.input_tokens.unwrap_or(0);
    let completion = usage.output_tokens.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn tool_calls_json(calls: &[ToolCall], streamed: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let mut wire = json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_text()},
            });
            if streamed {
                wire["index"] = json!(index);
            }
            wire
        })
        .collect()
}

/// What every chunk of a completion names.
pub struct CompletionHead {
    id: String,
    created: u64,
    backend_name: String,
    requested_model: String,
    include_usage: bool,
}

impl CompletionHead {
    /// A fresh completion id, created now.
    pub fn new(target: &CompletionTarget, include_usage: bool) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            backend_name: target.backend_name().to_owned(),
            requested_model: target.model().to_owned(),
            include_usage,
        }
    }

    /// A chunk naming `model` as is.
    fn chunk(&self, model: &str, delta: Value, finish: Option<&str>) -> Value {
        chunk_json(
            &self.id,
            self.created,
            &self.backend_name,
            model,
            delta,
            finish,
        )
    }

    /// A chunk; `model` empty means the model asked for (the answer names the one used).
    fn chunk_or_requested(&self, model: &str, delta: Value, finish: Option<&str>) -> Value {
        let model = if model.is_empty() {
            &self.requested_model
        } else {
            model
        };
        self.chunk(model, delta, finish)
    }

    /// The complete answer as a `chat.completion`.
    pub fn completion(&self, answer: CompletionAnswer) -> Value {
        match answer {
            CompletionAnswer::Reply(reply) => {
                let mut message = json!({"role": "assistant", "content": reply.content});
                if !reply.tool_calls.is_empty() {
                    message["tool_calls"] = tool_calls_json(&reply.tool_calls, false);
                    if reply.content.is_empty() {
                        message["content"] = Value::Null;
                    }
                }
                let mut body = json!({
                    "id": self.id,
                    "object": "chat.completion",
                    "created": self.created,
                    "model": format!("{}/{}", self.backend_name, reply.model),
                    "choices": [{
                        "index": 0,
                        "message": message,
                        "finish_reason": finish_reason(
                            reply.finish_reason.as_deref(),
                            !reply.tool_calls.is_empty(),
                        ),
                        "logprobs": null,
                    }],
                });
                if let Some(usage) = &reply.usage {
                    body["usage"] = usage_json(usage);
                }
                body
            }
            CompletionAnswer::ToolLoop(answer) => {
                let usage = stored_usage(&answer);
                let model = answer.model.clone().unwrap_or_default();
                let mut body = json!({
                    "id": self.id,
                    "object": "chat.completion",
                    "created": self.created,
                    "model": format!("{}/{model}", self.backend_name),
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.content},
                        "finish_reason": finish_reason(
                            answer.metadata.get("finish_reason").and_then(Value::as_str),
                            false,
                        ),
                        "logprobs": null,
                    }],
                    "lit_mux": lit_mux_summary(&answer),
                });
                if let Some(usage) = usage {
                    body["usage"] = usage_json(&usage);
                }
                body
            }
        }
    }

    /// The events as `chat.completion.chunk`s, the first preceded by the assistant's role.
    pub fn chunks(self, events: CompletionStream) -> BoxStream<'static, Value> {
        let mut sent_role = false;
        events
            .flat_map(move |event| {
                let mut chunks = Vec::new();
                if !sent_role {
                    sent_role = true;
                    chunks.push(self.chunk(
                        &self.requested_model,
                        json!({"role": "assistant", "content": ""}),
                        None,
                    ));
                }
                self.push_chunks(event, &mut chunks);
                futures_util::stream::iter(chunks)
            })
            .boxed()
    }

    fn push_chunks(&self, event: CompletionEvent, chunks: &mut Vec<Value>) {
        match event {
            CompletionEvent::Delta(text) => {
                chunks.push(self.chunk(&self.requested_model, json!({"content": text}), None));
            }
            CompletionEvent::ToolCall { index, call } => {
                let mut wire = tool_calls_json(std::slice::from_ref(&call), true);
                wire[0]["index"] = json!(index);
                chunks.push(self.chunk(&self.requested_model, json!({"tool_calls": wire}), None));
            }
            // The tool steps are lit-mux's business: the client sees the answers.
            CompletionEvent::ToolStep => {}
            CompletionEvent::Done {
                model,
                usage,
                finish_reason: reason,
                called_tools,
            } => {
                let finish = finish_reason(reason.as_deref(), called_tools);
                chunks.push(self.chunk(&model, json!({}), Some(finish)));
                if self.include_usage
                    && let Some(usage) = &usage
                {
                    let mut last = self.chunk(&model, json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = usage_json(usage);
                    chunks.push(last);
                }
            }
            CompletionEvent::ToolLoopDone(answer) => {
                let model = answer.model.clone().unwrap_or_default();
                let finish = finish_reason(
                    answer.metadata.get("finish_reason").and_then(Value::as_str),
                    false,
                );
                let mut last = self.chunk_or_requested(&model, json!({}), Some(finish));
                last["lit_mux"] = lit_mux_summary(&answer);
                chunks.push(last);
                if self.include_usage
                    && let Some(usage) = stored_usage(&answer)
                {
                    let mut usage_chunk = self.chunk_or_requested(&model, json!({}), None);
                    usage_chunk["choices"] = json!([]);
                    usage_chunk["usage"] = usage_json(&usage);
                    chunks.push(usage_chunk);
                }
            }
            CompletionEvent::Error(message) => chunks.push(error_chunk(&message, "api_error")),
            CompletionEvent::Interrupted(why) => chunks.push(json!({"error": {
                "message": why.to_string(),
                "type": "server_error",
                "code": why.code(),
            }})),
        }
    }
}

fn chunk_json(
    id: &str,
    created: u64,
    backend: &str,
    model: &str,
    delta: Value,
    finish: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": format!("{backend}/{model}"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

/// The usage recorded in an answer's metadata.
fn stored_usage(answer: &Message) -> Option<Usage> {
    serde_json::from_value(answer.metadata.get("usage")?.clone()).ok()
}

/// What lit-mux's loop did, for clients that care (`tool_iterations`, and whether the limit
/// was reached).
fn lit_mux_summary(answer: &Message) -> Value {
    json!({
        "tool_iterations": answer.metadata.get("tool_iterations").cloned().unwrap_or(json!(0)),
        "max_tool_iterations_reached": answer
            .metadata
            .get("max_tool_iterations_reached")
            .cloned()
            .unwrap_or(json!(false)),
    })
}

/// An error inside a stream, the way OpenAI sends one.
fn error_chunk(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": null}})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message(role: &str, content: Value) -> InMessage {
        serde_json::from_value(json!({"role": role, "content": content})).unwrap()
    }

    #[test]
    fn system_messages_lead_and_tool_results_answer_their_call() {
        let messages: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":2}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
        ]))
        .unwrap();
        let (system, turns) = conversation(messages).unwrap();
        assert_eq!(system.as_deref(), Some("be brief"));
        assert_eq!(turns[0].content, "what is 2+2?");
        assert_eq!(turns[1].tool_calls[0].arguments, json!({"a": 2, "b": 2}));
        let answer = turns[2].answers.as_ref().unwrap();
        assert_eq!(
            (answer.call_id.as_str(), answer.name.as_str()),
            ("c1", "add")
        );
    }

    #[test]
    fn images_roles_and_empty_conversations_are_refused() {
        let image = message(
            "user",
            json!([{"type": "image_url", "image_url": {"url": "x"}}]),
        );
        assert!(matches!(
            conversation(vec![image]),
            Err(CompletionError::InvalidField { .. })
        ));
        assert!(matches!(
            conversation(vec![message("wizard", json!("hi"))]),
            Err(CompletionError::InvalidField { .. })
        ));
        assert!(matches!(
            conversation(vec![message("system", json!("only"))]),
            Err(CompletionError::InvalidField { .. })
        ));
    }

    #[test]
    fn finish_reasons_use_openai_names() {
        assert_eq!(finish_reason(Some("end_turn"), false), "stop");
        assert_eq!(finish_reason(Some("max_tokens"), false), "length");
        assert_eq!(finish_reason(Some("tool_use"), true), "tool_calls");
    }
}
