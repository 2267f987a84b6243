//! The API description served as `/openapi.json`. The handlers' annotations say what each
//! operation takes and answers; this module adds what no single handler knows:
//!
//! - the two ways to send the key (`Authorization: Bearer` and `X-API-Key`), required on every
//!   operation but the open ones ([`auth::is_open_path`]), which say `security: []`;
//! - the answers of the layers every request passes (the `Host` and origin checks, the key,
//!   the body's size, type, arrival and shape, the query's shape), on every operation they
//!   apply to, in the error shape of its family (`{"detail"}`, OpenAI's under `/v1`);
//! - the shapes kept as JSON rather than Rust types: OpenAI's chat completion wire, the events
//!   of every event stream (one schema per event, its `data` as `contentSchema`), a broadcast's
//!   answer;
//! - the links that lead from a created resource to the operations on it.
//!
//! Invariant: every status an operation can answer is listed with its body's schema.

use serde_json::{Map, Value, json};
use utoipa::openapi::OpenApi;

use crate::http::auth;

/// The description's head: title, version, what errors look like. The paths come from the
/// handlers' annotations (and `/mcp`'s hand-written description).
pub fn base() -> OpenApi {
    let mut api = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("lit-mux")
                .version(crate::VERSION)
                .description(Some(
                    "One HTTP endpoint in front of AI model backends and MCP tools. Errors are \
                     {\"detail\": \"...\"} (a 422 lists every problem: {\"detail\": [{type, loc, \
                     msg}]}) except under /v1, which uses OpenAI's {\"error\": {...}}. Send the \
                     API key as `Authorization: Bearer KEY` or `X-API-Key: KEY`.",
                ))
                .build(),
        )
        .build();
    crate::http::mcp_endpoint::describe(&mut api.paths);
    api
}

/// The whole description as JSON: `api` (with every handler's paths merged) completed with what
/// the layers add.
pub fn render(api: &OpenApi) -> Value {
    let mut document = serde_json::to_value(api).unwrap_or_else(|_| json!({}));
    complete(&mut document);
    document
}

fn complete(document: &mut Value) -> Option<()> {
    document["security"] = json!([{BEARER: []}, {API_KEY_HEADER: []}]);
    let components = object_at(document.as_object_mut()?, "components")?;
    let schemes = object_at(components, "securitySchemes")?;
    schemes.insert(
        BEARER.to_owned(),
        json!({"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"}),
    );
    schemes.insert(
        API_KEY_HEADER.to_owned(),
        json!({"type": "apiKey", "in": "header", "name": "X-API-Key"}),
    );
    let schemas = object_at(components, "schemas")?;
    for (name, schema) in shared_schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    // One description of the generation options: `/v1` takes them at the top level, sessions
    // in an `options` object that refuses other names.
    let request = object_at(object_at(schemas, "ChatCompletionRequest")?, "properties")?;
    request.extend(generation_options());
    schemas.insert(
        "GenerationOptions".to_owned(),
        json!({
            "type": "object",
            "description": "Sampling and generation options, in OpenAI's names and shapes. A \
                session's are the defaults of its messages; a message's override them option \
                by option. Unknown names are refused (422); values outside these ranges, or \
                that the backend's API cannot honour, get 400.",
            "additionalProperties": false,
            "properties": generation_options(),
        }),
    );
    for (path, operations) in object_at(document.as_object_mut()?, "paths")? {
        for (method, operation) in operations.as_object_mut()? {
            complete_operation(path, method, operation)?;
        }
    }
    Some(())
}

/// The generation options' schemas, as `backends::options` reads and bounds them.
fn generation_options() -> Map<String, Value> {
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

/// The security scheme names.
const BEARER: &str = "bearer";
const API_KEY_HEADER: &str = "api_key_header";

fn complete_operation(path: &str, method: &str, operation: &mut Value) -> Option<()> {
    let family = Family::of(path);
    if let Some(wire) = wire_shapes(path, method) {
        wire.apply(operation);
    }
    if auth::is_open_path(path) {
        operation["security"] = json!([]);
    }
    let takes_body = operation.get("requestBody").is_some();
    let takes_query = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|parameters| parameters.iter().any(|p| p["in"] == "query"));
    let responses = object_at(operation.as_object_mut()?, "responses")?;
    let mut add = |status: &str, description: &str, schema: &str| {
        responses.entry(status.to_owned()).or_insert_with(|| {
            json!({
                "description": description,
                "content": {"application/json": {"schema": schema_ref(schema)}},
            })
        });
    };
    let error = family.error_schema();
    add(
        "400",
        "A malformed request (an invalid Host header, a body that cannot be read)",
        error,
    );
    if !auth::is_open_path(path) {
        add("401", "Missing or wrong API key", error);
    }
    add(
        "403",
        "Refused by the access checks: a cross-origin request from a page not in \
         server.cors_origins, or, without server.api_key, a Host that is not a loopback name",
        error,
    );
    if takes_body {
        add(
            "408",
            "The body did not arrive within server.body_read_timeout_secs",
            error,
        );
        add("413", "The body is over server.max_body_bytes", error);
    }
    // `/mcp` answers a body it cannot use with a JSON-RPC error: its own description lists those.
    let parses_body = takes_body && path != crate::http::mcp_endpoint::PATH;
    if parses_body {
        add(
            "415",
            "Content-Type is neither application/json nor a +json type",
            error,
        );
    }
    if parses_body || takes_query {
        add(
            "422",
            "The body is not JSON, or a field (or query parameter) has the wrong type or is out \
             of its range",
            family.validation_schema(),
        );
    }
    // The annotations name the `{"detail"}` body for every error; a 422 of the REST API lists
    // its problems.
    if let Some(unprocessable) = responses.get_mut("422")
        && family == Family::Rest
    {
        unprocessable["content"] =
            json!({"application/json": {"schema": schema_ref(family.validation_schema())}});
    }
    if let Some(links) = links(path, method)
        && let Some(ok) = responses.get_mut("200")
    {
        ok["links"] = links;
    }
    Some(())
}

