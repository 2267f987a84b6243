//! The stdio transport: an MCP server run as lit-mux's descendant, spoken to over its stdin
//! and stdout. This folder owns a child's whole life: the spawn ([`spawn`]: through a
//! [`keeper`], own process group, `PR_SET_PDEATHSIG`, the [`orphan_guard`]), the pipes and their
//! framing ([`framing`], [`ordered_writer`]), the stderr ring ([`stderr`]), the exit watch
//! ([`process`]) and the stop sequence ([`stop`]). [`StdioConnection`] is what the hub sees of
//! it. The only `unsafe` is in [`os_calls`].
//!
//! Invariants (nothing outside this folder signals, waits on or reads from a child):
//! - Every spawned keeper is reaped: a task owns it and awaits its exit from the start; the
//!   keeper reaps the server and everything the server left behind.
//! - Nothing of a server outlives it: its keeper is the subreaper of its whole tree, so when the
//!   server exits, by itself or because it was stopped, every descendant is killed, those that
//!   left the group or the session (`setsid`, a daemon's double fork) included.
//! - Every pipe is closed once the child is gone: the transport and the stderr drain stop on the
//!   child's exit even when a grandchild still holds the other end of a pipe, and `stop` returns
//!   only after they have.
//! - stderr is always drained, into a bounded ring, so a child can never block on it.
//! - A keeper gets a signal from the kernel when the lit-mux thread that spawned it dies
//!   (`PR_SET_PDEATHSIG`), and then kills its server's tree, so even `kill -9` of lit-mux
//!   leaves nothing behind; a server gets SIGKILL when its keeper dies, and the orphan guard
//!   kills what is left of its group.

mod framing;
pub mod keeper;
mod ordered_writer;
pub mod orphan_guard;
mod os_calls;
mod process;
mod spawn;
mod stderr;
mod stop;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, Tool};
use tokio::sync::mpsc;

use self::process::ChildProcess;
use super::McpError;
use super::connection::{
    ConnectSpec, Connected, ConnectionInfo, ExitInfo, McpConnection, StartFailure, StartStage,
};
use super::session::{HandshakeFailure, Session};
use crate::config::StdioTransport;

/// When a call or a handshake step fails because the transport closed, how long to wait for the
/// exit status that explains it (the pipe closes a moment before the process is reaped).
const EXIT_AFTER_CLOSE_WAIT: Duration = Duration::from_millis(500);

/// A running, initialized MCP server child.
pub struct StdioConnection {
    name: String,
    info: ConnectionInfo,
    session: Session,
    process: ChildProcess,
    timeout: Duration,
    /// The most all pages of its `tools/list` may hold (`mcp.max_message_bytes`).
    tool_list_bytes: usize,
    stop_lock: tokio::sync::Mutex<()>,
}

impl StdioConnection {
    /// Spawns the server and runs the handshake within `spec.timeout`. On any failure the child
    /// is stopped and reaped, its pipes closed, before this returns.
    pub(super) async fn start(
        spec: ConnectSpec<'_>,
        transport: &StdioTransport,
    ) -> Result<Connected, StartFailure> {
        // `None`: a timeout too large for the clock, which the config and API bounds rule out.
        let deadline = Instant::now().checked_add(spec.timeout);
        let (process, pipes) = ChildProcess::launch(spec.name, transport, spec.max_message_bytes)
            .await
            .map_err(|err| StartFailure {
                stage: StartStage::Spawn,
                reason: match err.kind() {
                    std::io::ErrorKind::NotFound => {
                        format!("command not found: {}", transport.command)
                    }
                    _ => format!("cannot run \"{}\": {err}", transport.command),
                },
                exit: None,
                stderr_tail: String::new(),
            })?;
        let (tools_changed_tx, tools_changed) = mpsc::channel(1);
        let session = within(
            &process,
            (deadline, spec.timeout),
            StartStage::Initialize,
            Session::open(spec.name, pipes, tools_changed_tx),
        )
        .await?;
        let tools = match within(
            &process,
            (deadline, spec.timeout),
            StartStage::ListTools,
            async {
                match session.list_tools(spec.max_message_bytes).await {
                    Ok(listed) => listed
                        .map_err(|why| HandshakeFailure::Unusable(format!("tools/list: {why}"))),
                    Err(err) => Err(HandshakeFailure::of_request("tools/list", err)),
                }
            },
        )
        .await
        {
            Ok(tools) => tools,
            Err(failure) => {
                session.close().await;
                return Err(failure);
            }
        };
        let info = ConnectionInfo {
            server_info: session.server_info.clone(),
            protocol_version: session.protocol_version.clone(),
            connected_at: Instant::now(),
            pid: Some(process.pid()),
        };
        let connection = Self {
            name: spec.name.to_owned(),
            info,
            session,
            process,
            timeout: spec.timeout,
            tool_list_bytes: spec.max_message_bytes,
            stop_lock: tokio::sync::Mutex::new(()),
        };
        Ok(Connected {
            connection: Arc::new(connection),
            tools,
            tools_changed,
        })
    }

