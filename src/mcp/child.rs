//! One MCP server child process, its whole life: spawn in its own process group, the pipes, the
//! handshake, tool calls, the exit watch, the stop sequence, the reaping.
//!
//! Invariants (nothing outside this module signals, waits on or reads from a child):
//! - Every spawned child is reaped: a task owns the process and awaits its exit from the start.
//! - Every pipe is closed once the child is gone: the transport and the stderr drain stop on the
//!   child's exit even when a grandchild still holds the other end of a pipe, and `stop` returns
//!   only after they have.
//! - stderr is always drained, into a bounded ring, so a child can never block on it.
//! - Nothing of the process group outlives the child: when the leader exits, by itself or
//!   because it was stopped, the whole group gets SIGKILL; descendants that left the group are
//!   found through `/proc` while the leader is alive and signalled too.
//! - The child gets SIGKILL from the kernel when the lit-mux thread that spawned it dies
//!   (`PR_SET_PDEATHSIG`), so even `kill -9` of lit-mux leaves no child behind.

use std::collections::{BTreeMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientJsonRpcMessage,
    Implementation, ProtocolVersion, ServerJsonRpcMessage, Tool,
};
use rmcp::service::{NotificationContext, Peer, RoleClient, RunningService};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::McpError;
use super::ordered_writer::{OrderedWriter, PipeClosed};

/// The protocol version lit-mux asks for; older versions a server answers with are accepted.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_11_25;
/// How much of a child's stderr is kept.
pub const STDERR_RING_BYTES: usize = 64 * 1024;
/// Stop sequence: how long a child gets to exit after its stdin closes, then after SIGTERM.
const STDIN_CLOSE_GRACE: Duration = Duration::from_secs(1);
const SIGTERM_GRACE: Duration = Duration::from_secs(2);
/// After SIGKILL the kernel ends the process at once; this only bounds a process stuck in the
/// kernel (uninterruptible I/O) so that a stop always returns.
const SIGKILL_WAIT: Duration = Duration::from_secs(2);
/// After the child exits, its stderr gets this long to deliver its last bytes (a grandchild
/// that escaped may hold the pipe open forever).
const STDERR_FLUSH_WAIT: Duration = Duration::from_millis(300);
/// How long ending rmcp's client task may take once the process is gone.
const PROTOCOL_SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// When a call fails because the transport closed, how long to wait for the exit status that
/// explains it (the pipe closes a moment before the process is reaped).
const EXIT_AFTER_CLOSE_WAIT: Duration = Duration::from_millis(500);

/// What to start.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Bounds the whole handshake, and each tool call.
    pub timeout: Duration,
    pub max_message_bytes: usize,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// `exit code 1`, `killed by SIGKILL`, …
    pub description: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
        let description = match (status.code(), signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => match Signal::try_from(signal) {
                Ok(name) => format!("killed by {name}"),
                Err(_) => format!("killed by signal {signal}"),
            },
            (None, None) => "exited".to_owned(),
        };
        Self {
            description,
            code: status.code(),
            signal,
        }
    }

    fn unknown(reason: &str) -> Self {
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

/// A start that failed: the child (if any) is already gone, reaped, its pipes closed.
#[derive(Debug, Clone)]
pub struct StartFailure {
    pub stage: StartStage,
    pub reason: String,
    pub exit: Option<ExitInfo>,
    pub stderr_tail: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failed at {}: {}", self.stage, self.reason)?;
        if let Some(exit) = &self.exit {
            write!(f, "; process {}", exit.description)?;
        }
        if !self.stderr_tail.is_empty() {
            write!(f, "; last stderr lines: {}", self.stderr_tail)?;
        }
        Ok(())
    }
}

