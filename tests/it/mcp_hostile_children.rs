//! Every way a child can misbehave, with our fixture server. Each test checks what the API says,
//! how long it took, that no process of the child's group survives, and that lit-mux's open
//! descriptors return exactly to their baseline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::Server;
use crate::support::mcp::{Harness, fixture, fixture_server, pid_of};
use serde_json::{Value, json};
use testkit::processes::{eventually, is_alive, wait_until};

fn detail(body: &Value) -> &str {
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_fails_at_spawn() {
    let h = Harness::start();
    let started = Instant::now();
    let (status, body) = h
        .server
        .post_json(
            "/mcp/servers",
            &json!({"name": "ghost", "command": "/no/such/mcp-server"}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        detail(&body).contains("spawn") && detail(&body).contains("/no/such/mcp-server"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // A failed add is forgotten: the name can be used again.
    assert_eq!(
        h.server
            .get("/mcp/servers/ghost")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        h.server.get_json("/mcp/health").await["statistics"]["servers_failed"],
        1
    );
    h.assert_clean(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_exits_at_once_is_reported_with_its_status_and_stderr() {
    let h = Harness::start();
    let started = Instant::now();
    let (status, body) = h.add("quitter", "exit-at-once", &[]).await;
    assert_eq!(status, 502, "{body}");
    let text = detail(&body);
    assert!(text.contains("initialize"), "names the stage: {text}");
    assert!(
        text.contains("exit code 1"),
        "names the exit status: {text}"
    );
    assert!(
        text.contains("missing configuration file"),
        "quotes stderr: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    h.assert_clean(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_flooding_stderr_never_blocks_anything() {
    let h = Harness::start();
    let add = h.add("flood", "stderr-flood", &["--stderr-bytes", "4194304"]);
    let health = async {
        // While the child writes 4 MiB to stderr, the API keeps answering.
        let started = Instant::now();
        let status = h.server.get("/health").send().await.unwrap().status();
        (status, started.elapsed())
    };
    let ((status, body), (health_status, health_took)) = tokio::join!(add, health);
    assert_eq!(status, 200, "{body}");
    assert_eq!(health_status, 200);
    assert!(health_took < Duration::from_secs(1), "{health_took:?}");
    let logs = h.server.get_json("/mcp/servers/flood/logs").await["logs"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        logs.len() <= 64 * 1024 && logs.len() > 60 * 1024,
        "a bounded tail: {} bytes",
        logs.len()
    );
    let (status, echoed) = h
        .server
        .post_json("/tools/flood/echo", &json!({"message": "still here"}))
        .await;
    assert_eq!(
        (status, echoed["content"][0]["text"].clone()),
        (200, json!("Echo: still here"))
    );
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/flood").await.0, 200);
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_kills_grandchildren() {
    for detach in [false, true] {
        let h = Harness::start();
        let extra: &[&str] = if detach { &["--detach"] } else { &[] };
        let (status, body) = h.add("forker", "grandchild", extra).await;
        assert_eq!(status, 200, "{body}");
        let pid = pid_of(&body);
        let grandchild = grandchild_pid(&h.server, "forker").await;
        assert!(is_alive(grandchild));
        let started = Instant::now();
        assert_eq!(h.server.delete_json("/mcp/servers/forker").await.0, 200);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            wait_until(Duration::from_secs(5), || !is_alive(grandchild)),
            "grandchild {grandchild} (detached: {detach}) survived removal"
        );
        h.assert_clean(&[pid]);
    }
}

async fn grandchild_pid(server: &Server, name: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = server.get_json(&format!("/mcp/servers/{name}/logs")).await;
        let pid = logs["logs"]
            .as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("grandchild pid ")?.trim().parse().ok());
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the fixture reports its grandchild's pid on stderr: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_sigterm_and_stdin_eof_is_killed_within_5_s() {
    let h = Harness::start();
    let (status, body) = h.add("stubborn", "ignore-sigterm", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let started = Instant::now();
    assert_eq!(h.server.delete_json("/mcp/servers/stubborn").await.0, 200);
    let took = started.elapsed();
    // stdin closed (1 s grace), SIGTERM ignored (2 s grace), then SIGKILL.
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_stdin_eof_gets_sigterm() {
    let h = Harness::start();
    let (status, body) = h.add("deaf", "ignore-stdin-eof", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let started = Instant::now();
    assert_eq!(h.server.delete_json("/mcp/servers/deaf").await.0, 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_stdout_lines_are_skipped() {
    let h = Harness::start();
    let (status, body) = h.add("noisy", "noise-stdout", &[]).await;
    assert_eq!(status, 200, "{body}");
    let (status, echoed) = h
        .server
        .post_json("/tools/noisy/echo", &json!({"message": "clean"}))
        .await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["content"][0]["text"], "Echo: clean");
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/noisy").await.0, 200);
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_never_answers_fails_at_the_timeout() {
    let h = Harness::start();
    let mut request = fixture_server("mute", "never-answer", &[]);
    request["timeout"] = json!(2);
    let started = Instant::now();
    let (status, body) = h.server.post_json("/mcp/servers", &request).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert!(
        detail(&body).contains("initialize") && detail(&body).contains("timed out"),
        "{body}"
    );
    // The timeout, then the stop sequence (stdin closed: the fixture exits at EOF).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    h.assert_clean(&[]);
}

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
        assert_eq!(health["cleaned_up"], json!(["fragile"]), "{health}");
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
        assert!(detail(&body).contains("exit code 4"), "{body}");
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
async fn an_oversized_response_fails_that_call_only() {
    let h = Harness::with_config("mcp:\n  max_message_bytes: 1048576\n");
    let (status, body) = h.add("big", "healthy", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let rss_before = rss(h.server.pid());
    let started = Instant::now();
    let (status, failed) = h
        .server
        .post_json("/tools/big/big", &json!({"bytes": 8 * 1024 * 1024}))
        .await;
    assert_eq!(status, 502, "{failed}");
    assert!(detail(&failed).contains("max_message_bytes"), "{failed}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        rss(h.server.pid()) < rss_before + 4 * 1024 * 1024,
        "the 8 MiB message was never held whole"
    );
    let (status, fine) = h
        .server
        .post_json("/tools/big/big", &json!({"bytes": 1000}))
        .await;
    assert_eq!(status, 200, "{fine}");
    assert_eq!(fine["content"][0]["text"].as_str().unwrap().len(), 1000);
    assert_eq!(h.server.delete_json("/mcp/servers/big").await.0, 200);
    h.assert_clean(&[pid]);
}

/// rmcp's own pager follows `nextCursor` for as long as a server hands one out: lit-mux's stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_listing_that_never_ends_fails_at_once_instead_of_filling_memory() {
    let h = Harness::start();
    let started = Instant::now();
    let (status, body) = h.add("pager", "endless-pages", &["--page-size", "2"]).await;
    assert_eq!(status, 502, "{body}");
    let text = detail(&body);
    assert!(
        text.contains("tools/list") && text.contains("still paging after 1000 pages"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped by the page bound, not the 5 s timeout: {:?}",
        started.elapsed()
    );
    h.assert_clean(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_catalog_larger_than_max_message_bytes_fails_though_each_page_fits() {
    let h = Harness::with_config("mcp:\n  max_message_bytes: 1048576\n");
    let wordy = |tools: &'static str| {
        [
            "--tools",
            tools,
            "--page-size",
            "50",
            "--description-bytes",
            "4096",
        ]
    };
    // 400 tools of ~4 KiB: 1.6 MB in all, in pages of ~200 KB.
    let (status, body) = h.add("wordy", "healthy", &wordy("400")).await;
    assert_eq!(status, 502, "{body}");
    let text = detail(&body);
    assert!(
        text.contains("tools/list") && text.contains("max_message_bytes"),
        "{text}"
    );
    // Half as many fit, and are all listed.
    let (status, body) = h.add("wordy", "healthy", &wordy("200")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server"]["tool_count"], 200 + 10, "{body}");
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/wordy").await.0, 200);
    h.assert_clean(&[pid]);
}

/// A child that writes junk on stdout without end does not write lit-mux's log without end: 20
/// skipped lines a minute are logged one by one, the rest are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_stdout_is_skipped_and_its_logging_bounded() {
    let h = Harness::start();
    let (status, body) = h.add("junky", "healthy", &[]).await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let (status, done) = h
        .server
        .post_json("/tools/junky/junk", &json!({"lines": 5000}))
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["content"][0]["text"], "wrote 5000 junk lines");
    assert_eq!(h.server.delete_json("/mcp/servers/junky").await.0, 200);
    // The count of the lines not logged is reported once the child is gone.
    assert!(
        wait_until(Duration::from_secs(5), || h
            .server
            .stderr()
            .contains("lines=4980")),
        "{}",
        h.server.stderr()
    );
    let stderr = h.server.stderr();
    let one_by_one = stderr
        .matches("skipping a stdout line that is not a JSON-RPC message")
        .count();
    assert_eq!(one_by_one, 20, "{stderr}");
    h.assert_clean(&[pid]);
}

fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
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
async fn tool_list_changes_are_followed_and_pages_are_all_read() {
    let h = Harness::start();
    let (status, body) = h
        .add("pages", "healthy", &["--tools", "12", "--page-size", "5"])
        .await;
    assert_eq!(status, 200, "{body}");
    let initial = body["server"]["tool_count"].as_u64().unwrap();
    assert!(
        body["server"]["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("gen_11")),
        "{body}"
    );
    let (status, _) = h
        .server
        .post_json("/tools/pages/add_tool", &json!({}))
        .await;
    assert_eq!(status, 200);
    let followed = eventually(Duration::from_secs(3), || async {
        h.server.get_json("/mcp/servers/pages").await["tool_count"].as_u64() == Some(initial + 1)
    })
    .await;
    assert!(
        followed,
        "notifications/tools/list_changed refreshed the catalog"
    );
    let (status, extra) = h.server.post_json("/tools/pages/extra", &json!({})).await;
    assert_eq!(status, 200, "{extra}");
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/pages").await.0, 200);
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_protocol_version_is_accepted() {
    let h = Harness::start();
    let (status, body) = h
        .add("old", "healthy", &["--protocol-version", "2024-11-05"])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server"]["protocol_version"], "2024-11-05");
    assert_eq!(body["server"]["server_info"]["name"], "mcp-fixture");
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/old").await.0, 200);
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
            400,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_add_and_remove_of_one_name_never_leaks() {
    let h = Harness::start();
    for _ in 0..10 {
        let add = h.add("race", "healthy", &[]);
        let remove = h.server.delete_json("/mcp/servers/race");
        let add_again = h.add("race", "healthy", &[]);
        let ((a, _), (r, _), (b, _)) = tokio::join!(add, remove, add_again);
        // Whatever the order, the outcomes are consistent with some serial order.
        assert!(
            [200, 409].contains(&a) && [200, 404].contains(&r) && [200, 409].contains(&b),
            "{a} {r} {b}"
        );
        let _ = h.server.delete_json("/mcp/servers/race").await;
        assert_eq!(h.server.get_json("/mcp/servers").await["total"], 0);
    }
    h.assert_clean(&[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_still_starting_answers_503_and_shows_as_starting() {
    let h = Harness::start();
    let adding = h.add("sluggish", "slow-init", &["--delay-ms", "1500"]);
    let probe = async {
        let starting = eventually(Duration::from_secs(2), || async {
            h.server
                .get("/mcp/servers/sluggish")
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await;
        assert!(starting, "the server is listed while it starts");
        let info = h.server.get_json("/mcp/servers/sluggish").await;
        let (status, called) = h
            .server
            .post_json("/tools/sluggish/echo", &json!({"message": "early"}))
            .await;
        (info, status, called)
    };
    let ((status, body), (info, call_status, called)) = tokio::join!(adding, probe);
    assert_eq!(status, 200, "{body}");
    assert_eq!(info["state"], "starting", "{info}");
    assert_eq!(call_status, 503, "{called}");
    assert!(detail(&called).contains("starting"), "{called}");
    let (status, _) = h
        .server
        .post_json("/tools/sluggish/echo", &json!({"message": "ready now"}))
        .await;
    assert_eq!(status, 200);
    let pid = pid_of(&body);
    assert_eq!(h.server.delete_json("/mcp/servers/sluggish").await.0, 200);
    h.assert_clean(&[pid]);
}
