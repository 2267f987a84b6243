//! A chat completion reaches the backend translated to its wire (the system prompt, content parts,
//! the model asked for as `backend` or `backend/model`) and comes back in OpenAI's shape, plain or
//! streamed as chunks with the finish, the usage asked for and `[DONE]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::TestHome;
use serde_json::{Value, json};
use testkit::fake_backends::{FakeBackend, Wire};

use super::{completion, data_lines};

#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_the_backend_translated_and_answers_come_back_in_openai_shape() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  claude: {{type: anthropic, base_url: '{}', api_key: k, default_model: claude-x}}\n",
        fake.url()
    ));
    let server = home.start(&[]);

    let (status, body) = completion(
        &server,
        json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]}
            ],
            "temperature": 0.2
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "claude/claude-x");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "anthropic says: second"
    );
    assert_eq!(
        body["choices"][0]["finish_reason"], "stop",
        "end_turn → stop"
    );
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");

    let sent = fake.last_chat().body;
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["system"], "You are terse.");
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);

    // Streamed, with usage asked for: chunks, the finish, the usage, then [DONE].
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({
            "model": "claude/claude-y",
            "messages": [{"role": "user", "content": "count these words"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let lines = data_lines(&response.text().await.unwrap());
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "anthropic says: count these words");
    let finish = chunks
        .iter()
        .position(|c| c["choices"][0]["finish_reason"] == "stop")
        .expect("a finish chunk");
    let usage = chunks.last().unwrap();
    assert_eq!(finish, chunks.len() - 2, "usage comes last");
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.last_chat().body["model"], "claude-y");
}
