//! A session keeps default options (shown in its view), a message or a broadcast overrides them
//! option by option, and every model call of a tool loop gets them. Sessions are lit-mux's own
//! API, so unknown option names are refused (422, all named), and a refused message stores
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::TestHome;
use crate::support::mcp::everything;
use serde_json::json;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{OPTION_KEYS, only, session, start};

#[tokio::test(flavor = "multi_thread")]
async fn session_defaults_reach_the_backend_and_a_message_overrides_them_key_by_key() {
    let ollama = FakeBackend::start(Wire::Ollama).await;
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    let server = start(&home, &[("local", &ollama, ""), ("claude", &anthropic, "")]);
    let (status, created) = session(
        &server,
        json!({"backends": ["local", "claude"], "options": {"temperature": 0.2, "max_tokens": 100, "stop": "X"}}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let expected_defaults = json!({"temperature": 0.2, "max_tokens": 100, "stop": ["X"]});
    assert_eq!(created["options"], expected_defaults);
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        server.get_json(&format!("/sessions/{id}")).await["options"],
        expected_defaults
    );

    let (status, answer) = server
        .post_json(
            &format!("/sessions/{id}/message"),
            &json!({"content": "hi", "backend": "local", "options": {"temperature": 0.9, "seed": 5}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        only(&ollama.last_chat().body, &OPTION_KEYS),
        json!({"options": {"temperature": 0.9, "num_predict": 100, "stop": ["X"], "seed": 5}})
    );

    // Streamed, the defaults alone.
    let response = server
        .post(&format!("/sessions/{id}/message"))
        .json(&json!({"content": "again", "backend": "claude", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    assert_eq!(
        only(&anthropic.last_chat().body, &OPTION_KEYS),
        json!({"temperature": 0.2, "max_tokens": 100, "stop_sequences": ["X"]})
    );

    // A broadcast: the same options, over the defaults, for every backend.
    let (status, answer) = server
        .post_json(
            &format!("/sessions/{id}/broadcast"),
            &json!({"content": "all", "options": {"top_p": 0.5, "max_tokens": 50}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        only(&ollama.last_chat().body, &OPTION_KEYS),
        json!({"options": {"temperature": 0.2, "top_p": 0.5, "num_predict": 50, "stop": ["X"]}})
    );
    assert_eq!(
        only(&anthropic.last_chat().body, &OPTION_KEYS),
        json!({"temperature": 0.2, "top_p": 0.5, "max_tokens": 50, "stop_sequences": ["X"]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_options_are_strict_and_a_refused_message_stores_nothing() {
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let openai = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let server = start(&home, &[("claude", &anthropic, ""), ("gpt", &openai, "")]);

    // Unknown names, all named.
    let (status, body) = session(
        &server,
        json!({"backends": ["gpt"], "options": {"temprature": 1, "max_token": 5, "top_p": 1}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"][0]["msg"].as_str().unwrap();
    assert!(
        detail.contains("unknown option(s) max_token, temprature"),
        "{detail}"
    );
    // Out of range, and what a backend of the session cannot honour.
    let (status, body) = session(
        &server,
        json!({"backends": ["gpt"], "options": {"top_p": 3}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["detail"], "top_p must be from 0 to 1, got 3");
    let (status, body) = session(
        &server,
        json!({"backends": ["gpt", "claude"], "options": {"seed": 3}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("backend claude: seed is not supported"),
        "{body}"
    );

    let (status, created) = session(&server, json!({"backends": ["claude", "gpt"]})).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["options"], json!({}));
    let id = created["id"].as_str().unwrap();
    for (path, body, code) in [
        (
            "message",
            json!({"content": "hi", "options": {"bogus": true}}),
            422,
        ),
        (
            "message",
            json!({"content": "hi", "options": {"seed": 1}}),
            400,
        ),
        (
            "message",
            json!({"content": "hi", "stream": true, "options": {"temperature": 1.5}}),
            400,
        ),
        (
            "message",
            json!({"content": "hi", "options": {"n": 2}}),
            400,
        ),
        (
            "broadcast",
            json!({"content": "hi", "options": {"logprobs": true}}),
            400,
        ),
    ] {
        let (status, answer) = server
            .post_json(&format!("/sessions/{id}/{path}"), &body)
            .await;
        assert_eq!(status, code, "{path} {body}: {answer}");
        // A 422 lists its problems; every other status says one sentence.
        let detail = answer["detail"]
            .as_str()
            .or_else(|| answer["detail"][0]["msg"].as_str())
            .unwrap();
        assert!(!detail.contains("Some("), "{detail}");
        if code == 400 && body["options"].get("n").is_none() {
            assert!(detail.starts_with("backend claude: "), "{detail}");
        }
    }
    assert!(anthropic.chat_requests().is_empty());
    assert!(openai.chat_requests().is_empty());
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    assert_eq!(messages, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_model_call_of_a_tool_loop_gets_the_options() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.queue(vec![Behaviour::tool_call(
        "everything__echo",
        json!({"message": "hi"}),
    )]);
    fake.set_behaviour(Behaviour::Reply {
        text: Some("All done.".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    let server = start(&home, &[("gpt", &fake, "")]);
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "everything", "command": everything(), "args": ["stdio"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, created) = session(
        &server,
        json!({"backends": ["gpt"], "options": {"seed": 9}}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap();

    let (status, answer) = server
        .post_json(
            &format!("/sessions/{id}/message"),
            &json!({"content": "say hi with a tool", "options": {"temperature": 0.4, "tool_choice": "auto"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "All done.");
    let calls = fake.chat_requests();
    assert_eq!(calls.len(), 2, "the call, then the result");
    for call in &calls {
        assert_eq!(
            only(&call.body, &["temperature", "seed", "tool_choice"]),
            json!({"temperature": 0.4, "seed": 9, "tool_choice": "auto"})
        );
    }
}