/// A running, initialized MCP server.
pub struct McpChild {
    name: String,
    pid: u32,
    started_at: Instant,
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, LitMuxClient>>>,
    peer: Peer<RoleClient>,
    server_info: Implementation,
    protocol_version: String,
    stderr: Arc<StderrRing>,
    exit: watch::Receiver<Option<ExitInfo>>,
    close_stdin: CancellationToken,
    /// Cancelled when stderr reached EOF or was abandoned.
    stderr_done: CancellationToken,
    /// The exit watcher, the stderr drain and the stdin closer. Once they have ended and rmcp's
    /// service (which owns the transport, hence stdout) has stopped, every pipe is closed.
    io_tasks: TaskTracker,
    timeout: Duration,
    /// The most all pages of its `tools/list` may hold (`mcp.max_message_bytes`).
    tool_list_bytes: usize,
    stop_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for McpChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpChild")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Everything `start` hands back.
pub struct Started {
    pub child: McpChild,
    pub tools: Vec<Tool>,
    /// Receives a message each time the server says its tool list changed.
    pub tools_changed: mpsc::Receiver<()>,
}

impl McpChild {
    /// Spawns the server and runs the handshake (`initialize`, `notifications/initialized`, every
    /// page of `tools/list`) within `spec.timeout`. On any failure the child is stopped and
    /// reaped before this returns.
    pub async fn start(spec: &ChildSpec) -> Result<Started, StartFailure> {
        let deadline = Instant::now() + spec.timeout;
        let stderr = Arc::new(StderrRing::new(STDERR_RING_BYTES));
        let process = spawn_process(spec).map_err(|err| StartFailure {
            stage: StartStage::Spawn,
            reason: format!("cannot run {:?}: {err}", spec.command),
            exit: None,
            stderr_tail: String::new(),
        })?;
        let Spawned {
            pid,
            child,
            stdin,
            stdout,
            stderr: stderr_pipe,
        } = process;

        let io_stop = CancellationToken::new();
        let close_stdin = CancellationToken::new();
        let (exit_tx, exit_rx) = watch::channel(None);
        let stderr_done = CancellationToken::new();
        let stderr_settled = stderr_done.clone();
        let io_tasks = TaskTracker::new();
        io_tasks.spawn(drain_stderr(
            stderr_pipe,
            Arc::clone(&stderr),
            spec.name.clone(),
            io_stop.clone(),
            stderr_done.clone(),
        ));
        io_tasks.spawn(watch_exit(
            child,
            pid,
            exit_tx,
            io_stop.clone(),
            stderr_done,
            spec.name.clone(),
        ));
        // Closing stdin (the stop sequence's first step) drops the pipe even while nothing is
        // being sent; a send stuck on a full pipe gives up when told to close.
        let stdin_closed = CancellationToken::new();
        let stdin = OrderedWriter::new(stdin, stdin_closed.clone());
        io_tasks.spawn({
            let (stdin, close_stdin, io_stop) =
                (stdin.clone(), close_stdin.clone(), io_stop.clone());
            async move {
                tokio::select! {
                    () = close_stdin.cancelled() => {}
                    () = io_stop.cancelled() => {}
                }
                stdin_closed.cancel();
                stdin.close().await;
            }
        });
        // A child that closes its stdout (it can never answer again) or its stdin (it can never
        // be asked again) but keeps running is stopped like any other, so its exit is seen
        // (state, catalog, restart policy) and nothing of it lingers.
        let pipe_lost = CancellationToken::new();
        io_tasks.spawn({
            let (pipe_lost, io_stop, close_stdin) =
                (pipe_lost.clone(), io_stop.clone(), close_stdin.clone());
            let (exit, name) = (exit_rx.clone(), spec.name.clone());
            async move {
                tokio::select! {
                    () = pipe_lost.cancelled() => {}
                    () = io_stop.cancelled() => return,
                }
                // Not when it has exited already, or is being stopped (which closes stdin).
                if exit.borrow().is_none() && !close_stdin.is_cancelled() {
                    tracing::warn!(server = %name, pid, "MCP server closed its stdin or stdout; stopping it");
                    stop_process(pid, &close_stdin, exit).await;
                }
            }
        });
        io_tasks.close();

        // The transport owns stdin and stdout and does their I/O in place (a relay task per pipe
        // would add a task wake-up to every message). rmcp drops it when its service ends, which
        // closes both pipes.
        let transport = ChildTransport {
            stdout: StdoutReader::new(stdout, spec.max_message_bytes, spec.name.clone()),
            stdin,
            io_stop: io_stop.clone(),
            pipe_lost,
        };
        let (tools_changed_tx, tools_changed) = mpsc::channel(1);
        let handler = LitMuxClient {
            tools_changed: tools_changed_tx,
        };

        let mut child = PartialChild {
            pid,
            exit: exit_rx.clone(),
            close_stdin: close_stdin.clone(),
            stderr: Arc::clone(&stderr),
            io_tasks: io_tasks.clone(),
        };
        let service = child
            .within(deadline, StartStage::Initialize, async {
                rmcp::serve_client(handler, transport)
                    .await
                    .map_err(|err| err.to_string())
            })
            .await?;
        let peer = service.peer().clone();
        let (server_info, protocol_version) = match service.peer_info() {
            Some(info) => (
                info.server_info
                    .clone()
                    .unwrap_or_else(|| Implementation::new("", "")),
                info.protocol_version.to_string(),
            ),
            None => (Implementation::new("", ""), String::new()),
        };
        let tools = match child
            .within(deadline, StartStage::ListTools, async {
                match list_every_tool(&peer, spec.max_message_bytes).await {
                    Ok(listed) => listed,
                    Err(err) => Err(err.to_string()),
                }
            })
            .await
        {
            Ok(tools) => tools,
            Err(failure) => {
                let _ = service.cancel().await;
                return Err(failure);
            }
        };
        Ok(Started {
            child: McpChild {
                name: spec.name.clone(),
                pid,
                started_at: Instant::now(),
                service: tokio::sync::Mutex::new(Some(service)),
                peer,
                server_info,
                protocol_version,
                stderr,
                exit: exit_rx,
                close_stdin,
                stderr_done: stderr_settled,
                io_tasks,
                timeout: spec.timeout,
                tool_list_bytes: spec.max_message_bytes,
                stop_lock: tokio::sync::Mutex::new(()),
            },
            tools,
            tools_changed,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    pub fn server_info(&self) -> &Implementation {
        &self.server_info
    }

    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// The last lines of stderr, most recent last.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// `Some` once the process has exited (and been reaped).
    pub fn exit_info(&self) -> Option<ExitInfo> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process exits; at once if it already has.
    pub async fn exited(&self) -> ExitInfo {
        wait_for_exit(self.exit.clone()).await
    }

    /// Lists every page of tools again (after `notifications/tools/list_changed`).
    pub async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        self.request(
            "tools/list",
            list_every_tool(&self.peer, self.tool_list_bytes),
        )
        .await?
        .map_err(|message| McpError::Protocol {
            server: self.name.clone(),
            code: None,
            message: format!("tools/list: {message}"),
        })
    }

    /// Calls a tool. Concurrent calls run side by side (multiplexed by JSON-RPC id). A call that
    /// outlives the server's timeout is abandoned with `notifications/cancelled`; a call in
    /// flight when the process exits fails at once.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, McpError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        self.request("tools/call", self.peer.call_tool(params))
            .await
    }

    async fn request<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, rmcp::service::ServiceError>>,
    ) -> Result<T, McpError> {
        if let Some(exit) = self.exit_info() {
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
                Ok(Err(error)) => match tokio::time::timeout(EXIT_AFTER_CLOSE_WAIT, self.exited()).await {
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
            exit = self.exited() => Ok(Err(exit)),
        };
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(exit)) => Err(self.died(exit).await),
            Err(error) => Err(error),
        }
    }

