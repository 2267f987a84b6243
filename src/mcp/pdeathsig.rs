//! The only `unsafe` in lit-mux: a `pre_exec` hook asking the kernel to SIGKILL the child when
//! the thread that spawned it dies, so that even `kill -9` of lit-mux leaves no MCP child.
//!
//! The signal is tied to the spawning *thread*, not the process: children must be spawned from
//! long-lived runtime worker threads, never from `spawn_blocking` threads, which exit when idle.

#![allow(unsafe_code)]

use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};

/// Makes `command` set `PR_SET_PDEATHSIG(SIGKILL)` in the child between fork and exec.
pub fn kill_child_when_parent_thread_dies(
    command: &mut tokio::process::Command,
) -> std::io::Result<()> {
    let parent = Pid::this();
    // SAFETY: the hook runs in the forked child before exec and only makes two system calls
    // (prctl, getppid), which are async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            // lit-mux may have died between fork and prctl: then nobody would send the signal.
            if getppid() != parent {
                return Err(std::io::Error::other("lit-mux exited during spawn"));
            }
            Ok(())
        });
    }
    Ok(())
}
