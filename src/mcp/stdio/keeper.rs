//! The keeper: a small process (`lit-mux __mcp-keeper -- PROGRAM ARGS…`) between lit-mux and
//! each MCP server, there so that no descendant of a server outlives it.
//!
//! Why a process of its own: a descendant that calls `setsid` leaves the server's process
//! group, and one whose parent exits (a daemon's double fork) is re-parented, so neither group
//! signals nor a walk of parent links from the server can find it. Linux re-parents an orphan
//! to its nearest living ancestor marked `PR_SET_CHILD_SUBREAPER`, and to init only when there
//! is none. lit-mux itself cannot be that ancestor: when it is killed with SIGKILL the server
//! dies of its death signal and its orphans go to init before anything can look for them, and a
//! helper that is not their ancestor (the orphan guard) can never adopt them. The keeper is
//! their ancestor, marked subreaper, and it is single-threaded and does nothing else, so:
//!
//! - every descendant of the server that loses its parent becomes the keeper's child, whatever
//!   group or session it moved to;
//! - when the server exits (by itself, or stopped by lit-mux's stop sequence, which signals the
//!   server's group and never the keeper's), the keeper kills its children, reaps them, and
//!   repeats until it has none (each death re-parents the dead one's children to it), then
//!   exits as the server did: the same exit code, or killed by the same signal (core dumps off),
//!   so lit-mux reads the server's exit status from the keeper's;
//! - when lit-mux dies, however it dies, the keeper gets [`LIFELINE_SIGNAL`] (its
//!   `PR_SET_PDEATHSIG`, set between fork and exec, blocked and taken with `sigwait`, never run
//!   in a handler), kills the whole tree the same way and exits.
//!
//! The server runs in its own process group with `PR_SET_PDEATHSIG(SIGKILL)` towards the keeper,
//! so a keeper killed with SIGKILL still takes its server with it. The keeper runs in a group of
//! its own too (out of reach of a terminal's Ctrl-C and of the server's group signals) and passes
//! its stdin, stdout and stderr (lit-mux's pipes) to the server, then puts `/dev/null` on its
//! own, so the pipes close when the server's side closes. It reports the server's pid, or the
//! error that kept it from starting, on descriptor 3, a pipe to lit-mux, which it closes before
//! it waits; the server gets no descriptor but 0, 1 and 2.
//!
//! What it cannot catch: a process started on the server's behalf by another process outside
//! its tree (a service manager, `at`), and one that kills the keeper itself first (a process of
//! the same user may signal it); only a cgroup per server would hold those.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, raise, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::os_calls;

/// The hidden subcommand that runs a keeper.
pub const SUBCOMMAND: &str = "__mcp-keeper";
/// The keeper's option giving the server's soft open-file limit.
pub const NOFILE_SOFT_FLAG: &str = "--nofile-soft";

/// What the keeper gets when lit-mux dies (its death signal) or when anyone asks it to end:
/// it kills the server's whole tree, then exits.
pub(super) const LIFELINE_SIGNAL: Signal = Signal::SIGTERM;

/// The keeper's exit code when the server could not be started (a shell's "cannot run").
const CANNOT_RUN: u8 = 127;

/// The signals the keeper waits for, blocked from its start: a child's death, and the requests
/// to end (lit-mux's death, or a person's `kill`/Ctrl-C/hang-up).
fn waited_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        LIFELINE_SIGNAL,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    set
}

/// The keeper's main: run as `lit-mux __mcp-keeper [--nofile-soft N] -- PROGRAM ARGS…` by
/// lit-mux only; the server gets `N` as its soft open-file limit.
pub fn run(nofile_soft: Option<u64>, command: &[OsString]) -> ExitCode {
    let Some(report) = os_calls::take_report_fd() else {
        eprintln!("lit-mux: {SUBCOMMAND} is started by lit-mux, with a pipe on descriptor 3");
        return ExitCode::from(2);
    };
    let mut report = std::fs::File::from(report);
    let Some((program, args)) = command.split_first() else {
        let _ = writeln!(report, "error 0 no command to run");
        return ExitCode::from(CANNOT_RUN);
    };
    let waited = waited_signals();
    let prepared = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), None)
        .and_then(|()| os_calls::restore_default_action(Signal::SIGCHLD))
        .and_then(|()| prctl::set_child_subreaper(true))
        .and_then(|()| nofile_soft.map_or(Ok(()), crate::descriptor_limit::lower_soft_to));
    if let Err(errno) = prepared {
        let _ = writeln!(report, "error {} {errno}", errno as i32);
        return ExitCode::from(CANNOT_RUN);
    }

    let mut server = std::process::Command::new(program);
    // The standard library gives the server SIGPIPE's default action, the hook an empty mask.
    server.args(args).process_group(0);
    os_calls::add_server_pre_exec_hook(&mut server);
    let server = match server.spawn() {
        Ok(child) => child,
        Err(err) => {
            let _ = writeln!(report, "error {} {err}", err.raw_os_error().unwrap_or(0));
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let Ok(raw_pid) = i32::try_from(server.id()) else {
        return ExitCode::from(CANNOT_RUN);
    };
    let server = Pid::from_raw(raw_pid);
    let _ = writeln!(report, "pid {server}");
    drop(report);
    release_stdio();

    let exited = wait_for_server(server, &waited);
    let reaped = kill_every_descendant(server);
    match exited.or(reaped) {
        Some(status) => exit_as(status),
        None => ExitCode::FAILURE,
    }
}

/// Puts `/dev/null` on the keeper's stdin, stdout and stderr: lit-mux's pipes stay with the
/// server alone, so each closes when the server's side does.
fn release_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
}

/// Reaps children (orphans adopted on the way) until the server itself exits: its status.
/// `None` when asked to end first.
fn wait_for_server(server: Pid, waited: &SigSet) -> Option<WaitStatus> {
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(status) if status.pid() == Some(server) => return Some(status),
                    Ok(_) | Err(Errno::EINTR) => {}
                    // ECHILD: nobody left, not even the server (reaped by now).
                    Err(_) => return None,
                }
            },
            Ok(_) | Err(_) => return None,
        }
    }
}

/// Kills every child, reaps one, and again, until there are none: the children of each one
/// that dies are re-parented to the keeper before its death is reported, so each round sees
/// them. Returns the server's status if it was reaped here.
fn kill_every_descendant(server: Pid) -> Option<WaitStatus> {
    let mut server_status = None;
    loop {
        for child in children() {
            let _ = kill(child, Signal::SIGKILL);
        }
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(server) => server_status = Some(status),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return server_status,
        }
    }
}

/// The keeper's children: from its `children` file (the keeper has one thread), else from the
/// parent links of every process.
fn children() -> Vec<Pid> {
    let me = Pid::this();
    if let Ok(list) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        return list
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .map(Pid::from_raw)
            .collect();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                    parent.parse::<i32>().ok()
                })
                .is_some_and(|parent| parent == me.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// Exits as the server did: its exit code, or death by its signal (without a core dump).
fn exit_as(status: WaitStatus) -> ExitCode {
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        WaitStatus::Signaled(_, signal, _) => {
            let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
            let _ = os_calls::restore_default_action(signal);
            let mut only = SigSet::empty();
            only.add(signal);
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
            let _ = raise(signal);
            // Still here: a signal whose default action is not to terminate.
            ExitCode::from(128u8.saturating_add(signal as u8))
        }
        _ => ExitCode::FAILURE,
    }
}
