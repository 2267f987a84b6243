//! What an API client may start (`mcp.allowed_commands`, `mcp.allowed_env`), what a child gets of
//! lit-mux's environment (`mcp.inherit_env`), the bounds of a server entry, and what lit-mux
//! tells its operator about both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::processes::{eventually, wait_until};

use crate::support::mcp::{fixture, mcp_children, pid_of};
use crate::support::{Server, TestHome};

fn detail(body: &Value) -> &str {
    // A 422's detail is FastAPI's list of validation errors: the first one's `msg`.
    body["detail"]
        .as_str()
        .or_else(|| body["detail"][0]["msg"].as_str())
        .unwrap_or_default()
}

/// Starts lit-mux with this `mcp:` section (written under `mcp:`, indented by the caller).
fn start_with_mcp(home: &TestHome, mcp: &str) -> Server {
    home.write_config(&format!("mcp:\n{mcp}"));
    home.start(&[])
}

/// Asserts that `request` is refused with 403 naming `needles`, and that nothing was started
/// or listed; returns the detail.
async fn assert_refused(server: &Server, request: &Value, needles: &[&str]) -> String {
    let (status, body) = server.post_json("/mcp/servers", request).await;
    assert_eq!(status, 403, "{request} → {body}");
    for needle in needles {
        assert!(
            detail(&body).contains(needle),
            "{request} → {body}: no {needle:?}"
        );
    }
    let listed = server.get_json("/mcp/servers").await;
    assert_eq!(listed["total"], 0, "{request} left {listed}");
    assert!(
        mcp_children(server.pid()).is_empty(),
        "{request} started {:?}",
        mcp_children(server.pid())
    );
    detail(&body).to_owned()
}

