//! Spawning an MCP server's process, and the process handle that reaps it: the only `unsafe` in
//! lit-mux.
//!
//! Every child gets its own process group and `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it
//! when the lit-mux thread that spawned it dies, even by SIGKILL. The standard library can put a
//! child in a group through `posix_spawn` (a vfork), but the death signal needs code between fork
//! and exec, and with a `pre_exec` hook the standard library falls back to a real `fork`: copying
//! lit-mux's page tables, then a copy-on-write fault on every page lit-mux writes until the child
//! has exec'd. That cost 0.7 ms per spawn here, a 40 % slower `POST /mcp/servers`. So this module
//! does what glibc's `posix_spawn` does, plus the `prctl`: `clone(CLONE_VM | CLONE_VFORK)` runs
//! the child on a small stack of its own inside lit-mux's memory while the calling thread sleeps
//! until the child has exec'd or failed to; between clone and exec the child makes only
//! async-signal-safe system calls on data prepared beforehand (it allocates nothing).
//!
//! [`spawn_guarded`] is a custom spawner for process-wrap (`CommandWrap::spawn_with_child`), so the
//! group handling of `ProcessGroup` and `KillOnDrop` stay process-wrap's. The child it returns is
//! watched and reaped through a pidfd (Linux ≥ 5.3), which also keeps every signal sent to it from
//! reaching another process that reused its pid.
//!
//! The death signal is tied to the spawning *thread*: spawn from long-lived runtime worker
//! threads, never from `spawn_blocking` threads, which exit when idle and would kill the child.

#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString, c_int, c_void};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use process_wrap::tokio::ChildWrapper;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};

/// The child's stack between clone and exec: a handful of system calls need far less.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Where a program without a `/` is looked up when the environment has no `PATH` (glibc's
/// `execvp` default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Spawns `command` with stdin, stdout and stderr piped, as the leader of a new process group,
/// with `PR_SET_PDEATHSIG(SIGKILL)`. Reads the program, arguments, environment changes, working
/// directory and kill-on-drop flag from `command`; its stdio settings are not read (always piped).
pub fn spawn_guarded(command: &mut Command) -> io::Result<Box<dyn ChildWrapper>> {
    let kill_on_drop = command.get_kill_on_drop();
    let command = command.as_std();
    let environment = environment(command);
    let cwd = command.get_current_dir();
    let program = resolve_program(command.get_program(), &environment, cwd)?;
    let argv_strings = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(c_string)
        .collect::<io::Result<Vec<_>>>()?;
    let env_strings = environment
        .iter()
        .map(|(key, value)| {
            let mut entry = key.clone();
            entry.push("=");
            entry.push(value);
            c_string(&entry)
        })
        .collect::<io::Result<Vec<_>>>()?;

    let (stdin_child, stdin_ours) = pipe()?;
    let (stdout_ours, stdout_child) = pipe()?;
    let (stderr_ours, stderr_child) = pipe()?;
    let plan = ChildPlan {
        program: c_string(program.as_os_str())?,
        argv: null_terminated(&argv_strings),
        envp: null_terminated(&env_strings),
        cwd: cwd.map(|dir| c_string(dir.as_os_str())).transpose()?,
        stdio: [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        parent: std::process::id() as libc::pid_t,
        last_signal: libc::SIGRTMAX(),
        failure: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let pid = clone_and_exec(&plan, &mut stack)?;
    // The child has exec'd or exited: its copies of the pipe ends are its own now.
    drop((stdin_child, stdout_child, stderr_child));
    let failure = plan.failure.load(Ordering::Acquire);
    if failure != 0 {
        // It has exited (`_exit` before the clone returned): reap it, then report why.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(io::Error::from_raw_os_error(failure));
    }
    let pidfd = match pidfd_open(pid).and_then(watchable) {
        Ok(pidfd) => pidfd,
        Err(err) => {
            let raw = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::killpg(raw, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(raw, None);
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "cannot watch the child through a pidfd (Linux 5.3 or later is needed): {err}"
                ),
            ));
        }
    };
    // Killed and reaped on drop until it is handed over: if registering a pipe with the runtime
    // fails below, the child must not outlive this function.
    let mut child = GuardedChild {
        pid: pid as u32,
        pidfd: Some(pidfd),
        status: None,
        kill_on_drop: true,
        stdin: None,
        stdout: None,
        stderr: None,
    };
    child.stdin = Some(ChildStdin::from_std(std::process::ChildStdin::from(
        stdin_ours,
    ))?);
    child.stdout = Some(ChildStdout::from_std(std::process::ChildStdout::from(
        stdout_ours,
    ))?);
    child.stderr = Some(ChildStderr::from_std(std::process::ChildStderr::from(
        stderr_ours,
    ))?);
    child.kill_on_drop = kill_on_drop;
    Ok(Box::new(child))
}