    /// The error for a call that the process's exit ended, with its last stderr lines.
    async fn died(&self, exit: ExitInfo) -> McpError {
        let _ = tokio::time::timeout(STDERR_FLUSH_WAIT, self.stderr_done.cancelled()).await;
        McpError::Died {
            server: self.name.clone(),
            exit: exit.description,
            stderr_tail: self.stderr.tail(5),
        }
    }

    /// The stop sequence: close stdin, wait up to 1 s; SIGTERM the group, wait up to 2 s;
    /// SIGKILL the group; reap. Idempotent; concurrent callers wait for the same outcome.
    /// Returns once the process is reaped and every pipe to it is closed.
    pub async fn stop(&self) -> ExitInfo {
        let _one_at_a_time = self.stop_lock.lock().await;
        let exit = match self.exit_info() {
            Some(exit) => exit,
            None => stop_process(self.pid, &self.close_stdin, self.exit.clone()).await,
        };
        self.shutdown_protocol().await;
        wait_for_io_tasks(&self.io_tasks).await;
        exit
    }

    /// Ends rmcp's task, which drops the transport and with it stdout and stdin. The process is
    /// gone by now, so its pipes cannot stall this; the bound only guards against a bug.
    async fn shutdown_protocol(&self) {
        if let Some(service) = self.service.lock().await.take()
            && tokio::time::timeout(PROTOCOL_SHUTDOWN_WAIT, service.cancel())
                .await
                .is_err()
        {
            tracing::warn!(server = %self.name, "the MCP client task did not end in time");
        }
    }
}

