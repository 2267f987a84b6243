//! Sessions, messaging and broadcast through the real binary, against fake model servers that
//! speak each provider's wire format: what the backend receives, what the client gets back, and
//! what survives a restart or a SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::{Server, TestHome, closed_port};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

/// The config entry for a backend named `name` talking to `fake`.
fn backend_entry(name: &str, fake: &FakeBackend, wire: Wire, extra: &str) -> String {
    let (kind, url_key, key) = match wire {
        Wire::Ollama => ("ollama", "host", ""),
        Wire::OpenAi => ("openai", "base_url", "api_key: sk-test-openai, "),
        Wire::Anthropic => ("anthropic", "base_url", "api_key: sk-ant-test, "),
    };
    format!(
        "  {name}: {{type: {kind}, {url_key}: '{}', {key}default_model: fake-model{extra}}}\n",
        fake.url()
    )
}

fn start_with_backends(home: &TestHome, entries: &[String], extra_config: &str) -> Server {
    home.write_config(&format!("backends:\n{}{extra_config}", entries.concat()));
    home.start(&[])
}

async fn create_session(server: &Server, body: Value) -> String {
    let (status, session) = server.post_json("/sessions", &body).await;
    assert_eq!(status, 200, "{session}");
    session["id"].as_str().expect("session id").to_owned()
}

async fn send(server: &Server, session: &str, body: Value) -> (u16, Value) {
    server
        .post_json(&format!("/sessions/{session}/message"), &body)
        .await
}

/// `send` on a task of its own, for a message that is expected to wait.
fn send_in_background(
    server: &Server,
    session: &str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = server.url(&format!("/sessions/{session}/message"));
    tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    })
}

