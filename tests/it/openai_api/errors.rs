//! Every failure is an error in OpenAI's shape with the right status: unknown or disabled models,
//! malformed bodies, no messages, an unknown session, a backend failure, a rate limit with
//! Retry-After, and a stream cut off midway carrying an error chunk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{TestHome, status_and_json};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{completion, data_lines};

#[tokio::test(flavor = "multi_thread")]
async fn every_failure_is_an_openai_error_with_the_right_status() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  gpt: {{type: openai, base_url: '{}', api_key: k}}\n  off: {{type: echo, enabled: false}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    let user = json!([{"role": "user", "content": "hi"}]);
    let error_of = |body: &Value| {
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"]["type"].is_string(), "{body}");
        assert!(body.get("detail").is_none(), "{body}");
        body["error"].clone()
    };

    for model in ["nope", "nope/model", "off/echo"] {
        let (status, body) = completion(&server, json!({"model": model, "messages": user})).await;
        assert_eq!(status, 404, "{model}: {body}");
        assert_eq!(error_of(&body)["code"], "model_not_found");
    }

    let (status, body) = status_and_json(
        server
            .post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body("{\"model\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_of(&body)["type"], "invalid_request_error");

    let (status, body) = completion(&server, json!({"model": "gpt", "messages": []})).await;
    assert_eq!(status, 400, "{body}");
    error_of(&body);

    let (status, body) = completion(
        &server,
        json!({"model": "gpt", "messages": user, "session_id": "no-such-session"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_of(&body)["code"], "session_not_found");

    fake.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "the GPU caught fire".to_owned(),
    });
    let (status, body) = completion(&server, json!({"model": "gpt", "messages": user})).await;
    assert_eq!(status, 502, "{body}");
    let error = error_of(&body);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the GPU caught fire"),
        "{error}"
    );

    fake.set_behaviour(Behaviour::RateLimited {
        retry_after_secs: 7,
    });
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt", "messages": user, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_of(&body)["code"], "rate_limit_exceeded");

    // Cut off mid-stream: the stream carries an error, then ends.
    fake.set_behaviour(Behaviour::DropMidStream);
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt", "messages": user, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let lines = data_lines(&response.text().await.unwrap());
    let error = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|chunk| chunk.get("error").is_some())
        .unwrap_or_else(|| panic!("no error chunk in {lines:?}"));
    assert_eq!(error["error"]["type"], "api_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_use_tools_header_that_is_neither_yes_nor_no_is_refused_naming_the_values() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let request = json!({"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]});
    let ask = |value: &'static str| {
        server
            .post("/v1/chat/completions")
            .header("X-Lit-Mux-Use-Tools", value)
            .json(&request)
            .send()
    };

    let (status, body) = status_and_json(ask("ture").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("X-Lit-Mux-Use-Tools")
            && message.contains("\"ture\"")
            && ["true", "false", "1", "0", "yes", "no"]
                .iter()
                .all(|value| message.contains(value)),
        "{message}"
    );
    // Any case, and no as well as yes.
    for value in ["FALSE", "No", "0", "Yes", "TRUE"] {
        let (status, body) = status_and_json(ask(value).await.unwrap()).await;
        assert_eq!(status, 200, "{value}: {body}");
    }
}
