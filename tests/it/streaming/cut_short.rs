//! A stream cut short from our side: a client that leaves mid-stream cancels the backend's request
//! and the partial answer is kept marked incomplete, as is a reply still streaming when lit-mux
//! stops.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::TestHome;
use serde_json::json;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

use super::{config_for, session, stream_message};

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_stream_cancels_the_backend_and_the_partial_answer_is_kept() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Reply {
        text: Some("a long answer that takes its time to finish".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(300),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;

    let mut events =
        Events::new(stream_message(&server, &id, json!({"content": "go", "stream": true})).await);
    let (name, first) = events.next().await.unwrap();
    assert_eq!(name, "delta");
    drop(events);

    assert!(
        testkit::processes::eventually(Duration::from_secs(5), || async {
            fake.aborted_requests() == 1
        })
        .await,
        "the backend's request was not cancelled"
    );
    let stored = testkit::processes::eventually(Duration::from_secs(5), || async {
        let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
        messages.as_array().unwrap().len() == 2
    })
    .await;
    assert!(stored, "the partial answer was not stored");
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let partial = &messages[1];
    assert_eq!(partial["metadata"]["status"], "incomplete", "{partial}");
    let content = partial["content"].as_str().unwrap();
    assert!(
        content.starts_with(first["text"].as_str().unwrap()),
        "{content}"
    );
    assert!(content.len() < "a long answer that takes its time to finish".len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_still_streaming_when_lit_mux_stops_is_kept_marked_incomplete() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Reply {
        text: Some("a long answer that is still coming when the server stops".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(300),
    });
    let home = TestHome::new();
    home.write_config(&format!(
        "server:\n  shutdown_grace_secs: 1\n{}",
        config_for(&[("llm", &fake, Wire::Ollama)])
    ));
    let mut server = home.start(&[]);
    let id = session(&server, &["llm"]).await;
    let mut events =
        Events::new(stream_message(&server, &id, json!({"content": "go", "stream": true})).await);
    let (name, first) = events.next().await.unwrap();
    assert_eq!(name, "delta");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, took) = server
        .wait_exit(Duration::from_secs(10))
        .expect("lit-mux did not exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    drop(events);

    let server = home.start(&[]);
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    assert_eq!(messages.as_array().unwrap().len(), 2, "{messages}");
    let partial = &messages[1];
    assert_eq!(partial["role"], "assistant", "{partial}");
    assert_eq!(partial["metadata"]["status"], "incomplete", "{partial}");
    let content = partial["content"].as_str().unwrap();
    assert!(
        content.starts_with(first["text"].as_str().unwrap()),
        "{content}"
    );
}
