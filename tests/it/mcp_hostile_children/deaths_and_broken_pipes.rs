//! A child that dies or stops talking while it serves: its death after listing its tools is noticed
//! at once and its tools leave the catalog, calls in flight fail at once rather than at their
//! timeout, a child that closes its stdout or its stdin but lives on is stopped with SIGTERM, and
//! `restart: on-failure` brings a crashed server back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::mcp::{Harness, fixture_server, pid_of};
use serde_json::json;
use testkit::processes::eventually;

use super::detail;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_dying_after_tools_list_is_noticed_at_once() {
    let h = Harness::start();
    let (status, body) = h.add("fragile", "die-after-list", &[]).await;
    // It may die before or after the answer: either way lit-mux must notice and say so.
    if status == 200 {
        let pid = pid_of(&body);
        let exited = eventually(Duration::from_secs(2), || async {
            h.server.get_json("/mcp/servers/fragile").await["state"] == "exited"
        })
        .await;
        assert!(exited, "state becomes exited");
        let info = h.server.get_json("/mcp/servers/fragile").await;
        assert_eq!(info["exit_status"]["code"], 4, "{info}");
        assert_eq!(info["tool_count"], 0, "its tools left the catalog");
        assert_eq!(h.server.get_json("/tools").await["total"], 0);
        let (status, called) = h
            .server
            .post_json("/tools/fragile/echo", &json!({"message": "x"}))
            .await;
        assert_eq!(status, 502, "{called}");
        assert!(detail(&called).contains("exit code 4"), "{called}");
        let health = h.server.get_json("/mcp/health").await;
        assert_eq!(health["servers"]["fragile"]["state"], "exited", "{health}");
        assert_eq!(health["cleaned_up"], json!([]), "a GET removes nothing");
        let (status, cleaned) = h.server.post_json("/mcp/health/cleanup", &json!({})).await;
        assert_eq!(status, 200, "{cleaned}");
        assert_eq!(cleaned["cleaned_up"], json!(["fragile"]), "{cleaned}");
        assert_eq!(
            h.server
                .get("/mcp/servers/fragile")
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        h.assert_clean(&[pid]);
    } else {
        assert_eq!(status, 502, "{body}");
        assert!(
            detail(&body).contains("its process exited with status 4"),
            "{body}"
        );
        h.assert_clean(&[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_fails_at_once_when_the_child_dies() {
    let h = Harness::start();
    let (status, body) = h.add("crasher", "healthy", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let sleep_args = json!({"ms": 4000});
    let slow = h.server.post_json("/tools/crasher/sleep", &sleep_args);
    let crash = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.server.post_json("/tools/crasher/crash", &json!({})).await
    };
    let started = Instant::now();
    let ((slow_status, slow_body), (crash_status, crash_body)) = tokio::join!(slow, crash);
    let took = started.elapsed();
    assert_eq!(crash_status, 502, "{crash_body}");
    assert!(detail(&crash_body).contains("exit code 3"), "{crash_body}");
    assert_eq!(slow_status, 502, "{slow_body}");
    assert!(
        took < Duration::from_secs(2),
        "in-flight calls fail at once, not at their timeout: {took:?}"
    );
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_closes_its_stdout_but_lives_on_is_stopped() {
    let h = Harness::start();
    let (status, body) = h.add("mute", "healthy", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);

    // The child closes stdout mid-call and hangs, ignoring stdin EOF: only SIGTERM ends it.
    let started = Instant::now();
    let (status, called) = h
        .server
        .post_json("/tools/mute/close_stdout", &json!({}))
        .await;
    assert_eq!(status, 502, "{called}");
    let stopped = eventually(Duration::from_secs(6), || async {
        h.server.get_json("/mcp/servers/mute").await["state"] == "exited"
    })
    .await;
    assert!(stopped, "{}", h.server.get_json("/mcp/servers/mute").await);
    assert!(started.elapsed() < Duration::from_secs(6));
    let info = h.server.get_json("/mcp/servers/mute").await;
    assert_eq!(
        info["exit_status"]["signal"], 15,
        "stopped with SIGTERM: {info}"
    );
    assert_eq!(info["tool_count"], 0, "its tools left the catalog");
    let (status, again) = h
        .server
        .post_json("/tools/mute/echo", &json!({"message": "x"}))
        .await;
    assert_eq!(status, 502, "{again}");
    assert!(detail(&again).contains("SIGTERM"), "{again}");
    let (status, _) = h.server.delete_json("/mcp/servers/mute").await;
    assert_eq!(status, 200);
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_closes_its_stdin_but_lives_on_is_stopped() {
    let h = Harness::start();
    let (status, body) = h.add("deaf", "deaf-after-list", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);

    // The request cannot reach it: the call fails at once, not at its timeout.
    let started = Instant::now();
    let (status, called) = h
        .server
        .post_json("/tools/deaf/echo", &json!({"message": "x"}))
        .await;
    assert_eq!(status, 502, "{called}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let stopped = eventually(Duration::from_secs(6), || async {
        h.server.get_json("/mcp/servers/deaf").await["state"] == "exited"
    })
    .await;
    assert!(stopped, "{}", h.server.get_json("/mcp/servers/deaf").await);
    let info = h.server.get_json("/mcp/servers/deaf").await;
    assert_eq!(
        info["exit_status"]["signal"], 15,
        "stopped with SIGTERM: {info}"
    );
    assert_eq!(h.server.get_json("/tools").await["total"], 0);
    let (status, _) = h.server.delete_json("/mcp/servers/deaf").await;
    assert_eq!(status, 200);
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_failure_brings_a_crashed_server_back() {
    let h = Harness::start();
    let mut request = fixture_server("phoenix", "healthy", &[]);
    request["restart"] = json!("on-failure");
    let (status, body) = h.server.post_json("/mcp/servers", &request).await;
    assert_eq!(status, 200, "{body}");
    let first = pid_of(&body);
    let (status, _) = h.server.post_json("/tools/phoenix/crash", &json!({})).await;
    assert_eq!(status, 502);
    let back = eventually(Duration::from_secs(4), || async {
        let info = h.server.get_json("/mcp/servers/phoenix").await;
        info["state"] == "ready" && info["pid"].as_i64() != Some(i64::from(first))
    })
    .await;
    assert!(back, "{}", h.server.get_json("/mcp/servers/phoenix").await);
    let info = h.server.get_json("/mcp/servers/phoenix").await;
    assert_eq!(info["restarts"], 1);
    let (status, _) = h
        .server
        .post_json("/tools/phoenix/echo", &json!({"message": "again"}))
        .await;
    assert_eq!(status, 200);
    let second = info["pid"].as_i64().unwrap() as i32;
    assert_eq!(h.server.delete_json("/mcp/servers/phoenix").await.0, 200);
    h.assert_clean(&[first, second]);
}
