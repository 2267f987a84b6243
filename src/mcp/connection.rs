//! The seam between the supervisor ([`hub`](super::hub)) and the ways of reaching an MCP server.
//!
//! The hub holds every server through one [`McpConnection`] and nothing else: it starts one with
//! [`transports::connect`](super::transports::connect), lists and calls tools through it,
//! learns from [`McpConnection::closed`] that the server went away by itself, ends it with
//! [`McpConnection::stop`], and shows [`ConnectionInfo`] and [`McpConnection::logs`] in its
//! views. Processes, pipes, signals and
//! sockets stay behind the trait, in the transport's own folder.
//!
//! A trait rather than an enum of transports: servers of different transports sit side by side
//! in one registry, and each transport keeps its whole life (tasks, stop sequence, what it
//! reports) in its folder. A call costs one boxed future, nothing next to a round trip.
//!
//! Adding a transport (streamable HTTP, say): a folder `mcp/<transport>/` with a type that
//! implements [`McpConnection`], a variant of [`McpTransport`] in `config/mcp.rs` with its
//! checks, and its arm in `mcp/transports.rs`. The supervisor does not change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, Implementation, Tool};
use tokio::sync::mpsc;

use super::McpError;
use super::launch::ChildEnvironment;
use crate::config::McpTransport;

/// What to connect to, and the bounds that apply.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSpec<'a> {
    /// The server's name in lit-mux (logs, error messages).
    pub name: &'a str,
    pub transport: &'a McpTransport,
    /// Bounds the whole handshake, and each tool call (at most `config::mcp::TIMEOUT_SECS`).
    pub timeout: Duration,
    /// The largest message accepted from the server; also bounds all pages of `tools/list`.
    pub max_message_bytes: usize,
    /// What of lit-mux's environment a server run as a local process gets (other transports
    /// have no use for it).
    pub child_environment: &'a ChildEnvironment,
}

/// A server connected and initialized, with the tools it listed.
pub struct Connected {
    pub connection: Arc<dyn McpConnection>,
    pub tools: Vec<Tool>,
    /// Receives a message each time the server says its tool list changed.
    pub tools_changed: mpsc::Receiver<()>,
}

/// Facts about a connection, fixed once it is initialized; the views show them.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// `{name, version}` the server announced.
    pub server_info: Implementation,
    /// The protocol version the server answered with.
    pub protocol_version: String,
    /// When the handshake completed.
    pub connected_at: Instant,
    /// The process id, for a transport that runs the server as lit-mux's child.
    pub pid: Option<u32>,
}

/// One connected MCP server, as the supervisor sees it.
#[async_trait::async_trait]
pub trait McpConnection: Send + Sync {
    fn info(&self) -> &ConnectionInfo;

    /// What the server wrote for its operator (stdio: the tail of its stderr), where the
    /// transport has such a thing.
    fn logs(&self) -> Option<String>;

    /// Lists every page of tools again (after `notifications/tools/list_changed`).
    async fn list_tools(&self) -> Result<Vec<Tool>, McpError>;

    /// Calls a tool. Concurrent calls run side by side. A call that outlives the timeout is
    /// abandoned with `notifications/cancelled`; a call in flight when the server goes away
    /// fails at once ([`McpError::Died`]).
    async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, McpError>;

    /// Resolves once the server has gone away, by itself or because it was stopped; at once if
    /// it already has.
    async fn closed(&self) -> ExitInfo;

    /// Ends the connection and everything it holds. Idempotent; concurrent callers wait for the
    /// same outcome. Returns once nothing of the server is left.
    async fn stop(&self);
}

/// How a server went away. For a child process, its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// `exit code 1`, `killed by SIGKILL`, …
    pub description: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// An end whose cause is known only as text.
    pub fn unknown(reason: &str) -> Self {
        Self {
            description: reason.to_owned(),
            code: None,
            signal: None,
        }
    }

    /// A clean exit (code 0) as opposed to a crash or a kill.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The stage at which a start failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStage {
    /// Setting up the transport (stdio: spawning the process).
    Spawn,
    Initialize,
    ListTools,
}

impl std::fmt::Display for StartStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Spawn => "spawn",
            Self::Initialize => "initialize",
            Self::ListTools => "tools/list",
        })
    }
}

/// A start that failed: nothing of it is left (a child is reaped, its pipes closed).
#[derive(Debug, Clone)]
pub struct StartFailure {
    pub stage: StartStage,
    pub reason: String,
    pub exit: Option<ExitInfo>,
    pub stderr_tail: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The reason says what happened to the process, if anything did: its state after
        // lit-mux stopped it (`exit`) would only blur that.
        write!(f, "did not start: {}", self.reason)?;
        if !self.stderr_tail.is_empty() {
            write!(f, "; last stderr lines: {}", self.stderr_tail)?;
        }
        Ok(())
    }
}
