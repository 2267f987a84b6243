//! The official `openai` Python package works unchanged against the front door: models listed, a
//! reply and a stream in pieces, OpenAI's errors for an unknown model and a wrong key, and the
//! streamed exchange stored in the session it named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{TestHome, status_and_json};
use serde_json::{Value, json};

const KEY: &str = "front-door-key-123";

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_works_unchanged() {
    let home = TestHome::new();
    home.write_config(&format!("server:\n  api_key: {KEY}\n"));
    let server = home.start(&[]);
    let (status, created) = status_and_json(
        server
            .post("/sessions")
            .bearer_auth(KEY)
            .json(&json!({"backends": ["echo"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let session_id = created["id"].as_str().unwrap().to_owned();

    let output = tokio::process::Command::new(crate::support::client_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/openai_client.py"
        ))
        .arg(server.url(""))
        .arg(KEY)
        .arg(&session_id)
        .output()
        .await
        .unwrap();
    let seen = crate::support::client_json(&output);

    assert!(
        seen["models"]
            .as_array()
            .unwrap()
            .contains(&json!("echo/echo")),
        "{seen}"
    );
    assert_eq!(seen["reply"]["content"], "hello from python");
    assert_eq!(seen["reply"]["finish_reason"], "stop");
    assert_eq!(seen["reply"]["model"], "echo/echo");
    assert_eq!(seen["reply"]["object"], "chat.completion");
    let pieces: Vec<&str> = seen["stream"]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1, "streamed in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), "streamed word by word");
    assert_eq!(seen["stream"]["finish_reason"], "stop");
    assert_eq!(seen["unknown_model"]["status"], 404, "{seen}");
    assert_eq!(seen["unknown_model"]["code"], "model_not_found");
    assert_eq!(seen["wrong_key"]["status"], 401);

    // The streamed exchange went into the session named by `session_id`.
    let messages: Value = server
        .get(&format!("/sessions/{session_id}/messages"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: Vec<(&str, &str)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stored,
        [
            ("user", "streamed word by word"),
            ("assistant", "streamed word by word")
        ]
    );
}