/// The parts of a child that exist before the handshake completes; enough to fail cleanly.
struct PartialChild {
    pid: u32,
    exit: watch::Receiver<Option<ExitInfo>>,
    close_stdin: CancellationToken,
    stderr: Arc<StderrRing>,
    io_tasks: TaskTracker,
}

impl PartialChild {
    /// Runs one handshake step before `deadline`; on failure (error, timeout, or the process
    /// exiting) stops the process and describes what happened.
    async fn within<T>(
        &mut self,
        deadline: Instant,
        stage: StartStage,
        step: impl Future<Output = Result<T, String>>,
    ) -> Result<T, StartFailure> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let reason = tokio::select! {
            result = tokio::time::timeout(remaining, step) => match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(reason)) => reason,
                Err(_elapsed) => "timed out waiting for the server".to_owned(),
            },
            exit = wait_for_exit(self.exit.clone()) => format!("the process exited ({})", exit.description),
        };
        let exit = stop_process(self.pid, &self.close_stdin, self.exit.clone()).await;
        wait_for_io_tasks(&self.io_tasks).await;
        Err(StartFailure {
            stage,
            reason,
            exit: Some(exit),
            stderr_tail: self.stderr.tail(5),
        })
    }
}

/// After the exit: the pipe tasks end within the stderr flush wait; the bound is only a guard.
async fn wait_for_io_tasks(tasks: &TaskTracker) {
    if tokio::time::timeout(STDERR_FLUSH_WAIT * 4, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("an MCP server's pipe tasks did not end after its exit");
    }
}

async fn wait_for_exit(mut exit: watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
    match exit.wait_for(Option::is_some).await {
        Ok(info) => info.clone().unwrap_or_else(|| ExitInfo::unknown("exited")),
        // The watcher is gone without a status: only when the runtime is shutting down.
        Err(_) => ExitInfo::unknown("exit status unknown"),
    }
}

/// Close stdin, wait; SIGTERM the group (and strays), wait; SIGKILL; wait for the reaping.
async fn stop_process(
    pid: u32,
    close_stdin: &CancellationToken,
    exit: watch::Receiver<Option<ExitInfo>>,
) -> ExitInfo {
    // Found while the leader lives: once it is gone, strays are reparented and untraceable.
    let strays = descendants_outside_group(pid);
    close_stdin.cancel();
    if let Ok(info) = tokio::time::timeout(STDIN_CLOSE_GRACE, wait_for_exit(exit.clone())).await {
        signal_all(pid, &strays, Signal::SIGKILL);
        return info;
    }
    signal_all(pid, &strays, Signal::SIGTERM);
    if let Ok(info) = tokio::time::timeout(SIGTERM_GRACE, wait_for_exit(exit.clone())).await {
        signal_all(pid, &strays, Signal::SIGKILL);
        return info;
    }
    signal_all(pid, &strays, Signal::SIGKILL);
    match tokio::time::timeout(SIGKILL_WAIT, wait_for_exit(exit)).await {
        Ok(info) => info,
        Err(_) => ExitInfo::unknown("did not exit after SIGKILL"),
    }
}

/// Signals the process group led by `pid` and the strays. Errors mean "nobody left to signal".
fn signal_all(pid: u32, strays: &[Pid], signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
    for stray in strays {
        let _ = kill(*stray, signal);
    }
}

