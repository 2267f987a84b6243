//! What a child writes that it should not: a flood on stderr never blocks the API and only a
//! bounded tail is kept, lines on stdout that are not JSON-RPC are skipped and their logging is
//! bounded, and an oversized response fails that call only, without ever being held whole in
//! memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::mcp::{Harness, pid_of};
use serde_json::json;
use testkit::processes::{eventually, wait_until};

use super::detail;

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

/// A stderr line longer than the ring is cut, not dropped: its first 16 KiB stay in the logs,
/// marked with the whole line's length, and the lines after it follow as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_line_over_64_kib_is_kept_truncated_and_marked() {
    let h = Harness::start();
    let (status, body) = h
        .add("verbose", "healthy", &["--long-stderr-line", "100000"])
        .await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let logs = || async {
        h.server.get_json("/mcp/servers/verbose/logs").await["logs"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The fixture writes it before it serves; the drain may still be at it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            logs().await.contains("after the long line")
        })
        .await
    );
    let logs = logs().await;
    let kept = format!("{}… [truncated, 100000 bytes]", "l".repeat(16 * 1024));
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(
        lines,
        [kept.as_str(), "after the long line"],
        "logs of {} bytes",
        logs.len()
    );
    assert_eq!(h.server.delete_json("/mcp/servers/verbose").await.0, 200);
    h.assert_clean(&[pid]);
}