    /// Runs one request within the server's timeout, and turns the process's exit while it
    /// runs into [`McpError::Died`].
    async fn request<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, rmcp::service::ServiceError>>,
    ) -> Result<T, McpError> {
        if let Some(exit) = self.process.exit_info() {
            return Err(self.died(exit).await);
        }
        let outcome = tokio::select! {
            // Dropping the call on timeout makes rmcp send notifications/cancelled.
            result = tokio::time::timeout(self.timeout, call) => match result {
                Ok(Ok(value)) => Ok(Ok(value)),
                Ok(Err(rmcp::service::ServiceError::McpError(error))) => Err(McpError::Protocol {
                    server: self.name.clone(),
                    code: Some(error.code.0),
                    message: error.message.to_string(),
                }),
                // The transport closes as the process dies; its exit status follows at once.
                Ok(Err(error)) => match tokio::time::timeout(EXIT_AFTER_CLOSE_WAIT, self.process.exited()).await {
                    Ok(exit) => Ok(Err(exit)),
                    Err(_) => Err(McpError::Protocol {
                        server: self.name.clone(),
                        code: None,
                        message: format!("{what} failed: {error}"),
                    }),
                },
                Err(_elapsed) => Err(McpError::Timeout {
                    server: self.name.clone(),
                    seconds: self.timeout.as_secs_f64(),
                }),
            },
            exit = self.process.exited() => Ok(Err(exit)),
        };
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(exit)) => Err(self.died(exit).await),
            Err(error) => Err(error),
        }
    }

    /// The error for a call that the process's exit ended, with its last stderr lines.
    async fn died(&self, exit: ExitInfo) -> McpError {
        self.process.stderr_settled().await;
        McpError::Died {
            server: self.name.clone(),
            exit: exit.description,
            stderr_tail: self.process.stderr().tail(5),
        }
    }
}

#[async_trait::async_trait]
impl McpConnection for StdioConnection {
    fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The last lines of stderr, most recent last.
    fn logs(&self) -> Option<String> {
        Some(self.process.stderr().text())
    }

    async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        self.request("tools/list", self.session.list_tools(self.tool_list_bytes))
            .await?
            .map_err(|message| McpError::Protocol {
                server: self.name.clone(),
                code: None,
                message: format!("tools/list: {message}"),
            })
    }

    async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, McpError> {
        self.request("tools/call", self.session.call_tool(tool, arguments))
            .await
    }

    async fn closed(&self) -> ExitInfo {
        self.process.exited().await
    }

    /// The stop sequence (close stdin, wait up to 1 s; SIGTERM the group, wait up to 2 s;
    /// SIGKILL the group; reap), then the end of the protocol task and of every pipe.
    async fn stop(&self) {
        let _one_at_a_time = self.stop_lock.lock().await;
        if self.process.exit_info().is_none() {
            self.process.terminate().await;
        }
        self.session.close().await;
        self.process.pipes_closed().await;
    }
}

/// Runs one handshake step before `deadline` (`timeout` after the start); on failure stops the
/// process and says why, one way per cause whichever sign of it came first: the process's exit
/// and the connection's end arrive in either order, and both mean the process ended.
async fn within<T>(
    process: &ChildProcess,
    (deadline, timeout): (Option<Instant>, Duration),
    stage: StartStage,
    step: impl Future<Output = Result<T, HandshakeFailure>>,
) -> Result<T, StartFailure> {
    // tokio's timer saturates an endless duration to its far future.
    let remaining = deadline.map_or(Duration::MAX, |deadline| {
        deadline.saturating_duration_since(Instant::now())
    });
    let ended = tokio::select! {
        result = tokio::time::timeout(remaining, step) => match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(HandshakeFailure::Unusable(how))) => Err(how),
            Ok(Err(HandshakeFailure::Closed)) => {
                // Its output closed: the process is ending, or it closed its output alone.
                tokio::time::timeout(EXIT_AFTER_CLOSE_WAIT, process.exited()).await.ok().map(Ok)
                    .unwrap_or_else(|| Err(format!("it closed its output before answering {stage}")))
            }
            Err(_elapsed) => Err(format!(
                "no answer to {stage} within {} s",
                timeout.as_secs_f64()
            )),
        },
        exit = process.exited() => Ok(exit),
    };
    let reason = match ended {
        Ok(exit) => ended_before(&exit, stage),
        Err(reason) => reason,
    };
    let exit = process.terminate().await;
    process.pipes_closed().await;
    Err(StartFailure {
        stage,
        reason,
        exit: Some(exit),
        stderr_tail: process.stderr().tail(5),
    })
}

/// A process's exit during the handshake, in words.
fn ended_before(exit: &ExitInfo, stage: StartStage) -> String {
    match (exit.code, exit.signal) {
        (Some(code), _) => {
            format!("its process exited with status {code} before answering {stage}")
        }
        (None, Some(_)) => format!(
            "its process was {} before answering {stage}",
            exit.description
        ),
        (None, None) => format!("its process exited before answering {stage}"),
    }
}
