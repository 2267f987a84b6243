//! Ollama's wire format: `/api/chat` answers as one JSON object, or streamed as NDJSON lines
//! whose last one carries the counts; `/api/tags` and `/api/version`; errors as `{"error"}`.

use axum::http::Method;
use serde_json::{Value, json};

use super::FakeToolCall;
use super::answer::Reply;
use super::text::now_rfc3339;

/// The non-streamed answer.
pub(super) fn complete(reply: &Reply, text: &str) -> Value {
    let (model, prompt, completion) = (reply.model, reply.prompt_tokens, reply.completion_tokens);
    json!({
        "model": model, "created_at": now_rfc3339(),
        "message": {"role": "assistant", "content": text},
        "done_reason": "stop", "done": true,
        "total_duration": 123_456, "load_duration": 1000,
        "prompt_eval_count": prompt, "prompt_eval_duration": 1000,
        "eval_count": completion, "eval_duration": 1000,
    })
}

/// The streamed answer's lines, one per text chunk, then the closing one.
pub(super) fn stream(reply: &Reply, chunks: &[String]) -> Vec<String> {
    let model = reply.model;
    let line = |value: Value| format!("{value}\n");
    let created_at = now_rfc3339();
    let mut frames: Vec<String> = chunks
        .iter()
        .map(|chunk| {
            line(json!({
                "model": model, "created_at": created_at,
                "message": {"role": "assistant", "content": chunk}, "done": false,
            }))
        })
        .collect();
    // The last line is the non-streamed answer with empty content.
    frames.push(line(complete(reply, "")));
    frames
}

/// A non-streamed answer holding tool calls.
pub(super) fn tool_calls(reply: &Reply, text: &str, calls: &[FakeToolCall]) -> Value {
    tool_message(reply.model, text, calls, true)
}

/// A streamed answer holding tool calls: the text, then the calls whole in one line.
pub(super) fn tool_calls_stream(reply: &Reply, text: &str, calls: &[FakeToolCall]) -> Vec<String> {
    let (model, prompt, completion) = (reply.model, reply.prompt_tokens, reply.completion_tokens);
    let mut frames = Vec::new();
    if !text.is_empty() {
        frames.push(json!({"model": model, "created_at": now_rfc3339(),
            "message": {"role": "assistant", "content": text}, "done": false}));
    }
    frames.push(tool_message(model, "", calls, false));
    frames.push(json!({"model": model, "created_at": now_rfc3339(),
        "message": {"role": "assistant", "content": ""}, "done": true,
        "done_reason": "stop", "prompt_eval_count": prompt, "eval_count": completion}));
    frames.iter().map(|f| format!("{f}\n")).collect()
}

fn tool_message(model: &str, text: &str, calls: &[FakeToolCall], done: bool) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(index, c)| json!({"id": c.id, "function": {"index": index, "name": c.name, "arguments": c.arguments}}))
        .collect();
    let mut message = json!({"model": model, "created_at": now_rfc3339(),
        "message": {"role": "assistant", "content": text, "tool_calls": tool_calls}, "done": done});
    if done {
        message["done_reason"] = json!("stop");
        message["prompt_eval_count"] = json!(1);
        message["eval_count"] = json!(7);
    }
    message
}

/// The error body for any status.
pub(super) fn error_body(message: &str) -> Value {
    json!({"error": message})
}

pub(super) const RATE_LIMIT_MESSAGE: &str = "too many requests, please retry later";

pub(super) fn not_found_message(_method: &Method, _path: &str) -> String {
    "404 page not found".to_owned()
}

pub(super) fn version() -> Value {
    json!({"version": "0.12.0"})
}

pub(super) fn tags(models: &[String]) -> Value {
    let models: Vec<Value> = models
        .iter()
        .map(|name| {
            json!({
                "name": name, "model": name, "modified_at": "2026-11-01T10:00:00Z",
                "size": 3_825_819_519_u64,
                "digest": "365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1",
                "details": {
                    "format": "gguf", "family": "llama",
                    "parameter_size": "8B", "quantization_level": "Q4_0",
                },
            })
        })
        .collect();
    json!({"models": models})
}

/// Refuses what Ollama refuses about tools, with its 400.
pub(super) fn validate(body: &Value) -> Result<(), String> {
    let empty = Vec::new();
    let messages = body["messages"].as_array().unwrap_or(&empty);
    for message in messages {
        for call in message["tool_calls"].as_array().unwrap_or(&empty) {
            if !call["function"]["arguments"].is_object() {
                return Err("json: cannot unmarshal string into Go struct field .messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments".to_owned());
            }
        }
    }
    Ok(())
}
