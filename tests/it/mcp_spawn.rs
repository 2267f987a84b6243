//! How lit-mux starts a child (`src/mcp/stdio/spawn.rs`, through its keeper): what the child
//! gets (pipes on 0–2, its own group, the environment, default signal dispositions), what it
//! does not (any other descriptor of lit-mux or of its keeper), and how the command is found.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::mcp::{Harness, fixture, pid_of};
use serde_json::{Value, json};
use testkit::processes::{self, fd_listing};

/// Posts `request` to `/mcp/servers`, expects 502 and returns the detail.
async fn add_fails(h: &Harness, request: Value) -> String {
    let (status, body) = h.server.post_json("/mcp/servers", &request).await;
    assert_eq!(status, 502, "{body}");
    body["detail"].as_str().unwrap().to_owned()
}

/// The objects (`pipe:[123]`, `socket:[456]`, paths) behind descriptors in a `fd_listing`.
fn targets(listing: &[String]) -> HashSet<String> {
    listing
        .iter()
        .filter_map(|entry| entry.split_once(" -> ").map(|(_, t)| t.to_owned()))
        .collect()
}

/// A `/proc/PID/status` field, e.g. `SigBlk`.
fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn nul_separated(path: String) -> Vec<String> {
    std::fs::read(path)
        .unwrap()
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_gets_its_pipes_its_group_its_environment_and_nothing_else() {
    let h = Harness::start();
    let lit_mux = h.server.pid();
    let (status, body) = h
        .server
        .post_json(
            "/mcp/servers",
            &json!({"name": "probe", "command": fixture(), "args": ["healthy", "--tools", "3"],
                    "env": {"LIT_MUX_PROBE": "from the request"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let child = pid_of(&body);

    // Descriptors: exactly 0, 1 and 2, each a pipe whose other end lit-mux holds; none of
    // lit-mux's other descriptors leaked (its listener, the database, other children's pipes,
    // nor what lit-mux inherited from the test process, e.g. cargo's jobserver pipe).
    let child_fds = fd_listing(child);
    let numbers: Vec<&str> = child_fds
        .iter()
        .filter_map(|entry| entry.split_once(" -> ").map(|(n, _)| n))
        .collect();
    assert_eq!(numbers, ["0", "1", "2"], "{child_fds:?}");
    let ours = targets(&fd_listing(lit_mux));
    for target in targets(&child_fds) {
        assert!(target.starts_with("pipe:"), "{child_fds:?}");
        assert!(
            ours.contains(&target),
            "lit-mux holds the other end of {target}"
        );
    }

    // Its own process group, lit-mux's session; its parent is its keeper, lit-mux's child in a
    // group of its own, out of reach of the signals to the server's group.
    let process = processes::read(child).unwrap();
    let parent = processes::read(lit_mux).unwrap();
    assert_eq!(process.group, child, "{process:?}");
    assert_eq!(process.session, parent.session);
    let keeper = processes::read(process.parent).unwrap();
    assert_eq!(keeper.parent, lit_mux, "{keeper:?}");
    assert_eq!(keeper.group, keeper.pid, "{keeper:?}");
    assert!(
        nul_separated(format!("/proc/{}/cmdline", keeper.pid)).contains(&"__mcp-keeper".into()),
        "{keeper:?}"
    );

    // Nothing blocked; ignored signals stay ignored (as with posix_spawn: `nohup` relies on
    // it), except SIGPIPE, which the Rust runtime ignores for lit-mux's own sake and a child
    // must not inherit. The fixture is a Rust program too and ignores SIGPIPE again, so what a
    // child gets at exec is read by a shell in front of it (a shell keeps, and shows, the
    // dispositions it inherits).
    const SIGPIPE_BIT: u64 = 1 << 12;
    let ignored_by_lit_mux = u64::from_str_radix(&status_field(lit_mux, "SigIgn"), 16).unwrap();
    assert_ne!(
        ignored_by_lit_mux & SIGPIPE_BIT,
        0,
        "lit-mux ignores SIGPIPE"
    );
    // Builtins only: a shell blocks every signal while it forks a command such as grep.
    let script = format!(
        "while read -r line; do case $line in Sig*) echo \"$line\" >&2;; esac; done \
         < /proc/$$/status; exec {} healthy",
        fixture()
    );
    let (status, body) = h
        .server
        .post_json(
            "/mcp/servers",
            &json!({"name": "shell", "command": "/bin/sh", "args": ["-c", script]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let shell = pid_of(&body);
    let logs = h.server.get_json("/mcp/servers/shell/logs").await["logs"]
        .as_str()
        .unwrap()
        .to_owned();
    let field = |name: &str| {
        logs.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .map(|value| u64::from_str_radix(value.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no {name} in {logs}"))
    };
    assert_eq!(field("SigBlk"), 0, "{logs}");
    assert_eq!(field("SigIgn"), ignored_by_lit_mux & !SIGPIPE_BIT, "{logs}");

    // The command line as given, the minimal part of lit-mux's environment plus the request's.
    assert_eq!(
        nul_separated(format!("/proc/{child}/cmdline")),
        [fixture(), "healthy", "--tools", "3"]
    );
    let environment = nul_separated(format!("/proc/{child}/environ"));
    assert!(
        environment.contains(&"LIT_MUX_PROBE=from the request".to_owned()),
        "{environment:?}"
    );
    let home = format!("HOME={}", h.home.path().display());
    assert!(environment.contains(&home), "inherits lit-mux's HOME");

    for name in ["probe", "shell"] {
        let (status, _) = h.server.delete_json(&format!("/mcp/servers/{name}")).await;
        assert_eq!(status, 200);
    }
    h.assert_clean(&[child, shell]);
}

/// Copies the fixture into `dir` under `name`, executable or not.
fn install_fixture(dir: &Path, name: &str, executable: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::copy(fixture(), &path).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_command_is_looked_up_in_the_path_the_child_gets() {
    let h = Harness::start();
    let root = h.home.path().join("bins");
    // The first directory has a copy that cannot be executed: the lookup goes on, as execvp's.
    install_fixture(&root.join("first"), "probe-server", false);
    install_fixture(&root.join("second"), "probe-server", true);
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        root.join("first").display(),
        root.join("second").display()
    );
    let (status, body) = h
        .server
        .post_json(
            "/mcp/servers",
            &json!({"name": "found", "command": "probe-server", "args": ["healthy"],
                    "env": {"PATH": path}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let child = pid_of(&body);
    let exe = std::fs::read_link(format!("/proc/{child}/exe")).unwrap();
    assert_eq!(exe, root.join("second/probe-server"));
    let (status, _) = h.server.delete_json("/mcp/servers/found").await;
    assert_eq!(status, 200);

    // Not on that PATH at all (lit-mux's own PATH is not searched when the request sets one).
    let detail = add_fails(
        &h,
        json!({"name": "lost", "command": "probe-server", "env": {"PATH": "/usr/bin:/bin"}}),
    )
    .await;
    assert!(
        detail.contains("did not start: command not found: probe-server"),
        "{detail}"
    );

    // Only a copy that cannot be executed.
    let only_denied = root.join("first").display().to_string();
    let detail = add_fails(
        &h,
        json!({"name": "denied", "command": "probe-server", "env": {"PATH": only_denied}}),
    )
    .await;
    assert!(detail.contains("Permission denied"), "{detail}");

    // A path to a file that cannot be executed fails in the child, at exec; still reported.
    let detail = add_fails(
        &h,
        json!({"name": "denied", "command": root.join("first/probe-server")}),
    )
    .await;
    assert!(detail.contains("Permission denied"), "{detail}");
    h.assert_clean(&[child]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_an_argument_is_a_clear_error() {
    let h = Harness::start();
    let (status, body) = h
        .server
        .post_json(
            "/mcp/servers",
            &json!({"name": "nul", "command": fixture(), "args": ["healthy\u{0}x"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("args contains a NUL byte"),
        "{body}"
    );
    h.assert_clean(&[]);
}

/// The soft and hard open-file limits of a process (`Max open files` in `/proc/PID/limits`).
fn open_file_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit in /proc/{pid}/limits"));
    let mut numbers = line["Max open files".len()..].split_whitespace();
    (
        numbers.next().unwrap().to_owned(),
        numbers.next().unwrap().to_owned(),
    )
}

/// lit-mux raises its own soft limit on open files to the hard one (it holds a descriptor per
/// connection and per child pipe); the programs it starts get the soft limit lit-mux was started
/// with, since some still use `select()` or walk every possible descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_gets_the_open_file_limit_lit_mux_was_started_with() {
    let home = crate::support::TestHome::new();
    let server = home.start_wrapped(&["prlimit", "--nofile=1000:4000"], &[]);
    assert_eq!(
        open_file_limits(server.pid()),
        ("4000".to_owned(), "4000".to_owned()),
        "lit-mux raises its own soft limit"
    );
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "limits", "command": fixture(), "args": ["healthy"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        open_file_limits(pid_of(&body)),
        ("1000".to_owned(), "4000".to_owned())
    );
}
