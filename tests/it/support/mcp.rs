//! The MCP servers the tests run: our hostile fixture and the pinned npm servers.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use testkit::processes::{self, fd_listing, in_group, is_alive, wait_until};

use super::{Server, TestHome};

/// The path of the misbehaving MCP server (`mcp-fixture`, in `crates/testkit`).
pub fn fixture() -> &'static str {
    testkit::bins::mcp_fixture()
}

fn npm_bin(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp-servers/node_modules/.bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test, which installs the pinned MCP servers",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// `@modelcontextprotocol/server-everything`, pinned in tests/mcp-servers/package.json.
pub fn everything() -> String {
    npm_bin("mcp-server-everything")
}

/// `@modelcontextprotocol/server-filesystem`, pinned in tests/mcp-servers/package.json.
pub fn filesystem() -> String {
    npm_bin("mcp-server-filesystem")
}

/// A `POST /mcp/servers` body for the fixture in `mode` with extra arguments.
pub fn fixture_server(name: &str, mode: &str, extra: &[&str]) -> Value {
    let mut args = vec![mode.to_owned()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    json!({"name": name, "command": fixture(), "args": args, "timeout": 5})
}

/// The pid in a `POST /mcp/servers` answer.
pub fn pid_of(body: &Value) -> i32 {
    body["server"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {body}")) as i32
}

/// A lit-mux with its descriptor baseline taken before any child ran.
pub struct Harness {
    pub home: TestHome,
    pub server: Server,
    pub baseline_fds: Vec<String>,
}

impl Harness {
    pub fn start() -> Self {
        Self::with_config("")
    }

    pub fn with_config(yaml: &str) -> Self {
        let home = TestHome::new();
        if !yaml.is_empty() {
            home.write_config(yaml);
        }
        let server = home.start(&[]);
        let sockets =
            |listing: &[String]| listing.iter().filter(|fd| fd.contains("socket:")).count();
        let idle_sockets = sockets(&fd_listing(server.pid()));
        // One child start and stop first: the runtime sets up its child-process machinery once.
        let warm_up = fixture_server("warm-up", "healthy", &[]);
        let (status, body) = block(server.post_json("/mcp/servers", &warm_up));
        assert_eq!(status, 200, "{body}");
        let (status, _) = block(server.delete_json("/mcp/servers/warm-up"));
        assert_eq!(status, 200);
        // The baseline is taken once the warm-up's HTTP connections are closed.
        assert!(wait_until(Duration::from_secs(2), || sockets(&fd_listing(
            server.pid()
        )) == idle_sockets));
        let baseline_fds = fd_listing(server.pid());
        Self {
            home,
            server,
            baseline_fds,
        }
    }

    pub async fn add(&self, name: &str, mode: &str, extra: &[&str]) -> (u16, Value) {
        self.server
            .post_json("/mcp/servers", &fixture_server(name, mode, extra))
            .await
    }

    /// Nothing is left: the group is empty, no zombie or stray child of lit-mux remains, and the
    /// descriptors are exactly those of the baseline.
    pub fn assert_clean(&self, pids: &[i32]) {
        for &pid in pids {
            assert!(
                wait_until(Duration::from_secs(5), || in_group(pid).is_empty()
                    && !is_alive(pid)),
                "process group {pid} still has {:?}",
                in_group(pid)
            );
        }
        let lit_mux = self.server.pid();
        assert!(
            wait_until(Duration::from_secs(2), || mcp_children(lit_mux).is_empty()),
            "lit-mux still has children (zombies?): {:?}",
            mcp_children(lit_mux)
        );
        assert!(
            wait_until(Duration::from_secs(2), || fd_listing(lit_mux)
                == self.baseline_fds),
            "descriptors {:?}\nbaseline {:?}",
            fd_listing(lit_mux),
            self.baseline_fds
        );
    }
}

/// lit-mux's child processes other than its orphan guard.
pub fn mcp_children(lit_mux: i32) -> Vec<processes::Proc> {
    processes::all()
        .into_iter()
        .filter(|p| p.parent == lit_mux)
        .filter(|p| !is_orphan_guard(p.pid))
        .collect()
}

pub fn block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// Whether `pid` is lit-mux's orphan guard (a helper child that is not an MCP server).
pub fn is_orphan_guard(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains("__orphan-guard")
}
