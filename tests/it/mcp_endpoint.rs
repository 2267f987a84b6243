//! lit-mux as an MCP server at `/mcp`, through the real binary: the official `mcp` Python
//! client (both its handshake-era and its 2026-07-28 mode) lists the tools of two fixture
//! children, calls them and hears `notifications/tools/list_changed` when one is removed; raw
//! HTTP checks the key, the session's stream, the paths beside `/mcp`, the metrics label, the
//! browser headers and that open streams do not hold up shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::mcp::fixture_server;
use crate::support::{Server, TestHome, status_and_json};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use testkit::sse::Events;

const KEY: &str = "mcp-endpoint-key-1";
const PROTOCOL: &str = "2025-11-25";

/// A keyed lit-mux running the fixture as `alpha` and `beta`.
async fn two_children(extra_config: &str) -> (TestHome, Server) {
    let home = TestHome::new();
    home.write_config(&format!("server:\n  api_key: {KEY}\n{extra_config}"));
    let server = home.start(&[]);
    for name in ["alpha", "beta"] {
        let (status, body) = status_and_json(
            server
                .post("/mcp/servers")
                .bearer_auth(KEY)
                .json(&fixture_server(name, "healthy", &[]))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    (home, server)
}

async fn get_json(server: &Server, path: &str) -> Value {
    let (status, body) =
        status_and_json(server.get(path).bearer_auth(KEY).send().await.unwrap()).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `GET /tools`, keyed by the name an MCP client should see: `server__tool`.
async fn rest_catalog(server: &Server) -> serde_json::Map<String, Value> {
    get_json(server, "/tools").await["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| {
            let name = format!(
                "{}__{}",
                tool["server"].as_str().unwrap(),
                tool["name"].as_str().unwrap()
            );
            (name, tool.clone())
        })
        .collect()
}

/// Runs tests/clients/mcp_client.py in `mode`; it removes `beta` along the way.
async fn official_client(server: &Server, mode: &str) -> Value {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(crate::support::client_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/mcp_client.py"
            ))
            .arg(server.url(""))
            .arg(KEY)
            .arg(mode)
            .arg("beta")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client finished within 60 s")
    .unwrap();
    crate::support::client_json(&output)
}

/// What the official client must have seen in either mode.
async fn assert_the_client_saw_the_catalog_and_its_change(
    server: &Server,
    mode: &str,
    protocol: &str,
) {
    let before = rest_catalog(server).await;
    assert!(before.keys().any(|n| n.starts_with("beta__")), "{before:?}");
    let seen = official_client(server, mode).await;

    assert_eq!(seen["protocol_version"], protocol, "{seen}");
    // Nothing went wrong in the client's eyes, its session's end included.
    assert_eq!(seen["warnings"], json!([]), "{seen}");
    assert_eq!(seen["server_name"], "lit-mux");
    assert_eq!(seen["tools_list_changed"], true, "advertised: {seen}");
    let listed: BTreeSet<&String> = seen["tools"].as_object().unwrap().keys().collect();
    assert_eq!(listed, before.keys().collect(), "tools/list vs GET /tools");
    for (name, tool) in &before {
        assert_eq!(
            seen["tools"][name]["input_schema"], tool["parameters"],
            "{name}"
        );
        assert_eq!(
            seen["tools"][name]["description"], tool["description"],
            "{name}"
        );
    }

    // What the fixture says of `add` beyond its input schema is passed on.
    let add = &seen["tools"]["alpha__add"];
    assert_eq!(
        add["output_schema"]["properties"]["sum"]["type"], "number",
        "{add}"
    );
    assert_eq!(add["annotations"]["readOnlyHint"], true, "{add}");
    assert_eq!(add["annotations"]["title"], "Add two numbers", "{add}");

    assert_eq!(seen["called"], "alpha__echo");
    assert_eq!(
        seen["echo"],
        json!({"texts": ["Echo: hi from mcp"], "is_error": false})
    );
    assert_eq!(
        seen["fail"],
        json!({"texts": ["this tool always fails"], "is_error": true})
    );
    assert_eq!(seen["unknown"]["raised"], true, "{seen}");
    assert_eq!(seen["unknown"]["code"], -32602, "invalid params: {seen}");

    assert_eq!(seen["remove_status"], 200);
    assert_eq!(
        seen["list_changed"], true,
        "no list_changed within 10 s: {seen}"
    );
    let after = rest_catalog(server).await;
    assert!(!after.is_empty() && !after.keys().any(|n| n.starts_with("beta__")));
    let listed_after: BTreeSet<&str> = seen["tools_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(listed_after, after.keys().map(String::as_str).collect());

    // The calls went through the hub like any other: echo and fail, not the unknown name.
    let statistics = &get_json(server, "/mcp/health").await["statistics"];
    assert_eq!(statistics["total_requests"], 2, "{statistics}");
    assert_eq!(statistics["failed_requests"], 1, "{statistics}");
    let metrics = server
        .get("/metrics")
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with(
            r#"lit_mux_http_requests_total{route="/mcp",method="POST",status="200"} "#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lit_mux_tool_calls_total{server="alpha",tool="echo",outcome="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_client_with_the_initialize_handshake_lists_calls_and_hears_list_changed() {
    let (_home, server) = two_children("").await;
    assert_the_client_saw_the_catalog_and_its_change(&server, "legacy", PROTOCOL).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_client_on_2026_07_28_lists_calls_and_hears_list_changed_by_listening() {
    let (_home, server) = two_children("").await;
    assert_the_client_saw_the_catalog_and_its_change(&server, "auto", "2026-07-28").await;
}

/// The answer to an `initialize`: the new session's id and the result, which must be
/// lit-mux's.
pub(crate) async fn initialize_answer(response: reqwest::Response) -> (String, Value) {
    assert_eq!(response.status(), 200, "initialize");
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (_, answer) = Events::new(response).next().await.unwrap();
    assert_eq!(
        answer["result"]["serverInfo"]["name"], "lit-mux",
        "{answer}"
    );
    (session, answer)
}

/// A message to `/mcp` as a client sends it.
fn mcp_post(server: &Server, session: Option<&str>, message: &Value) -> reqwest::RequestBuilder {
    let mut request = server
        .post("/mcp")
        .bearer_auth(KEY)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .json(message);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}

/// `initialize` + `notifications/initialized`; the session id.
async fn open_session(server: &Server) -> String {
    let response = mcp_post(
        server,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"}}}),
    )
    .send()
    .await
    .unwrap();
    let (session, answer) = initialize_answer(response).await;
    assert_eq!(
        answer["result"]["capabilities"]["tools"]["listChanged"],
        true
    );
    let initialized = mcp_post(
        server,
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(initialized.status(), 202);
    session
}

/// The session's standalone stream (`GET /mcp`), where its notifications arrive.
async fn session_stream(server: &Server, session: &str) -> Events {
    let stream = server
        .get("/mcp")
        .bearer_auth(KEY)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", PROTOCOL)
        .send()
        .await
        .unwrap();
    Events::new(stream)
}

/// A request on `session` and its answer.
async fn rpc(server: &Server, session: &str, id: u64, method: &str, params: Value) -> Value {
    let response = mcp_post(
        server,
        Some(session),
        &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
    )
    .send()
    .await
    .unwrap();
    let (_, answer) = Events::new(response).next().await.unwrap();
    assert_eq!(answer["id"], id, "{answer}");
    answer
}

fn listed_names(answer: &Value) -> BTreeSet<String> {
    answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_needs_the_api_key() {
    let (_home, server) = two_children("").await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    for key in [None, Some("wrong-key")] {
        let mut request = server
            .post("/mcp")
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let (status, body) = status_and_json(request.send().await.unwrap()).await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
    let get = server
        .get("/mcp")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 401);
    // With it, the same request opens a session.
    let session = open_session(&server).await;
    assert!(!session.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_hears_servers_come_and_go_on_its_stream_and_can_be_ended() {
    let (_home, server) = two_children("").await;
    let session = open_session(&server).await;
    let first = listed_names(&rpc(&server, &session, 2, "tools/list", json!({})).await);
    assert!(
        first.contains("alpha__echo") && first.contains("beta__echo"),
        "{first:?}"
    );
    assert!(!first.iter().any(|n| n.starts_with("gamma__")));

    let mut events = session_stream(&server, &session).await;

    // A server becoming ready changes the catalog.
    let (status, body) = status_and_json(
        server
            .post("/mcp/servers")
            .bearer_auth(KEY)
            .json(&fixture_server("gamma", "healthy", &[]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, notification) = events.next().await.expect("the stream stays open");
    assert_eq!(
        notification["method"], "notifications/tools/list_changed",
        "{notification}"
    );
    let second_answer = rpc(&server, &session, 3, "tools/list", json!({})).await;
    let second = listed_names(&second_answer);
    assert!(second.contains("gamma__echo"), "{second:?}");

    let gamma_add = second_answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gamma__add")
        .unwrap();
    assert_eq!(
        gamma_add["outputSchema"]["required"],
        json!(["sum"]),
        "{gamma_add}"
    );
    assert_eq!(
        gamma_add["annotations"]["readOnlyHint"], true,
        "{gamma_add}"
    );

    let called = rpc(
        &server,
        &session,
        4,
        "tools/call",
        json!({"name": "gamma__add", "arguments": {"a": 2, "b": 40}}),
    )
    .await;
    assert_eq!(called["result"]["isError"], false, "{called}");
    assert_eq!(
        called["result"]["structuredContent"],
        json!({"sum": 42}),
        "{called}"
    );
    assert!(
        called["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("42"),
        "{called}"
    );
    // A child's own error for arguments it rejects is passed on.
    let rejected = rpc(
        &server,
        &session,
        5,
        "tools/call",
        json!({"name": "gamma__echo", "arguments": {}}),
    )
    .await;
    assert_eq!(rejected["error"]["code"], -32602, "{rejected}");
    assert!(
        rejected["error"]["message"]
            .as_str()
            .unwrap()
            .contains("message"),
        "{rejected}"
    );

    // Ending the session: its id is refused afterwards.
    let ended = server
        .delete("/mcp")
        .bearer_auth(KEY)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", PROTOCOL)
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    let stale = mcp_post(
        &server,
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(stale.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_cannot_run_is_an_error_result_the_caller_can_read() {
    let (_home, server) = two_children("").await;
    let session = open_session(&server).await;
    let crashed = rpc(
        &server,
        &session,
        2,
        "tools/call",
        json!({"name": "beta__crash"}),
    )
    .await;
    assert_eq!(crashed["result"]["isError"], true, "{crashed}");
    let text = crashed["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("beta") && text.contains("exited"), "{text}");
    // Once lit-mux has seen it exit, its tools are gone: the name is unknown.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while get_json(&server, "/mcp/servers/beta").await["state"] == "ready" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "beta still ready 5 s after its crash"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = rpc(
        &server,
        &session,
        3,
        "tools/call",
        json!({"name": "beta__echo", "arguments": {"message": "x"}}),
    )
    .await;
    assert_eq!(gone["error"]["code"], -32602, "{gone}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_paths_beside_the_endpoint_are_unchanged() {
    let (_home, server) = two_children("").await;
    let servers = get_json(&server, "/mcp/servers").await;
    assert_eq!(servers["total"], 2, "{servers}");
    let (status, body) = status_and_json(
        server
            .get("/mcp/nope")
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    let put = server
        .http
        .put(server.url("/mcp"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    let allow = put.headers()["allow"].to_str().unwrap().to_owned();
    let (_, body) = status_and_json(put).await;
    // `/mcp` itself answers in JSON-RPC, its refusals too.
    assert_eq!(body["error"]["message"], "Method Not Allowed", "{body}");
    assert!(allow.contains("POST"), "{allow}");
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_may_send_and_read_the_mcp_headers() {
    let (_home, server) = two_children("  cors_origins: [\"http://app.test:3000\"]\n").await;
    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/mcp"))
        .header("origin", "http://app.test:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, mcp-session-id, mcp-protocol-version, last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["mcp-session-id", "mcp-protocol-version", "last-event-id"] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
    let answer = mcp_post(
        &server,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}}),
    )
    .header("origin", "http://app.test:3000")
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("mcp-session-id"), "{exposed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_does_not_hold_up_shutdown() {
    let (_home, mut server) = two_children("  shutdown_grace_secs: 30\n").await;
    let session = open_session(&server).await;
    let events = session_stream(&server, &session).await;
    server.signal(Signal::SIGTERM);
    let (status, took) = server
        .wait_exit(Duration::from_secs(20))
        .expect("exits well within the 30 s grace period");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        !server.stderr().contains("grace period"),
        "{}",
        server.stderr()
    );
    // The client sees its stream end rather than hang.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), events.all())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_the_client_cancels_is_cancelled_on_the_child() {
    let (_home, server) = two_children("").await;
    let session = open_session(&server).await;
    let call = mcp_post(
        &server,
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "alpha__sleep", "arguments": {"ms": 30000}}}),
    )
    .send();
    let call = tokio::spawn(call);
    let logs = || async {
        get_json(&server, "/mcp/servers/alpha/logs").await["logs"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let started = testkit::processes::eventually(Duration::from_secs(5), || async {
        logs().await.contains("sleeping 30000 ms")
    })
    .await;
    assert!(
        started,
        "the call did not reach the child: {}",
        logs().await
    );

    let cancel = mcp_post(
        &server,
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 7, "reason": "the user changed their mind"}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(cancel.status(), 202);
    // lit-mux drops its call to the child, which sends the child notifications/cancelled.
    let cancelled = testkit::processes::eventually(Duration::from_secs(5), || async {
        logs().await.contains("cancelled")
    })
    .await;
    assert!(cancelled, "the child was not told: {}", logs().await);
    call.abort();
    // The server is still usable.
    let answer = rpc(
        &server,
        &session,
        8,
        "tools/call",
        json!({"name": "beta__echo", "arguments": {"message": "still here"}}),
    )
    .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "Echo: still here",
        "{answer}"
    );
}

/// A refusal's status and its JSON-RPC error; fails unless the body is one.
async fn json_rpc_refusal(response: reqwest::Response) -> (u16, Value) {
    let (status, body) = status_and_json(response).await;
    assert_eq!(body["jsonrpc"], "2.0", "{status}: {body}");
    assert!(body.get("id").is_some(), "{status}: {body}");
    assert!(body["error"]["code"].is_i64(), "{status}: {body}");
    assert!(body["error"]["message"].is_string(), "{status}: {body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn ending_a_session_answers_204_then_404_and_every_refusal_is_json_rpc() {
    let home = TestHome::new();
    home.write_config(&format!("server:\n  api_key: {KEY}\n"));
    let server = home.start(&[]);
    let delete = |session: Option<&str>| {
        let mut request = server
            .delete("/mcp")
            .bearer_auth(KEY)
            .header("mcp-protocol-version", PROTOCOL);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let stream = |session: Option<&str>| {
        let mut request = server
            .get("/mcp")
            .bearer_auth(KEY)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", PROTOCOL);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };

    let session = open_session(&server).await;
    let ended = delete(Some(&session)).await.unwrap();
    assert_eq!(ended.status(), 204);
    assert_eq!(ended.text().await.unwrap(), "");
    for unknown in [session.as_str(), "no-such-session"] {
        let (status, body) = json_rpc_refusal(delete(Some(unknown)).await.unwrap()).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!(-32001)),
            "{body}"
        );
        let (status, body) = json_rpc_refusal(stream(Some(unknown)).await.unwrap()).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!(-32001)),
            "{body}"
        );
    }
    let (status, body) = json_rpc_refusal(delete(None).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = json_rpc_refusal(stream(None).await.unwrap()).await;
    assert_eq!(status, 400, "{body}");

    // Headers the transport needs: the spec's status, with the request's id where readable.
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"});
    let (status, body) = json_rpc_refusal(
        server
            .post("/mcp")
            .bearer_auth(KEY)
            .json(&ping)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body["id"]), (406, &json!(9)), "{body}");
    let (status, body) = json_rpc_refusal(
        server
            .post("/mcp")
            .bearer_auth(KEY)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "text/plain")
            .body(ping.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let response = server
        .http
        .put(server.url("/mcp"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("allow"));
    let (status, _) = json_rpc_refusal(response).await;
    assert_eq!(status, 405);

    // Bodies declared JSON that are no JSON-RPC message: 400, -32600 (-32700 for no JSON).
    for (body, code, id) in [
        ("{}", -32600, Value::Null),
        ("[]", -32600, Value::Null),
        ("123", -32600, Value::Null),
        ("\"x\"", -32600, Value::Null),
        ("{\"foo\": 1}", -32600, Value::Null),
        (
            "{\"jsonrpc\": \"2.0\", \"id\": 5, \"method\": 7}",
            -32600,
            json!(5),
        ),
        (
            "{\"jsonrpc\": \"2.0\", \"id\": \"a\", \"method\": \"initialize\", \"params\": 5}",
            -32600,
            json!("a"),
        ),
        (
            "[{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"ping\"}]",
            -32600,
            Value::Null,
        ),
        ("not json", -32700, Value::Null),
    ] {
        for session in [None, Some(open_session(&server).await)] {
            let mut request = server
                .post("/mcp")
                .bearer_auth(KEY)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("mcp-protocol-version", PROTOCOL)
                .body(body);
            if let Some(session) = &session {
                request = request.header("mcp-session-id", session);
            }
            let (status, answer) = json_rpc_refusal(request.send().await.unwrap()).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
            assert_eq!(answer["id"], id, "{body}: {answer}");
        }
    }
    // A message that needs a session, without one.
    let (status, body) = json_rpc_refusal(
        mcp_post(
            &server,
            None,
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, &body["id"]), (400, &json!(3)), "{body}");
}