/// Descendants of `pid` (by parent links in `/proc`) that are no longer in its process group,
/// e.g. daemons that called `setsid`. Empty where `/proc` cannot be read.
fn descendants_outside_group(pid: u32) -> Vec<Pid> {
    let Ok(root) = i32::try_from(pid) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent, process group)
    let processes: Vec<(i32, i32, i32)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // Fields after the command name, which is in parentheses and may hold spaces.
            let after = stat.rsplit_once(')')?.1;
            let mut fields = after.split_whitespace();
            let _state = fields.next()?;
            let parent = fields.next()?.parse().ok()?;
            let group = fields.next()?.parse().ok()?;
            Some((p, parent, group))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, pp, group) in &processes {
            if pp == parent && !found.contains(&p) && p != root {
                frontier.push(p);
                if group != root {
                    found.push(p);
                }
            }
        }
    }
    found.into_iter().map(Pid::from_raw).collect()
}

/// The most pages of `tools/list` one listing follows.
const MAX_TOOL_PAGES: usize = 1000;

/// Every page of `tools/list`, within bounds: rmcp's own pager follows `nextCursor` for as long as
/// a server hands one out, keeping every page, so a server that pages forever (or returns the
/// same cursor again) would fill lit-mux's memory until the timeout. Here a listing stops with an
/// error after [`MAX_TOOL_PAGES`] pages, or once the tools of all pages together take more than
/// `max_bytes` as JSON (the bound on one message: a catalog needs no more than a message may carry).
/// The outer error is the protocol's, the inner one that bound.
async fn list_every_tool(
    peer: &Peer<RoleClient>,
    max_bytes: usize,
) -> Result<Result<Vec<Tool>, String>, rmcp::service::ServiceError> {
    let mut tools = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = None;
    for _ in 0..MAX_TOOL_PAGES {
        let page = peer
            .list_tools(Some(
                rmcp::model::PaginatedRequestParams::default().with_cursor(cursor),
            ))
            .await?;
        bytes = bytes.saturating_add(serde_json::to_vec(&page.tools).map_or(0, |json| json.len()));
        if bytes > max_bytes {
            return Ok(Err(format!(
                "the tools listed take more than {max_bytes} bytes \
                 (mcp.max_message_bytes), {} tools so far",
                tools.len() + page.tools.len()
            )));
        }
        tools.extend(page.tools);
        match page.next_cursor {
            None => return Ok(Ok(tools)),
            Some(next) => cursor = Some(next),
        }
    }
    Ok(Err(format!(
        "still paging after {MAX_TOOL_PAGES} pages ({} tools so far)",
        tools.len()
    )))
}

struct Spawned {
    pid: u32,
    child: Box<dyn ChildWrapper>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
}

fn spawn_process(spec: &ChildSpec) -> std::io::Result<Spawned> {
    // The standard library would quietly turn such a string into a placeholder.
    let strings = std::iter::once(&spec.command)
        .chain(&spec.args)
        .chain(spec.env.iter().flat_map(|(key, value)| [key, value]));
    if let Some(bad) = strings.into_iter().find(|s| s.contains('\0')) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{bad:?} contains a NUL byte"),
        ));
    }
    let mut command = tokio::process::Command::new(&spec.command);
    command
        .args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut wrapped = CommandWrap::from(command);
    wrapped.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    // Own group and PR_SET_PDEATHSIG, spawned the posix_spawn way (see spawn.rs).
    let mut child = wrapped.spawn_with_child(super::spawn::spawn_guarded)?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the child has no pid"))?;
    super::orphan_guard::register(pid);
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        child.stdin().take(),
        child.stdout().take(),
        child.stderr().take(),
    ) else {
        let _ = child.start_kill();
        return Err(std::io::Error::other("a pipe to the child is missing"));
    };
    Ok(Spawned {
        pid,
        child,
        stdin,
        stdout,
        stderr,
    })
}

/// Owns the process: awaits its exit, publishes it, kills what is left of the group, then
/// closes the pipes (after giving stderr a moment to deliver its last words).
async fn watch_exit(
    mut child: Box<dyn ChildWrapper>,
    pid: u32,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    io_stop: CancellationToken,
    stderr_done: CancellationToken,
    name: String,
) {
    let info = match child.wait().await {
        Ok(status) => ExitInfo::from_status(status),
        Err(err) => ExitInfo::unknown(&format!("wait failed: {err}")),
    };
    // Grandchildren left in the group die with their parent.
    signal_all(pid, &[], Signal::SIGKILL);
    super::orphan_guard::unregister(pid);
    tracing::info!(server = %name, pid, exit = %info.description, "MCP server process exited");
    let _ = exit_tx.send(Some(info));
    let _ = tokio::time::timeout(STDERR_FLUSH_WAIT, stderr_done.cancelled()).await;
    io_stop.cancel();
    drop(child);
}

