//! What a message sends to the backend and what comes back: the whole conversation with its system
//! prompt in each wire format, any text kept byte for byte through the store, which model is asked
//! (request, then session, then backend) and which the reply records, only the last `max_messages`
//! sent (failed ones not counted), and message ids that are UUIDv7 in storage order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::TestHome;
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{backend_entry, create_session, pairs, roles_and_contents, send, start_with_backends};

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
