//! Removing a child that resists: its grandchildren die with it (detached or not), a child ignoring
//! stdin EOF gets SIGTERM, one ignoring SIGTERM too is killed within 5 s, and adding and removing
//! one name concurrently never leaks a process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::Server;
use crate::support::mcp::{Harness, pid_of};
use testkit::processes::{is_alive, wait_until};

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
