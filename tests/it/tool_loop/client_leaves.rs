//! A client that leaves while a tool call runs, streamed or not: the call is cancelled in the
//! server, the answer and the cancelled result are stored marked incomplete, and the next message
//! replays the question, the call and its result in a form the provider's API accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire, call_and_result};
use testkit::processes::eventually;

use super::{home_with, messages, roles, send, session, with_fixture};

/// The model on `wire` calls `fx__sleep` for 20 s; the client asks (`streamed` or not) and
/// leaves once the call runs in the fixture. Then what is stored, and that the next message
/// replays the question with the call and its cancelled result, which the API accepts.
async fn a_client_leaves_mid_call_then_comes_back(wire: Wire, streamed: bool) {
    let case = format!("{wire:?}, streamed: {streamed}");
    let fake = FakeBackend::start(wire).await;
    fake.queue(vec![Behaviour::tool_call(
        "fx__sleep",
        json!({"ms": 20000}),
    )]);
    let home = home_with(&fake, wire, "");
    let server = home.start(&[]);
    with_fixture(&server, 30).await;
    let id = session(&server, "llm").await;

    let request = server
        .post(&format!("/sessions/{id}/message"))
        .json(&json!({"content": "sleep a while", "stream": streamed}))
        .send();
    // Streamed, the events are read up to the call; not streamed, the request is a task of its
    // own, aborted (its connection closed) to leave.
    let (events, pending) = if streamed {
        let mut events = testkit::sse::Events::new(request.await.unwrap());
        loop {
            let (name, _) = events.next().await.expect("a tool_call event");
            if name == "tool_call" {
                break;
            }
        }
        (Some(events), None)
    } else {
        (None, Some(tokio::spawn(request)))
    };
    // Leave once the call is running in the child: leaving earlier rightly runs no call.
    let logs = || async {
        let logs = server.get_json("/mcp/servers/fx/logs").await;
        logs["logs"].as_str().unwrap_or_default().to_owned()
    };
    let started = eventually(Duration::from_secs(10), || async {
        logs().await.contains("sleeping 20000 ms")
    })
    .await;
    assert!(started, "{case}: the tool call never reached the server");
    drop(events);
    if let Some(pending) = pending {
        pending.abort();
        assert!(pending.await.unwrap_err().is_cancelled(), "{case}");
    }

    let cancelled = eventually(Duration::from_secs(5), || async {
        logs().await.contains("cancelled")
    })
    .await;
    assert!(cancelled, "{case}: the tool call was not cancelled");
    let stored = eventually(Duration::from_secs(5), || async {
        let history = messages(&server, &id).await;
        history.len() == 3 && history[1]["metadata"]["status"] == "incomplete"
    })
    .await;
    let history = messages(&server, &id).await;
    assert!(stored, "{case}: {history:?}");
    assert_eq!(roles(&history), ["user", "assistant", "tool"]);
    let answer = &history[1]["metadata"];
    assert_eq!(answer["tool_calls"][0]["id"], "call_1", "{answer}");
    assert_eq!(answer["status"], "incomplete", "{answer}");
    let result = &history[2];
    assert_eq!(result["content"], "cancelled: client disconnected");
    let metadata = &result["metadata"];
    assert_eq!(metadata["is_error"], true, "{metadata}");
    assert_eq!(metadata["status"], "incomplete", "{metadata}");
    assert_eq!(metadata["tool_call_id"], "call_1", "{metadata}");
    assert_eq!(
        (&metadata["server"], &metadata["tool"]),
        (&json!("fx"), &json!("sleep"))
    );
    // The user's message was answered as far as it went: marked interrupted, not failed, it
    // stays in the context with the steps that answer it.
    assert_eq!(
        history[0]["metadata"]["status"], "interrupted",
        "{case}: {history:?}"
    );

    // The next message replays the question, the call and its cancelled result, which the API
    // accepts.
    let next = send(&server, &id, json!({"content": "are you there?"})).await;
    assert_eq!(
        next["content"],
        format!("{} says: are you there?", wire.name())
    );
    let replayed = fake.last_chat();
    let sent = replayed.body["messages"].as_array().unwrap();
    assert_eq!(sent[0]["role"], "user", "{case}: {sent:?}");
    assert!(
        sent[0].to_string().contains("sleep a while"),
        "{case}: the question is replayed before its steps: {sent:?}"
    );
    let (name, arguments, content, is_error) = call_and_result(wire, &replayed, "call_1");
    assert_eq!(name, "fx__sleep");
    assert_eq!(arguments, json!({"ms": 20000}));
    assert_eq!(content, "cancelled: client disconnected");
    if wire == Wire::Anthropic {
        assert_eq!(is_error, Some(true));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_stream_cancels_the_running_call_stored_as_cancelled_and_replayed() {
    // The APIs that refuse a call without its result.
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        a_client_leaves_mid_call_then_comes_back(wire, true).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_plain_request_mid_call_leaves_the_same_history_as_a_stream() {
    // Not streamed, axum drops the handler when the client leaves: the loop is cancelled too.
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        a_client_leaves_mid_call_then_comes_back(wire, false).await;
    }
}
