//! A stream as it should go: deltas then `done` in every wire format, the answer stored under the
//! `done` event's id; the first token goes out before the answer is complete; the answer's duration
//! counts the wait for its first byte; and `Accept: text/event-stream` alone asks for a stream,
//! with JSON beside it not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::TestHome;
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

use super::{config_for, session, stream_message};

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_reply_is_deltas_then_done_and_is_stored() {
    for wire in [Wire::Ollama, Wire::OpenAi, Wire::Anthropic] {
        let fake = FakeBackend::start(wire).await;
        let home = TestHome::new();
        home.write_config(&config_for(&[("llm", &fake, wire)]));
        let server = home.start(&[]);
        let id = session(&server, &["llm"]).await;

        let events = Events::new(
            stream_message(
                &server,
                &id,
                json!({"content": "tell me more", "stream": true}),
            )
            .await,
        )
        .all()
        .await;
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert!(names.len() >= 3, "{wire:?}: {names:?}");
        assert_eq!(names.last(), Some(&"done"), "{wire:?}: {names:?}");
        assert!(
            names[..names.len() - 1].iter().all(|n| *n == "delta"),
            "{names:?}"
        );
        let text: String = events[..events.len() - 1]
            .iter()
            .map(|(_, data)| {
                assert_eq!(data["backend"], "llm");
                data["text"].as_str().unwrap().to_owned()
            })
            .collect();
        let done = &events.last().unwrap().1;
        assert_eq!(done["content"], text);
        assert_eq!(text, format!("{} says: tell me more", wire.name()));
        assert_eq!(fake.last_chat().body["stream"], true);

        let stored = server.get_json(&format!("/sessions/{id}/messages")).await;
        assert_eq!(stored[1]["id"], done["id"]);
        assert_eq!(stored[1]["content"], text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_token_goes_out_before_the_answer_is_complete() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.set_behaviour(Behaviour::Reply {
        text: Some("one two three four five six".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(200),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::OpenAi)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;

    let started = Instant::now();
    // Chosen by the Accept header alone.
    let response = server
        .post(&format!("/sessions/{id}/message"))
        .header("accept", "text/event-stream")
        .json(&json!({"content": "count"}))
        .send()
        .await
        .unwrap();
    let mut events = Events::new(response);
    let (name, first) = events.next().await.unwrap();
    let first_at = started.elapsed();
    assert_eq!(name, "delta", "{first}");
    let mut last = (String::new(), Value::Null);
    while let Some(event) = events.next().await {
        last = event;
    }
    let done_at = started.elapsed();
    assert_eq!(last.0, "done");
    assert!(
        first_at < Duration::from_millis(400) && done_at > Duration::from_millis(1000),
        "first token at {first_at:?}, done at {done_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_answers_duration_counts_the_wait_for_its_first_byte() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::from_millis(600),
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;
    let events =
        Events::new(stream_message(&server, &id, json!({"content": "slow", "stream": true})).await)
            .all()
            .await;
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done", "{events:?}");
    let duration = done["metadata"]["duration_ms"].as_u64().unwrap();
    assert!(duration >= 600, "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_event_stream_alone_asks_for_a_stream_and_json_beside_it_does_not() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let id = session(&server, &["echo"]).await;
    let send = |accept: &'static str| {
        server
            .post(&format!("/sessions/{id}/message"))
            .header("accept", accept)
            .json(&json!({"content": "hello"}))
            .send()
    };

    let streamed = send("text/event-stream").await.unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(
        streamed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = Events::new(streamed).all().await;
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done");
    assert_eq!(done["content"], "hello");

    for accept in ["application/json, text/event-stream", "*/*"] {
        let plain = send(accept).await.unwrap();
        assert_eq!(plain.status(), 200);
        assert!(
            plain.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{accept}"
        );
        let body: Value = plain.json().await.unwrap();
        assert_eq!(body["content"], "hello", "{accept}");
    }
}
