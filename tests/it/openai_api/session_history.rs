//! A completion naming a session (by header or field) appends only the new exchange to it, since
//! the client sends the history itself; a question whose client left or whose backend failed stays,
//! marked failed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::{TestHome, status_and_json};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{completion, session};

#[tokio::test(flavor = "multi_thread")]
async fn a_session_id_appends_the_exchange_and_a_failure_keeps_the_question() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  local: {{type: ollama, host: '{}'}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    let id = session(&server, "local").await;

    let response = server
        .post("/v1/chat/completions")
        .header("x-session-id", &id)
        .json(&json!({"model": "local/qwen3", "messages": [
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "now"}
        ]}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 200, "{body}");

    fake.set_behaviour(Behaviour::Hang);
    let slow = tokio::time::timeout(
        Duration::from_millis(300),
        completion(
            &server,
            json!({"model": "local", "messages": [{"role": "user", "content": "lost?"}], "session_id": id}),
        ),
    )
    .await;
    assert!(slow.is_err(), "the hung backend must not answer");
    // The client left: its question stays, marked interrupted.
    let marked = testkit::processes::eventually(Duration::from_secs(5), || async {
        let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
        messages
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["content"] == "lost?" && m["metadata"]["status"] == "interrupted")
    })
    .await;
    assert!(marked, "the abandoned question was not marked interrupted");
    fake.set_behaviour(Behaviour::Fail {
        status: 404,
        message: "model 'qwen9' not found".to_owned(),
    });
    let (status, _) = completion(
        &server,
        json!({"model": "local/qwen9", "messages": [{"role": "user", "content": "fails"}], "session_id": id}),
    )
    .await;
    assert_eq!(status, 502);

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let stored: Vec<(String, String, Value)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
                m["metadata"]["status"].clone(),
            )
        })
        .collect();
    // Only the new message of each exchange is stored: the client sent the history itself.
    assert_eq!(stored[0].0, "user");
    assert_eq!(stored[0].1, "now");
    assert_eq!(
        stored[1],
        (
            "assistant".to_owned(),
            "ollama says: now".to_owned(),
            Value::Null
        )
    );
    let failed = stored
        .iter()
        .find(|m| m.1 == "fails")
        .expect("the failed question is kept");
    assert_eq!(failed.2, "failed");
    let models: Vec<Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].clone())
        .collect();
    assert_eq!(models[0], "qwen3");
}