/// lit-mux's environment with the command's changes applied.
fn environment(command: &std::process::Command) -> Vec<(OsString, OsString)> {
    let mut environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (key, value) in command.get_envs() {
        environment.retain(|(existing, _)| existing != key);
        if let Some(value) = value {
            environment.push((key.to_os_string(), value.to_os_string()));
        }
    }
    environment
}

/// The file to exec: a program with a `/` as given, otherwise the first executable file of that
/// name in the child's `PATH` (as `execvp` does, but before the clone: the child must not
/// allocate).
fn resolve_program(
    program: &OsStr,
    environment: &[(OsString, OsString)],
    cwd: Option<&Path>,
) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let search = environment
        .iter()
        .find(|(key, _)| key == "PATH")
        .map_or_else(|| OsString::from(DEFAULT_PATH), |(_, value)| value.clone());
    let mut denied = false;
    for dir in std::env::split_paths(&search) {
        // An empty entry means the working directory, as for the shell.
        let dir = match (dir.as_os_str().is_empty(), cwd) {
            (true, Some(cwd)) => cwd.to_path_buf(),
            (true, None) => PathBuf::from("."),
            (false, _) => dir,
        };
        let candidate = dir.join(program);
        if !candidate.is_file() {
            continue;
        }
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

fn c_string(value: &OsStr) -> io::Result<CString> {
    CString::new(value.to_os_string().into_vec()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", value.to_string_lossy()),
        )
    })
}

/// `execve`'s argument form: pointers into `strings`, which must outlive it, then a null.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec pipe, `(read, write)`, both ends above the standard descriptors: the child
/// moves its ends onto 0, 1 and 2, which must not clobber one another.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new descriptor or -1.
    let duplicate = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if duplicate < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `duplicate` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(duplicate) })
}

/// Everything the child needs between clone and exec, prepared by the parent.
struct ChildPlan {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    /// The child's stdin, stdout and stderr, in that order.
    stdio: [RawFd; 3],
    /// lit-mux's pid: if the child's parent is another process, lit-mux died before the `prctl`
    /// and nobody would send the death signal.
    parent: libc::pid_t,
    /// The highest signal number, whose disposition the child resets.
    last_signal: c_int,
    /// The errno of the step that failed in the child; 0 while none did.
    failure: AtomicI32,
}

/// Clones the calling thread into a child that runs [`child_main`] and returns once the child
/// has exec'd or exited. Signals are blocked around the clone so that none is handled in the
/// child while it still runs in lit-mux's memory.
fn clone_and_exec(plan: &ChildPlan, stack: &mut [u8]) -> io::Result<libc::pid_t> {
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask only fill and swap masks.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // The stack grows down from its 16-byte aligned end.
    let top = stack.as_mut_ptr_range().end;
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: with CLONE_VFORK this thread is suspended until the child execs or exits, so
    // `plan` (which the child only reads, except `failure`, an atomic) and `stack` outlive every
    // use the child makes of them. The child runs only async-signal-safe calls (see child_main).
    let pid = unsafe {
        libc::clone(
            child_main,
            top.cast::<c_void>(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(plan).cast_mut().cast::<c_void>(),
        )
    };
    let error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
    }
    if pid < 0 { Err(error) } else { Ok(pid) }
}

/// The child, from clone to exec. It shares lit-mux's memory and this thread's thread-local
/// storage (errno), so it must not allocate, lock or unwind.
extern "C" fn child_main(plan: *mut c_void) -> c_int {
    // SAFETY: `plan` is the ChildPlan that clone_and_exec keeps alive until this child has
    // exec'd or exited.
    let plan = unsafe { &*plan.cast_const().cast::<ChildPlan>() };
    // SAFETY: see prepare_and_exec.
    let failure = unsafe { prepare_and_exec(plan) };
    plan.failure.store(failure.max(1), Ordering::Release);
    // SAFETY: _exit ends the child without running anything of lit-mux's (no atexit, no flush).
    unsafe { libc::_exit(127) }
}

