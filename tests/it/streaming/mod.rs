//! Streamed replies (`"stream": true` or `Accept: text/event-stream`) through the real binary
//! against fake backends: event order, first-byte timing, what is stored when the backend breaks or
//! the client leaves, a rate-limited backend, broadcast events interleaved and tagged by backend,
//! and `lit-mux send` printing as the answer streams (a spinner on a terminal). One module per
//! concern; this one holds the helpers they share: the config for fake backends, a session, and a
//! message sent for its response.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod broadcast;
mod cli;
mod cut_short;
mod events;
mod upstream_errors;

use crate::support::Server;
use serde_json::{Value, json};
use testkit::fake_backends::{FakeBackend, Wire};

pub(super) fn config_for(entries: &[(&str, &FakeBackend, Wire)]) -> String {
    let mut yaml = String::from("backends:\n");
    for (name, fake, wire) in entries {
        let entry = match wire {
            Wire::Ollama => format!("{{type: ollama, host: '{}'}}", fake.url()),
            Wire::OpenAi => format!("{{type: openai, base_url: '{}'}}", fake.url()),
            Wire::Anthropic => {
                format!(
                    "{{type: anthropic, base_url: '{}', api_key: k}}",
                    fake.url()
                )
            }
        };
        yaml.push_str(&format!("  {name}: {entry}\n"));
    }
    yaml
}

pub(super) async fn session(server: &Server, backends: &[&str]) -> String {
    let (status, body) = server
        .post_json("/sessions", &json!({ "backends": backends }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

pub(super) async fn stream_message(
    server: &Server,
    session: &str,
    body: Value,
) -> reqwest::Response {
    server
        .post(&format!("/sessions/{session}/message"))
        .json(&body)
        .send()
        .await
        .unwrap()
}
