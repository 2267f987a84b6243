//! The official `openai` Python package's sampling parameters reach an OpenAI-compatible backend
//! as the SDK sent them, and an option Anthropic lacks comes back as the SDK's `BadRequestError`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::TestHome;
use serde_json::json;
use testkit::fake_backends::{FakeBackend, Wire};

use super::{OPTION_KEYS, only, start};

#[tokio::test(flavor = "multi_thread")]
async fn the_official_client_s_sampling_parameters_reach_the_backend() {
    let openai = FakeBackend::start(Wire::OpenAi).await;
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    let server = start(&home, &[("gpt", &openai, ""), ("claude", &anthropic, "")]);

    let output = tokio::process::Command::new(crate::support::client_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/openai_sampling_client.py"
        ))
        .arg(server.url(""))
        .output()
        .await
        .unwrap();
    let seen = crate::support::client_json(&output);

    assert_eq!(seen["reply"]["choices"], 1, "{seen}");
    assert_eq!(
        only(&openai.last_chat().body, &OPTION_KEYS),
        json!({
            "temperature": 0.25,
            "top_p": 0.5,
            "max_tokens": 64,
            "stop": ["END"],
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "response_format": {"type": "json_object"},
            "user": "python-user",
            "logprobs": true,
            "top_logprobs": 2,
            "n": 1,
        })
    );
    assert_eq!(seen["unsupported"]["status"], 400, "{seen}");
    let message = seen["unsupported"]["message"].as_str().unwrap();
    assert!(
        message.contains("backend claude: seed is not supported"),
        "{message}"
    );
    assert!(anthropic.chat_requests().is_empty());
}
