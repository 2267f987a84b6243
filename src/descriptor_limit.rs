//! The open-file limit: raised for lit-mux itself, given back to the programs it starts.
//!
//! Every connection, MCP child pipe and database file is a descriptor, and distributions start
//! processes at a soft limit of 1024, so lit-mux raises its soft limit to the hard one at start.
//! The programs it runs get the soft limit lit-mux was started with instead: some still use
//! `select()`, which breaks above 1024, and others walk every possible descriptor at start.

use std::sync::OnceLock;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft limit lit-mux was started with, once [`raise`] has run.
static STARTED_WITH: OnceLock<u64> = OnceLock::new();

/// Raises the soft limit on open files to the hard one and returns the soft limit now in effect.
pub fn raise() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        // Unreadable only on exotic systems: the conventional soft default.
        return 1024;
    };
    let _ = STARTED_WITH.set(soft);
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::debug!(from = soft, to = hard, "raised the open-file limit");
            hard
        }
        Err(err) => {
            tracing::warn!(error = %err, soft, hard, "cannot raise the open-file limit");
            soft
        }
    }
}

/// The soft limit a program lit-mux starts gets: the one lit-mux was started with, when lit-mux
/// raised its own.
pub fn for_children() -> Option<u64> {
    let started_with = *STARTED_WITH.get()?;
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    (started_with < soft).then_some(started_with)
}

/// Sets this process's soft limit to `soft` (bounded by the hard limit); for a process about to
/// start a program in lit-mux's place.
pub fn lower_soft_to(soft: u64) -> nix::Result<()> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)
}
