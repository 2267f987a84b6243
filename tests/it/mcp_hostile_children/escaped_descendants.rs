//! Descendants that leave the child's process group and session (`setsid`, then a double fork
//! whose middle exits, as a daemon does) die with the child all the same: when it is removed,
//! when it exits by itself, and when lit-mux is killed with SIGKILL. Every process a test starts
//! carries a mark in its environment (the server's `env`, inherited by every descendant), so
//! `/proc` shows whatever survived, wherever it was re-parented.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::mcp::{Harness, fixture_server, pid_of};
use crate::support::{Server, TestHome};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use testkit::processes::{self, is_alive, wait_until};

use super::detail;

const MARK_VARIABLE: &str = "LIT_MUX_ESCAPE_TEST";

/// A mark no other test (or earlier run) uses.
fn new_mark(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// A fixture that starts `daemons` daemons before serving, everything of it marked.
fn daemonizing_server(name: &str, mark: &str, daemons: usize) -> Value {
    let mut request = fixture_server(name, "healthy", &["--daemons", &daemons.to_string()]);
    request["env"] = json!({ MARK_VARIABLE: mark });
    request
}

/// Live processes carrying `mark` in their environment.
fn marked(mark: &str) -> Vec<i32> {
    let needle = format!("{MARK_VARIABLE}={mark}");
    processes::all()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.state != 'X')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|entry| entry == needle.as_bytes())
        })
        .map(|p| p.pid)
        .collect()
}

/// Kills what a failed test left behind, so that it does not outlive the test run.
fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The daemons' pids, as their launchers report them on the server's stderr.
async fn daemon_pids(server: &Server, name: &str, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = server.get_json(&format!("/mcp/servers/{name}/logs")).await;
        let pids: Vec<i32> = logs["logs"]
            .as_str()
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("daemon pid ")?.trim().parse().ok())
            .collect();
        if pids.len() >= count {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "the fixture reports its daemons' pids on stderr: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon is in no group or session of the server's, and not its child.
fn assert_escaped(daemon: i32, server: i32) {
    let process = processes::read(daemon).expect("the daemon runs");
    let server = processes::read(server).expect("the server runs");
    assert!(
        process.parent != server.pid
            && process.group != server.group
            && process.session != server.session,
        "the daemon {process:?} left the group and session of the server {server:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_kills_a_daemon_that_left_the_group_and_session() {
    let h = Harness::start();
    let mark = new_mark("removal");
    let (status, body) = h
        .server
        .post_json("/mcp/servers", &daemonizing_server("daemonizer", &mark, 1))
        .await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let daemon = daemon_pids(&h.server, "daemonizer", 1).await[0];
    assert_escaped(daemon, pid);

    assert_eq!(h.server.delete_json("/mcp/servers/daemonizer").await.0, 200);
    let gone = wait_until(Duration::from_secs(5), || !is_alive(daemon));
    let survivors = marked(&mark);
    kill_all(&survivors);
    assert!(gone, "daemon {daemon} survived the removal of its server");
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_exits_by_itself_takes_its_daemons_with_it() {
    let h = Harness::start();
    let mark = new_mark("exit");
    let (status, body) = h
        .server
        .post_json("/mcp/servers", &daemonizing_server("shortlived", &mark, 2))
        .await;
    assert_eq!(status, 200, "{body}");
    let pid = pid_of(&body);
    let daemons = daemon_pids(&h.server, "shortlived", 2).await;
    for &daemon in &daemons {
        assert_escaped(daemon, pid);
    }

    let (status, crashed) = h
        .server
        .post_json("/tools/shortlived/crash", &json!({}))
        .await;
    assert_eq!(status, 502, "{crashed}");
    // The exit is told as the server's own, not as that of anything around it.
    assert!(detail(&crashed).contains("exit code 3"), "{crashed}");
    let gone = wait_until(Duration::from_secs(5), || {
        daemons.iter().all(|&daemon| !is_alive(daemon))
    });
    let survivors = marked(&mark);
    kill_all(&survivors);
    assert!(gone, "daemons {daemons:?} outlived their server");
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
    let view = h.server.get_json("/mcp/servers/shortlived").await;
    assert_eq!(view["exit_status"]["code"], 3, "{view}");
    h.assert_clean(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_lit_mux_leaves_none_of_20_daemons_alive() {
    let home = TestHome::new();
    let mut server = home.start(&[]);
    let mark = new_mark("sigkill");
    for i in 0..20 {
        let name = format!("daemonizer-{i}");
        let (status, body) = server
            .post_json("/mcp/servers", &daemonizing_server(&name, &mark, 1))
            .await;
        assert_eq!(status, 200, "{body}");
        let daemon = daemon_pids(&server, &name, 1).await[0];
        assert_escaped(daemon, pid_of(&body));
    }
    // Their keepers carry the mark too.
    assert!(
        wait_until(Duration::from_secs(2), || marked(&mark).len() >= 40),
        "20 servers and 20 daemons: {:?}",
        marked(&mark)
    );

    server.signal(Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let none_left = wait_until(Duration::from_secs(5), || marked(&mark).is_empty());
    let survivors = marked(&mark);
    kill_all(&survivors);
    assert!(
        none_left,
        "alive 5 s after SIGKILL of lit-mux: {:?}",
        survivors
            .iter()
            .filter_map(|&pid| processes::read(pid))
            .collect::<Vec<_>>()
    );
}
