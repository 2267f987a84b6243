//! Tool calls to a live child and requests the API refuses: a slow call times out with 504 and is
//! cancelled while the server stays usable, concurrent calls to one server run side by side, and
//! tool errors and bad requests (unknown tools or servers, malformed bodies, invalid or forbidden
//! adds) each get the right status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::mcp::{Harness, fixture, fixture_server, pid_of};
use serde_json::{Value, json};
use testkit::processes::eventually;

use super::detail;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_times_out_with_504_and_is_cancelled() {
    let h = Harness::start();
    let mut request = fixture_server("slow", "healthy", &[]);
    request["timeout"] = json!(1);
    let (status, body) = h.server.post_json("/mcp/servers", &request).await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let (status, timed_out) = h
        .server
        .post_json("/tools/slow/sleep", &json!({"ms": 5000}))
        .await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{timed_out}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    let cancelled = eventually(Duration::from_secs(2), || async {
        h.server.get_json("/mcp/servers/slow/logs").await["logs"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    })
    .await;
    assert!(cancelled, "the server received notifications/cancelled");
    // The server is still usable.
    let (status, _) = h
        .server
        .post_json("/tools/slow/echo", &json!({"message": "after"}))
        .await;
    assert_eq!(status, 200);
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/slow").await.0, 200);
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_to_one_server_run_side_by_side() {
    let h = Harness::start();
    let (status, body) = h.add("parallel", "healthy", &[]).await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let calls = (0..16).map(|i| {
        let server = &h.server;
        async move {
            server
                .post_json("/tools/parallel/sleep", &json!({"ms": 500 + i}))
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let took = started.elapsed();
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }
    assert!(
        took < Duration::from_millis(1400),
        "16 calls of 0.5 s took {took:?}: serialised?"
    );
    let texts: Vec<&str> = results
        .iter()
        .map(|(_, b)| b["content"][0]["text"].as_str().unwrap())
        .collect();
    for i in 0..16 {
        assert!(
            texts.contains(&format!("slept {} ms", 500 + i).as_str()),
            "{texts:?}"
        );
    }
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/parallel").await.0, 200);
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_errors_and_bad_requests_have_the_right_status() {
    let h = Harness::with_config(&format!("mcp:\n  allowed_commands: [{}]\n", fixture()));
    let (status, body) = h.add("srv", "healthy", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/tools/srv/fail", json!({}), 200, ""),
        ("/tools/srv/nope", json!({}), 404, "nope"),
        ("/tools/none/echo", json!({}), 404, "none"),
    ];
    for (path, args, expected, needle) in cases {
        let (status, body) = h.server.post_json(path, &args).await;
        assert_eq!(status, expected, "{path}: {body}");
        if expected == 200 {
            assert_eq!(body["is_error"], true, "{body}");
        } else {
            assert!(detail(&body).contains(needle), "{body}");
        }
    }
    let array = h
        .server
        .post("/tools/srv/echo")
        .json(&json!([1]))
        .send()
        .await
        .unwrap();
    assert_eq!(array.status(), 422);
    let malformed = h
        .server
        .post("/tools/srv/echo")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 422);

    let adds: Vec<(Value, u16, &str)> = vec![
        (
            json!({"name": "srv", "command": fixture()}),
            409,
            "already exists",
        ),
        (
            json!({"name": "bad.name", "command": fixture()}),
            400,
            "bad.name",
        ),
        (json!({"name": "", "command": fixture()}), 400, "name"),
        (
            json!({"name": "x", "command": "/bin/sh"}),
            403,
            "allowed_commands",
        ),
        (
            json!({"name": "x", "command": fixture(), "timeout": 0}),
            422,
            "timeout",
        ),
        (json!({"name": "x"}), 422, "command"),
        (
            json!({"name": "x", "command": fixture(), "args": "not-a-list"}),
            422,
            "args",
        ),
        (
            json!({"name": "x", "command": fixture(), "restart": "sometimes"}),
            422,
            "restart",
        ),
    ];
    for (request, expected, needle) in adds {
        let (status, body) = h.server.post_json("/mcp/servers", &request).await;
        assert_eq!(status, expected, "{request}: {body}");
        assert!(detail(&body).contains(needle), "{request}: {body}");
    }
    assert_eq!(h.server.delete_json("/mcp/servers/missing").await.0, 404);
    assert_eq!(
        h.server
            .get("/mcp/servers/missing/logs")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(h.server.delete_json("/mcp/servers/srv").await.0, 200);
    h.assert_clean(&[pid]);
}
