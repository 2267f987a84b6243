//! The CLI and configuration, seen from outside: exit codes, messages, files written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;

use crate::support::{TestHome, closed_port, status_and_json};

#[tokio::test]
async fn start_without_config_uses_defaults_and_names_the_file_it_looked_for() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let (status, body) = status_and_json(server.get("/health").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    // No key by default: protected routes are reachable (this one does not exist: 404, not 401).
    assert_eq!(server.get("/anything").send().await.unwrap().status(), 404);
    let stderr = server.stderr();
    let expected_path = home.default_config_path();
    assert!(
        stderr.contains(&expected_path.display().to_string()) && stderr.contains("using defaults"),
        "stderr should name {expected_path:?} and say defaults are used:\n{stderr}"
    );
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
}

#[test]
fn config_errors_name_the_file_the_key_and_the_position_and_exit_2() {
    // (config text, what the one-line error must contain)
    let cases: &[(&str, &[&str])] = &[
        (
            "server:\n  port: eighty\n",
            &["server.port", "invalid type", "line 2 column 9"],
        ),
        (
            "server:\n  host: 127.0.0.1\n  prot: 80\n",
            &["server.prot", "unknown key", "line 3 column 3"],
        ),
        (
            "bogus: true\n",
            &["bogus", "unknown key", "line 1 column 1"],
        ),
        (
            "mcp:\n  servers:\n    - name: fs\n      command: npx\n      timeout: soon\n",
            &["mcp.servers[0].timeout", "line 5 column 16"],
        ),
        (
            "mcp:\n  servers:\n    - {name: fs, command: npx, colour: red}\n",
            &["mcp.servers[0].colour", "unknown key", "line 3"],
        ),
        ("server: [1, 2\n", &["line"]),
        ("\tserver: {}\n", &["line 1 column 1"]),
        (
            "server:\n  log_level: loud\n",
            &["server.log_level", "loud"],
        ),
        (
            "mcp:\n  servers:\n    - {name: 'a.b', command: x}\n",
            &["mcp.servers[0].name", "a.b"],
        ),
        (
            "mcp:\n  servers:\n    - {name: a, command: x}\n    - {name: a, command: y}\n",
            &["mcp.servers[1].name", "twice"],
        ),
        (
            "server:\n  cors_origins: [example.com]\n",
            &["server.cors_origins[0]", "example.com"],
        ),
        (
            "storage:\n  max_wal_mb: 0\n",
            &["storage.max_wal_mb", "from 1 to 65536"],
        ),
    ];
    for (yaml, needles) in cases {
        let home = TestHome::new();
        let path = home.write("bad.yaml", yaml);
        let out = home.run(&["start", "--port", "0", "--config", path.to_str().unwrap()]);
        assert_eq!(out.code(), Some(2), "{yaml:?} → {out:?}");
        assert!(
            !out.stderr.contains("panicked"),
            "{yaml:?} panicked: {}",
            out.stderr
        );
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "one line: {}",
            out.stderr
        );
        for needle in needles.iter().copied().chain([path.to_str().unwrap()]) {
            assert!(
                out.stderr.contains(needle),
                "{yaml:?}: error should contain {needle:?}:\n{}",
                out.stderr
            );
        }
    }
}

