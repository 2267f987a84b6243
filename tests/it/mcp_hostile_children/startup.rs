//! A child's start and its tool catalog: a missing command fails at spawn, a child that exits at
//! once is reported with its status and stderr, one that never answers fails at the timeout, a
//! catalog that pages without end or outgrows `max_message_bytes` fails the add, an older protocol
//! version is accepted, a server still starting answers 503, and catalog changes are followed with
//! every page read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::mcp::{Harness, fixture_server, pid_of};
use serde_json::{Value, json};
use testkit::processes::eventually;

use super::detail;

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
        detail(&body) == "MCP server 'ghost' did not start: command not found: /no/such/mcp-server",
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
        text.contains("exited with status 1"),
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
async fn a_child_that_never_answers_fails_at_the_timeout() {
    let h = Harness::start();
    let mut request = fixture_server("mute", "never-answer", &[]);
    request["timeout"] = json!(2);
    let started = Instant::now();
    let (status, body) = h.server.post_json("/mcp/servers", &request).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert!(
        detail(&body) == "MCP server 'mute' did not start: no answer to initialize within 2 s",
        "{body}"
    );
    // The timeout, then the stop sequence (stdin closed: the fixture exits at EOF).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    h.assert_clean(&[]);
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

/// Each way a start can fail, tried ten times at once: the answer names the cause in the same
/// words every time, however the process's exit and its closed pipes interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_says_the_same_thing_every_time() {
    let h = Harness::start();
    let fixture = crate::support::mcp::fixture();
    let cases: Vec<(&str, Value, String)> = vec![
        (
            "fixture-exits",
            json!({"command": fixture, "args": ["exit-at-once"], "timeout": 10}),
            "its process exited with status 1 before answering initialize; last stderr lines: \
             fatal: missing configuration file /nonexistent.toml"
                .to_owned(),
        ),
        (
            "false",
            json!({"command": "false", "timeout": 10}),
            "its process exited with status 1 before answering initialize".to_owned(),
        ),
        (
            "exit-3",
            json!({"command": "sh", "args": ["-c", "exit 3"], "timeout": 10}),
            "its process exited with status 3 before answering initialize".to_owned(),
        ),
        (
            "complains",
            json!({"command": "sh", "args": ["-c", "echo no config >&2; exit 2"], "timeout": 10}),
            "its process exited with status 2 before answering initialize; last stderr lines: no config"
                .to_owned(),
        ),
        (
            "crashes",
            json!({"command": "sh", "args": ["-c", "kill -SEGV $$"], "timeout": 10}),
            "its process was killed by SIGSEGV before answering initialize".to_owned(),
        ),
        (
            "missing",
            json!({"command": "no-such-mcp-server-anywhere", "timeout": 10}),
            "command not found: no-such-mcp-server-anywhere".to_owned(),
        ),
        (
            "cat",
            json!({"command": "cat", "timeout": 1}),
            "no answer to initialize within 1 s".to_owned(),
        ),
        (
            "fixture-mute",
            json!({"command": fixture, "args": ["never-answer"], "timeout": 1}),
            "no answer to initialize within 1 s".to_owned(),
        ),
    ];
    for (case, request, cause) in cases {
        let attempts = (0..10).map(|attempt| {
            let name = format!("{case}-{attempt}");
            let mut request = request.clone();
            request["name"] = json!(name);
            let server = &h.server;
            async move {
                let (status, body) = server.post_json("/mcp/servers", &request).await;
                (name, status, body)
            }
        });
        for (name, status, body) in futures_util::future::join_all(attempts).await {
            assert_eq!(status, 502, "{name}: {body}");
            assert_eq!(
                detail(&body),
                format!("MCP server '{name}' did not start: {cause}"),
                "{name}"
            );
        }
    }
    h.assert_clean(&[]);
}
