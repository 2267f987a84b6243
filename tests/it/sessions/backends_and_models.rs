//! The configured backends as the API shows them: `/backends` with their health, checked
//! concurrently and then cached; `/models` of every wire in one shape, from each wire's own
//! endpoint with its credentials, and Anthropic's from every page; the predecessor's backend keys
//! still load, and a backend of an unknown type stops the start naming its key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::{TestHome, closed_port};
use serde_json::{Value, json};
use testkit::fake_backends::{FakeBackend, Wire};

use super::{backend_entry, create_session, pairs, send, start_with_backends};

#[tokio::test(flavor = "multi_thread")]
async fn backends_and_models_are_listed_with_health() {
    let ollama = FakeBackend::start(Wire::Ollama).await;
    ollama.set_models(vec!["llama3.1:8b".to_owned(), "qwen3:4b".to_owned()]);
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[
            backend_entry("local", &ollama, Wire::Ollama, ""),
            backend_entry("claude", &anthropic, Wire::Anthropic, ""),
            format!(
                "  down: {{type: openai, base_url: 'http://127.0.0.1:{}/v1'}}\n",
                closed_port()
            ),
            "  off: {type: openai, enabled: false}\n".to_owned(),
        ],
        "",
    );
    let backends = server.get_json("/backends").await;
    let find = |name: &str| {
        backends
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {backends}"))
            .clone()
    };
    assert_eq!(find("local")["type"], "ollama");
    assert_eq!(find("local")["healthy"], true);
    assert_eq!(find("claude")["healthy"], true);
    assert_eq!(find("down")["healthy"], false);
    assert_eq!(find("off")["enabled"], false);
    assert_eq!(find("off")["healthy"], false);
    assert_eq!(find("echo")["healthy"], true);

    let models = server.get_json("/models").await;
    let local: Vec<&str> = models["models"]["local"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(local, ["llama3.1:8b", "qwen3:4b"]);
    let first = &models["models"]["local"][0];
    assert!(first["size_mb"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["digest"].is_string(), "{first}");
    assert_eq!(models["models"]["claude"][0]["display_name"], "Fake Model");
    assert_eq!(models["total"], 4, "{models}");
    assert!(models["errors"]["down"].is_string(), "{models}");

    // Health is cached: polling again does not ask the backend again.
    let asked = ollama.requests().len();
    server.get_json("/backends").await;
    assert_eq!(ollama.requests().len(), asked);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_predecessors_backend_keys_still_load() {
    let ollama = FakeBackend::start(Wire::Ollama).await;
    let openai = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  ollama:\n    enabled: true\n    host: '{}'\n    default_model: old-model\n  \
         chatgpt:\n    enabled: true\n    api_key: sk-old\n    model: gpt-old\n    base_url: '{}'\n  \
         claude_desktop:\n    enabled: true\n",
        ollama.url(),
        openai.url()
    ));
    let server = home.start(&[]);
    let backends = server.get_json("/backends").await;
    let types: Vec<(String, String)> = backends
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        types,
        pairs(&[
            ("ollama", "ollama"),
            ("chatgpt", "openai"),
            ("echo", "echo")
        ])
    );
    assert!(
        server.stderr().contains("claude_desktop"),
        "{}",
        server.stderr()
    );

    let session = create_session(&server, json!({"backends": ["chatgpt"]})).await;
    let (status, reply) = send(&server, &session, json!({"content": "hi"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(openai.last_chat().body["model"], "gpt-old");
    assert_eq!(openai.last_chat().headers["authorization"], "Bearer sk-old");

    // The `ollama` key: its host gets the chat, with its default model.
    let session = create_session(&server, json!({"backends": ["ollama"]})).await;
    let (status, reply) = send(&server, &session, json!({"content": "hello old friend"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "ollama says: hello old friend");
    assert_eq!(reply["model"], "old-model");
    let received = ollama.last_chat();
    assert_eq!(received.path, "/api/chat");
    assert_eq!(received.body["model"], "old-model");
    assert_eq!(
        received.body["messages"],
        json!([{"role": "user", "content": "hello old friend"}])
    );
    assert_eq!(ollama.chat_requests().len(), 1);
}

#[test]
fn a_backend_of_an_unknown_type_stops_the_start_with_its_key() {
    let home = TestHome::new();
    home.write_config("backends:\n  mine:\n    type: gemini\n");
    let failure = home.try_start(&[]).err().expect("start must fail");
    assert!(failure.contains("backends.mine.type"), "{failure}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_health_is_checked_concurrently_and_then_cached() {
    let ollama = FakeBackend::start(Wire::Ollama).await;
    let openai = FakeBackend::start(Wire::OpenAi).await;
    for fake in [&ollama, &openai] {
        fake.set_listing_delay(Duration::from_secs(1));
    }
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[
            backend_entry("local", &ollama, Wire::Ollama, ""),
            backend_entry("remote", &openai, Wire::OpenAi, ""),
        ],
        "",
    );

    let started = Instant::now();
    let backends = server.get_json("/backends").await;
    let took = started.elapsed();
    // Each check takes a second: one after the other would take two.
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1800),
        "took {took:?}"
    );
    let healthy: Vec<(&str, &Value)> = backends
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap(), &b["healthy"]))
        .collect();
    assert_eq!(
        healthy,
        [
            ("local", &json!(true)),
            ("remote", &json!(true)),
            ("echo", &json!(true))
        ]
    );
    assert_eq!(ollama.listing_requests().len(), 1);
    assert_eq!(openai.listing_requests().len(), 1);

    // Within the cache window: answered at once, the backends not asked again.
    let started = Instant::now();
    let again = server.get_json("/backends").await;
    let took = started.elapsed();
    assert_eq!(again, backends);
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(ollama.listing_requests().len(), 1);
    assert_eq!(openai.listing_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_of_every_wire_are_listed_in_one_shape() {
    let ollama = FakeBackend::start(Wire::Ollama).await;
    ollama.set_models(vec!["llama3.1:8b".to_owned(), "qwen3:4b".to_owned()]);
    let openai = FakeBackend::start(Wire::OpenAi).await;
    openai.set_models(vec!["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()]);
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    anthropic.set_models(vec!["claude-sonnet-4-5".to_owned()]);
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[
            backend_entry("local", &ollama, Wire::Ollama, ""),
            backend_entry("gpt", &openai, Wire::OpenAi, ""),
            backend_entry("claude", &anthropic, Wire::Anthropic, ""),
        ],
        "",
    );

    let models = server.get_json("/models").await;
    // The fake's /api/tags: 3 825 819 519 bytes, its digest, 8B and Q4_0 in its details.
    let digest = "365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1";
    assert_eq!(
        models["models"]["local"],
        json!([
            {"name": "llama3.1:8b", "display_name": "llama3.1:8b (8B, Q4_0)",
             "size_mb": 3648.6, "digest": digest},
            {"name": "qwen3:4b", "display_name": "qwen3:4b (8B, Q4_0)",
             "size_mb": 3648.6, "digest": digest},
        ])
    );
    assert_eq!(
        models["models"]["gpt"],
        json!([
            {"name": "gpt-4o", "display_name": "gpt-4o", "size_mb": null, "digest": null},
            {"name": "gpt-4o-mini", "display_name": "gpt-4o-mini", "size_mb": null, "digest": null},
        ])
    );
    assert_eq!(
        models["models"]["claude"],
        json!([{"name": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4 5",
                "size_mb": null, "digest": null}])
    );
    assert_eq!(models["models"]["echo"].as_array().map(Vec::len), Some(1));
    assert_eq!(models["total"], 6, "{models}");
    assert!(models.get("errors").is_none(), "{models}");

    // Each list came from the wire's own endpoint, with its credentials.
    let listed = openai.listing_requests();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "/v1/models");
    assert_eq!(listed[0].headers["authorization"], "Bearer sk-test-openai");
    let listed = anthropic.listing_requests();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "/v1/models");
    assert_eq!(listed[0].headers["x-api-key"], "sk-ant-test");
    assert_eq!(listed[0].headers["anthropic-version"], "2023-06-01");
    assert_eq!(ollama.listing_requests()[0].path, "/api/tags");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_models_are_listed_from_every_page() {
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let ids: Vec<String> = (1..=5).map(|n| format!("claude-{n}")).collect();
    anthropic.set_models(ids.clone());
    anthropic.set_models_page_size(2);
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[backend_entry("claude", &anthropic, Wire::Anthropic, "")],
        "",
    );

    let models = server.get_json("/models").await;
    let listed: Vec<&str> = models["models"]["claude"]
        .as_array()
        .unwrap_or_else(|| panic!("no claude models: {models}"))
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "{models}");
    assert!(models.get("errors").is_none(), "{models}");

    // Three pages of two, each asked for with the largest limit, after the previous page's last.
    let requests = anthropic.listing_requests();
    let pages: Vec<(Option<&str>, Option<&str>)> = requests
        .iter()
        .map(|r| {
            (
                r.query.get("limit").map(String::as_str),
                r.query.get("after_id").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        pages,
        [
            (Some("1000"), None),
            (Some("1000"), Some("claude-2")),
            (Some("1000"), Some("claude-4")),
        ]
    );
}