#[test]
fn an_unreadable_config_path_is_an_error_not_defaults() {
    let home = TestHome::new();
    // A directory where the file should be.
    std::fs::create_dir_all(home.path().join("conf.yaml")).unwrap();
    let out = home.run(&["start", "--port", "0", "--config", "conf.yaml"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("conf.yaml"), "{}", out.stderr);
}

#[tokio::test]
async fn config_file_is_found_through_flag_env_and_xdg() {
    let yaml = "server:\n  api_key: from-file\n";
    let home = TestHome::new();
    let custom = home.write("elsewhere/custom.yaml", yaml);
    let xdg = home.write("xdg/lit-mux/config.yaml", yaml);

    let by_flag = home.start(&["--config", custom.to_str().unwrap()]);
    let by_env = TestHome::new()
        .env("LIT_MUX_CONFIG", custom.to_str().unwrap())
        .start(&[]);
    let by_xdg = TestHome::new()
        .env(
            "XDG_CONFIG_HOME",
            xdg.parent().unwrap().parent().unwrap().to_str().unwrap(),
        )
        .start(&[]);
    for server in [&by_flag, &by_env, &by_xdg] {
        // The key from the file is enforced, so that file was the one loaded.
        assert_eq!(server.get("/x").send().await.unwrap().status(), 401);
        let authed = server
            .get("/x")
            .header("X-API-Key", "from-file")
            .send()
            .await
            .unwrap();
        assert_eq!(authed.status(), 404);
    }
}

#[tokio::test]
async fn env_vars_expand_in_string_values_and_dotenv_is_loaded_first() {
    let home = TestHome::new().env("KEY_TAIL", "from-environment");
    // .env supplies KEY_HEAD, and does not override KEY_TAIL which the environment sets.
    home.write(".env", "KEY_HEAD=from-dotenv\nKEY_TAIL=ignored\n");
    home.write_config(concat!(
        "server:\n",
        "  api_key: \"${KEY_HEAD}:${KEY_TAIL}\"\n",
        "backends:\n",
        "  remote:\n",
        "    type: echo\n",
        "    system_prompt: ${LIT_MUX_TEST_UNSET_VARIABLE}\n",
    ));
    let server = home.start(&[]);
    let with_key = |key: &str| {
        server
            .get("/x")
            .header("Authorization", format!("Bearer {key}"))
            .send()
    };
    assert_eq!(
        with_key("from-dotenv:from-environment")
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        with_key("${KEY_HEAD}:${KEY_TAIL}").await.unwrap().status(),
        401
    );
    let stderr = server.stderr();
    assert!(
        stderr.contains("LIT_MUX_TEST_UNSET_VARIABLE")
            && stderr.contains("backends.remote.system_prompt"),
        "a warning should name the unset variable and where it is used:\n{stderr}"
    );
}

#[tokio::test]
async fn the_predecessors_default_config_starts_with_its_secrets_unset() {
    // As the predecessor's `init` wrote it, in a shell where none of its variables is set.
    let yaml = concat!(
        "server:\n",
        "  port: 8000\n",
        "  api_key: ${LIT_MUX_TEST_UNSET_SERVER_KEY}\n",
        "backends:\n",
        "  ollama: {enabled: true, host: 'http://127.0.0.1:1', default_model: llama3.1}\n",
        "  chatgpt: {enabled: true, api_key: '${LIT_MUX_TEST_UNSET_OPENAI_KEY}', model: gpt-4o}\n",
        "  claude_desktop: {enabled: false, automation: true}\n",
        "  claude: {type: anthropic, api_key: '${LIT_MUX_TEST_UNSET_ANTHROPIC_KEY}'}\n",
    );
    let home = TestHome::new();
    home.write_config(yaml);
    let server = home.start(&[]);
    // No key: served without one (on loopback only).
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
    let backends = server.get_json("/backends").await;
    let enabled = |name: &str| {
        backends
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {backends}"))["enabled"]
            .clone()
    };
    // An OpenAI-compatible server may need no key; Anthropic's API does, so that one is off.
    assert_eq!(enabled("chatgpt"), true, "{backends}");
    assert_eq!(enabled("claude"), false, "{backends}");
    assert!(
        backends
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["name"] != "claude_desktop"),
        "{backends}"
    );
    let stderr = server.stderr();
    for needle in [
        "LIT_MUX_TEST_UNSET_SERVER_KEY",
        "server.api_key is empty",
        "LIT_MUX_TEST_UNSET_OPENAI_KEY",
        "backends.chatgpt.api_key is empty",
        "backends.claude is disabled",
        "claude_desktop is no longer supported",
    ] {
        assert!(
            stderr.contains(needle),
            "no warning with {needle:?}:\n{stderr}"
        );
    }
    // The client commands read the same file and need none of the secrets either.
    let url = server.url.clone();
    let out = home.run(&["backends", "--url", &url]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("chatgpt"), "{out:?}");

    // Without a key a non-loopback address is still refused.
    let out = home.run(&["start", "--host", "0.0.0.0", "--port", "0"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("without an API key"), "{out:?}");
}

#[test]
fn a_malformed_dotenv_file_is_a_startup_error() {
    let home = TestHome::new();
    home.write(".env", "GOOD=1\nthis line is not an assignment\n");
    let out = home.run(&["start", "--port", "0"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains(".env"), "{}", out.stderr);
}

#[test]
fn mcp_servers_env_is_checked_with_the_config() {
    let bad_entry = TestHome::new().env("MCP_SERVERS", "everything::npx::-y,lonely");
    let out = bad_entry.run(&["start", "--port", "0"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("MCP_SERVERS") && out.stderr.contains("lonely"),
        "{}",
        out.stderr
    );

    // Names from MCP_SERVERS obey the same rules as the file's, duplicates included.
    let clash = TestHome::new().env("MCP_SERVERS", "fs::npx::-y::server-fs");
    clash.write_config("mcp:\n  servers:\n    - {name: fs, command: other}\n");
    let out = clash.run(&["start", "--port", "0"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("mcp.servers[1].name") && out.stderr.contains("\"fs\""),
        "{}",
        out.stderr
    );

    let bad_name = TestHome::new().env("MCP_SERVERS", "has.dot::cmd");
    let out = bad_name.run(&["start", "--port", "0"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("has.dot"), "{}", out.stderr);
}

#[tokio::test]
async fn init_writes_a_private_config_with_a_fresh_key_and_refuses_to_overwrite() {
    let home = TestHome::new();
    let first = home.run(&["init"]);
    assert_eq!(first.code(), Some(0), "{first:?}");
    let key = printed_key(&first.stdout);
    let path = home.default_config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&key), "the printed key is the one stored");
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 10,
        "commented"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file holds a secret");

    let again = home.run(&["init"]);
    assert_eq!(again.code(), Some(1), "{again:?}");
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "left untouched"
    );

    let forced = home.run(&["init", "--force"]);
    assert_eq!(forced.code(), Some(0), "{forced:?}");
    let new_key = printed_key(&forced.stdout);
    assert_ne!(new_key, key, "every init generates a new key");

    // The written file is a valid config whose key the server enforces.
    let server = home.start(&[]);
    assert_eq!(server.get("/x").send().await.unwrap().status(), 401);
    let ok = server
        .get("/x")
        .header("X-API-Key", &new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 404);
}

fn printed_key(stdout: &str) -> String {
    let key = stdout
        .split_whitespace()
        .find(|word| word.starts_with("lmx_"))
        .unwrap_or_else(|| panic!("no key printed in {stdout:?}"));
    assert!(key.len() >= 40, "a long random key: {key}");
    key.to_owned()
}

#[test]
fn init_honours_the_config_flag() {
    let home = TestHome::new();
    let out = home.run(&["init", "--config", "nested/dir/lit.yaml"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(home.path().join("nested/dir/lit.yaml").is_file());
    assert!(!home.default_config_path().exists());
}

#[test]
fn status_exits_0_when_up_and_1_with_a_one_line_reason_when_down() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let up = home.run(&["status", "--url", &server.url]);
    assert_eq!(up.code(), Some(0), "{up:?}");
    assert!(up.stdout.contains("healthy") && up.stdout.contains(env!("CARGO_PKG_VERSION")));

    let down_url = format!("http://127.0.0.1:{}", closed_port());
    let down = home.run(&["status", "--url", &down_url]);
    assert_eq!(down.code(), Some(1), "{down:?}");
    assert_eq!(down.stderr.trim().lines().count(), 1, "{}", down.stderr);
    assert!(
        down.stderr.contains("connection refused"),
        "{}",
        down.stderr
    );
}

#[test]
fn status_finds_the_server_through_the_config_file() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    home.write_config(&format!("server:\n  port: {port}\n"));
    let out = home.run(&["status"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
}

#[test]
fn client_commands_take_the_key_from_flags_env_or_config() {
    let home = TestHome::new();
    home.write_config("server:\n  api_key: right-key\n");
    let server = home.start(&[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    // The config names the port too, so a bare client command finds both URL and key there.
    home.write_config(&format!("server:\n  api_key: right-key\n  port: {port}\n"));

    let wrong_flag = home.run(&["backends", "--api-key", "wrong"]);
    assert_eq!(wrong_flag.code(), Some(1));
    assert!(
        wrong_flag.stderr.contains("401") && wrong_flag.stderr.contains("Invalid API key"),
        "{}",
        wrong_flag.stderr
    );

    let wrong_env = TestHome::new()
        .env("LIT_MUX_API_KEY", "wrong")
        .env("LIT_MUX_URL", &server.url);
    let out = wrong_env.run(&["backends"]);
    assert!(out.stderr.contains("Invalid API key"), "{}", out.stderr);

    // With the config's key the request is let in (the route itself is not part of this test).
    let from_config = home.run(&["backends"]);
    assert!(
        !from_config.stderr.contains("401"),
        "{}",
        from_config.stderr
    );
}

#[tokio::test]
async fn refuses_an_unauthenticated_non_loopback_listener_unless_told() {
    let home = TestHome::new();
    let out = home.run(&["start", "--host", "0.0.0.0", "--port", "0"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("0.0.0.0") && out.stderr.contains("--allow-unauthenticated"),
        "{}",
        out.stderr
    );
    let open = home.start(&["--host", "0.0.0.0", "--allow-unauthenticated"]);
    assert!(open.url.starts_with("http://0.0.0.0:"), "{}", open.url);
    let via_loopback = open.url.replace("0.0.0.0", "127.0.0.1");
    let reply = open
        .http
        .get(format!("{via_loopback}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404, "served without a key");

    // With a key, any address is fine, and the key is enforced.
    let keyed = TestHome::new();
    keyed.write_config("server:\n  api_key: k\n  host: 0.0.0.0\n");
    let server = keyed.start(&[]);
    let via_loopback = server.url.replace("0.0.0.0", "127.0.0.1");
    let reply = server
        .http
        .get(format!("{via_loopback}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let home = TestHome::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = home.run(&["start", "--port", &port]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&port) && out.stderr.contains("in use"),
        "{}",
        out.stderr
    );
}

#[test]
fn every_command_has_help_and_the_binary_a_version() {
    let home = TestHome::new();
    let version = home.run(&["--version"]);
    assert_eq!(
        version.stdout.trim(),
        format!("lit-mux {}", env!("CARGO_PKG_VERSION"))
    );
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["start"],
        &["status"],
        &["send"],
        &["backends"],
        &["tools"],
        &["call"],
        &["mcp"],
        &["mcp", "restart"],
        &["mcp", "list"],
        &["mcp", "add"],
        &["mcp", "remove"],
        &["mcp", "logs"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = home.run(&args);
        assert_eq!(out.code(), Some(0), "{args:?}: {out:?}");
        assert!(
            out.stdout.contains("Usage: lit-mux"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let unknown = home.run(&["frobnicate"]);
    assert_eq!(unknown.code(), Some(2));
}