/// Runs in the child: returns only if a step failed, with its errno.
///
/// # Safety
/// Only from [`child_main`]: every call here is an async-signal-safe system call wrapper.
unsafe fn prepare_and_exec(plan: &ChildPlan) -> c_int {
    let errno = || unsafe { *libc::__errno_location() };
    unsafe {
        // Handlers lit-mux installed (tokio's signal driver) must not run in this child: every
        // caught signal goes back to its default. Ignored ones stay ignored across exec, except
        // SIGPIPE, which the Rust runtime ignores for lit-mux's own sake.
        for signal in 1..=plan.last_signal {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let caught =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if caught || (signal == libc::SIGPIPE && current.sa_sigaction == libc::SIG_IGN) {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            if libc::dup2(fd, target as c_int) < 0 {
                return errno();
            }
        }
        // Nothing else lit-mux has open reaches the child, not even descriptors lit-mux
        // inherited without close-on-exec (`close_range` needs Linux 5.9; older kernels skip it).
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        if libc::setpgid(0, 0) != 0 {
            return errno();
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return errno();
        }
        if libc::getppid() != plan.parent {
            return libc::ESRCH;
        }
        if let Some(cwd) = &plan.cwd
            && libc::chdir(cwd.as_ptr()) != 0
        {
            return errno();
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
        errno()
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new close-on-exec descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Registers a pidfd with the runtime, which reports it readable once the process has exited.
fn watchable(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open, and unchanged, until it
    // is dropped or taken back with into_inner.
    unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
}

fn pidfd_send_signal(pidfd: &OwnedFd, signal: c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with no siginfo and no flags only sends the signal.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps the process behind `pidfd` if it has exited (`Ok(None)` while it runs).
fn reap(pidfd: &OwnedFd, block: bool) -> io::Result<Option<ExitStatus>> {
    let mut flags = WaitPidFlag::WEXITED;
    if !block {
        flags |= WaitPidFlag::WNOHANG;
    }
    match waitid(Id::PIDFd(pidfd.as_fd()), flags)? {
        WaitStatus::Exited(_, code) => Ok(Some(ExitStatus::from_raw((code & 0xff) << 8))),
        WaitStatus::Signaled(_, signal, core_dumped) => Ok(Some(ExitStatus::from_raw(
            signal as c_int | if core_dumped { 0x80 } else { 0 },
        ))),
        _ => Ok(None),
    }
}

/// A child spawned by [`spawn_guarded`]: the terminal layer under process-wrap's wrappers.
#[derive(Debug)]
struct GuardedChild {
    pid: u32,
    /// `None` only while being dropped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// Set once the process is reaped.
    status: Option<ExitStatus>,
    kill_on_drop: bool,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl GuardedChild {
    fn pidfd(&self) -> io::Result<&AsyncFd<OwnedFd>> {
        self.pidfd
            .as_ref()
            .ok_or_else(|| io::Error::other("the child's pidfd is closed"))
    }

    fn send(&self, signal: c_int) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match pidfd_send_signal(self.pidfd()?.get_ref(), signal) {
            // Exited, not reaped yet: nothing left to signal.
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

impl ChildWrapper for GuardedChild {
    fn inner(&self) -> &dyn ChildWrapper {
        self
    }
    fn inner_mut(&mut self) -> &mut dyn ChildWrapper {
        self
    }
    fn into_inner(self: Box<Self>) -> Box<dyn ChildWrapper> {
        self
    }
    fn stdin(&mut self) -> &mut Option<ChildStdin> {
        &mut self.stdin
    }
    fn stdout(&mut self) -> &mut Option<ChildStdout> {
        &mut self.stdout
    }
    fn stderr(&mut self) -> &mut Option<ChildStderr> {
        &mut self.stderr
    }
    fn id(&self) -> Option<u32> {
        // Like tokio's Child: no pid once reaped, as it may belong to another process by then.
        self.status.is_none().then_some(self.pid)
    }
    fn start_kill(&mut self) -> io::Result<()> {
        self.send(libc::SIGKILL)
    }
    fn signal(&self, signal: i32) -> io::Result<()> {
        self.send(signal)
    }
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let status = reap(self.pidfd()?.get_ref(), false)?;
        self.status = status;
        Ok(status)
    }
    fn wait(&mut self) -> Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + '_>> {
        Box::pin(async move {
            loop {
                if let Some(status) = self.try_wait()? {
                    return Ok(status);
                }
                // A pidfd turns readable when its process exits.
                self.pidfd()?.readable().await?.clear_ready();
            }
        })
    }
}

impl Drop for GuardedChild {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        if self.status.is_some() {
            return;
        }
        if self.kill_on_drop {
            let _ = pidfd_send_signal(pidfd.get_ref(), libc::SIGKILL);
        }
        // Never leave a zombie: reap it once it has exited, without blocking the dropping thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    loop {
                        match reap(pidfd.get_ref(), false) {
                            Ok(None) => {}
                            Ok(Some(_)) | Err(_) => return,
                        }
                        match pidfd.readable().await {
                            Ok(mut ready) => ready.clear_ready(),
                            Err(_) => return,
                        }
                    }
                });
            }
            Err(_) => {
                let pidfd = pidfd.into_inner();
                let _ = std::thread::Builder::new()
                    .name("lit-mux-reaper".into())
                    .spawn(move || reap(&pidfd, true));
            }
        }
    }
}
