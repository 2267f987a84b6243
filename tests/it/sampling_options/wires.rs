//! Each wire receives the options in its own names and shapes: OpenAI-compatible servers as
//! OpenAI's, Ollama in its `options` object with `format` and logprobs beside, Anthropic as the
//! Messages API's fields; streamed or not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::TestHome;
use serde_json::json;
use testkit::fake_backends::{FakeBackend, Wire};

use super::{OPTION_KEYS, chat_body, completion, only, start, weather_tool};

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_compatible_backend_receives_every_option_as_openai_names_it() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let server = start(&home, &[("gpt", &fake, "")]);
    let every_option = json!({
        "temperature": 0.3,
        "top_p": 0.9,
        "max_completion_tokens": 120,
        "stop": "END",
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}, "strict": true}},
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": false,
        "user": "user-7",
        "logprobs": true,
        "top_logprobs": 3,
        "n": 1,
        "tools": weather_tool(),
    });
    let expected = json!({
        "temperature": 0.3,
        "top_p": 0.9,
        // Kept under the older name, the one every compatible server knows.
        "max_tokens": 120,
        "stop": ["END"],
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}, "strict": true}},
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": false,
        "user": "user-7",
        "logprobs": true,
        "top_logprobs": 3,
        "n": 1,
    });
    for streamed in [false, true] {
        let mut body = chat_body("gpt", every_option.clone());
        body["stream"] = json!(streamed);
        let response = server
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "streamed={streamed}");
        response.text().await.unwrap();
        let mut sent = only(&fake.last_chat().body, &OPTION_KEYS);
        if streamed {
            assert_eq!(sent["stream_options"], json!({"include_usage": true}));
            sent.as_object_mut().unwrap().remove("stream_options");
        }
        assert_eq!(sent, expected, "streamed={streamed}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_receives_the_options_in_its_own_names() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    let server = start(&home, &[("local", &fake, "")]);
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let (status, body) = completion(
        &server,
        chat_body(
            "local",
            json!({
                "temperature": 0.3,
                "top_p": 0.9,
                "max_tokens": 120,
                "stop": ["END", "STOP"],
                "seed": 42,
                "presence_penalty": 0.5,
                "frequency_penalty": -0.5,
                "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}},
                "logprobs": true,
                "top_logprobs": 3,
                "n": 1,
            }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        only(&fake.last_chat().body, &OPTION_KEYS),
        json!({
            "options": {
                "temperature": 0.3,
                "top_p": 0.9,
                "num_predict": 120,
                "stop": ["END", "STOP"],
                "seed": 42,
                "presence_penalty": 0.5,
                "frequency_penalty": -0.5,
            },
            "format": schema,
            "logprobs": true,
            "top_logprobs": 3,
        })
    );

    // Any JSON object is Ollama's `format: "json"`; no option at all sends no `options`.
    let (status, body) = completion(
        &server,
        chat_body("local", json!({"response_format": {"type": "json_object"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        only(&fake.last_chat().body, &OPTION_KEYS),
        json!({"format": "json"})
    );
    let (status, body) = completion(&server, chat_body("local", json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(only(&fake.last_chat().body, &OPTION_KEYS), json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_receives_what_the_messages_api_has() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    let server = start(&home, &[("claude", &fake, "")]);
    for streamed in [false, true] {
        let mut body = chat_body(
            "claude",
            json!({
                "temperature": 0.7,
                "top_p": 0.9,
                "max_tokens": 300,
                "stop": ["END"],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "user": "user-7",
                "response_format": {"type": "text"},
                "logprobs": false,
                "n": 1,
                "tools": weather_tool(),
                "stream": streamed,
            }),
        );
        body["stream"] = json!(streamed);
        let response = server
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "streamed={streamed}");
        response.text().await.unwrap();
        assert_eq!(
            only(&fake.last_chat().body, &OPTION_KEYS),
            json!({
                "temperature": 0.7,
                "top_p": 0.9,
                "max_tokens": 300,
                "stop_sequences": ["END"],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "user-7"},
            }),
            "streamed={streamed}"
        );
    }

    // A named tool is `{"type": "tool"}`; without a length bound the configured one is sent.
    let mut body = chat_body(
        "claude",
        json!({"tool_choice": {"type": "function", "function": {"name": "weather"}}}),
    );
    body["tools"] = weather_tool();
    let (status, answer) = completion(&server, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        only(&fake.last_chat().body, &OPTION_KEYS),
        json!({"max_tokens": 4096, "tool_choice": {"type": "tool", "name": "weather"}})
    );
}
