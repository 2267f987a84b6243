//! Interrupted work always has an ending: at shutdown, a reply still running when the grace
//! period ends sends its stream's final event (sessions: an `error` event saying the server is
//! shutting down; `/v1`: OpenAI's mid-stream error chunk, then `[DONE]`) and its question is
//! marked `interrupted`; a question whose answer was under way when lit-mux was killed is
//! marked `interrupted` at the next start; a broadcast whose client leaves keeps the answers
//! that completed and marks the question `interrupted`, naming the backends cut off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::TestHome;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

use super::{backend_entry, create_session, pairs, roles_and_contents, start_with_backends};

/// A long answer, one word every 200 ms: still streaming when any test's grace period ends.
fn slow_stream() -> Behaviour {
    Behaviour::Reply {
        text: Some("word ".repeat(200)),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(200),
    }
}

async fn messages(server: &crate::support::Server, session: &str) -> Value {
    server
        .get_json(&format!("/sessions/{session}/messages"))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn at_sigterm_answers_get_the_grace_period_then_open_streams_get_a_final_event() {
    let slow = FakeBackend::start(Wire::Ollama).await;
    slow.set_behaviour(slow_stream());
    let quick = FakeBackend::start(Wire::Ollama).await;
    quick.set_behaviour(Behaviour::Reply {
        text: Some("a b c d e".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(100),
    });
    let hung = FakeBackend::start(Wire::Ollama).await;
    hung.set_behaviour(Behaviour::Hang);
    let home = TestHome::new();
    let entries = [
        backend_entry("llm", &slow, Wire::Ollama, ""),
        backend_entry("quick", &quick, Wire::Ollama, ""),
        backend_entry("hung", &hung, Wire::Ollama, ""),
    ];
    let grace = "server:\n  shutdown_grace_secs: 1\n";
    let mut server = start_with_backends(&home, &entries, grace);
    let session = create_session(&server, json!({"backends": ["llm"]})).await;
    let v1_session = create_session(&server, json!({"backends": ["llm"]})).await;
    let quick_session = create_session(&server, json!({"backends": ["quick"]})).await;
    let both = create_session(&server, json!({"backends": ["quick", "llm"]})).await;
    let whole = create_session(&server, json!({"backends": ["hung"]})).await;

    let stream = |path: String, body: Value| {
        let request = server.post(&path).json(&body);
        async move { Events::new(request.send().await.unwrap()) }
    };
    let mut events = stream(
        format!("/sessions/{session}/message"),
        json!({"content": "tell me everything", "stream": true}),
    )
    .await;
    assert_eq!(events.next().await.expect("a first event").0, "delta");
    let mut short = stream(
        format!("/sessions/{quick_session}/message"),
        json!({"content": "short one", "stream": true}),
    )
    .await;
    assert_eq!(short.next().await.expect("a first event").0, "delta");
    let mut broadcast = stream(
        format!("/sessions/{both}/broadcast"),
        json!({"content": "both of you", "stream": true}),
    )
    .await;
    assert_eq!(broadcast.next().await.expect("a first event").0, "delta");
    let mut completion = server
        .post("/v1/chat/completions")
        .header("X-Session-Id", &v1_session)
        .json(&json!({
            "model": "llm/fake-model",
            "stream": true,
            "messages": [{"role": "user", "content": "and you?"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(completion.status(), 200);
    let first = completion.chunk().await.unwrap().expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).contains("data:"));
    let waiting = super::send_in_background(&server, &whole, json!({"content": "whole, please"}));
    hung.wait_for_chats(1, Duration::from_secs(10)).await;

    server.signal(Signal::SIGTERM);

    // An answer that finishes within the grace period is delivered whole.
    let rest = short.all().await;
    let (name, done) = rest.last().unwrap();
    assert_eq!(name, "done", "{rest:?}");
    assert_eq!(done["content"], "a b c d e");
    // The session stream: its deltas go on through the grace period, then the final event.
    let rest = events.all().await;
    let (name, last) = rest.last().expect("a final event");
    assert_eq!(name, "error", "{rest:?}");
    assert_eq!(last["interrupted"], true, "{last}");
    assert_eq!(last["code"], "server_shutting_down", "{last}");
    assert_eq!(last["status"], 503, "{last}");
    assert_eq!(last["backend"], "llm", "{last}");
    assert!(
        last["detail"].as_str().unwrap().contains("shutting down"),
        "{last}"
    );
    // The broadcast: quick's answer is done, llm's reply ends with the final event.
    let rest = broadcast.all().await;
    let ends: Vec<(&str, &Value)> = rest
        .iter()
        .filter(|(name, _)| name != "delta")
        .map(|(name, data)| (name.as_str(), &data["backend"]))
        .collect();
    assert_eq!(
        ends,
        [("done", &json!("quick")), ("error", &json!("llm"))],
        "{rest:?}"
    );
    assert_eq!(rest.last().unwrap().1["code"], "server_shutting_down");
    // The /v1 stream: OpenAI's mid-stream error chunk, then [DONE].
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = completion.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let error: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["type"], "server_error", "{text}");
    assert_eq!(error["error"]["code"], "server_shutting_down", "{text}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{text}"
    );
    // A client waiting for a whole answer gets a 503 saying so.
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "lit-mux did not stop"
    );
    assert_eq!(slow.aborted_requests(), 3, "every slow call is cancelled");
    assert_eq!(hung.aborted_requests(), 1, "the hung call is cancelled");

    // After a restart: the questions cut off are interrupted, the partial answers kept.
    let server = start_with_backends(&home, &entries, grace);
    let stored = messages(&server, &session).await;
    assert_eq!(stored[0]["metadata"]["status"], "interrupted", "{stored}");
    assert_eq!(stored[1]["role"], "assistant", "{stored}");
    assert_eq!(stored[1]["metadata"]["status"], "incomplete", "{stored}");
    assert!(
        stored[1]["metadata"]["error"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{stored}"
    );
    let stored = messages(&server, &v1_session).await;
    assert_eq!(stored[0]["metadata"]["status"], "interrupted", "{stored}");
    let stored = messages(&server, &whole).await;
    assert_eq!(stored[0]["metadata"]["status"], "interrupted", "{stored}");
    let stored = messages(&server, &quick_session).await;
    assert!(stored[0]["metadata"]["status"].is_null(), "{stored}");
    assert_eq!(
        roles_and_contents(&stored),
        pairs(&[("user", "short one"), ("assistant", "a b c d e")])
    );
    let stored = messages(&server, &both).await;
    assert_eq!(stored[0]["metadata"]["status"], "interrupted", "{stored}");
    assert_eq!(
        stored[0]["metadata"]["interrupted_backends"],
        json!(["llm"]),
        "{stored}"
    );
    assert!(
        stored
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["content"] == "a b c d e" && m["metadata"]["status"].is_null()),
        "quick's answer is kept whole: {stored}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_in_flight_when_lit_mux_is_killed_is_interrupted_at_the_next_start() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Hang);
    let home = TestHome::new();
    let entries = [backend_entry("llm", &fake, Wire::Ollama, "")];
    let server = start_with_backends(&home, &entries, "");
    let session = create_session(&server, json!({"backends": ["llm"]})).await;
    let _client = super::send_in_background(&server, &session, json!({"content": "hello?"}));
    fake.wait_for_chats(1, Duration::from_secs(10)).await;
    let pending = testkit::processes::eventually(Duration::from_secs(5), || async {
        messages(&server, &session).await[0]["metadata"]["status"] == "pending"
    })
    .await;
    assert!(
        pending,
        "the question is not pending: {}",
        messages(&server, &session).await
    );

    server.signal(Signal::SIGKILL);
    drop(server);

    let server = start_with_backends(&home, &entries, "");
    let stored = messages(&server, &session).await;
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
    assert_eq!(stored[0]["metadata"]["status"], "interrupted", "{stored}");
    assert!(
        stored[0]["metadata"]["error"]
            .as_str()
            .unwrap()
            .contains("stopped"),
        "{stored}"
    );
    assert!(
        server.stderr().contains("marked interrupted"),
        "{}",
        server.stderr()
    );
    // It is left out of the next message's context, as a failed one would be.
    fake.set_behaviour(Behaviour::default());
    let (status, _) = super::send(&server, &session, json!({"content": "again"})).await;
    assert_eq!(status, 200);
    let sent = fake.last_chat().body.to_string();
    assert!(!sent.contains("hello?"), "{sent}");
}
