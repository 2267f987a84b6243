//! The stop sequence, and the signals it sends: close stdin and wait; SIGTERM the server's
//! process group (and the descendants that left it) and wait; SIGKILL; wait for the reaping.
//! The keeper is never signalled here: once the server is gone, it kills whatever is left of
//! the server's tree and exits.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::mcp::connection::ExitInfo;

/// Stop sequence: how long a child gets to exit after its stdin closes, then after SIGTERM.
const STDIN_CLOSE_GRACE: Duration = Duration::from_secs(1);
const SIGTERM_GRACE: Duration = Duration::from_secs(2);
/// After SIGKILL the kernel ends the process at once; this only bounds a process stuck in the
/// kernel (uninterruptible I/O) so that a stop always returns.
const SIGKILL_WAIT: Duration = Duration::from_secs(2);

/// A server and its keeper.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerTree {
    pub keeper: u32,
    /// The server, the leader of its own process group.
    pub server: u32,
}

/// Close stdin, wait; SIGTERM the group (and strays), wait; SIGKILL; wait for the reaping.
pub(super) async fn stop_process(
    tree: ServerTree,
    close_stdin: &CancellationToken,
    exit: watch::Receiver<Option<ExitInfo>>,
) -> ExitInfo {
    let pid = tree.server;
    // The keeper's descendants outside the server's group: those that left it, below the server
    // or already adopted by the keeper. They get the server's SIGTERM, a chance to end cleanly.
    let strays = descendants_outside_group(tree.keeper, pid);
    close_stdin.cancel();
    // Once the keeper has exited, nothing of the tree is left to signal (and the strays' pids
    // may already belong to other processes).
    if let Ok(info) = tokio::time::timeout(STDIN_CLOSE_GRACE, wait_for_exit(exit.clone())).await {
        return info;
    }
    signal_all(pid, &strays, Signal::SIGTERM);
    if let Ok(info) = tokio::time::timeout(SIGTERM_GRACE, wait_for_exit(exit.clone())).await {
        return info;
    }
    signal_all(pid, &strays, Signal::SIGKILL);
    match tokio::time::timeout(SIGKILL_WAIT, wait_for_exit(exit)).await {
        Ok(info) => info,
        Err(_) => ExitInfo::unknown("did not exit after SIGKILL"),
    }
}

/// Signals the process group led by `pid` and the strays. Errors mean "nobody left to signal".
pub(super) fn signal_all(pid: u32, strays: &[Pid], signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
    for stray in strays {
        let _ = kill(*stray, signal);
    }
}

/// Descendants of `root` (by parent links in `/proc`) that are not in the process group
/// `group`, e.g. daemons that called `setsid`. Empty where `/proc` cannot be read.
fn descendants_outside_group(root: u32, group: u32) -> Vec<Pid> {
    let (Ok(root), Ok(group_id)) = (i32::try_from(root), i32::try_from(group)) else {
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
                if group != group_id {
                    found.push(p);
                }
            }
        }
    }
    found.into_iter().map(Pid::from_raw).collect()
}

/// Waits until the task that owns the process has published its exit status.
pub(super) async fn wait_for_exit(mut exit: watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
    match exit.wait_for(Option::is_some).await {
        Ok(info) => info.clone().unwrap_or_else(|| ExitInfo::unknown("exited")),
        // The watcher is gone without a status: only when the runtime is shutting down.
        Err(_) => ExitInfo::unknown("exit status unknown"),
    }
}
