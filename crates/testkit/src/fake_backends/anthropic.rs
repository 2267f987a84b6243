//! Anthropic's wire format: `/v1/messages` answers as a `message` with content blocks, or
//! streamed as named events (`message_start` … `message_stop`, tool input as
//! `input_json_delta` pieces); `/v1/models` paged by `limit` and `after_id`; errors as
//! `{"type": "error", "error": {type, message}}`.

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Value, json};

use super::FakeToolCall;
use super::answer::Reply;
use super::text::{is_valid_tool_name, pieces};

/// The largest `limit` Anthropic's model list takes (its default is 20).
pub(super) const MAX_LIMIT: usize = 1000;

/// One named event.
fn event(value: Value) -> String {
    let name = value["type"].as_str().unwrap_or_default().to_owned();
    format!("event: {name}\ndata: {value}\n\n")
}

/// The non-streamed answer.
pub(super) fn complete(reply: &Reply, text: &str) -> Value {
    json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": reply.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    })
}

/// The streamed answer's body chunks: the preamble goes with the first text chunk, each
/// further text chunk is its own body chunk, then the ending.
pub(super) fn stream(reply: &Reply, chunks: &[String]) -> Vec<String> {
    let (model, prompt, completion) = (reply.model, reply.prompt_tokens, reply.completion_tokens);
    let mut frames: Vec<String> = chunks
        .iter()
        .map(|chunk| {
            event(json!({
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": chunk},
            }))
        })
        .collect();
    let preamble = [
        json!({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }}),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    frames[0].insert_str(0, &preamble.map(event).concat());
    frames.push(
        [
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": completion}}),
            json!({"type": "message_stop"}),
        ]
        .map(event)
        .concat(),
    );
    frames
}

/// A non-streamed answer holding `tool_use` blocks (after a text block, if any).
pub(super) fn tool_calls(reply: &Reply, text: &str, calls: &[FakeToolCall]) -> Value {
    let (model, prompt, completion) = (reply.model, reply.prompt_tokens, reply.completion_tokens);
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    content.extend(
        calls
            .iter()
            .map(|c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})),
    );
    json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    })
}

/// A streamed answer holding `tool_use` blocks, their input in pieces of 5 characters.
pub(super) fn tool_calls_stream(reply: &Reply, text: &str, calls: &[FakeToolCall]) -> Vec<String> {
    let (model, prompt, completion) = (reply.model, reply.prompt_tokens, reply.completion_tokens);
    let mut frames = vec![event(json!({"type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": prompt, "output_tokens": 1}}}))];
    let mut index = 0;
    if !text.is_empty() {
        frames.push(event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        frames.push(event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})));
        frames.push(event(json!({"type": "content_block_stop", "index": 0})));
        index = 1;
    }
    for call in calls {
        frames.push(event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}})));
        for piece in pieces(&call.arguments.to_string(), 5) {
            frames.push(event(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}})));
        }
        frames.push(event(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    frames.push(event(json!({"type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": null},
        "usage": {"output_tokens": completion}})));
    frames.push(event(json!({"type": "message_stop"})));
    frames
}

/// The error body for `status`.
pub(super) fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

pub(super) const RATE_LIMIT_MESSAGE: &str =
    "Number of requests has exceeded your rate limit. Please try again later.";

pub(super) fn not_found_message(_method: &Method, _path: &str) -> String {
    "Not Found".to_owned()
}

/// One page of Anthropic's model list as the API pages it: `limit` models (1 to 1000, default
/// 20; at most `page_size`) after the model `after_id` names (an unknown one: an empty page).
pub(super) fn models(
    models: &[String],
    query: &BTreeMap<String, String>,
    page_size: usize,
) -> Result<Value, String> {
    let limit = match query.get("limit") {
        None => 20,
        Some(raw) => match raw.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => return Err(format!("limit: must be between 1 and 1000, got {raw:?}")),
        },
    };
    let start = match query.get("after_id") {
        None => 0,
        Some(after) => models
            .iter()
            .position(|id| id == after)
            .map_or(models.len(), |at| at + 1),
    };
    let end = models.len().min(start + limit.min(page_size));
    let page = &models[start..end];
    let data: Vec<Value> = page
        .iter()
        .map(|id| {
            json!({
                "type": "model", "id": id, "display_name": display_name(id),
                "created_at": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    Ok(json!({
        "data": data, "has_more": end < models.len(),
        "first_id": page.first(), "last_id": page.last(),
    }))
}

/// `fake-model` → `Fake Model`.
fn display_name(id: &str) -> String {
    id.split('-')
        .map(|word| {
            let mut letters = word.chars();
            letters
                .next()
                .map(|first| first.to_uppercase().chain(letters).collect())
                .unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// Refuses what Anthropic refuses about tools, with its 400: a bad tool name, roles that do
/// not alternate, tool blocks without tools, a `tool_use` not answered by the next message's
/// `tool_result`, a `tool_result` without its `tool_use`.
pub(super) fn validate(body: &Value) -> Result<(), String> {
    let empty = Vec::new();
    let messages = body["messages"].as_array().unwrap_or(&empty);
    let tools = body["tools"].as_array().unwrap_or(&empty);
    for tool in tools {
        let name = tool["name"].as_str().unwrap_or("");
        if !is_valid_tool_name(name, 128) {
            return Err(format!(
                "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$' (got {name:?})"
            ));
        }
    }
    let mut expected_role = "user";
    let mut pending: Vec<String> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        if role != expected_role {
            return Err(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\" (messages.{at} is {role:?})"
            ));
        }
        let blocks = message["content"].as_array().cloned().unwrap_or_default();
        let results: Vec<String> = blocks
            .iter()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| b["tool_use_id"].as_str().unwrap_or("").to_owned())
            .collect();
        let uses: Vec<String> = blocks
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| b["id"].as_str().unwrap_or("").to_owned())
            .collect();
        if (!results.is_empty() || !uses.is_empty()) && tools.is_empty() {
            return Err(
                "Requests which include `tool_use` or `tool_result` blocks must define tools."
                    .to_owned(),
            );
        }
        for id in &results {
            if !pending.contains(id) {
                return Err(format!(
                    "messages.{at}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
        if let Some(missing) = pending.iter().find(|id| !results.contains(id)) {
            return Err(format!(
                "messages.{at}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"
            ));
        }
        pending = uses;
        expected_role = if role == "user" { "assistant" } else { "user" };
    }
    Ok(())
}