/// Reads stderr into the ring until EOF or `io_stop`; logs each line at debug level.
async fn drain_stderr(
    stderr: ChildStderr,
    ring: Arc<StderrRing>,
    name: String,
    io_stop: CancellationToken,
    done: CancellationToken,
) {
    let mut stderr = stderr;
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = tokio::select! {
            read = stderr.read(&mut buffer) => read,
            () = io_stop.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = &buffer[..n];
                if tracing::enabled!(tracing::Level::DEBUG) {
                    for line in String::from_utf8_lossy(chunk).lines() {
                        tracing::debug!(server = %name, "stderr: {}", truncate_chars(line, 500));
                    }
                }
                ring.push(chunk);
            }
        }
    }
    done.cancel();
}

/// Reads newline-delimited JSON-RPC from stdout. Lines that are not JSON-RPC are logged and
/// skipped. A line longer than `max_bytes` is never held in memory: it is skipped as it streams
/// by, and the request it answers (its id is looked for at both ends) fails clearly.
///
/// All state lives in the struct, so [`next_message`](Self::next_message) is cancel-safe: rmcp
/// polls it inside a `select!`.
struct StdoutReader {
    reader: BufReader<ChildStdout>,
    line: Vec<u8>,
    oversize: Option<OversizeLine>,
    max_bytes: usize,
    name: String,
    skipped: SkippedLines,
}

impl StdoutReader {
    fn new(stdout: ChildStdout, max_bytes: usize, name: String) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, stdout),
            line: Vec::new(),
            oversize: None,
            max_bytes,
            name,
            skipped: SkippedLines::default(),
        }
    }

    /// The next message, or `None` at EOF or on a read error.
    async fn next_message(&mut self) -> Option<ServerJsonRpcMessage> {
        loop {
            let buffer = match self.reader.fill_buf().await {
                Ok(buffer) if !buffer.is_empty() => buffer,
                _ => return None,
            };
            let (chunk, line_ends) = match buffer.iter().position(|&b| b == b'\n') {
                Some(end) => (&buffer[..end], true),
                None => (buffer, false),
            };
            match &mut self.oversize {
                Some(big) => big.push(chunk),
                None if self.line.len() + chunk.len() > self.max_bytes => {
                    let mut big = OversizeLine::new(&self.line);
                    big.push(chunk);
                    self.oversize = Some(big);
                    self.line = Vec::new();
                }
                None => self.line.extend_from_slice(chunk),
            }
            let consumed = chunk.len() + usize::from(line_ends);
            self.reader.consume(consumed);
            if !line_ends {
                continue;
            }
            let message = match self.oversize.take() {
                Some(big) => big.into_error_response(&self.name, self.max_bytes),
                None => parse_message(&self.line, &self.name, &mut self.skipped),
            };
            self.line.clear();
            if message.is_some() {
                return message;
            }
        }
    }
}

impl Drop for StdoutReader {
    fn drop(&mut self) {
        self.skipped.report(&self.name);
    }
}

/// Skipped stdout lines logged one by one per minute; the rest are counted.
const SKIPPED_LINES_LOGGED_PER_MINUTE: u32 = 20;
const SKIPPED_LINES_WINDOW: Duration = Duration::from_secs(60);

/// Keeps a child that writes junk on stdout without end from writing lit-mux's log without end.
struct SkippedLines {
    window_start: Instant,
    logged: u32,
    unlogged: u64,
}

impl Default for SkippedLines {
    fn default() -> Self {
        Self {
            window_start: Instant::now(),
            logged: 0,
            unlogged: 0,
        }
    }
}

impl SkippedLines {
    /// Whether one more skipped line may be logged.
    fn admit(&mut self, name: &str) -> bool {
        if self.window_start.elapsed() >= SKIPPED_LINES_WINDOW {
            self.report(name);
            *self = Self::default();
        }
        if self.logged < SKIPPED_LINES_LOGGED_PER_MINUTE {
            self.logged += 1;
            return true;
        }
        if self.unlogged == 0 {
            tracing::warn!(
                server = %name,
                "more stdout lines that are not JSON-RPC messages: counted, not logged, until the minute is over"
            );
        }
        self.unlogged += 1;
        false
    }

