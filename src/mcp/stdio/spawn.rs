//! Starting a server's process, through its keeper (see [`super::keeper`]): lit-mux spawns
//! `lit-mux __mcp-keeper -- PROGRAM ARGS…` with the server's pipes and environment, and the
//! keeper spawns the server and reports its pid on a pipe.
//!
//! What every server gets:
//! - stdin, stdout and stderr as pipes whose other ends lit-mux holds, and no other descriptor
//!   of lit-mux's: lit-mux opens everything close-on-exec, and both `pre_exec` hooks (in
//!   [`super::os_calls`]) mark close-on-exec whatever was inherited without that flag (a
//!   parent's jobserver pipe, say);
//! - its own process group, so that the stop sequence can signal it together with every
//!   descendant that stayed in the group; the keeper is in another group, out of reach;
//! - the keeper as its parent and `PR_SET_CHILD_SUBREAPER` ancestor, so that no descendant
//!   outlives it, and `PR_SET_PDEATHSIG(SIGKILL)` towards the keeper;
//! - exactly the environment and program path `mcp::launch` decided (the transport it is given
//!   holds the whole environment; the keeper has it too and passes it on), no blocked signals,
//!   and SIGPIPE back at its default (the standard library's doing).
//!
//! The keeper's death signal (lit-mux's lifeline) is tied to the spawning *thread*: spawn from
//! the runtime's worker threads, which live as long as lit-mux, never from `spawn_blocking`
//! threads, which exit when idle. A keeper or server that lost its parent before its hook ran
//! would never get the signal: it refuses to start instead.

use std::process::Stdio;
use std::time::Duration;

use process_wrap::tokio::{ChildWrapper, CommandWrap, ProcessGroup};
use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::keeper;
use super::orphan_guard;
use super::os_calls;
use crate::config::StdioTransport;

/// The most a keeper's report may take: it starts the server and writes one line.
const KEEPER_REPORT_WAIT: Duration = Duration::from_secs(10);
/// The longest report line read (`pid N`, or `error ERRNO MESSAGE`).
const KEEPER_REPORT_BYTES: u64 = 1024;

/// A server just spawned by its keeper, their pipes taken out.
pub(super) struct Spawned {
    /// The keeper: the child lit-mux owns and waits for.
    pub keeper: u32,
    /// The server, the leader of its own process group.
    pub pid: u32,
    pub child: Box<dyn ChildWrapper>,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Spawns the server's command with its pipes through a keeper, in a group of its own,
/// registered with the orphan guard. Errors are the operating system's (`No such file or
/// directory`, …), as the keeper met them.
pub(super) async fn spawn(transport: &StdioTransport) -> std::io::Result<Spawned> {
    // The standard library would quietly turn such a string into a placeholder.
    let strings = std::iter::once(&transport.command)
        .chain(&transport.args)
        .chain(transport.env.iter().flat_map(|(key, value)| [key, value]));
    if let Some(bad) = strings.into_iter().find(|s| s.contains('\0')) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{bad:?} contains a NUL byte"),
        ));
    }
    let (report_read, report_write) = std::io::pipe()?;
    // The running executable itself, even when its file was replaced or deleted since.
    let mut command = tokio::process::Command::new("/proc/self/exe");
    command.arg0("lit-mux").arg(keeper::SUBCOMMAND);
    if let Some(soft) = crate::descriptor_limit::for_children() {
        command.arg(keeper::NOFILE_SOFT_FLAG).arg(soft.to_string());
    }
    command
        .arg("--")
        .arg(&transport.command)
        .args(&transport.args)
        .env_clear()
        .envs(&transport.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    {
        use std::os::fd::AsRawFd;
        os_calls::add_keeper_pre_exec_hook(
            command.as_std_mut(),
            report_write.as_raw_fd(),
            keeper::LIFELINE_SIGNAL,
        );
    }
    let mut wrapped = CommandWrap::from(command);
    wrapped.wrap(ProcessGroup::leader());
    let spawned = wrapped.spawn();
    // Only the keeper holds the write end now: its report ends with EOF.
    drop(report_write);
    let mut child = spawned?;
    let keeper = child
        .id()
        .ok_or_else(|| std::io::Error::other("the keeper has no pid"))?;
    let pid = match read_report(report_read).await {
        Ok(pid) => pid,
        Err(err) => {
            // It exits by itself after an error report; otherwise it is stuck or confused.
            if tokio::time::timeout(KEEPER_REPORT_WAIT, child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            return Err(err);
        }
    };
    orphan_guard::register(pid);
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        child.stdin().take(),
        child.stdout().take(),
        child.stderr().take(),
    ) else {
        let _ = child.start_kill();
        return Err(std::io::Error::other("a pipe to the child is missing"));
    };
    Ok(Spawned {
        keeper,
        pid,
        child,
        stdin,
        stdout,
        stderr,
    })
}

/// The keeper's one line: the server's pid, or the error that kept it from starting it.
async fn read_report(pipe: std::io::PipeReader) -> std::io::Result<u32> {
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe.into())?;
    let mut line = String::new();
    let read = tokio::time::timeout(
        KEEPER_REPORT_WAIT,
        pipe.take(KEEPER_REPORT_BYTES).read_to_string(&mut line),
    )
    .await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return Err(err),
        Err(_elapsed) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the MCP keeper did not report the server's start",
            ));
        }
    }
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("pid ").and_then(|p| p.parse().ok()) {
        return Ok(pid);
    }
    if let Some((errno, message)) = line
        .strip_prefix("error ")
        .and_then(|rest| rest.split_once(' '))
    {
        return Err(match errno.parse::<i32>() {
            Ok(errno) if errno > 0 => std::io::Error::from_raw_os_error(errno),
            _ => std::io::Error::other(message.to_owned()),
        });
    }
    Err(std::io::Error::other(format!(
        "the MCP keeper ended without starting the server (\"{line}\")"
    )))
}
