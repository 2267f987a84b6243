//! Backends that misbehave on purpose or under load, through the real binary against fake
//! providers: a stream line over lit-mux's bound, redirects to another origin (never followed,
//! nothing sent there), and a crowd of model listings (one listing in flight per backend, shared;
//! never more requests in flight to a backend than its `max_connections`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

const WIRES: [Wire; 3] = [Wire::Ollama, Wire::OpenAi, Wire::Anthropic];

/// lit-mux's bound on one line of a backend's stream (one NDJSON object, one SSE field): 8 MiB.
const MAX_STREAM_LINE_BYTES: usize = 8 * 1024 * 1024;

fn start_with(home: &TestHome, entries: &[String]) -> Server {
    home.write_config(&format!("backends:\n{}", entries.concat()));
    home.start(&[])
}

async fn create_session(server: &Server, backends: &[&str]) -> String {
    let (status, session) = server
        .post_json("/sessions", &json!({ "backends": backends }))
        .await;
    assert_eq!(status, 200, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

async fn stream(server: &Server, session: &str, content: &str) -> Vec<(String, Value)> {
    let response = server
        .post(&format!("/sessions/{session}/message"))
        .json(&json!({"content": content, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    Events::new(response).all().await
}

fn reply(text: &str) -> Behaviour {
    Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: std::time::Duration::ZERO,
        chunk_delay: std::time::Duration::ZERO,
    }
}

async fn messages(server: &Server, session: &str) -> Vec<Value> {
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    messages.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_line_just_over_the_bound_fails_cleanly_and_one_just_under_passes() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        let home = TestHome::new();
        let server = start_with(&home, &[fake.config_entry("llm", "")]);
        let id = create_session(&server, &["llm"]).await;

        // One word is one chunk: its stream line is the text plus the wire's few hundred bytes
        // of framing, so a text of the bound's size makes a line just over it. (A line just under
        // it passing is shown once, for SSE: each such answer is 8 MiB to carry and store.)
        if wire == Wire::OpenAi {
            let under = "u".repeat(MAX_STREAM_LINE_BYTES - 4096);
            fake.queue(vec![reply(&under)]);
            let events = stream(&server, &id, "under").await;
            let (name, done) = events.last().unwrap();
            assert_eq!(name, "done", "{wire:?}");
            assert_eq!(done["content"].as_str().unwrap().len(), under.len());
        }
        fake.queue(vec![reply(&"o".repeat(MAX_STREAM_LINE_BYTES))]);
        let events = stream(&server, &id, "over").await;
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["error"],
            "{wire:?}: nothing of the line is streamed"
        );
        let error = &events[0].1;
        assert_eq!(error["status"], 502, "{wire:?}: {error}");
        let detail = error["detail"].as_str().unwrap();
        assert!(
            detail.contains("backend llm")
                && detail.contains(&format!(
                    "a stream line is over 8 MiB ({MAX_STREAM_LINE_BYTES} bytes)"
                )),
            "{wire:?}: {detail}"
        );

        // The question is kept, marked failed; no half answer is stored.
        let stored = messages(&server, &id).await;
        let question = stored.last().unwrap();
        assert_eq!(question["role"], "user", "{wire:?}");
        assert_eq!(question["content"], "over", "{wire:?}");
        assert_eq!(
            question["metadata"]["status"], "failed",
            "{wire:?}: {question}"
        );
        assert_eq!(question["metadata"]["error"], detail, "{wire:?}");
    }
}