    /// Logs how many lines were skipped without a line of their own, if any.
    fn report(&mut self, name: &str) {
        if self.unlogged > 0 {
            tracing::warn!(
                server = %name,
                lines = self.unlogged,
                "skipped stdout lines that are not JSON-RPC messages (not logged one by one)"
            );
            self.unlogged = 0;
        }
    }
}

fn parse_message(
    line: &[u8],
    name: &str,
    skipped: &mut SkippedLines,
) -> Option<ServerJsonRpcMessage> {
    let text = line.trim_ascii();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_slice::<ServerJsonRpcMessage>(text) {
        Ok(message) => Some(message),
        Err(_) if !skipped.admit(name) => None,
        Err(err) => {
            tracing::warn!(
                server = %name,
                error = %err,
                "skipping a stdout line that is not a JSON-RPC message: {}",
                truncate_chars(&String::from_utf8_lossy(text), 200)
            );
            None
        }
    }
}

/// The ends of a line too long to keep.
struct OversizeLine {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
}

const OVERSIZE_KEPT: usize = 4096;

impl OversizeLine {
    fn new(start: &[u8]) -> Self {
        let mut line = Self {
            head: Vec::with_capacity(OVERSIZE_KEPT),
            tail: VecDeque::with_capacity(OVERSIZE_KEPT),
            total: 0,
        };
        line.push(start);
        line
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        let room = OVERSIZE_KEPT.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        let keep = bytes.len().min(OVERSIZE_KEPT);
        self.tail.extend(&bytes[bytes.len() - keep..]);
        while self.tail.len() > OVERSIZE_KEPT {
            self.tail.pop_front();
        }
    }

    /// An error response for the request this line answered, so that the caller fails at once.
    fn into_error_response(self, name: &str, max_bytes: usize) -> Option<ServerJsonRpcMessage> {
        let tail: Vec<u8> = self.tail.into_iter().collect();
        let id = find_response_id(&self.head, &tail);
        tracing::warn!(
            server = %name,
            bytes = self.total,
            limit = max_bytes,
            id = ?id,
            "skipped a message larger than mcp.max_message_bytes"
        );
        let id = id?;
        let response = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": -32603,
                "message": format!(
                    "the server's response is larger than mcp.max_message_bytes ({} bytes > {max_bytes}); it was discarded",
                    self.total
                ),
            },
        });
        serde_json::from_value(response).ok()
    }
}

/// Finds the `"id"` of a JSON-RPC response from the ends of its text: members before
/// `"result"`/`"error"` at the start, or the last `"id"` at the end.
fn find_response_id(head: &[u8], tail: &[u8]) -> Option<serde_json::Value> {
    let head_text = String::from_utf8_lossy(head);
    let body_start = ["\"result\"", "\"error\""]
        .iter()
        .filter_map(|key| head_text.find(key))
        .min()
        .unwrap_or(head_text.len());
    if let Some(id) = id_after_key(&head_text[..body_start], false) {
        return Some(id);
    }
    id_after_key(&String::from_utf8_lossy(tail), true)
}

