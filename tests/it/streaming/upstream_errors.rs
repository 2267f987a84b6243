//! A backend that fails a stream: before the first byte it is an HTTP error (a 429 with Retry-After
//! when rate limited), during the stream an error event with what was streamed kept marked
//! incomplete; an answer streaming without end is cut at the bound of a whole answer; and in a
//! broadcast each rate-limited backend gets one error event while the others go on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::TestHome;
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

use super::{config_for, session, stream_message};

#[tokio::test(flavor = "multi_thread")]
async fn backend_failures_are_an_http_error_before_the_stream_and_an_error_event_during_it() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Anthropic)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;

    fake.set_behaviour(Behaviour::Fail {
        status: 529,
        message: "Overloaded".to_owned(),
    });
    let response = stream_message(&server, &id, json!({"content": "a", "stream": true})).await;
    assert_eq!(response.status().as_u16(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("Overloaded"),
        "{body}"
    );

    fake.set_behaviour(Behaviour::DropMidStream);
    let events =
        Events::new(stream_message(&server, &id, json!({"content": "b", "stream": true})).await)
            .all()
            .await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["status"], 502);
    assert_eq!(data["backend"], "llm");

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0]["metadata"]["status"], "failed");
    // The broken stream had sent some text: it is kept, marked incomplete.
    assert_eq!(roles, ["user", "user", "assistant"], "{messages}");
    assert_eq!(messages[2]["metadata"]["status"], "incomplete");
}

/// lit-mux's bound on an answer, streamed or not (32 MiB).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_streaming_without_end_is_cut_at_the_bound_of_a_whole_answer() {
    let chunk = "x".repeat(64 * 1024);
    for wire in [Wire::Ollama, Wire::OpenAi, Wire::Anthropic] {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::Endless {
            chunk: chunk.clone(),
        });
        let home = TestHome::new();
        home.write_config(&config_for(&[("llm", &fake, wire)]));
        let server = home.start(&[]);
        let id = session(&server, &["llm"]).await;

        let events = Events::new(
            stream_message(&server, &id, json!({"content": "go on", "stream": true})).await,
        )
        .all()
        .await;
        let streamed: usize = events
            .iter()
            .filter(|(name, _)| name == "delta")
            .map(|(_, data)| data["text"].as_str().unwrap().len())
            .sum();
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "error", "{wire:?}: {data}");
        assert_eq!(data["status"], 502, "{wire:?}: {data}");
        let detail = data["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("over {MAX_ANSWER_BYTES} bytes")),
            "{wire:?}: {detail}"
        );
        assert!(
            streamed > MAX_ANSWER_BYTES - chunk.len() && streamed <= MAX_ANSWER_BYTES,
            "{wire:?}: {streamed} bytes streamed"
        );
        assert!(
            testkit::processes::eventually(Duration::from_secs(5), || async {
                fake.aborted_requests() == 1
            })
            .await,
            "{wire:?}: the backend's endless answer was not hung up on"
        );
        // What was streamed is kept as the question's answer, marked incomplete.
        let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
        assert_eq!(messages.as_array().unwrap().len(), 2, "{wire:?}");
        assert_eq!(messages[1]["role"], "assistant", "{wire:?}");
        assert_eq!(messages[1]["metadata"]["status"], "incomplete", "{wire:?}");
        assert_eq!(messages[1]["content"].as_str().unwrap().len(), streamed);

        // Not streamed, the same answer is refused at the same bound.
        let (status, body) = server
            .post_json(
                &format!("/sessions/{id}/message"),
                &json!({"content": "again"}),
            )
            .await;
        assert_eq!(status, 502, "{wire:?}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("over {MAX_ANSWER_BYTES} bytes")),
            "{wire:?}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_stream_is_a_429_with_retry_after_and_in_a_broadcast_an_error_event() {
    let answering = FakeBackend::start(Wire::Ollama).await;
    let limited = [
        (
            "ollama",
            FakeBackend::start(Wire::Ollama).await,
            Wire::Ollama,
        ),
        (
            "openai",
            FakeBackend::start(Wire::OpenAi).await,
            Wire::OpenAi,
        ),
        (
            "anthropic",
            FakeBackend::start(Wire::Anthropic).await,
            Wire::Anthropic,
        ),
    ];
    let mut entries = vec![("fine", &answering, Wire::Ollama)];
    for (name, fake, wire) in &limited {
        fake.set_behaviour(Behaviour::RateLimited {
            retry_after_secs: 7,
        });
        entries.push((name, fake, *wire));
    }
    let home = TestHome::new();
    home.write_config(&config_for(&entries));
    let server = home.start(&[]);
    let id = session(&server, &["fine", "ollama", "openai", "anthropic"]).await;

    // The 429 comes before the first byte: a plain HTTP error, Retry-After passed on.
    for (name, _, _) in &limited {
        let response = stream_message(
            &server,
            &id,
            json!({"content": "quick", "stream": true, "backend": name}),
        )
        .await;
        assert_eq!(response.status().as_u16(), 429, "{name}");
        let headers = response.headers().clone();
        assert_eq!(headers["retry-after"], "7", "{name}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{name}: {headers:?}"
        );
        let body: Value = response.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("backend {name} is rate limited (429)")),
            "{detail}"
        );
    }
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages.iter().all(|m| m["metadata"]["status"] == "failed"),
        "{messages:?}"
    );

    // A broadcast's stream has started: each rate-limited backend gets one error event, with
    // the detail and Retry-After, and the one that answers goes on.
    let response = server
        .post(&format!("/sessions/{id}/broadcast"))
        .json(&json!({"content": "all of you", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = Events::new(response).all().await;
    for (name, _, _) in &limited {
        let of_backend: Vec<&(String, Value)> = events
            .iter()
            .filter(|(_, data)| data["backend"] == *name)
            .collect();
        assert_eq!(of_backend.len(), 1, "{name}: {events:?}");
        let (event, data) = of_backend[0];
        assert_eq!(event, "error", "{name}: {data}");
        assert_eq!(data["status"], 429, "{name}: {data}");
        assert_eq!(data["retry_after"], "7", "{name}: {data}");
        assert!(
            data["detail"]
                .as_str()
                .unwrap()
                .contains("rate limited (429)"),
            "{data}"
        );
    }
    let done = events
        .iter()
        .find(|(event, data)| event == "done" && data["backend"] == "fine")
        .unwrap_or_else(|| panic!("no done for fine: {events:?}"));
    assert_eq!(done.1["content"], "ollama says: all of you");
}
