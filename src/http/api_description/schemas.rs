//! The shapes the API description keeps as JSON rather than Rust types: OpenAI's chat
//! completion wire and the generation options (one schema for `/v1` and sessions), the events of
//! every event stream, a broadcast's answer.

use serde_json::{Map, Value, json};

use super::{json_data, named_event, schema_ref};

/// The generation options' schemas, as `backends::options` reads and bounds them.
pub(super) fn generation_options() -> Map<String, Value> {
    use crate::backends::options::{
        MAX_NAME_CHARS, MAX_STOP_CHARS, MAX_STOP_SEQUENCES, MAX_TOKENS, MAX_TOP_LOGPROBS,
        MAX_USER_CHARS,
    };
    let stop_sequence = json!({"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS});
    let tokens = json!({"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS});
    let options = json!({
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2,
            "description": "0 to 2 (0 to 1 on Anthropic)"},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "max_tokens": tokens,
        "max_completion_tokens": tokens,
        "stop": {"anyOf": [
            stop_sequence,
            {"type": "array", "items": stop_sequence, "maxItems": MAX_STOP_SEQUENCES},
            {"type": "null"},
        ]},
        "seed": {"type": ["integer", "null"]},
        "response_format": {"anyOf": [
            {
                "type": "object",
                "required": ["type"],
                "additionalProperties": false,
                "properties": {"type": {"enum": ["text", "json_object"]}},
            },
            {
                "type": "object",
                "required": ["type", "json_schema"],
                "additionalProperties": false,
                "properties": {
                    "type": {"const": "json_schema"},
                    "json_schema": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": false,
                        "properties": {
                            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                            "description": {"type": ["string", "null"]},
                            "schema": {"type": ["object", "null"]},
                            "strict": {"type": ["boolean", "null"]},
                        },
                    },
                },
            },
            {"type": "null"},
        ]},
        "tool_choice": {"anyOf": [
            {"enum": ["none", "auto", "required"]},
            {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {
                            "type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS,
                        }},
                    },
                },
            },
            {"type": "null"},
        ]},
        "parallel_tool_calls": {"type": ["boolean", "null"]},
        "user": {"type": ["string", "null"], "maxLength": MAX_USER_CHARS},
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_TOP_LOGPROBS,
            "description": "with logprobs: true"},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 1,
            "description": "lit-mux answers with one choice"},
    });
    match options {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The schemas this module adds, by component name.
pub(super) fn shared_schemas() -> Vec<(&'static str, Value)> {
    let nullable_string = json!({"type": ["string", "null"]});
    let usage = json!({
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0},
        },
    });
    let lit_mux_summary = json!({
        "type": "object",
        "description": "What lit-mux's own tool loop did (with lit_mux.use_tools).",
        "required": ["tool_iterations", "max_tool_iterations_reached"],
        "properties": {
            "tool_iterations": {"type": "integer", "minimum": 0},
            "max_tool_iterations_reached": {"type": "boolean"},
        },
    });
    let tool_call_out = |streamed: bool| {
        let mut call = json!({
            "type": "object",
            "required": ["id", "type", "function"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "function"},
                "function": {
                    "type": "object",
                    "required": ["name", "arguments"],
                    "properties": {
                        "name": {"type": "string"},
                        "arguments": {"type": "string", "description": "JSON text"},
                    },
                },
            },
        });
        if streamed {
            call["required"] = json!(["index", "id", "type", "function"]);
            call["properties"]["index"] = json!({"type": "integer", "minimum": 0});
        }
        call
    };
    let finish_reason = json!({"enum": ["stop", "length", "tool_calls", "content_filter"]});
    vec![
        (
            "ValidationErrorBody",
            json!({
                "type": "object",
                "description": "A 422: every problem of the request, as FastAPI lists them.",
                "required": ["detail"],
                "properties": {"detail": {"type": "array", "items": {
                    "type": "object",
                    "required": ["type", "loc", "msg"],
                    "properties": {
                        "type": {"type": "string", "examples": ["missing"]},
                        "loc": {
                            "type": "array",
                            "items": {"type": ["string", "integer"]},
                            "description": "Where: body, query, then the field path",
                            "examples": [["body", "content"]],
                        },
                        "msg": {"type": "string"},
                        "input": {"description": "The value found there"},
                    },
                }}},
            }),
        ),
        (
            "OpenAiErrorBody",
            json!({
                "type": "object",
                "description": "OpenAI's error shape, every error under /v1.",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["message", "type"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string", "examples": ["invalid_request_error"]},
                        "param": {"type": ["string", "null"], "description": "The field at fault"},
                        "code": {"type": ["string", "null"]},
                    },
                }},
            }),
        ),
        (
            "ChatCompletionRequest",
            json!({
                "type": "object",
                "description": "OpenAI's chat completion request. Fields lit-mux has no use for \
                    are accepted and ignored; the sampling ones go to the backend. lit-mux's \
                    extensions: session_id and lit_mux.",
                "required": ["model", "messages"],
                "properties": {
                    "model": {
                        "type": "string",
                        "minLength": 1,
                        "description": "backend/model as GET /v1/models lists them, or a \
                            backend's name for its default model",
                        "examples": ["echo/echo"],
                    },
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "items": schema_ref("ChatCompletionMessage"),
                    },
                    "stream": {"type": "boolean", "default": false},
                    "stream_options": {
                        "type": ["object", "null"],
                        "properties": {"include_usage": {"type": "boolean"}},
                    },
                    "tools": {"type": ["array", "null"], "items": schema_ref("ChatCompletionTool")},
                    "session_id": {
                        "type": ["string", "null"],
                        "description": "lit-mux: append the exchange to this session \
                            (X-Session-Id does the same)",
                    },
                    "lit_mux": {
                        "type": "object",
                        "description": "lit-mux's extensions",
                        "properties": {
                            "use_tools": {
                                "type": "boolean",
                                "description": "Run lit-mux's own MCP tool loop (not with tools)",
                            },
                            "max_tool_iterations": {
                                "type": ["integer", "null"],
                                "minimum": 0,
                                "maximum": 100,
                                "description": "Tool rounds at most (default 20)",
                            },
                        },
                    },
                },
                "examples": [{"model": "echo/echo", "messages": [{"role": "user", "content": "Hello"}]}],
            }),
        ),
        (
            "ChatCompletionMessage",
            json!({
                "type": "object",
                "description": "Leading system and developer messages become the system prompt; \
                    a tool message answers the call of its tool_call_id.",
                "required": ["role"],
                "properties": {
                    "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                    "content": {"anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {
                            "type": "object",
                            "description": "Text parts only",
                            "required": ["type"],
                            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                        }},
                        {"type": "null"},
                    ]},
                    "tool_calls": {"type": "array", "items": {
                        "type": "object",
                        "required": ["id", "function"],
                        "properties": {
                            "id": {"type": "string"},
                            "type": {"const": "function"},
                            "function": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "arguments": {"type": ["string", "null"], "description": "JSON text"},
                                },
                            },
                        },
                    }},
                    "tool_call_id": {"type": ["string", "null"], "description": "Required in a tool message"},
                    "name": nullable_string,
                },
                "examples": [{"role": "user", "content": "Hello"}],
            }),
        ),
        (
            "ChatCompletionTool",
            json!({
                "type": "object",
                "description": "A tool the client runs: the model's calls come back as tool_calls.",
                "required": ["function"],
                "properties": {
                    "type": {"enum": ["function", null]},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "description": {"type": ["string", "null"]},
                            "parameters": {"description": "JSON Schema of the arguments"},
                        },
                    },
                },
            }),
        ),
        (
            "ChatCompletion",
            json!({
                "type": "object",
                "required": ["id", "object", "created", "model", "choices"],
                "properties": {
                    "id": {"type": "string", "examples": ["chatcmpl-0c5e2c5b1c2a4f0e9d8c7b6a5f4e3d2c"]},
                    "object": {"const": "chat.completion"},
                    "created": {"type": "integer"},
                    "model": {"type": "string", "examples": ["echo/echo"]},
                    "choices": {"type": "array", "items": {
                        "type": "object",
                        "required": ["index", "message", "finish_reason"],
                        "properties": {
                            "index": {"type": "integer"},
                            "message": {
                                "type": "object",
                                "required": ["role", "content"],
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": {"type": ["string", "null"]},
                                    "tool_calls": {"type": "array", "items": tool_call_out(false)},
                                },
                            },
                            "finish_reason": finish_reason,
                            "logprobs": {"type": "null"},
                        },
                    }},
                    "usage": usage,
                    "lit_mux": lit_mux_summary,
                },
            }),
        ),
        (
            "ChatCompletionChunk",
            json!({
                "type": "object",
                "required": ["id", "object", "created", "model", "choices"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "chat.completion.chunk"},
                    "created": {"type": "integer"},
                    "model": {"type": "string"},
                    "choices": {
                        "type": "array",
                        "description": "Empty in the last chunk, which carries usage (stream_options.include_usage)",
                        "items": {
                            "type": "object",
                            "required": ["index", "delta", "finish_reason"],
                            "properties": {
                                "index": {"type": "integer"},
                                "delta": {
                                    "type": "object",
                                    "properties": {
                                        "role": {"const": "assistant"},
                                        "content": {"type": "string"},
                                        "tool_calls": {"type": "array", "items": tool_call_out(true)},
                                    },
                                },
                                "finish_reason": {"anyOf": [finish_reason, {"type": "null"}]},
                                "logprobs": {"type": "null"},
                            },
                        },
                    },
                    "usage": usage,
                    "lit_mux": lit_mux_summary,
                },
            }),
        ),
        (
            "ChatCompletionStreamEvent",
            json!({
                "description": "One Server-Sent Event of a streamed completion: data is a \
                    chat.completion.chunk (or an error in OpenAI's shape); the last is [DONE].",
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "event": {"const": "message"},
                            "data": json_data(json!({"anyOf": [
                                schema_ref("ChatCompletionChunk"),
                                schema_ref("OpenAiErrorBody"),
                            ]})),
                        },
                    },
                    {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"event": {"const": "message"}, "data": {"const": "[DONE]"}},
                    },
                ],
            }),
        ),
        (
            "OpenAiModelList",
            json!({
                "type": "object",
                "required": ["object", "data"],
                "properties": {
                    "object": {"const": "list"},
                    "data": {"type": "array", "items": {
                        "type": "object",
                        "required": ["id", "object", "created", "owned_by"],
                        "properties": {
                            "id": {"type": "string", "description": "backend/model", "examples": ["echo/echo"]},
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string", "description": "The backend"},
                        },
                    }},
                },
            }),
        ),
        (
            "BroadcastResponse",
            json!({
                "type": "object",
                "required": ["user_message", "responses"],
                "properties": {
                    "user_message": schema_ref("Message"),
                    "responses": {"type": "array", "items": {"anyOf": [
                        {
                            "type": "object",
                            "required": ["backend", "message"],
                            "properties": {"backend": {"type": "string"}, "message": schema_ref("Message")},
                        },
                        {
                            "type": "object",
                            "required": ["backend", "error", "status"],
                            "properties": {
                                "backend": {"type": "string"},
                                "error": {"type": "string"},
                                "status": {"type": "integer", "description": "The status this failure would have had alone"},
                                "retry_after": {"type": "string", "description": "A rate-limited backend's Retry-After"},
                            },
                        },
                    ]}},
                },
            }),
        ),
        (
            "SessionDeltaEvent",
            json!({
                "type": "object",
                "description": "`event: delta`: more of the answer's text.",
                "required": ["backend", "text"],
                "properties": {"backend": {"type": "string"}, "text": {"type": "string"}},
            }),
        ),
        (
            "SessionToolCallEvent",
            json!({
                "type": "object",
                "description": "`event: tool_call`: the model calls a tool; server is null when \
                    no server has it (tool is then the name the model wrote).",
                "required": ["backend", "server", "tool", "arguments"],
                "properties": {
                    "backend": {"type": "string"},
                    "server": {"type": ["string", "null"]},
                    "tool": {"type": "string"},
                    "arguments": {},
                },
            }),
        ),
        (
            "SessionToolResultEvent",
            json!({
                "type": "object",
                "description": "`event: tool_result`: what the tool answered.",
                "required": ["backend", "server", "tool", "content", "is_error", "duration_ms"],
                "properties": {
                    "backend": {"type": "string"},
                    "server": {"type": ["string", "null"]},
                    "tool": {"type": "string"},
                    "content": {"type": "string"},
                    "is_error": {"type": "boolean"},
                    "duration_ms": {"type": "integer", "minimum": 0},
                },
            }),
        ),
        (
            "SessionErrorEvent",
            json!({
                "type": "object",
                "description": "`event: error`: the backend failed; status is what the HTTP \
                    status would have been.",
                "required": ["backend", "detail", "status"],
                "properties": {
                    "backend": {"type": "string"},
                    "detail": {"type": "string"},
                    "status": {"type": "integer"},
                    "retry_after": {"type": "string"},
                },
            }),
        ),
        (
            "SessionStreamEvent",
            json!({
                "description": "One Server-Sent Event of a streamed reply: its name, and its data \
                    as JSON. `done` carries the stored answer (a Message); a broadcast ends with \
                    one done or error per backend.",
                "anyOf": [
                    named_event("delta", "SessionDeltaEvent"),
                    named_event("tool_call", "SessionToolCallEvent"),
                    named_event("tool_result", "SessionToolResultEvent"),
                    named_event("done", "Message"),
                    named_event("error", "SessionErrorEvent"),
                ],
            }),
        ),
    ]
}