fn id_after_key(text: &str, last: bool) -> Option<serde_json::Value> {
    let positions: Vec<usize> = text.match_indices("\"id\"").map(|(i, _)| i).collect();
    let ordered: Box<dyn Iterator<Item = &usize>> = if last {
        Box::new(positions.iter().rev())
    } else {
        Box::new(positions.iter())
    };
    for &position in ordered {
        let rest = text[position + 4..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let mut values =
            serde_json::Deserializer::from_str(rest.trim_start()).into_iter::<serde_json::Value>();
        if let Some(Ok(value)) = values.next()
            && (value.is_number() || value.is_string())
        {
            return Some(value);
        }
    }
    None
}

/// The rmcp transport over the child's stdin and stdout.
struct ChildTransport {
    stdout: StdoutReader,
    /// Shared with send futures, which rmcp runs concurrently; keeps their lines in send order.
    stdin: OrderedWriter<ChildStdin>,
    io_stop: CancellationToken,
    /// Cancelled when stdout ends (EOF or a read error) or a write to stdin fails.
    pipe_lost: CancellationToken,
}

impl Transport<RoleClient> for ChildTransport {
    type Error = PipeClosed;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        // Serialised and queued here, synchronously: the order of sends is the order on the pipe.
        let queued = serde_json::to_vec(&item).map(|mut line| {
            line.push(b'\n');
            self.stdin.send(line)
        });
        let pipe_lost = self.pipe_lost.clone();
        async move {
            let written = match queued {
                Ok(written) => written.await,
                Err(_) => return Err(PipeClosed),
            };
            if written.is_err() {
                pipe_lost.cancel();
            }
            written
        }
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        tokio::select! {
            message = self.stdout.next_message() => {
                if message.is_none() {
                    self.pipe_lost.cancel();
                }
                message
            }
            () = self.io_stop.cancelled() => None,
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.stdin.close().await;
        Ok(())
    }
}

/// Our side of the protocol: identifies as lit-mux, asks for 2025-11-25, and passes
/// `notifications/tools/list_changed` on.
pub struct LitMuxClient {
    tools_changed: mpsc::Sender<()>,
}

impl rmcp::ClientHandler for LitMuxClient {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("lit-mux", crate::VERSION),
        )
        .with_protocol_version(PROTOCOL_VERSION)
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // One pending refresh is enough; more notifications meanwhile add nothing.
        let _ = self.tools_changed.try_send(());
    }
}

/// The last bytes a child wrote to stderr.
#[derive(Debug)]
pub struct StderrRing {
    bytes: Mutex<VecDeque<u8>>,
    capacity: usize,
}

impl StderrRing {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    fn push(&self, chunk: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let keep = chunk.len().min(self.capacity);
        bytes.extend(&chunk[chunk.len() - keep..]);
        let excess = bytes.len().saturating_sub(self.capacity);
        bytes.drain(..excess);
    }

    /// Everything kept, starting at a line boundary when the ring has wrapped.
    pub fn text(&self) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let (front, back) = bytes.as_slices();
        let mut all = Vec::with_capacity(bytes.len());
        all.extend_from_slice(front);
        all.extend_from_slice(back);
        let start = if bytes.len() >= self.capacity {
            all.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)
        } else {
            0
        };
        String::from_utf8_lossy(&all[start..]).into_owned()
    }

    /// The last `lines` non-empty lines, joined with " | ", each cut to 300 characters.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.text();
        let mut last: Vec<&str> = text
            .lines()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(lines)
            .collect();
        last.reverse();
        last.iter()
            .map(|l| truncate_chars(l.trim_end(), 300))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_are_found_at_either_end() {
        let head = br#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"id":7,"text":"xxxx"#;
        assert_eq!(
            find_response_id(head, b"xxxx\"}]}}"),
            Some(serde_json::json!(42))
        );
        let head = br#"{"result":{"content":[{"id":7,"text":"xxxx"#;
        let tail = br#"xxxx"}]},"jsonrpc":"2.0","id":"req-9"}"#;
        assert_eq!(
            find_response_id(head, tail),
            Some(serde_json::json!("req-9"))
        );
        assert_eq!(find_response_id(b"xxxx", b"xxxx"), None);
    }

    #[test]
    fn the_stderr_ring_keeps_the_end_from_a_line_start() {
        let ring = StderrRing::new(16);
        ring.push(b"first line\nsecond line\nthird\n");
        assert_eq!(ring.text(), "third\n");
        assert_eq!(ring.tail(5), "third");
        let small = StderrRing::new(1024);
        small.push(b"a\n\nb\nc\n");
        assert_eq!(small.tail(2), "b | c");
    }

    #[test]
    fn oversize_lines_keep_only_their_ends() {
        let mut line = OversizeLine::new(b"{\"id\":1,");
        for _ in 0..1000 {
            line.push(&[b'x'; 1000]);
        }
        assert_eq!(line.total, 1_000_008);
        assert_eq!(line.head.len(), OVERSIZE_KEPT);
        assert_eq!(line.tail.len(), OVERSIZE_KEPT);
    }
}
