//! Broadcast: every backend of the session (or the subset asked for) is asked at once and every
//! answer or failure is kept; a client that leaves cancels the calls still running, which are
//! recorded as interrupted backends, the answers that completed are kept, and the message is
//! marked interrupted (failed only when every backend failed by itself).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::TestHome;
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{backend_entry, create_session, pairs, roles_and_contents, start_with_backends};

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
        server.get_json(&messages_path).await[0]["metadata"]["interrupted_backends"]
            == json!(["slow"])
    })
    .await;
    let messages = server.get_json(&messages_path).await;
    assert!(
        marked,
        "the unanswered backend was not recorded: {messages}"
    );
    // echo answered and its answer is kept; the message is interrupted, not failed.
    assert_eq!(
        messages[0]["metadata"]["status"], "interrupted",
        "{messages}"
    );
    assert!(
        messages[0]["metadata"]["failed_backends"].is_null(),
        "{messages}"
    );
    assert_eq!(
        roles_and_contents(&messages),
        pairs(&[("user", "anyone there?"), ("assistant", "anyone there?")])
    );

    // No backend answered, none failed: interrupted too, as a single message would be.
    let client = broadcast(json!({"content": "still there?", "backends": ["slow"]}));
    slow.wait_for_chats(2, Duration::from_secs(10)).await;
    client.abort();
    let interrupted = testkit::processes::eventually(Duration::from_secs(5), || async {
        server.get_json(&messages_path).await[2]["metadata"]["status"] == "interrupted"
    })
    .await;
    let messages = server.get_json(&messages_path).await;
    assert!(
        interrupted,
        "the abandoned broadcast was not marked interrupted: {messages}"
    );
    assert_eq!(
        messages[2]["metadata"]["interrupted_backends"],
        json!(["slow"])
    );
    assert_eq!(slow.aborted_requests(), 2);
}
