//! One child process and the tasks around its pipes, from spawn to reap.
//!
//! A [`ChildProcess`] exists from the spawn on, before any handshake, so that a start that
//! fails half-way ends like any other: stopped, reaped, every pipe closed. The process lit-mux
//! owns and waits for is the server's keeper, which exits as the server did once nothing of the
//! server is left; the stop sequence signals the server's own group.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use process_wrap::tokio::ChildWrapper;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::framing::{ChildTransport, StdoutReader};
use super::keeper::LIFELINE_SIGNAL;
use super::ordered_writer::OrderedWriter;
use super::orphan_guard;
use super::spawn::{Spawned, spawn};
use super::stderr::{STDERR_RING_BYTES, StderrRing, drain_stderr};
use super::stop::{ServerTree, signal_all, stop_process, wait_for_exit};
use crate::config::StdioTransport;
use crate::mcp::connection::ExitInfo;

/// After the child exits, its stderr gets this long to deliver its last bytes (a grandchild
/// that escaped may hold the pipe open forever).
const STDERR_FLUSH_WAIT: Duration = Duration::from_millis(300);

/// A spawned child: its exit as it becomes known, its stderr, and the tasks that own its pipes.
pub(super) struct ChildProcess {
    tree: ServerTree,
    exit: watch::Receiver<Option<ExitInfo>>,
    close_stdin: CancellationToken,
    stderr: Arc<StderrRing>,
    /// Cancelled when stderr reached EOF or was abandoned.
    stderr_done: CancellationToken,
    /// The exit watcher, the stderr drain, the stdin closer and the lost-pipe watch. Once they
    /// have ended and the transport (which owns stdout) is dropped, every pipe is closed.
    io_tasks: TaskTracker,
}

impl ChildProcess {
    /// Spawns the server and starts the tasks around its pipes; returns the process and the
    /// rmcp transport over its stdin and stdout.
    pub(super) async fn launch(
        name: &str,
        transport: &StdioTransport,
        max_message_bytes: usize,
    ) -> std::io::Result<(Self, ChildTransport)> {
        let Spawned {
            keeper,
            pid,
            child,
            stdin,
            stdout,
            stderr: stderr_pipe,
        } = spawn(transport).await?;
        let tree = ServerTree {
            keeper,
            server: pid,
        };
        let stderr = Arc::new(StderrRing::new(STDERR_RING_BYTES));

        let io_stop = CancellationToken::new();
        let close_stdin = CancellationToken::new();
        let (exit_tx, exit_rx) = watch::channel(None);
        let stderr_done = CancellationToken::new();
        let stderr_settled = stderr_done.clone();
        let io_tasks = TaskTracker::new();
        io_tasks.spawn(drain_stderr(
            stderr_pipe,
            Arc::clone(&stderr),
            name.to_owned(),
            io_stop.clone(),
            stderr_done.clone(),
        ));
        io_tasks.spawn(watch_exit(
            child,
            tree,
            exit_tx,
            io_stop.clone(),
            stderr_done,
            name.to_owned(),
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
            let (exit, name) = (exit_rx.clone(), name.to_owned());
            async move {
                tokio::select! {
                    () = pipe_lost.cancelled() => {}
                    () = io_stop.cancelled() => return,
                }
                // Not when it has exited already, or is being stopped (which closes stdin).
                if exit.borrow().is_none() && !close_stdin.is_cancelled() {
                    tracing::warn!(server = %name, pid, "MCP server closed its stdin or stdout; stopping it");
                    stop_process(tree, &close_stdin, exit).await;
                }
            }
        });
        io_tasks.close();

        // The transport owns stdin and stdout and does their I/O in place (a relay task per pipe
        // would add a task wake-up to every message). rmcp drops it when its service ends, which
        // closes both pipes.
        let transport = ChildTransport {
            stdout: StdoutReader::new(stdout, max_message_bytes, name.to_owned()),
            stdin,
            io_stop,
            pipe_lost,
        };
        let process = Self {
            tree,
            exit: exit_rx,
            close_stdin,
            stderr,
            stderr_done: stderr_settled,
            io_tasks,
        };
        Ok((process, transport))
    }

    /// The server's pid (not its keeper's).
    pub(super) fn pid(&self) -> u32 {
        self.tree.server
    }

    pub(super) fn stderr(&self) -> &StderrRing {
        &self.stderr
    }

    /// `Some` once the process has exited (and been reaped).
    pub(super) fn exit_info(&self) -> Option<ExitInfo> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process exits; at once if it already has.
    pub(super) async fn exited(&self) -> ExitInfo {
        wait_for_exit(self.exit.clone()).await
    }

    /// Gives stderr its moment to deliver the last words of a process that has exited.
    pub(super) async fn stderr_settled(&self) {
        let _ = tokio::time::timeout(STDERR_FLUSH_WAIT, self.stderr_done.cancelled()).await;
    }

    /// Runs the stop sequence (see [`stop_process`]) and waits for the reaping.
    pub(super) async fn terminate(&self) -> ExitInfo {
        stop_process(self.tree, &self.close_stdin, self.exit.clone()).await
    }

    /// After the exit: the pipe tasks end within the stderr flush wait; the bound is only a
    /// guard.
    pub(super) async fn pipes_closed(&self) {
        if tokio::time::timeout(STDERR_FLUSH_WAIT * 4, self.io_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("an MCP server's pipe tasks did not end after its exit");
        }
    }
}

/// Owns the keeper: awaits its exit (the server's, mirrored), publishes it, kills what is left
/// of the server's group (only a keeper killed from outside leaves anything), then closes the
/// pipes (after giving stderr a moment to deliver its last words).
async fn watch_exit(
    mut child: Box<dyn ChildWrapper>,
    tree: ServerTree,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    io_stop: CancellationToken,
    stderr_done: CancellationToken,
    name: String,
) {
    let ending = EndTreeOnDrop(tree.keeper);
    let info = match child.wait().await {
        Ok(status) => describe_exit(status),
        Err(err) => ExitInfo::unknown(&format!("wait failed: {err}")),
    };
    std::mem::forget(ending);
    let pid = tree.server;
    // Grandchildren left in the group die with their parent.
    signal_all(pid, &[], Signal::SIGKILL);
    orphan_guard::unregister(pid);
    tracing::info!(server = %name, pid, exit = %info.description, "MCP server process exited");
    let _ = exit_tx.send(Some(info));
    let _ = tokio::time::timeout(STDERR_FLUSH_WAIT, stderr_done.cancelled()).await;
    io_stop.cancel();
    drop(child);
}

/// Asks a keeper that is dropped unwaited (the runtime shutting down under it) to end its
/// server's whole tree, rather than leaving it running.
struct EndTreeOnDrop(u32);

impl Drop for EndTreeOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), LIFELINE_SIGNAL);
        }
    }
}

/// How an exit status reads in the API and the logs.
fn describe_exit(status: ExitStatus) -> ExitInfo {
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
    ExitInfo {
        description,
        code: status.code(),
        signal,
    }
}
