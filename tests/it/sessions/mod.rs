//! Sessions, messaging and broadcast through the real binary, against fake model servers that speak
//! each provider's wire format: what the backend receives, what the client gets back, and what
//! survives a restart or a SIGKILL. One module per concern; this one holds the helpers they share:
//! a config entry per fake backend, making a session, sending to it (in the foreground or on a task
//! of its own), and reading a conversation back as (role, content) pairs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backends_and_models;
mod broadcast;
mod conversation;
mod failures;
mod interrupted;
mod listing_and_validation;
mod storage;
mod storage_failures;

use crate::support::{Server, TestHome};
use serde_json::Value;
use testkit::fake_backends::{FakeBackend, Wire};

/// The config entry for a backend named `name` talking to `fake`.
pub(super) fn backend_entry(name: &str, fake: &FakeBackend, wire: Wire, extra: &str) -> String {
    let (kind, url_key, key) = match wire {
        Wire::Ollama => ("ollama", "host", ""),
        Wire::OpenAi => ("openai", "base_url", "api_key: sk-test-openai, "),
        Wire::Anthropic => ("anthropic", "base_url", "api_key: sk-ant-test, "),
    };
    format!(
        "  {name}: {{type: {kind}, {url_key}: '{}', {key}default_model: fake-model{extra}}}\n",
        fake.url()
    )
}

pub(super) fn start_with_backends(
    home: &TestHome,
    entries: &[String],
    extra_config: &str,
) -> Server {
    home.write_config(&format!("backends:\n{}{extra_config}", entries.concat()));
    home.start(&[])
}

pub(super) async fn create_session(server: &Server, body: Value) -> String {
    let (status, session) = server.post_json("/sessions", &body).await;
    assert_eq!(status, 200, "{session}");
    session["id"].as_str().expect("session id").to_owned()
}

pub(super) async fn send(server: &Server, session: &str, body: Value) -> (u16, Value) {
    server
        .post_json(&format!("/sessions/{session}/message"), &body)
        .await
}

/// `send` on a task of its own, for a message that is expected to wait.
pub(super) fn send_in_background(
    server: &Server,
    session: &str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = server.url(&format!("/sessions/{session}/message"));
    tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    })
}

pub(super) fn roles_and_contents(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

pub(super) fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}