/// The names in a process's initial environment.
fn environment_of(pid: i32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (name, value) = text.split_once('=').unwrap_or((&text, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// Writes an executable shell script.
fn write_script(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_that_changes_what_an_allowed_program_runs_is_refused() {
    let home = TestHome::new();
    let server = start_with_mcp(
        &home,
        &format!("  allowed_commands: [node, python3, sh, {}]\n", fixture()),
    );
    let evil_dir = home.path().join("evil");
    let cases = [
        ("python3", "PATH", evil_dir.to_str().unwrap()),
        ("node", "LD_PRELOAD", "/tmp/evil.so"),
        ("node", "LD_LIBRARY_PATH", "/tmp/evil"),
        ("node", "NODE_OPTIONS", "--require /tmp/evil.js"),
        ("python3", "PYTHONPATH", "/tmp/evil"),
        ("python3", "PYTHONSTARTUP", "/tmp/evil.py"),
        ("sh", "BASH_ENV", "/tmp/evil.sh"),
        // With allowed_commands and no allowed_env, no name at all.
        (fixture(), "MY_TOKEN", "t"),
    ];
    for (command, name, value) in cases {
        let request = json!({"name": "x", "command": command, "env": {name: value}, "timeout": 1});
        assert_refused(&server, &request, &["mcp.allowed_env", name]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_never_allows_a_loader_or_interpreter_variable() {
    let home = TestHome::new();
    let server = start_with_mcp(
        &home,
        &format!(
            "  allowed_commands: [{}]\n  allowed_env: ['*', LD_LIBRARY_PATH]\n",
            fixture()
        ),
    );
    for name in [
        "LD_PRELOAD",
        "NODE_OPTIONS",
        "PYTHONPATH",
        "PERL5OPT",
        "GIT_SSH_COMMAND",
        "npm_config_registry",
        "https_proxy",
    ] {
        let request = json!({"name": "x", "command": fixture(), "args": ["healthy"],
                             "env": {name: "/tmp/evil"}, "timeout": 5});
        assert_refused(&server, &request, &["mcp.allowed_env", name, "exact name"]).await;
    }
    // The pattern allows other names, and an exact entry allows a loader variable.
    let request = json!({"name": "allowed", "command": fixture(), "args": ["healthy"],
                         "env": {"MY_TOKEN": "t", "LD_LIBRARY_PATH": "/nonexistent"}, "timeout": 5});
    let (status, body) = server.post_json("/mcp/servers", &request).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<String> = environment_of(pid_of(&body))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"MY_TOKEN".to_owned()) && names.contains(&"LD_LIBRARY_PATH".to_owned()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_arguments_refuse_code_passed_in_arguments() {
    let home = TestHome::new();
    let server = start_with_mcp(
        &home,
        "  allowed_commands:\n\
         \x20   - {command: python3, args: [-m, mcp_server_fetch]}\n\
         \x20   - {command: node, args: ['/srv/mcp/*.js']}\n\
         \x20   - {command: sh, args: ['/srv/mcp/*.sh']}\n\
         \x20   - {command: npx, args: [-y, '@modelcontextprotocol/*']}\n",
    );
    let rogue_python = home.path().join("bin/python3");
    write_script(&rogue_python, "#!/bin/sh\ntouch \"$HOME/rogue-ran\"\n");
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!(["python3", ["-c", "import os; os.system('id')"]]),
            vec!["argument 0", "-c"],
        ),
        (
            json!(["node", ["-e", "require('child_process')"]]),
            vec!["1 argument", "got 2"],
        ),
        (
            json!(["node", ["--eval=require('child_process')"]]),
            vec!["argument 0", "--eval"],
        ),
        (json!(["sh", ["-c", "id"]]), vec!["got 2"]),
        (
            json!(["sh", ["/tmp/evil.sh"]]),
            vec!["argument 0", "/tmp/evil.sh"],
        ),
        (
            json!(["node", ["/srv/mcp/../../tmp/evil.js"]]),
            vec!["argument 0"],
        ),
        (
            json!(["npx", ["-y", "evil-package"]]),
            vec!["argument 1", "evil-package"],
        ),
        (
            json!(["npx", ["-y", "@modelcontextprotocol/../evil"]]),
            vec!["argument 1"],
        ),
        (
            json!(["npx", ["-y", "@modelcontextprotocol/x@npm:evil-package"]]),
            vec!["argument 1"],
        ),
        (
            json!(["npx", ["-y", "@modelcontextprotocol/server-memory", "--x"]]),
            vec!["2 argument(s)", "got 3"],
        ),
        // A program of an allowed name elsewhere is another program.
        (
            json!([rogue_python.to_str().unwrap(), ["-m", "mcp_server_fetch"]]),
            vec![],
        ),
        (json!(["perl", ["-e", "1"]]), vec![]),
    ];
    for (command_line, needles) in cases {
        let request = json!({"name": "x", "command": command_line[0], "args": command_line[1],
                             "timeout": 1});
        let mut needles = needles;
        needles.push("mcp.allowed_commands");
        assert_refused(&server, &request, &needles).await;
    }
    assert!(!home.path().join("rogue-ran").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_pinned_command_starts_by_the_path_lit_mux_finds() {
    // lit-mux finds the fixture by name in its own PATH; the request's PATH leads elsewhere.
    let fixture_dir = Path::new(fixture()).parent().unwrap().to_str().unwrap();
    let own_path = format!(
        "{fixture_dir}:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let home = TestHome::new().env("PATH", &own_path);
    let decoy = home.path().join("evil/mcp-fixture");
    write_script(
        &decoy,
        &format!(
            "#!/bin/sh\ntouch \"$HOME/decoy-ran\"\nexec {} \"$@\"\n",
            fixture()
        ),
    );
    let server = start_with_mcp(
        &home,
        "  allowed_commands:\n\
         \x20   - {command: mcp-fixture, args: [healthy, --tools, '*']}\n\
         \x20 allowed_env: [PATH]\n",
    );
    let request = json!({"name": "pinned", "command": "mcp-fixture",
                         "args": ["healthy", "--tools", "3"],
                         "env": {"PATH": decoy.parent().unwrap()}, "timeout": 5});
    let (status, body) = server.post_json("/mcp/servers", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server"]["command"], fixture(), "{body}");
    assert!(
        body["server"]["tool_count"].as_u64().unwrap() >= 3,
        "{body}"
    );
    let pid = pid_of(&body);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new(fixture()).canonicalize().unwrap()
    );
    assert!(!home.path().join("decoy-ran").exists());

    let more = json!({"name": "more", "command": "mcp-fixture",
                      "args": ["healthy", "--tools", "3", "--setsid"], "timeout": 5});
    let (status, body) = server.post_json("/mcp/servers", &more).await;
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains("mcp.allowed_commands"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_gets_only_the_minimal_environment_and_what_inherit_env_names() {
    let home = TestHome::new()
        .env("OPENAI_API_KEY", "sk-secret-of-the-operator")
        .env("LIT_MUX_API_KEY", "secret-client-key")
        .env("MY_INHERITED_SETTING", "kept")
        .env("LC_MESSAGES", "C");
    home.write(".env", "DOTENV_TOKEN=secret-from-dotenv\n");
    let server = start_with_mcp(
        &home,
        &format!(
            "  inherit_env: ['MY_INHERITED_*']\n  servers:\n\
             \x20   - {{name: from-file, command: {}, env: {{OWN_SETTING: own}}}}\n",
            fixture()
        ),
    );
    let ready = eventually(Duration::from_secs(10), || async {
        server.get_json("/mcp/servers/from-file").await["state"] == "ready"
    })
    .await;
    assert!(ready, "{}", server.get_json("/mcp/servers/from-file").await);
    let from_file = server.get_json("/mcp/servers/from-file").await["pid"]
        .as_i64()
        .unwrap() as i32;
    let request = json!({"name": "from-api", "command": fixture(), "env": {"API_SETTING": "api"}});
    let (status, body) = server.post_json("/mcp/servers", &request).await;
    assert_eq!(status, 200, "{body}");

    let minimal = [
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "TERM", "TZ",
    ];
    for (pid, own) in [(from_file, "OWN_SETTING"), (pid_of(&body), "API_SETTING")] {
        let environment = environment_of(pid);
        let names: BTreeSet<&str> = environment.iter().map(|(n, _)| n.as_str()).collect();
        for (name, value) in &environment {
            let expected = minimal.contains(&name.as_str())
                || name.starts_with("LC_")
                || name == "MY_INHERITED_SETTING"
                || name == own;
            assert!(expected, "the child got {name}: {names:?}");
            assert!(!value.contains("secret"), "{name}={value}");
        }
        for name in ["PATH", "HOME", "LC_MESSAGES", "MY_INHERITED_SETTING", own] {
            assert!(names.contains(name), "{name} missing: {names:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_and_sizes_out_of_range_are_refused_with_422_and_nothing_is_listed() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let server_with = |extra: Value| {
        let mut request = json!({"name": "x", "command": fixture(), "args": ["healthy"]});
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        request
    };
    let many_env: serde_json::Map<String, Value> =
        (0..257).map(|i| (format!("V{i}"), json!("v"))).collect();
    let cases = [
        (
            json!({"timeout": u64::MAX}),
            "timeout",
            "between 1 and 3600",
        ),
        (json!({"timeout": 0}), "timeout", "between 1 and 3600"),
        (json!({"timeout": 3601}), "timeout", "between 1 and 3600"),
        (json!({"command": "x".repeat(5000)}), "command", "4096"),
        (json!({"args": vec!["a"; 257]}), "args", "256"),
        (json!({"args": ["x".repeat(17 * 1024)]}), "args[0]", "16384"),
        (json!({"env": many_env}), "env", "256"),
        (
            json!({"env": {"BIG": "x".repeat(33 * 1024)}}),
            "env.BIG",
            "32768",
        ),
    ];
    for (extra, field, range) in cases {
        let request = server_with(extra);
        let (status, body) = server.post_json("/mcp/servers", &request).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert!(
            detail(&body).starts_with(field) && detail(&body).contains(range),
            "{field}: {body}"
        );
        assert_eq!(server.get_json("/mcp/servers").await["total"], 0, "{field}");
    }
    // The bound itself is accepted.
    let (status, body) = server
        .post_json("/mcp/servers", &server_with(json!({"timeout": 3600})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["server"]["timeout"], 3600);
}

#[test]
fn mcp_settings_out_of_range_or_malformed_stop_start_with_exit_2() {
    let cases = [
        (
            "mcp:\n  servers:\n    - {name: a, command: sh, timeout: 4000}\n".to_owned(),
            vec!["mcp.servers[0].timeout", "3600"],
        ),
        (
            format!(
                "mcp:\n  servers:\n    - {{name: a, command: sh, args: [{}]}}\n",
                vec!["a"; 257].join(", ")
            ),
            vec!["mcp.servers[0].args", "256"],
        ),
        (
            "mcp:\n  servers:\n    - {name: a, command: sh, env: {'A=B': x}}\n".to_owned(),
            vec!["mcp.servers[0].env", "A=B"],
        ),
        (
            "mcp:\n  max_message_bytes: 10\n".to_owned(),
            vec!["mcp.max_message_bytes", "1024"],
        ),
        (
            "mcp:\n  allowed_commands: [{command: npx, arg: [-y]}]\n".to_owned(),
            vec!["allowed_commands", "arg"],
        ),
        (
            "mcp:\n  allowed_commands: [bin/server]\n".to_owned(),
            vec!["mcp.allowed_commands[0].command", "relative"],
        ),
        (
            "mcp:\n  allowed_env: [LD-PRELOAD]\n".to_owned(),
            vec!["mcp.allowed_env[0]"],
        ),
        (
            "mcp:\n  inherit_env: ['A=B']\n".to_owned(),
            vec!["mcp.inherit_env[0]"],
        ),
    ];
    for (yaml, needles) in cases {
        let home = TestHome::new();
        home.write_config(&yaml);
        let out = home.run(&["start", "--port", "0"]);
        assert_eq!(out.code(), Some(2), "{yaml:?} → {out:?}");
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "{yaml:?}: no {needle:?} in {out:?}"
            );
        }
    }
}

#[test]
fn start_warns_that_any_key_holder_can_run_programs_unless_allowed_commands_is_set() {
    let warning = "mcp.allowed_commands is not set: any key holder can run programs";
    let open_home = TestHome::new();
    let open = open_home.start(&[]);
    assert!(
        wait_until(Duration::from_secs(5), || open.stderr().contains(warning)),
        "{}",
        open.stderr()
    );

    let home = TestHome::new();
    home.write_config("mcp:\n  allowed_commands: [npx]\n");
    let guarded = home.start(&[]);
    // The warning would come before this line.
    assert!(wait_until(Duration::from_secs(5), || guarded
        .stderr()
        .contains("listening")));
    assert!(!guarded.stderr().contains(warning), "{}", guarded.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_through_the_api_is_logged_with_its_program_and_variable_names_only() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let request = json!({"name": "logged", "command": fixture(), "args": ["healthy"],
                         "env": {"MY_TOKEN": "value-never-logged"}});
    let (status, body) = server.post_json("/mcp/servers", &request).await;
    assert_eq!(status, 200, "{body}");
    let logged = |stderr: &str| {
        stderr.lines().any(|line| {
            line.contains("starting MCP server")
                && line.contains("logged")
                && line.contains(fixture())
                && line.contains("healthy")
                && line.contains("MY_TOKEN")
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), || logged(&server.stderr())),
        "{}",
        server.stderr()
    );
    assert!(!server.stderr().contains("value-never-logged"));
}
