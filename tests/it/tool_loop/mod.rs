//! The tool loop through the real binary: models (the `echo` backend, fake providers) call the real
//! `server-everything` tools and our fixture's, mostly by writing the prompt protocol's JSON in
//! their answer; tool failures, timeouts, a dead server, a client that leaves mid-call (streamed or
//! not), calls over the per-answer limit, and how each ends up in the history that is replayed to
//! the model. One module per concern; this one holds the helpers they share: our fixture as an MCP
//! server, a HOME with a fake backend, sessions, messages and the stored history.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_leaves;
mod failing_steps;
mod limits_and_replay;
mod real_tools;

use std::time::Duration;

use crate::support::mcp::fixture_server;
use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

/// Our fixture MCP server as `fx`, with the tool-call `timeout` in seconds.
pub(super) async fn with_fixture(server: &Server, timeout: u64) {
    let mut body = fixture_server("fx", "healthy", &[]);
    body["timeout"] = json!(timeout);
    let (status, body) = server.post_json("/mcp/servers", &body).await;
    assert_eq!(status, 200, "{body}");
}

/// A HOME whose backend `llm` is `fake`, with `extra` config keys for it (`, tool_mode: prompt`).
pub(super) fn home_with(fake: &FakeBackend, wire: Wire, extra: &str) -> TestHome {
    let home = TestHome::new();
    let url = fake.url();
    let entry = match wire {
        Wire::Ollama => format!("{{type: ollama, host: '{url}'{extra}}}"),
        Wire::OpenAi => format!("{{type: openai, base_url: '{url}', api_key: k{extra}}}"),
        Wire::Anthropic => format!("{{type: anthropic, base_url: '{url}', api_key: k{extra}}}"),
    };
    home.write_config(&format!("backends:\n  llm: {entry}\n"));
    home
}

pub(super) fn reply(text: &str) -> Behaviour {
    Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    }
}

pub(super) async fn messages(server: &Server, id: &str) -> Vec<Value> {
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    messages.as_array().unwrap().clone()
}

pub(super) fn roles(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect()
}

pub(super) async fn session(server: &Server, backend: &str) -> String {
    let (status, body) = server
        .post_json("/sessions", &json!({ "backends": [backend] }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

pub(super) async fn send(server: &Server, id: &str, body: Value) -> Value {
    let (status, reply) = server
        .post_json(&format!("/sessions/{id}/message"), &body)
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}
