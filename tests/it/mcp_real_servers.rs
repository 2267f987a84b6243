//! Real MCP servers from npm (pinned): add, list, call, restart, remove, through the HTTP API
//! and the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::mcp::{Harness, everything, filesystem};
use crate::support::{Server, TestHome};
use serde_json::json;
use testkit::processes::{eventually, in_group, is_alive};

async fn add_everything(server: &Server, name: &str) -> serde_json::Value {
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": name, "command": everything(), "args": ["stdio"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_is_added_listed_called_and_removed() {
    let harness = Harness::start();
    let server = &harness.server;

    let added = add_everything(server, "everything").await;
    assert_eq!(added["message"], "MCP server everything added successfully");
    let info = &added["server"];
    assert_eq!(info["state"], "ready");
    assert_eq!(info["tool_count"], 13, "{info}");
    assert_eq!(info["protocol_version"], "2025-11-25");
    assert!(
        info["server_info"]["name"]
            .as_str()
            .unwrap()
            .contains("everything"),
        "{info}"
    );
    let pid = info["pid"].as_i64().unwrap() as i32;
    assert!(is_alive(pid));

    let tools = server.get_json("/tools").await;
    assert_eq!(tools["total"], 13);
    let echo = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "echo")
        .unwrap();
    assert_eq!(echo["server"], "everything");
    assert_eq!(echo["parameters"]["type"], "object");
    assert!(echo["description"].as_str().is_some_and(|d| !d.is_empty()));

    let (status, echoed) = server
        .post_json("/tools/everything/echo", &json!({"message": "hi there"}))
        .await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(
        echoed,
        json!({"content": [{"type": "text", "text": "Echo: hi there"}], "is_error": false, "structured_content": null})
    );
    let (status, sum) = server
        .post_json("/tools/everything/get-sum", &json!({"a": 2, "b": 40}))
        .await;
    assert_eq!(status, 200, "{sum}");
    assert!(
        sum["content"][0]["text"].as_str().unwrap().contains("42"),
        "{sum}"
    );

    let listed = server.get_json("/mcp/servers").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["servers"][0]["name"], "everything");
    let one = server.get_json("/mcp/servers/everything").await;
    assert_eq!(one["pid"], pid);
    assert!(one["uptime_seconds"].as_f64().unwrap() >= 0.0);

    let health = server.get_json("/mcp/health").await;
    assert_eq!(
        health["servers"]["everything"],
        json!({"running": true, "process_alive": true, "tools": 13, "pid": pid, "state": "ready", "last_error": null})
    );
    assert_eq!(health["total_tools"], 13);
    assert_eq!(
        health["statistics"]["servers_created"], 2,
        "the harness warm-up and this one"
    );
    assert_eq!(health["statistics"]["total_requests"], 2);
    assert!(health["resources"]["open_fds"].as_u64().unwrap() > 0);

    let started = std::time::Instant::now();
    let (status, removed) = server.delete_json("/mcp/servers/everything").await;
    assert_eq!(
        (status, removed),
        (
            200,
            json!({"message": "MCP server everything removed successfully"})
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        in_group(pid).is_empty(),
        "the whole group is gone: {:?}",
        in_group(pid)
    );
    assert_eq!(server.get_json("/tools").await["total"], 0);
    harness.assert_clean(&[pid]);
    let (status, _) = server.delete_json("/mcp/servers/everything").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn restart_replaces_the_process() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let first = add_everything(&server, "ev").await["server"]["pid"]
        .as_i64()
        .unwrap() as i32;
    let (status, body) = server
        .post_json("/mcp/servers/ev/restart", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let second = body["server"]["pid"].as_i64().unwrap() as i32;
    assert_ne!(first, second);
    assert!(in_group(first).is_empty());
    assert_eq!(body["server"]["restarts"], 1);
    assert_eq!(body["server"]["state"], "ready");
    let (status, _) = server
        .post_json("/tools/ev/echo", &json!({"message": "again"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post_json("/mcp/servers/nope/restart", &json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn server_filesystem_reads_a_temp_dir() {
    let home = TestHome::new();
    let shared = home.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("note.txt"), "hello from a file").unwrap();
    let server = home.start(&[]);
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "fs", "command": filesystem(), "args": [shared.to_str().unwrap()]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let tools: Vec<String> = server.get_json("/tools").await["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(tools.contains(&"read_text_file".to_owned()), "{tools:?}");
    let path = shared.join("note.txt");
    let (status, read) = server
        .post_json(
            "/tools/fs/read_text_file",
            &json!({"path": path.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert!(
        read["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hello from a file"),
        "{read}"
    );
    // Outside the allowed directory: the tool answers with an error result, not an HTTP error.
    let (status, denied) = server
        .post_json(
            "/tools/fs/read_text_file",
            &json!({"path": "/etc/hostname"}),
        )
        .await;
    assert_eq!(status, 200, "{denied}");
    assert_eq!(denied["is_error"], true, "{denied}");
}

#[tokio::test]
async fn configured_servers_start_with_lit_mux_and_mcp_servers_env_adds_more() {
    let home = TestHome::new().env("MCP_SERVERS", &format!("from-env::{}::stdio", everything()));
    home.write_config(&format!(
        "mcp:\n  servers:\n    - name: from-file\n      command: {}\n      args: [stdio]\n    - name: broken\n      command: /no/such/program\n",
        everything()
    ));
    let server = home.start(&[]);
    // The API answers at once; the servers come up in the background.
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
    let expected = json!([
        ["broken", "failed"],
        ["from-env", "ready"],
        ["from-file", "ready"]
    ]);
    let states = || async {
        let body = server.get_json("/mcp/servers").await;
        json!(
            body["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| [s["name"].clone(), s["state"].clone()])
                .collect::<Vec<_>>()
        )
    };
    let ready = eventually(Duration::from_secs(20), || async {
        states().await == expected
    })
    .await;
    assert!(ready, "states: {}", states().await);
    let broken = server.get_json("/mcp/servers/broken").await;
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("command not found: /no/such/program"),
        "{broken}"
    );
    assert_eq!(server.get_json("/tools").await["total"], 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_servers_and_calls_tools() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let client = TestHome::new().env("LIT_MUX_URL", &server.url);
    let run = |args: &[&str]| client.run(args);
    let ev = everything();
    let added = tokio::task::block_in_place(|| run(&["mcp", "add", "ev", &ev, "stdio"]));
    assert_eq!(added.code(), Some(0), "{added:?}");
    assert!(added.stdout.contains("added"), "{}", added.stdout);
    let listed = tokio::task::block_in_place(|| run(&["mcp", "list"]));
    assert!(
        listed.stdout.contains("ev") && listed.stdout.contains("ready"),
        "{}",
        listed.stdout
    );
    let tools = tokio::task::block_in_place(|| run(&["tools"]));
    assert!(tools.stdout.contains("get-sum"), "{}", tools.stdout);
    let called =
        tokio::task::block_in_place(|| run(&["call", "ev.echo", r#"{"message": "from the cli"}"#]));
    assert_eq!(called.code(), Some(0), "{called:?}");
    assert!(
        called.stdout.contains("Echo: from the cli"),
        "{}",
        called.stdout
    );
    let restarted = tokio::task::block_in_place(|| run(&["mcp", "restart", "ev"]));
    assert_eq!(restarted.code(), Some(0), "{restarted:?}");
    let logs = tokio::task::block_in_place(|| run(&["mcp", "logs", "ev"]));
    assert_eq!(logs.code(), Some(0), "{logs:?}");
    let removed = tokio::task::block_in_place(|| run(&["mcp", "remove", "ev"]));
    assert_eq!(removed.code(), Some(0), "{removed:?}");
    let gone = tokio::task::block_in_place(|| run(&["call", "ev.echo", "{}"]));
    assert_eq!(gone.code(), Some(1));
    assert!(
        gone.stderr.contains("404") && gone.stderr.contains("ev"),
        "{}",
        gone.stderr
    );
}
