//! OpenAI's wire format: `/v1/chat/completions` answers as a `chat.completion`, or streamed as
//! `chat.completion.chunk` events ending with `[DONE]` (tool-call arguments in several pieces);
//! `/v1/models`; errors as `{"error": {message, type, param, code}}`.

use axum::http::Method;
use serde_json::{Value, json};

use super::FakeToolCall;
use super::answer::Reply;
use super::text::{is_valid_tool_name, pieces, unix_now};

fn usage(reply: &Reply) -> Value {
    json!({
        "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    })
}

/// The non-streamed answer.
pub(super) fn complete(reply: &Reply, text: &str) -> Value {
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": unix_now(),
        "model": reply.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null, "finish_reason": "stop",
        }],
        "usage": usage(reply),
        "system_fingerprint": "fp_fake",
    })
}

/// The streamed answer's body chunks: the role's event goes with the first text chunk, each
/// further text chunk is its own body chunk, then the finish, the usage when asked, `[DONE]`.
pub(super) fn stream(reply: &Reply, chunks: &[String], include_usage: bool) -> Vec<String> {
    let model = reply.model;
    let created = unix_now();
    let event = |choices: Value, usage: Option<Value>| {
        let mut chunk = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": created, "model": model, "system_fingerprint": "fp_fake",
            "choices": choices,
        });
        // With include_usage every chunk carries `usage`, null but in the last one.
        if include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        format!("data: {chunk}\n\n")
    };
    let choice = |delta: Value, finish_reason: Value| {
        json!([{
            "index": 0, "delta": delta, "logprobs": null,
            "finish_reason": finish_reason,
        }])
    };
    let mut frames: Vec<String> = chunks
        .iter()
        .map(|chunk| event(choice(json!({"content": chunk}), Value::Null), None))
        .collect();
    frames[0].insert_str(
        0,
        &event(
            choice(json!({"role": "assistant", "content": ""}), Value::Null),
            None,
        ),
    );
    let mut ending = event(choice(json!({}), json!("stop")), None);
    if include_usage {
        ending += &event(json!([]), Some(usage(reply)));
    }
    ending += "data: [DONE]\n\n";
    frames.push(ending);
    frames
}

/// A non-streamed answer holding tool calls, their arguments as JSON strings.
pub(super) fn tool_calls(reply: &Reply, text: &str, calls: &[FakeToolCall]) -> Value {
    let (prompt, completion) = (reply.prompt_tokens, reply.completion_tokens);
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({"id": c.id, "type": "function",
            "function": {"name": c.name, "arguments": c.arguments.to_string()}})
        })
        .collect();
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": unix_now(),
        "model": reply.model,
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
            "message": {"role": "assistant",
                "content": if text.is_empty() { Value::Null } else { json!(text) },
                "tool_calls": tool_calls, "refusal": null}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    })
}

/// A streamed answer holding tool calls: each call's opening piece, then its arguments string
/// in pieces of 5 characters.
pub(super) fn tool_calls_stream(
    reply: &Reply,
    text: &str,
    calls: &[FakeToolCall],
    include_usage: bool,
) -> Vec<String> {
    let (model, prompt, completion) = (reply.model, reply.prompt_tokens, reply.completion_tokens);
    let created = unix_now();
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": created, "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }}),
        Value::Null,
    )];
    for (index, call) in calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in pieces(&call.arguments.to_string(), 5) {
            frames.push(chunk(
                json!({"tool_calls": [{"index": index,
                "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    let mut ending = chunk(json!({}), json!("tool_calls"));
    if include_usage {
        let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": created, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}});
        ending += &format!("data: {usage}\n\n");
    }
    ending += "data: [DONE]\n\n";
    frames.push(ending);
    frames
}

/// The error body for `status`.
pub(super) fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        429 => ("requests", json!("rate_limit_exceeded")),
        500.. => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

pub(super) const RATE_LIMIT_MESSAGE: &str =
    "Rate limit reached for requests. Please try again later.";

pub(super) fn not_found_message(method: &Method, path: &str) -> String {
    format!("Invalid URL ({method} {path})")
}

pub(super) fn models(models: &[String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}),
        )
        .collect();
    json!({"object": "list", "data": data})
}

/// Refuses what OpenAI refuses about tools, with its 400: a bad tool name, a result without its
/// call, a call without its result, arguments that are not a string.
pub(super) fn validate(body: &Value) -> Result<(), String> {
    let empty = Vec::new();
    let messages = body["messages"].as_array().unwrap_or(&empty);
    let tools = body["tools"].as_array().unwrap_or(&empty);
    for tool in tools {
        let name = tool["function"]["name"].as_str().unwrap_or("");
        if !is_valid_tool_name(name, 64) {
            return Err(format!(
                "Invalid 'tools[].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'. Got {name:?}"
            ));
        }
    }
    let mut open: Vec<String> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        if message["role"] == "tool" {
            let id = message["tool_call_id"].as_str().unwrap_or("");
            let Some(position) = open.iter().position(|o| o == id) else {
                return Err(format!(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'. (messages[{at}], tool_call_id {id:?})"
                ));
            };
            open.remove(position);
            continue;
        }
        if !open.is_empty() {
            return Err(format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                open.join(", ")
            ));
        }
        if let Some(calls) = message["tool_calls"].as_array() {
            for call in calls {
                if !call["function"]["arguments"].is_string() {
                    return Err(format!(
                        "messages[{at}].tool_calls[].function.arguments must be a string"
                    ));
                }
                open.push(call["id"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    if !open.is_empty() {
        return Err(format!(
            "The following tool_call_ids did not have response messages: {}",
            open.join(", ")
        ));
    }
    Ok(())
}
