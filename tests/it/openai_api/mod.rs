//! The OpenAI-compatible front door, through the real binary: the official `openai` Python package
//! against it, and raw HTTP against fake providers to check what reaches the backend, sessions,
//! streaming and every error in OpenAI's shape. One module per concern; this one holds the helpers
//! they share: a chat completion, a session, and the `data:` payloads of a stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod echo_tools;
mod errors;
mod images;
mod official_client;
mod session_history;
mod tools;
mod translation;

use crate::support::{Server, status_and_json};
use serde_json::{Value, json};

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

pub(super) async fn session(server: &Server, backend: &str) -> String {
    let (status, body) = server
        .post_json("/sessions", &json!({ "backends": [backend] }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The `data:` payloads of an SSE body.
pub(super) fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}
