//! A streamed broadcast: every backend's events are interleaved as they come and tagged with their
//! backend, a failing backend gets an error event, and the backends are asked concurrently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::TestHome;
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

use super::{config_for, session};

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_broadcast_interleaves_every_backends_events() {
    let ollama = FakeBackend::start(Wire::Ollama).await;
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let failing = FakeBackend::start(Wire::OpenAi).await;
    for fake in [&ollama, &anthropic] {
        fake.set_behaviour(Behaviour::Reply {
            text: None,
            delay: Duration::ZERO,
            chunk_delay: Duration::from_millis(100),
        });
    }
    failing.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "boom".to_owned(),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[
        ("a", &ollama, Wire::Ollama),
        ("b", &anthropic, Wire::Anthropic),
        ("c", &failing, Wire::OpenAi),
    ]));
    let server = home.start(&[]);
    let id = session(&server, &["a", "b", "c"]).await;

    let started = Instant::now();
    let response = server
        .post(&format!("/sessions/{id}/broadcast"))
        .json(&json!({"content": "hi both", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = Events::new(response).all().await;
    let took = started.elapsed();

    let backend_of = |data: &Value| data["backend"].as_str().unwrap().to_owned();
    let order: Vec<String> = events.iter().map(|(_, data)| backend_of(data)).collect();
    // Interleaved: b's events do not all come after a's (or the reverse).
    let first_b = order.iter().position(|b| b == "b").unwrap();
    let last_a = order.iter().rposition(|b| b == "a").unwrap();
    let first_a = order.iter().position(|b| b == "a").unwrap();
    let last_b = order.iter().rposition(|b| b == "b").unwrap();
    assert!(first_b < last_a && first_a < last_b, "{order:?}");

    for (backend, expected) in [
        ("a", "ollama says: hi both"),
        ("b", "anthropic says: hi both"),
    ] {
        let text: String = events
            .iter()
            .filter(|(name, data)| name == "delta" && backend_of(data) == backend)
            .map(|(_, data)| data["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, expected);
        assert!(
            events
                .iter()
                .any(|(name, data)| name == "done" && backend_of(data) == backend),
            "{backend} has no done"
        );
    }
    let error = events
        .iter()
        .find(|(_, data)| backend_of(data) == "c")
        .expect("an event for c");
    assert_eq!(error.0, "error");
    assert!(error.1["detail"].as_str().unwrap().contains("boom"));

    // Four words each at 100 ms: concurrently, about 0.4 s, not 0.8 s.
    assert!(took < Duration::from_millis(750), "took {took:?}");

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    assert_eq!(messages.as_array().unwrap().len(), 3, "{messages}");
    assert_eq!(messages[0]["metadata"]["failed_backends"], json!(["c"]));
}
