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
use schemas::{generation_options, shared_schemas};

mod schemas;

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
