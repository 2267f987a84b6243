//! This process's resource use, read from `/proc`: what `/mcp/health` reports and the leak
//! tests compare against a baseline.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Resources {
    /// File descriptors open in this process.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Processes whose parent is this process (zombies included: they are leaks too), not
    /// counting the orphan guard.
    pub children: Option<u64>,
}

pub fn current() -> Resources {
    Resources {
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64),
        max_fds: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _hard)| soft),
        rss_bytes: rss_bytes(),
        children: children(),
    }
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()? as u64;
    Some(resident_pages * page_size)
}

fn children() -> Option<u64> {
    let me = std::process::id().to_string();
    let guard = crate::mcp::orphan_guard::pid().map(|pid| pid.to_string());
    let entries = std::fs::read_dir("/proc").ok()?;
    let count = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|entry| guard.as_deref() != entry.file_name().to_str())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .is_some_and(|parent| parent == me)
        })
        .count();
    Some(count as u64)
}
