//! The orphan guard: a tiny helper process (`lit-mux __orphan-guard`) that kills every MCP
//! process group still registered when lit-mux dies, however it dies.
//!
//! Each server's keeper (see [`super::keeper`]) already kills the server's whole tree when
//! lit-mux dies. The guard is the second line for the case where a keeper is gone first (killed
//! from outside): its server then dies of its own death signal, and the guard kills what is left
//! of the server's process group. lit-mux
//! keeps the write end of a pipe to the guard's stdin and writes `+PGID` when it spawns a group
//! and `-PGID` once the group is gone. When lit-mux exits or is killed, the kernel closes the pipe;
//! the guard reads EOF, sends SIGKILL to every group still registered, and exits.
//!
//! The guard runs in its own process group, so a Ctrl-C in a terminal (SIGINT to the foreground
//! group) does not reach it, and it blocks SIGINT, SIGTERM and SIGHUP: only EOF ends it.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, sigprocmask};
use nix::unistd::Pid;

/// The hidden subcommand that runs the guard.
pub const SUBCOMMAND: &str = "__orphan-guard";

struct Guard {
    process: Child,
    lifeline: Option<ChildStdin>,
}

static GUARD: OnceLock<Mutex<Guard>> = OnceLock::new();

fn guard() -> Option<std::sync::MutexGuard<'static, Guard>> {
    GUARD
        .get()
        .map(|guard| guard.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Starts the guard (once per process). Without it lit-mux still works; only grandchildren of a
/// lit-mux killed with SIGKILL would survive, so failing to start it is a warning.
pub fn install() {
    if GUARD.get().is_some() {
        return;
    }
    match spawn() {
        Ok(guard) => {
            tracing::debug!(pid = guard.process.id(), "orphan guard started");
            let _ = GUARD.set(Mutex::new(guard));
        }
        Err(err) => tracing::warn!(
            error = %err,
            "cannot start the orphan guard: if lit-mux is killed with SIGKILL, grandchildren of MCP servers may survive"
        ),
    }
}

fn spawn() -> std::io::Result<Guard> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut process = Command::new(exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let lifeline = process.stdin.take();
    Ok(Guard { process, lifeline })
}

/// The guard's pid, which is a child of lit-mux that is not an MCP server.
pub fn pid() -> Option<u32> {
    guard().map(|guard| guard.process.id())
}

/// Tells the guard about a new process group (led by `pgid`).
pub fn register(pgid: u32) {
    send(&format!("+{pgid}\n"));
}

/// Tells the guard that a process group is gone.
pub fn unregister(pgid: u32) {
    send(&format!("-{pgid}\n"));
}

fn send(line: &str) {
    // A few bytes into a pipe the guard drains at once: the write does not block.
    if let Some(mut guard) = guard()
        && let Some(lifeline) = guard.lifeline.as_mut()
        && lifeline.write_all(line.as_bytes()).is_err()
    {
        tracing::warn!("the orphan guard is gone");
        guard.lifeline = None;
    }
}

/// Closes the lifeline (the guard then exits, killing nothing if every group was unregistered)
/// and reaps the guard. Called at the end of a normal shutdown.
pub fn shutdown() {
    if let Some(mut guard) = guard() {
        guard.lifeline = None;
        let _ = guard.process.wait();
    }
}

/// The guard's main loop: run as `lit-mux __orphan-guard`.
pub fn run() -> std::process::ExitCode {
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        blocked.add(signal);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None);
    let mut groups = BTreeSet::new();
    let stdin = std::io::stdin();
    let mut line = String::new();
    let mut reader = stdin.lock();
    // EOF or a read error both mean lit-mux is gone.
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        let entry = line.trim();
        let (sign, number) = entry.split_at(entry.len().min(1));
        if let Ok(pgid) = number.parse::<i32>()
            && pgid > 1
        {
            match sign {
                "+" => {
                    groups.insert(pgid);
                }
                "-" => {
                    groups.remove(&pgid);
                }
                _ => {}
            }
        }
        line.clear();
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    std::process::ExitCode::SUCCESS
}
