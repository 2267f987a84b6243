//! When a single message's answer does not come: each upstream failure (error, rate limit, hang,
//! dropped stream, unreachable backend) gets its own status while the user's message is kept marked
//! failed and is not replayed; a session deleted while its answer is on the way is a 404, not the
//! backend's fault; and a client that goes away cancels the backend call and its message is marked,
//! which the CLI reports as a late answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::{TestHome, closed_port};
use serde_json::json;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{backend_entry, create_session, send, send_in_background, start_with_backends};

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
        messages[0]["metadata"]["status"] == "interrupted"
    })
    .await;
    assert!(marked, "the abandoned message was not marked interrupted");

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