/// Which error shape an operation answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `{"detail": "..."}`, a 422's `{"detail": [{type, loc, msg}]}`.
    Rest,
    /// OpenAI's `{"error": {...}}`.
    OpenAi,
}

impl Family {
    fn of(path: &str) -> Self {
        if path.starts_with("/v1/") {
            Self::OpenAi
        } else {
            Self::Rest
        }
    }

    fn error_schema(self) -> &'static str {
        match self {
            Self::Rest => "ErrorBody",
            Self::OpenAi => "OpenAiErrorBody",
        }
    }

    fn validation_schema(self) -> &'static str {
        match self {
            Self::Rest => "ValidationErrorBody",
            Self::OpenAi => "OpenAiErrorBody",
        }
    }
}

/// The request and answer schemas of an operation whose wire is described here.
struct WireShapes {
    request: Option<&'static str>,
    json: Option<&'static str>,
    events: Option<&'static str>,
}

impl WireShapes {
    fn apply(&self, operation: &mut Value) {
        if let Some(request) = self.request {
            operation["requestBody"]["content"]["application/json"]["schema"] = schema_ref(request);
        }
        let ok = &mut operation["responses"]["200"]["content"];
        if let Some(json) = self.json {
            ok["application/json"]["schema"] = schema_ref(json);
        }
        if let Some(events) = self.events {
            ok["text/event-stream"]["schema"] = schema_ref(events);
        }
    }
}

fn wire_shapes(path: &str, method: &str) -> Option<WireShapes> {
    let shapes = match (method, path) {
        ("post", "/v1/chat/completions") => WireShapes {
            request: Some("ChatCompletionRequest"),
            json: Some("ChatCompletion"),
            events: Some("ChatCompletionStreamEvent"),
        },
        ("get", "/v1/models") => WireShapes {
            request: None,
            json: Some("OpenAiModelList"),
            events: None,
        },
        ("post", "/sessions/{id}/message") => WireShapes {
            request: None,
            json: None,
            events: Some("SessionStreamEvent"),
        },
        ("post", "/sessions/{id}/broadcast") => WireShapes {
            request: None,
            json: Some("BroadcastResponse"),
            events: Some("SessionStreamEvent"),
        },
        _ => return None,
    };
    Some(shapes)
}

/// Where a created resource leads: its id (or name) in the answer, as the path parameter of
/// the operations on it.
fn links(path: &str, method: &str) -> Option<Value> {
    let (parameter, source, operations): (&str, &str, &[(&str, &str)]) = match (method, path) {
        ("post", "/sessions") => (
            "id",
            "$response.body#/id",
            &[
                ("GetSession", "get_session"),
                ("DeleteSession", "delete_session"),
                ("ListMessages", "list_messages"),
                ("SendMessage", "send_message"),
                ("Broadcast", "broadcast"),
            ],
        ),
        ("post", "/mcp/servers") => (
            "name",
            "$response.body#/server/name",
            &[
                ("GetServer", "get_server"),
                ("ServerLogs", "server_logs"),
                ("RestartServer", "restart_server"),
                ("RemoveServer", "remove_server"),
            ],
        ),
        _ => return None,
    };
    let links: Map<String, Value> = operations
        .iter()
        .map(|(name, operation_id)| {
            (
                (*name).to_owned(),
                json!({"operationId": operation_id, "parameters": {parameter: source}}),
            )
        })
        .collect();
    Some(Value::Object(links))
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The object at `key` in `map`, made one if it is missing or something else.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

/// `data` of an event carrying JSON of `schema`.
fn json_data(schema: Value) -> Value {
    json!({"type": "string", "contentMediaType": "application/json", "contentSchema": schema})
}

/// An event named `name` whose `data` is JSON of the component `schema`.
fn named_event(name: &str, schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {"event": {"const": name}, "data": json_data(schema_ref(schema))},
    })
}

/// The schemas this module adds, by component name.
fn shared_schemas() -> Vec<(&'static str, Value)> {
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
