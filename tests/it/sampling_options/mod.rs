//! Sampling and generation options (temperature, max_tokens, stop, seed, penalties,
//! response_format, tool_choice, parallel_tool_calls, user, logprobs, top_logprobs, n) reach each
//! backend in its own wire's names, from `/v1/chat/completions` and from session messages and
//! broadcasts (over the session's defaults); what a backend's API lacks, and values outside its
//! range, are refused naming the backend. One module per concern; this one holds the helpers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod official_client;
mod refusals;
mod sessions;
mod wires;

use crate::support::{Server, TestHome, status_and_json};
use serde_json::{Value, json};
use testkit::fake_backends::FakeBackend;

/// lit-mux with each `(name, fake, extra config keys)` as a backend.
pub(super) fn start(home: &TestHome, backends: &[(&str, &FakeBackend, &str)]) -> Server {
    let entries: String = backends
        .iter()
        .map(|(name, fake, extra)| fake.config_entry(name, extra))
        .collect();
    home.write_config(&format!("backends:\n{entries}"));
    home.start(&[])
}

pub(super) async fn completion(server: &Server, body: Value) -> (u16, Value) {
    status_and_json(
        server
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A `/v1` request to `model` saying "hi", with `options` as top-level fields.
pub(super) fn chat_body(model: &str, options: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    body
}

/// A tool the client offers, so that `tool_choice` has something to choose from.
pub(super) fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }}])
}

/// `body` with only the keys of `names` (those present).
pub(super) fn only(body: &Value, names: &[&str]) -> Value {
    Value::Object(
        names
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), body.get(*name)?.clone())))
            .collect(),
    )
}

/// The keys of a request body that are options of some wire (what a test compares).
pub(super) const OPTION_KEYS: [&str; 22] = [
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stop_sequences",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "format",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "metadata",
    "logprobs",
    "top_logprobs",
    "n",
    "options",
    "num_predict",
    "disable_parallel_tool_use",
    "stream_options",
];

pub(super) async fn session(server: &Server, body: Value) -> (u16, Value) {
    server.post_json("/sessions", &body).await
}
