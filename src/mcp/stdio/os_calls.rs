//! The only `unsafe` of the stdio transport: the two `pre_exec` hooks (lit-mux starting a
//! keeper, a keeper starting its server), taking over the keeper's report descriptor, and
//! putting a signal's action back to its default. Each is a plain system call that the safe
//! wrappers in use do not cover.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

use nix::libc;
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};

/// The descriptor on which a keeper reports the server's pid (or why it could not start it).
pub(super) const REPORT_FD: RawFd = 3;

/// Between fork and exec of a keeper: ask for `lifeline` when the spawning thread dies, check
/// that lit-mux is still the parent, put `report` on [`REPORT_FD`], and mark every other
/// descriptor above stderr close-on-exec.
pub(super) fn add_keeper_pre_exec_hook(
    command: &mut std::process::Command,
    report: RawFd,
    lifeline: Signal,
) {
    let parent = Pid::this();
    let hook = move || {
        prctl::set_pdeathsig(lifeline)?;
        if getppid() != parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: dup2, fcntl and close_range only change this (forked) process's descriptor
        // table; they touch no memory. `report` is open here: the parent holds it until the
        // spawn returns. dup2 onto itself would keep its close-on-exec flag, hence the fcntl.
        unsafe {
            if report == REPORT_FD {
                if libc::fcntl(REPORT_FD, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(report, REPORT_FD) == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        mark_close_on_exec_from(REPORT_FD + 1);
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe calls
    // are allowed: prctl, getppid, dup2, fcntl and close_range are plain system calls, and the
    // hook neither allocates nor takes a lock (its errors are raw OS errors, which allocate
    // nothing).
    unsafe {
        command.pre_exec(hook);
    }
}

/// Between fork and exec of a server (in its keeper): unblock every signal (the keeper blocks
/// those it waits for, and a mask survives exec), ask for SIGKILL when the keeper dies, check
/// that the keeper is still the parent, and mark every descriptor above stderr close-on-exec
/// (the report descriptor and whatever the keeper inherited).
pub(super) fn add_server_pre_exec_hook(command: &mut std::process::Command) {
    use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
    let parent = Pid::this();
    let hook = move || {
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        prctl::set_pdeathsig(Signal::SIGKILL)?;
        if getppid() != parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        mark_close_on_exec_from(3);
        Ok(())
    };
    // SAFETY: as for the keeper's hook: plain system calls (sigprocmask too), no allocation, no
    // lock. The keeper is single-threaded besides, so no lock can be held by another thread at
    // the fork.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Marks every descriptor from `first` up close-on-exec. The standard library's own pipe that
/// reports a failed exec is among them, which is why this marks instead of closing. On a kernel
/// without the call (before Linux 5.11) it fails and changes nothing.
fn mark_close_on_exec_from(first: RawFd) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on this process's
    // descriptors; it touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// The keeper's report descriptor, marked close-on-exec; `None` when nothing is open there
/// (the keeper was not started by lit-mux).
pub(super) fn take_report_fd() -> Option<OwnedFd> {
    // SAFETY: fcntl on a descriptor number touches no memory; it fails with EBADF when the
    // number is not open, and then nothing takes it over.
    let open = unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) } != -1;
    // SAFETY: the descriptor is open, and nothing else in the keeper owns it: lit-mux put it
    // there for this one use, and this is called once, at the keeper's start.
    open.then(|| unsafe { OwnedFd::from_raw_fd(REPORT_FD) })
}

/// Puts `signal`'s action back to its default (the Rust runtime ignores SIGPIPE, and an ignored
/// SIGCHLD would make the kernel reap children without telling their status).
pub(super) fn restore_default_action(signal: Signal) -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    unsafe { sigaction(signal, &default) }.map(drop)
}
