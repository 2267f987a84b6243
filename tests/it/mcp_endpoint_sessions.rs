//! `/mcp` sessions are capped by `mcp_endpoint.max_sessions`: past the cap the least recently
//! used idle session makes room (it then answers 404, as the streamable HTTP transport says for
//! an unknown session), memory stays bounded however many `initialize` requests come, and when
//! every session is busy a new one is refused with 503 and a JSON-RPC error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};
use testkit::sse::Events;

use crate::mcp_endpoint::initialize_answer;
use crate::support::{Server, TestHome};

const PROTOCOL: &str = "2025-11-25";

fn mcp_post(server: &Server, session: Option<&str>, message: &Value) -> reqwest::RequestBuilder {
    let mut request = server
        .post("/mcp")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .json(message);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "sessions-test", "version": "1"}}})
}

/// `initialize`; the session id, once its answer has been read.
async fn new_session(server: &Server, id: u64) -> String {
    let response = mcp_post(server, None, &initialize(id))
        .send()
        .await
        .unwrap();
    initialize_answer(response).await.0
}

/// `notifications/initialized`, then `tools/list` on `session`: its HTTP status.
async fn list_tools_status(server: &Server, session: &str) -> u16 {
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let status = mcp_post(server, Some(session), &initialized)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    if status != 202 {
        return status;
    }
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let response = mcp_post(server, Some(session), &list).send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        let (_, answer) = Events::new(response).next().await.unwrap();
        assert!(answer["result"]["tools"].is_array(), "{answer}");
    }
    status
}

fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kilobytes: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kilobytes * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_sessions_the_least_recently_used_sessions_go_and_memory_stays_bounded() {
    let home = TestHome::new();
    home.write_config("mcp_endpoint:\n  max_sessions: 50\n");
    let server = home.start(&[]);
    let first = new_session(&server, 1).await;
    for id in 2..=50 {
        new_session(&server, id).await;
    }
    let rss_at_the_cap = rss_bytes(server.pid());

    let mut newest = String::new();
    for id in 51..=1050 {
        newest = new_session(&server, id).await;
    }
    let grown = rss_bytes(server.pid()).saturating_sub(rss_at_the_cap);
    // A thousand more sessions, kept, would take tens of megabytes.
    assert!(
        grown < 8 * 1024 * 1024,
        "RSS grew by {} KiB over 1,000 initializes at the cap",
        grown / 1024
    );
    assert_eq!(
        list_tools_status(&server, &first).await,
        404,
        "the first session was evicted"
    );
    assert_eq!(
        list_tools_status(&server, &newest).await,
        200,
        "the newest still works"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_session_is_busy_a_new_one_is_refused_with_503_and_a_json_rpc_error() {
    let home = TestHome::new();
    home.write_config("mcp_endpoint:\n  max_sessions: 2\n");
    let server = home.start(&[]);
    // Two sessions, each busy with its open standalone stream.
    let mut streams = Vec::new();
    for id in 1..=2 {
        let session = new_session(&server, id).await;
        assert_eq!(list_tools_status(&server, &session).await, 200);
        let stream = server
            .get("/mcp")
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", PROTOCOL)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }

    let refused = mcp_post(&server, None, &initialize(7))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["id"], 7, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_sessions")),
        "{body}"
    );

    // Once a stream closes, its session is idle again and makes room.
    drop(streams.pop());
    let admitted = testkit::processes::eventually(Duration::from_secs(5), || async {
        mcp_post(&server, None, &initialize(8))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(admitted, "no session was admitted after a stream closed");
}
