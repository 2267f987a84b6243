//! Options a backend's API lacks are refused (400 naming the option and the backend) unless the
//! backend's config says `drop_unsupported_params: true`; values outside OpenAI's ranges, or
//! Anthropic's temperature range, are always refused; `n` above 1 is refused everywhere, since
//! lit-mux answers with one choice; and nothing of a refused request is stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::TestHome;
use serde_json::json;
use testkit::fake_backends::{FakeBackend, Wire};

use super::{OPTION_KEYS, chat_body, completion, only, start, weather_tool};

#[tokio::test(flavor = "multi_thread")]
async fn options_an_api_lacks_are_refused_naming_the_backend_unless_dropped() {
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let ollama = FakeBackend::start(Wire::Ollama).await;
    let lenient = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    let server = start(
        &home,
        &[
            ("claude", &anthropic, ""),
            ("local", &ollama, ""),
            (
                "claude_lenient",
                &lenient,
                ", drop_unsupported_params: true",
            ),
        ],
    );
    let cases = [
        ("claude", json!({"seed": 1}), "seed is not supported"),
        (
            "claude",
            json!({"presence_penalty": 0.1, "logprobs": true}),
            "presence_penalty, logprobs are not supported",
        ),
        (
            "claude",
            json!({"response_format": {"type": "json_object"}}),
            "response_format is not supported",
        ),
        (
            "local",
            json!({"tool_choice": "auto", "tools": weather_tool()}),
            "tool_choice is not supported",
        ),
        ("local", json!({"user": "u"}), "user is not supported"),
    ];
    for (backend, options, message) in cases {
        let (status, body) = completion(&server, chat_body(backend, options.clone())).await;
        assert_eq!(status, 400, "{backend} {options}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(
            text.contains(&format!("backend {backend}:")) && text.contains(message),
            "{backend} {options}: {text}"
        );
        assert!(text.contains("drop_unsupported_params"), "{text}");
    }
    assert!(anthropic.chat_requests().is_empty());
    assert!(ollama.chat_requests().is_empty());

    // Dropped where the config says so: the rest still arrives.
    let (status, body) = completion(
        &server,
        chat_body(
            "claude_lenient",
            json!({"seed": 1, "frequency_penalty": 1, "temperature": 0.5}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        only(&lenient.last_chat().body, &OPTION_KEYS),
        json!({"temperature": 0.5, "max_tokens": 4096})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_temperature_above_anthropics_range_is_refused_even_when_dropping() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    let server = start(
        &home,
        &[("claude", &fake, ", drop_unsupported_params: true")],
    );
    let (status, body) =
        completion(&server, chat_body("claude", json!({"temperature": 1.5}))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "backend claude: temperature must be from 0 to 1 on Anthropic's API, got 1.5"
    );
    assert!(fake.chat_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn values_outside_openai_ranges_are_refused_naming_option_and_range() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let cases = [
        (
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            "stop holds at most 4 sequences, got 5",
        ),
        (
            json!({"stop": [""]}),
            "each stop sequence must be 1 to 1000 characters",
        ),
        (
            json!({"top_logprobs": 2}),
            "top_logprobs needs logprobs: true",
        ),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs must be from 0 to 20, got 21",
        ),
        (
            json!({"max_tokens": 10, "max_completion_tokens": 20}),
            "max_tokens (10) and max_completion_tokens (20) are the same bound",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "no spaces"}}}),
            "response_format.json_schema.name must be 1 to 64",
        ),
        (
            json!({"user": "u".repeat(257)}),
            "user must be at most 256 characters, got 257",
        ),
        (json!({"n": 0}), "n must be from 1 to 128, got 0"),
    ];
    for (options, message) in cases {
        let (status, body) = completion(&server, chat_body("echo", options.clone())).await;
        assert_eq!(status, 400, "{options}: {body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{options}: {text}");
    }
    // A shape OpenAI does not have is the body's error (422), in plain words.
    let (status, body) = completion(
        &server,
        chat_body("echo", json!({"tool_choice": "sometimes"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let text = body["error"]["message"].as_str().unwrap();
    assert!(text.contains("not a tool choice"), "{text}");
    assert!(!text.contains("Some("), "{text}");
    // The same bound under both names is fine.
    let (status, body) = completion(
        &server,
        chat_body(
            "echo",
            json!({"max_tokens": 10, "max_completion_tokens": 10}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_one_choice_is_refused_and_nothing_is_stored() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let server = start(&home, &[("gpt", &fake, "")]);
    let (status, created) = super::session(&server, json!({"backends": ["gpt"]})).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap();
    for options in [
        json!({"n": 2}),
        json!({"n": 2, "stream": true}),
        json!({"n": 3, "session_id": id}),
        json!({"n": 2, "lit_mux": {"use_tools": true}}),
    ] {
        let (status, body) = completion(&server, chat_body("gpt", options.clone())).await;
        assert_eq!(status, 400, "{options}: {body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(
            text.contains("n must be 1") && text.contains("one choice"),
            "{options}: {text}"
        );
    }
    // The same through a session's message, whose options are lit-mux's own.
    let (status, body) = server
        .post_json(
            &format!("/sessions/{id}/message"),
            &json!({"content": "hi", "options": {"n": 2}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["detail"],
        "n must be 1, got 2: lit-mux answers with one choice"
    );
    assert!(fake.chat_requests().is_empty());
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    assert_eq!(messages, json!([]));
}
