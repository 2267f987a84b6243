//! Starting a server's process: the only `unsafe` in `mcp`, one `pre_exec` hook.
//!
//! What every child gets:
//! - stdin, stdout and stderr as pipes whose other ends lit-mux holds, and no other descriptor
//!   of lit-mux's: lit-mux opens everything close-on-exec, and the hook marks close-on-exec
//!   whatever lit-mux inherited without that flag (a parent's jobserver pipe, say);
//! - its own process group (process-wrap's `ProcessGroup`), so that the stop sequence can
//!   signal it together with every descendant that stayed in the group;
//! - `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it when the lit-mux thread that spawned
//!   it dies, even when lit-mux is killed with SIGKILL;
//! - exactly the environment and program path `mcp::launch` decided (the transport it is given
//!   holds the whole environment), no blocked signals, and SIGPIPE back at its default (the
//!   standard library's doing).
//!
//! The death signal is tied to the spawning *thread*: spawn from the runtime's worker threads,
//! which live as long as lit-mux, never from `spawn_blocking` threads, which exit when idle.
//! A child that lost its parent before the hook ran would never get the signal: it refuses to
//! start instead.

use std::process::Stdio;

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::orphan_guard;
use crate::config::StdioTransport;

/// A child just spawned, its pipes taken out.
pub(super) struct Spawned {
    pub pid: u32,
    pub child: Box<dyn ChildWrapper>,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Spawns the server's command with its pipes, in a group of its own, registered with the
/// orphan guard. Errors are the operating system's (`No such file or directory`, …).
pub(super) fn spawn(transport: &StdioTransport) -> std::io::Result<Spawned> {
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
    let mut command = tokio::process::Command::new(&transport.command);
    command
        .args(&transport.args)
        .env_clear()
        .envs(&transport.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    add_pre_exec_hook(command.as_std_mut());
    let mut wrapped = CommandWrap::from(command);
    wrapped.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    let mut child = wrapped.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the child has no pid"))?;
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
        pid,
        child,
        stdin,
        stdout,
        stderr,
    })
}

/// Between fork and exec: asks for SIGKILL when the spawning thread dies, checks that lit-mux
/// is still the parent, and marks every descriptor above stderr close-on-exec.
#[allow(unsafe_code)]
fn add_pre_exec_hook(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;

    use nix::libc;
    use nix::sys::prctl;
    use nix::sys::signal::Signal;
    use nix::unistd::{Pid, getppid};

    let parent = Pid::this();
    let hook = move || {
        prctl::set_pdeathsig(Signal::SIGKILL)?;
        if getppid() != parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors of this
        // (forked) process; it touches no memory. The standard library's own pipe that reports
        // a failed exec is above stderr too, which is why this marks instead of closing. On a
        // kernel without the call (before Linux 5.11) it fails and changes nothing.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe calls
    // are allowed: prctl, getppid and close_range are plain system calls, and the hook neither
    // allocates nor takes a lock (its errors are raw OS errors, which allocate nothing).
    unsafe {
        command.pre_exec(hook);
    }
}