fn roles_and_contents(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wire_format_receives_the_whole_conversation_with_its_system_prompt() {
    for wire in [Wire::Ollama, Wire::OpenAi, Wire::Anthropic] {
        let fake = FakeBackend::start(wire).await;
        let home = TestHome::new();
        let server = start_with_backends(&home, &[backend_entry("model", &fake, wire, "")], "");
        let session = create_session(
            &server,
            json!({"backends": ["model"], "metadata": {"system_prompt": "Be brief."}}),
        )
        .await;

        let (status, first) = send(&server, &session, json!({"content": "first question"})).await;
        assert_eq!(status, 200, "{wire:?}: {first}");
        let (status, second) = send(&server, &session, json!({"content": "second question"})).await;
        assert_eq!(status, 200, "{wire:?}: {second}");

        let name = match wire {
            Wire::Ollama => "ollama",
            Wire::OpenAi => "openai",
            Wire::Anthropic => "anthropic",
        };
        assert_eq!(second["content"], format!("{name} says: second question"));
        assert_eq!(second["role"], "assistant");
        assert_eq!(second["backend"], "model");
        assert_eq!(second["model"], "fake-model");

        let received = fake.last_chat();
        let body = &received.body;
        assert_eq!(body["model"], "fake-model", "{wire:?}");
        let mut expected = vec![
            ("user", "first question".to_owned()),
            ("assistant", format!("{name} says: first question")),
            ("user", "second question".to_owned()),
        ];
        match wire {
            Wire::Anthropic => {
                assert_eq!(body["system"], "Be brief.");
                assert_eq!(received.headers["x-api-key"], "sk-ant-test");
                assert_eq!(received.headers["anthropic-version"], "2023-06-01");
                assert!(body["max_tokens"].as_u64().unwrap_or(0) > 0, "{body}");
            }
            Wire::OpenAi => {
                expected.insert(0, ("system", "Be brief.".to_owned()));
                assert_eq!(received.headers["authorization"], "Bearer sk-test-openai");
            }
            Wire::Ollama => expected.insert(0, ("system", "Be brief.".to_owned())),
        }
        let sent: Vec<(String, String)> = body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or_default().to_owned(),
                    m["content"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(role, text)| (role.to_owned(), text))
            .collect();
        assert_eq!(sent, expected, "{wire:?}");
        assert_eq!(body["stream"], json!(false), "{wire:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn any_text_comes_back_from_the_store_exactly_as_it_was_sent() {
    // The context is read back from SQLite as one JSON document: characters JSON escapes, a NUL
    // (which C string functions stop at), text that looks like JSON, and a long message must all
    // reach the backend unchanged.
    let tricky = [
        "nul \u{0} inside, then \u{1}\u{1f} control characters",
        "quotes \" and \\ backslashes \\\" and a \n newline\r\n\ttab",
        "[\"looks\", \"like\", {\"json\": null}]",
        "unicode: é ß 漢字 🦀 \u{200b} \u{fffd}",
    ]
    .map(str::to_owned);
    let long = "0123456789abcdef".repeat(8 * 1024);
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[backend_entry("model", &fake, Wire::OpenAi, "")],
        "",
    );
    let session = create_session(&server, json!({"backends": ["model"]})).await;
    let texts: Vec<String> = tricky.iter().cloned().chain([long]).collect();
    for text in &texts {
        let (status, reply) = send(&server, &session, json!({"content": text})).await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, _) = send(&server, &session, json!({"content": "last"})).await;
    assert_eq!(status, 200);

    let sent = roles_and_contents(&fake.last_chat().body["messages"]);
    let mut expected = Vec::new();
    for text in &texts {
        expected.push(("user".to_owned(), text.clone()));
        expected.push(("assistant".to_owned(), format!("openai says: {text}")));
    }
    expected.push(("user".to_owned(), "last".to_owned()));
    assert_eq!(sent, expected);

    let stored = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    assert_eq!(roles_and_contents(&stored)[..expected.len()], expected[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_comes_from_the_request_then_the_session_then_the_backend() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    let server = start_with_backends(&home, &[backend_entry("llm", &fake, Wire::Ollama, "")], "");

    let plain = create_session(&server, json!({"backends": ["llm"]})).await;
    send(&server, &plain, json!({"content": "a"})).await;
    assert_eq!(fake.last_chat().body["model"], "fake-model");

    let generic = create_session(
        &server,
        json!({"backends": ["llm"], "metadata": {"model": "generic-model"}}),
    )
    .await;
    send(&server, &generic, json!({"content": "b"})).await;
    assert_eq!(fake.last_chat().body["model"], "generic-model");

    let specific = create_session(
        &server,
        json!({"backends": ["llm"], "metadata": {"model": "generic-model", "llm_model": "specific-model"}}),
    )
    .await;
    let (_, reply) = send(&server, &specific, json!({"content": "c"})).await;
    assert_eq!(fake.last_chat().body["model"], "specific-model");
    assert_eq!(reply["model"], "specific-model");

    let (_, reply) = send(
        &server,
        &specific,
        json!({"content": "d", "model": "asked-model"}),
    )
    .await;
    assert_eq!(fake.last_chat().body["model"], "asked-model");
    assert_eq!(reply["model"], "asked-model");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reply_records_the_model_the_backend_reports_having_used() {
    const REPORTED: &str = "fake-model-2026-01-15";
    for wire in [Wire::Ollama, Wire::OpenAi, Wire::Anthropic] {
        let fake = FakeBackend::start(wire).await;
        fake.set_reported_model(Some(REPORTED));
        let home = TestHome::new();
        let server = start_with_backends(&home, &[backend_entry("llm", &fake, wire, "")], "");
        let session = create_session(&server, json!({"backends": ["llm"]})).await;

        let (status, reply) = send(&server, &session, json!({"content": "plain"})).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(fake.last_chat().body["model"], "fake-model", "{wire:?}");
        assert_eq!(reply["model"], REPORTED, "{wire:?}: {reply}");
        assert_eq!(
            reply["metadata"]["requested_model"], "fake-model",
            "{reply}"
        );

        let response = server
            .post(&format!("/sessions/{session}/message"))
            .json(&json!({"content": "streamed", "stream": true}))
            .send()
            .await
            .unwrap();
        let events = testkit::sse::Events::new(response).all().await;
        let (name, done) = events.last().unwrap();
        assert_eq!(name, "done", "{wire:?}: {events:?}");
        assert_eq!(done["model"], REPORTED, "{wire:?} streamed: {done}");
        assert_eq!(done["metadata"]["requested_model"], "fake-model", "{done}");

        let messages = server
            .get_json(&format!("/sessions/{session}/messages"))
            .await;
        let models: Vec<&Value> = messages
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["model"])
            .collect();
        assert_eq!(
            models,
            [
                &json!("fake-model"),
                &json!(REPORTED),
                &json!("fake-model"),
                &json!(REPORTED)
            ],
            "{wire:?}: the user's messages keep the model asked for"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_get_the_right_status_and_keep_the_users_message() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let down = format!(
        "  down: {{type: ollama, host: 'http://127.0.0.1:{}'}}\n",
        closed_port()
    );
    let server = start_with_backends(
        &home,
        &[
            backend_entry("llm", &fake, Wire::OpenAi, ", first_byte_timeout_secs: 1"),
            down,
        ],
        "",
    );
    let session = create_session(&server, json!({"backends": ["llm", "down"]})).await;

    fake.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "the GPU caught fire".to_owned(),
    });
    let (status, body) = send(&server, &session, json!({"content": "one"})).await;
    assert_eq!(status, 502, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("500") && detail.contains("the GPU caught fire") && detail.contains("llm"),
        "{detail}"
    );

    fake.set_behaviour(Behaviour::RateLimited {
        retry_after_secs: 17,
    });
    let response = server
        .post(&format!("/sessions/{session}/message"))
        .json(&json!({"content": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "17");

    fake.set_behaviour(Behaviour::Hang);
    let started = Instant::now();
    let (status, body) = send(&server, &session, json!({"content": "three"})).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    fake.set_behaviour(Behaviour::DropMidStream);
    let (status, body) = send(&server, &session, json!({"content": "four"})).await;
    assert_eq!(status, 502, "{body}");

    let (status, body) = send(
        &server,
        &session,
        json!({"content": "five", "backend": "down"}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{body}"
    );

    // Every user message is kept, marked failed, with no answer stored.
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 5, "{messages:?}");
    for (message, content) in messages.iter().zip(["one", "two", "three", "four", "five"]) {
        assert_eq!(message["role"], "user");
        assert_eq!(message["content"], content);
        assert_eq!(message["metadata"]["status"], "failed", "{message}");
        assert!(message["metadata"]["error"].is_string(), "{message}");
    }

    // A failed message is not replayed to the model later.
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    });
    let (status, _) = send(&server, &session, json!({"content": "six"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        fake.last_chat().body["messages"],
        json!([{"role": "user", "content": "six"}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcast_asks_every_backend_at_once_and_keeps_every_answer() {
    let slow_a = FakeBackend::start(Wire::Ollama).await;
    let slow_b = FakeBackend::start(Wire::Anthropic).await;
    let failing = FakeBackend::start(Wire::OpenAi).await;
    for fake in [&slow_a, &slow_b] {
        fake.set_behaviour(Behaviour::Reply {
            text: None,
            delay: Duration::from_secs(1),
            chunk_delay: Duration::ZERO,
        });
    }
    failing.set_behaviour(Behaviour::Fail {
        status: 503,
        message: "overloaded".to_owned(),
    });
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[
            backend_entry("a", &slow_a, Wire::Ollama, ""),
            backend_entry("b", &slow_b, Wire::Anthropic, ""),
            backend_entry("c", &failing, Wire::OpenAi, ""),
        ],
        "",
    );
    let session = create_session(&server, json!({"backends": ["a", "b", "c", "echo"]})).await;

    let started = Instant::now();
    let (status, body) = server
        .post_json(
            &format!("/sessions/{session}/broadcast"),
            &json!({"content": "hello all"}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_millis(1800), "took {took:?}");

    let responses = body["responses"].as_array().expect("responses");
    let by_backend = |name: &str| {
        responses
            .iter()
            .find(|r| r["backend"] == name)
            .unwrap_or_else(|| panic!("no response for {name}: {body}"))
    };
    assert_eq!(
        by_backend("a")["message"]["content"],
        "ollama says: hello all"
    );
    assert_eq!(
        by_backend("b")["message"]["content"],
        "anthropic says: hello all"
    );
    assert_eq!(by_backend("echo")["message"]["content"], "hello all");
    let failure = by_backend("c");
    assert!(failure["message"].is_null());
    assert!(
        failure["error"]
            .as_str()
            .unwrap_or_default()
            .contains("overloaded"),
        "{failure}"
    );

    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    let stored = roles_and_contents(&messages);
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[0], ("user".to_owned(), "hello all".to_owned()));
    assert_eq!(messages[0]["metadata"]["failed_backends"], json!(["c"]));

    // A broadcast to a subset, and to a backend outside the session.
    let (status, body) = server
        .post_json(
            &format!("/sessions/{session}/broadcast"),
            &json!({"content": "just echo", "backends": ["echo"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["responses"].as_array().map(Vec::len), Some(1));
    let (status, body) = server
        .post_json(
            &format!("/sessions/{session}/broadcast"),
            &json!({"content": "x", "backends": ["nowhere"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("nowhere"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn message_ids_are_uuids_in_the_order_the_messages_were_stored() {
    // Time-ordered ids keep the id index's inserts on its last page (see `Message::unsaved`).
    let home = TestHome::new();
    let server = home.start(&[]);
    let session = create_session(&server, json!({"backends": ["echo"]})).await;
    for index in 0..6 {
        let (status, _) = send(&server, &session, json!({"content": format!("m{index}")})).await;
        assert_eq!(status, 200);
    }
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    let ids: Vec<String> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 12, "{messages}");
    for id in &ids {
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|err| panic!("{id}: {err}"));
        assert_eq!(parsed.get_version_num(), 7, "{id}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids out of storage order");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_endpoints_answer_bad_input_with_clear_errors() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[backend_entry("local", &fake, Wire::Ollama, "")],
        "",
    );

    let (status, body) = server
        .post_json("/sessions", &json!({"backends": []}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json(
            "/sessions",
            &json!({"backends": ["echo", "ghost", "phantom"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("ghost") && detail.contains("phantom"),
        "{detail}"
    );
    let (status, body) = server.post_json("/sessions", &json!({"name": "x"})).await;
    assert_eq!(status, 422, "{body}");
    // Only an object is a body: not an array of the fields in order, nor any other value.
    for not_an_object in [
        json!([["echo"], "named", {}]),
        json!([]),
        json!("echo"),
        json!(1),
    ] {
        let (status, body) = server.post_json("/sessions", &not_an_object).await;
        assert_eq!(status, 422, "{not_an_object}: {body}");
        assert_eq!(
            body["detail"], "Invalid request body: expected a JSON object",
            "{not_an_object}"
        );
    }
    assert_eq!(
        server.get_json("/sessions").await,
        json!([]),
        "a session was made"
    );
    let response = server
        .post("/sessions")
        .header("content-type", "application/json")
        .body("{\"backends\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    let unknown = "00000000-0000-0000-0000-000000000000";
    for path in [
        format!("/sessions/{unknown}"),
        format!("/sessions/{unknown}/messages"),
    ] {
        let response = server.get(&path).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
    }
    let (status, body) = send(&server, unknown, json!({"content": "hi"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains(unknown));
    let (status, _) = server.delete_json(&format!("/sessions/{unknown}")).await;
    assert_eq!(status, 404);

    let session = create_session(&server, json!({"backends": ["echo"], "name": "s"})).await;
    let (status, body) = send(&server, &session, json!({"content": "  "})).await;
    assert_eq!(status, 422, "{body}");
    // A configured backend the session does not have, and one configured nowhere.
    let (status, body) = send(
        &server,
        &session,
        json!({"content": "x", "backend": "local"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["detail"],
        "backend(s) \"local\" not in this session (its backends: echo)"
    );
    assert!(fake.chat_requests().is_empty(), "{:?}", fake.requests());
    let (status, body) = send(
        &server,
        &session,
        json!({"content": "x", "backend": "ollama"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("\"ollama\""),
        "{body}"
    );
    let (status, body) = send(&server, &session, json!({"text": "wrong field"})).await;
    assert_eq!(status, 422, "{body}");
    // Nothing of the rejected requests was stored.
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    assert_eq!(messages, json!([]));

    let response = server.get("/sessions?limit=abc").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);

    let (status, body) = server.delete_json(&format!("/sessions/{session}")).await;
    assert_eq!(status, 200, "{body}");
    let response = server
        .get(&format!("/sessions/{session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_listed_newest_first_in_pages() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let mut ids = Vec::new();
    for index in 0..5 {
        ids.push(
            create_session(
                &server,
                json!({"backends": ["echo"], "name": format!("s{index}")}),
            )
            .await,
        );
    }
    let listed = server.get_json("/sessions").await;
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    let page = server.get_json("/sessions?limit=2&offset=1").await;
    let page: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, newest_first[1..3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_longer_than_a_page_is_listed_whole_unless_a_limit_is_asked() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let (status, session) = server
        .post_json("/sessions", &json!({"backends": ["echo"]}))
        .await;
    assert_eq!(status, 200, "{session}");
    let id = session["id"].as_str().unwrap();
    let exchanges = 501; // 1002 messages: more than the largest page.
    for index in 0..exchanges {
        let (status, body) = server
            .post_json(
                &format!("/sessions/{id}/message"),
                &json!({"content": format!("message {index}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let all = server.get_json(&format!("/sessions/{id}/messages")).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2 * exchanges);
    assert_eq!(all[0]["content"], "message 0");
    assert_eq!(
        all[all.len() - 1]["content"],
        format!("message {}", exchanges - 1)
    );
    assert_eq!(all[all.len() - 1]["role"], "assistant");

    let page = server
        .get_json(&format!("/sessions/{id}/messages?limit=2&offset=1000"))
        .await;
    assert_eq!(page.as_array().unwrap().as_slice(), &all[1000..]);
    let response = server
        .get(&format!("/sessions/{id}/messages?limit=1001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_deleted_while_its_answer_is_on_the_way_is_a_404_not_the_backends_fault() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::from_millis(800),
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    let server = start_with_backends(&home, &[backend_entry("llm", &fake, Wire::OpenAi, "")], "");
    let session = create_session(&server, json!({"backends": ["llm"]})).await;
    let sent = send_in_background(&server, &session, json!({"content": "slow one"}));
    assert!(
        testkit::processes::eventually(Duration::from_secs(5), || async {
            !fake.chat_requests().is_empty()
        })
        .await,
        "the backend was not asked"
    );
    let (status, body) = server.delete_json(&format!("/sessions/{session}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sent.await.unwrap();
    assert_eq!(status, 404, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&session) && detail.contains("not found") && !detail.contains("llm"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_last_max_messages_are_sent() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[backend_entry("llm", &fake, Wire::Ollama, "")],
        "context:\n  max_messages: 3\n",
    );
    let session = create_session(&server, json!({"backends": ["llm"]})).await;
    for text in ["m1", "m2", "m3"] {
        let (status, _) = send(&server, &session, json!({"content": text})).await;
        assert_eq!(status, 200);
    }
    let sent = &fake.last_chat().body["messages"];
    assert_eq!(
        roles_and_contents(sent),
        pairs(&[
            ("user", "m2"),
            ("assistant", "ollama says: m2"),
            ("user", "m3")
        ])
    );

    // Failed messages do not count: the context reaches further back to stay full.
    fake.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "down".to_owned(),
    });
    for text in ["lost 1", "lost 2"] {
        let (status, _) = send(&server, &session, json!({"content": text})).await;
        assert_eq!(status, 502);
    }
    fake.set_behaviour(Behaviour::default());
    let (status, _) = send(&server, &session, json!({"content": "m4"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        roles_and_contents(&fake.last_chat().body["messages"]),
        pairs(&[
            ("user", "m3"),
            ("assistant", "ollama says: m3"),
            ("user", "m4")
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_a_restart_and_a_sigkill_right_after_an_answer() {
    let home = TestHome::new();
    let mut server = home.start(&[]);
    let session = create_session(&server, json!({"backends": ["echo"], "name": "kept"})).await;
    let (status, _) = send(&server, &session, json!({"content": "before restart"})).await;
    assert_eq!(status, 200);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(6)).is_some());

    let mut server = home.start(&[]);
    let restored = server.get_json(&format!("/sessions/{session}")).await;
    assert_eq!(restored["name"], "kept");
    assert_eq!(restored["message_count"], 2);

    // Acknowledged, then killed at once: every acknowledged message is there afterwards.
    let mut acknowledged = Vec::new();
    for index in 0..20 {
        let text = format!("burst {index}");
        let (status, _) = send(&server, &session, json!({"content": text})).await;
        assert_eq!(status, 200);
        acknowledged.push(text);
    }
    server.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());

    let server = home.start(&[]);
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    let stored = roles_and_contents(&messages);
    assert_eq!(stored.len(), 2 + 2 * acknowledged.len());
    for text in &acknowledged {
        assert!(
            stored.contains(&("assistant".to_owned(), text.clone())),
            "{text} lost"
        );
    }
    assert!(
        default_database(&home).exists(),
        "the database is in the XDG data directory"
    );
    // Every conversation is in there: only its owner may read it, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let database = default_database(&home);
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(database.parent().unwrap()), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", database.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// The default database of `home`.
fn default_database(home: &TestHome) -> std::path::PathBuf {
    home.path().join(".local/share/lit-mux/lit-mux.db")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wal_stays_bounded_under_a_steady_stream_of_messages() {
    // A checkpoint only lets SQLite start the WAL over once it has caught up with the writes;
    // one running beside a steady stream of them never does, and the WAL then grew by every
    // commit (~45 KB a message here: 70 MB for these 1,500). lit-mux starts it over once it
    // holds `max_wal_mb`.
    let home = TestHome::new();
    home.write_config("storage:\n  max_wal_mb: 4\n");
    let server = home.start(&[]);
    let mut clients = Vec::new();
    for client in 0..2 {
        let session = create_session(&server, json!({"backends": ["echo"]})).await;
        let url = server.url(&format!("/sessions/{session}/message"));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for index in 0..750 {
                let response = http
                    .post(&url)
                    .json(&json!({"content": format!("client {client} message {index}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
            session
        }));
    }
    let mut sessions = Vec::new();
    for client in clients {
        sessions.push(client.await.unwrap());
    }
    for session in &sessions {
        let stored = server.get_json(&format!("/sessions/{session}")).await;
        assert_eq!(stored["message_count"], 1500, "{stored}");
    }
    let wal = default_database(&home).with_extension("db-wal");
    let size = std::fs::metadata(&wal).unwrap().len();
    assert!(
        size < 16 << 20,
        "the WAL grew to {size} bytes over 3,000 messages"
    );
}

/// Another process (python3's sqlite3) that takes SQLite's write lock on `home`'s database and
/// holds it until its stdin is closed; it then rolls back and exits 0.
fn hold_write_lock(home: &TestHome) -> std::process::Child {
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             db.execute('BEGIN IMMEDIATE')\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()\n\
             db.execute('ROLLBACK')\n",
        )
        .arg(default_database(home))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said.trim(), "locked");
    holder
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_is_asked_while_the_question_is_written_and_the_answer_waits_for_it() {
    // The user's message is committed while the backend works on it; the client hears back
    // only once both are stored, and a failure is marked on a message that exists by then.
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let server = start_with_backends(&home, &[backend_entry("fake", &fake, Wire::OpenAi, "")], "");
    let session = create_session(&server, json!({"backends": ["fake"]})).await;
    for (round, fails) in [(0, false), (1, true)] {
        fake.clear_requests();
        fake.set_behaviour(if fails {
            Behaviour::Fail {
                status: 500,
                message: "the model crashed".to_owned(),
            }
        } else {
            Behaviour::default()
        });
        let mut holder = hold_write_lock(&home);
        let sending = send_in_background(
            &server,
            &session,
            json!({"content": format!("question {round}")}),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.chat_requests().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the backend was not asked while the write lock was held"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The backend has answered (or failed); the question is not committed yet.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !sending.is_finished(),
            "answered before the question was stored"
        );
        drop(holder.stdin.take());
        let (status, answer) = sending.await.unwrap();
        assert!(holder.wait().unwrap().success());
        let messages = server
            .get_json(&format!("/sessions/{session}/messages"))
            .await;
        let question = messages
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["content"] == format!("question {round}"))
            .unwrap_or_else(|| panic!("question {round} was not stored: {messages}"));
        if fails {
            assert_eq!(status, 502, "{answer}");
            assert_eq!(question["metadata"]["status"], "failed", "{question}");
        } else {
            assert_eq!(status, 200, "{answer}");
            assert_eq!(question["metadata"].get("status"), None, "{question}");
        }
    }
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    assert_eq!(
        roles_and_contents(&messages),
        pairs(&[
            ("user", "question 0"),
            ("assistant", "openai says: question 0"),
            ("user", "question 1"),
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_waits_for_another_process_holding_the_write_lock() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let session = create_session(&server, json!({"backends": ["echo"]})).await;
    let (status, _) = send(&server, &session, json!({"content": "before the lock"})).await;
    assert_eq!(status, 200);

    let mut holder = hold_write_lock(&home);
    let sending = send_in_background(&server, &session, json!({"content": "while locked"}));
    // Reads need no lock in WAL mode: the session is readable meanwhile.
    let during = server.get_json(&format!("/sessions/{session}")).await;
    assert_eq!(during["message_count"], 2, "{during}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sending.is_finished(),
        "the message did not wait for the lock"
    );

    let released = Instant::now();
    drop(holder.stdin.take()); // readline returns: the holder rolls back and exits.
    let (status, answer) = sending.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "while locked");
    assert!(released.elapsed() < Duration::from_secs(3));
    assert!(holder.wait().unwrap().success());
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    assert_eq!(
        roles_and_contents(&messages),
        pairs(&[
            ("user", "before the lock"),
            ("assistant", "before the lock"),
            ("user", "while locked"),
            ("assistant", "while locked"),
        ])
    );
}

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
            ("chatgpt", "openai"),
            ("echo", "echo"),
            ("ollama", "ollama")
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

#[test]
fn the_cli_sends_lists_and_shows_sessions() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let url = server.url("");
    let sent = home.run(&["send", "hello from the cli", "--url", &url]);
    assert_eq!(sent.code(), Some(0), "{sent:?}");
    assert_eq!(sent.stdout.trim(), "hello from the cli");
    let session = sent
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("session "))
        .expect("the new session's id on stderr")
        .trim()
        .to_owned();

    let again = home.run(&["send", "second", "--session", &session, "--url", &url]);
    assert_eq!(again.stdout.trim(), "second", "{again:?}");

    let listed = home.run(&["sessions", "--url", &url]);
    assert_eq!(listed.code(), Some(0), "{listed:?}");
    assert!(listed.stdout.contains(&session), "{}", listed.stdout);
    assert!(listed.stdout.lines().next().unwrap().starts_with("ID"));

    let shown = home.run(&["sessions", "show", &session, "--url", &url]);
    assert_eq!(shown.code(), Some(0), "{shown:?}");
    let order: Vec<usize> = ["hello from the cli", "second"]
        .iter()
        .map(|text| shown.stdout.find(text).expect("message shown"))
        .collect();
    assert!(order[0] < order[1], "{}", shown.stdout);

    let missing = home.run(&["sessions", "show", "nope", "--url", &url]);
    assert_ne!(missing.code(), Some(0));
    assert!(missing.stderr.contains("not found"), "{missing:?}");

    let backends = home.run(&["backends", "--url", &url]);
    assert!(backends.stdout.contains("echo") && backends.stdout.contains("healthy"));

    // Usage errors (exit 2), found before anything is sent: an empty message makes no session.
    for bad in [
        vec!["send", "", "--url", &url],
        vec!["send", "  ", "--url", &url],
        vec!["send", "hi", "--url", "not a url"],
        vec!["send", "hi", "--request-timeout", "0", "--url", &url],
    ] {
        let out = home.run(&bad);
        assert_eq!(out.code(), Some(2), "{bad:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{bad:?}: {out:?}");
    }
    let listed_after = home.run(&["sessions", "--url", &url]);
    assert_eq!(listed_after.stdout, listed.stdout, "a session was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_the_backend_call_and_the_message_is_marked() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Hang);
    let home = TestHome::new();
    let server = start_with_backends(&home, &[backend_entry("llm", &fake, Wire::Ollama, "")], "");
    let session = create_session(&server, json!({"backends": ["llm"]})).await;

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let result = impatient
        .post(server.url(&format!("/sessions/{session}/message")))
        .json(&json!({"content": "are you there?"}))
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");

    assert!(
        testkit::processes::eventually(Duration::from_secs(5), || async {
            fake.aborted_requests() == 1
        })
        .await,
        "the backend call was not cancelled"
    );
    let marked = testkit::processes::eventually(Duration::from_secs(5), || async {
        let messages = server
            .get_json(&format!("/sessions/{session}/messages"))
            .await;
        messages[0]["metadata"]["status"] == "failed"
    })
    .await;
    assert!(marked, "the abandoned message was not marked failed");

    // The CLI, as impatient, says it was answered too late, not that it could not connect.
    let out = home.run(&[
        "send",
        "still there?",
        "--session",
        &session,
        "--url",
        &server.url(""),
        "--request-timeout",
        "1",
    ]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("did not answer within 1 s"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_broadcast_cancels_the_calls_still_running_and_they_are_marked() {
    let slow = FakeBackend::start(Wire::Ollama).await;
    slow.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::from_secs(60),
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    let server = start_with_backends(&home, &[backend_entry("slow", &slow, Wire::Ollama, "")], "");
    let session = create_session(&server, json!({"backends": ["echo", "slow"]})).await;
    let messages_path = format!("/sessions/{session}/messages");
    let broadcast = |body: Value| {
        tokio::spawn(
            server
                .post(&format!("/sessions/{session}/broadcast"))
                .json(&body)
                .send(),
        )
    };

    // echo has answered, slow is still thinking: the client leaves.
    let client = broadcast(json!({"content": "anyone there?"}));
    slow.wait_for_chats(1, Duration::from_secs(10)).await;
    let echoed = testkit::processes::eventually(Duration::from_secs(5), || async {
        server
            .get_json(&messages_path)
            .await
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;
    assert!(echoed, "echo's answer was not stored");
    client.abort();

    assert!(
        testkit::processes::eventually(Duration::from_secs(5), || async {
            slow.aborted_requests() == 1
        })
        .await,
        "the slow backend's call was not cancelled"
    );
    let marked = testkit::processes::eventually(Duration::from_secs(5), || async {
        server.get_json(&messages_path).await[0]["metadata"]["failed_backends"] == json!(["slow"])
    })
    .await;
    let messages = server.get_json(&messages_path).await;
    assert!(
        marked,
        "the unanswered backend was not recorded: {messages}"
    );
    // echo answered: the message itself did not fail, and echo's answer is kept.
    assert!(messages[0]["metadata"]["status"].is_null(), "{messages}");
    assert_eq!(
        roles_and_contents(&messages),
        pairs(&[("user", "anyone there?"), ("assistant", "anyone there?")])
    );

    // No backend answered: the message failed, as a single message would.
    let client = broadcast(json!({"content": "still there?", "backends": ["slow"]}));
    slow.wait_for_chats(2, Duration::from_secs(10)).await;
    client.abort();
    let failed = testkit::processes::eventually(Duration::from_secs(5), || async {
        server.get_json(&messages_path).await[2]["metadata"]["status"] == "failed"
    })
    .await;
    let messages = server.get_json(&messages_path).await;
    assert!(
        failed,
        "the abandoned broadcast was not marked failed: {messages}"
    );
    assert_eq!(messages[2]["metadata"]["failed_backends"], json!(["slow"]));
    assert_eq!(slow.aborted_requests(), 2);
}

/// The database file's journal mode as its header records it: bytes 18 and 19 are 2 in WAL mode
/// (1 with a rollback journal).
fn header_journal_bytes(path: &std::path::Path) -> [u8; 2] {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert!(bytes.len() >= 100, "{} has no header", path.display());
    [bytes[18], bytes[19]]
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_url_chooses_the_database_file_in_each_form_and_it_is_in_wal_mode() {
    for form in ["path", "sqlite://", "sqlite:"] {
        let home = TestHome::new();
        let file = home.path().join(format!("elsewhere/{}.db", form.len()));
        let url = match form {
            "path" => file.display().to_string(),
            prefix => format!("{prefix}{}", file.display()),
        };
        home.write_config(&format!("storage:\n  url: '{url}'\n"));
        let mut server = home.start(&[]);
        let session = create_session(&server, json!({"backends": ["echo"], "name": form})).await;
        let (status, _) = send(&server, &session, json!({"content": "kept here"})).await;
        assert_eq!(status, 200);
        let wal = file.with_extension("db-wal");
        assert!(
            file.exists() && wal.exists(),
            "{url}: {} and its -wal file",
            file.display()
        );
        server.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(server.wait_exit(Duration::from_secs(10)).is_some());
        assert_eq!(header_journal_bytes(&file), [2, 2], "{url}: WAL mode");
        assert!(
            !default_database(&home).exists(),
            "{url}: the default database was created too"
        );

        let server = home.start(&[]);
        let restored = server.get_json(&format!("/sessions/{session}")).await;
        assert_eq!(restored["name"], form, "{url}");
        let messages = server
            .get_json(&format!("/sessions/{session}/messages"))
            .await;
        assert_eq!(
            roles_and_contents(&messages),
            pairs(&[("user", "kept here"), ("assistant", "kept here")]),
            "{url}"
        );
    }
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
            ("echo", &json!(true)),
            ("local", &json!(true)),
            ("remote", &json!(true))
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
