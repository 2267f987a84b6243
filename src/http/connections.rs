//! Which connections are open, which of them are idle, and closing them: the cap on concurrent
//! connections (`server.max_connections`) and the timeout on idle ones.
//!
//! A connection is *idle* while no request of it is under way: from accept until its first
//! request head is complete, between keep-alive requests, and on HTTP/2 while no stream is open.
//! A request is under way from its complete head until its response has been written (a
//! streamed reply keeps its connection busy).
//!
//! Invariants:
//! - At most `max_connections` connections are registered. At the cap, a new connection takes
//!   the place of the one that has been idle the longest; only when none is idle is it refused.
//!   Silent sockets are idle, so they can never lock out a client that sends a request.
//! - An idle connection is closed once it has been idle for the idle timeout, whatever its
//!   protocol and whether it ever sent a byte.
//! - No lock is held across an `.await`: the registry is a plain mutex around a few maps.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The open connections, shared by the accept loop and every connection's task.
#[derive(Clone)]
pub struct Connections {
    registry: Arc<Mutex<Registry>>,
    max_connections: usize,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Orders idle periods: a smaller mark began earlier.
    next_idle_mark: u64,
    open: HashMap<u64, Entry>,
    /// Idle connections by the start of their idle period, oldest first.
    idle: BTreeMap<u64, u64>,
}

struct Entry {
    requests_under_way: usize,
    /// The idle period's mark in `Registry::idle` and when it began; `None` while busy.
    idle: Option<(u64, Instant)>,
    /// Cancelled to close the connection (it was evicted to make room for a new one).
    evict: CancellationToken,
    /// Told when the connection becomes idle, so its watch restarts the idle timeout.
    became_idle: Arc<Notify>,
}

impl Registry {
    fn mark_idle(&mut self, id: u64) {
        let mark = self.next_idle_mark;
        if let Some(entry) = self.open.get_mut(&id) {
            self.next_idle_mark += 1;
            entry.idle = Some((mark, Instant::now()));
            self.idle.insert(mark, id);
            entry.became_idle.notify_one();
        }
    }
}

/// Why a connection's watch ended: the connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle for the whole idle timeout.
    IdleTimeout,
    /// Closed to make room for a new connection at `server.max_connections`.
    Evicted,
}

impl Connections {
    /// `max_connections` is at least 1 (the config checks it).
    pub fn new(max_connections: usize) -> Self {
        Self {
            registry: Arc::default(),
            max_connections: max_connections.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Registers a connection just accepted, idle from now. At the cap, the connection idle the
    /// longest is closed to make room; `None` when every connection has a request under way (the
    /// new one should be refused).
    pub fn admit(&self) -> Option<Connection> {
        let mut registry = self.lock();
        if registry.open.len() >= self.max_connections {
            let (_, oldest_idle) = registry.idle.pop_first()?;
            if let Some(evicted) = registry.open.remove(&oldest_idle) {
                evicted.evict.cancel();
            }
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let evict = CancellationToken::new();
        let became_idle = Arc::new(Notify::new());
        registry.open.insert(
            id,
            Entry {
                requests_under_way: 0,
                idle: None,
                evict: evict.clone(),
                became_idle: Arc::clone(&became_idle),
            },
        );
        registry.mark_idle(id);
        Some(Connection {
            id,
            registry: Arc::clone(&self.registry),
            evict,
            became_idle,
        })
    }

    /// Connections registered now.
    pub fn count(&self) -> usize {
        self.lock().open.len()
    }
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // Every critical section leaves the maps consistent, so a panic elsewhere cannot have left
    // them half-updated.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One registered connection; dropping it unregisters the connection.
pub struct Connection {
    id: u64,
    registry: Arc<Mutex<Registry>>,
    evict: CancellationToken,
    became_idle: Arc<Notify>,
}

impl Connection {
    /// Marks a request of this connection as under way until the returned guard is dropped.
    pub fn request_started(&self) -> RequestUnderWay {
        let mut registry = lock(&self.registry);
        let Registry { open, idle, .. } = &mut *registry;
        if let Some(entry) = open.get_mut(&self.id) {
            entry.requests_under_way += 1;
            if let Some((mark, _)) = entry.idle.take() {
                idle.remove(&mark);
            }
        }
        RequestUnderWay {
            id: self.id,
            registry: Arc::clone(&self.registry),
        }
    }

    /// Resolves when the connection is to be closed: it has been idle for `idle_timeout`, or it
    /// was evicted. Never resolves while a request is under way.
    pub async fn closing(&self, idle_timeout: Duration) -> CloseReason {
        loop {
            let idle_since = {
                let registry = lock(&self.registry);
                match registry.open.get(&self.id) {
                    Some(entry) => entry.idle.map(|(_, since)| since),
                    None => return CloseReason::Evicted,
                }
            };
            let became_idle = self.became_idle.notified();
            match idle_since {
                // The deadline is checked again on waking: the connection may have been busy
                // in between and be idle since later.
                Some(since) => tokio::select! {
                    () = self.evict.cancelled() => return CloseReason::Evicted,
                    () = tokio::time::sleep_until(since + idle_timeout) => {
                        if self.idle_since() == Some(since) {
                            return CloseReason::IdleTimeout;
                        }
                    }
                    () = became_idle => {}
                },
                None => tokio::select! {
                    () = self.evict.cancelled() => return CloseReason::Evicted,
                    () = became_idle => {}
                },
            }
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        lock(&self.registry)
            .open
            .get(&self.id)
            .and_then(|entry| entry.idle.map(|(_, since)| since))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut registry = lock(&self.registry);
        if let Some(entry) = registry.open.remove(&self.id)
            && let Some((mark, _)) = entry.idle
        {
            registry.idle.remove(&mark);
        }
    }
}

/// A request under way on a connection; dropping it ends the request (its response was written,
/// or the request was abandoned).
pub struct RequestUnderWay {
    id: u64,
    registry: Arc<Mutex<Registry>>,
}

impl Drop for RequestUnderWay {
    fn drop(&mut self) {
        let mut registry = lock(&self.registry);
        let Some(entry) = registry.open.get_mut(&self.id) else {
            return;
        };
        entry.requests_under_way = entry.requests_under_way.saturating_sub(1);
        if entry.requests_under_way == 0 {
            registry.mark_idle(self.id);
        }
    }
}

/// The default for `server.max_connections`: what the descriptor limit leaves once a quarter of
/// it (at least 128) is kept for everything else lit-mux opens — three pipes per MCP child, the
/// database with its write-ahead log and reader connections, log files, the orphan guard.
pub fn default_max_connections(descriptor_limit: u64) -> usize {
    let reserved = (descriptor_limit / 4).max(128);
    let connections = descriptor_limit.saturating_sub(reserved).max(1);
    usize::try_from(connections).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let connections = Connections::new(2);
        let first = connections.admit();
        let second = connections.admit();
        assert!(first.is_some() && second.is_some());
        // The first is busy, so the second (idle) is the one to go.
        let busy = first.as_ref().map(Connection::request_started);
        let third = connections.admit();
        assert!(third.is_some());
        assert!(second.as_ref().is_some_and(|c| c.evict.is_cancelled()));
        assert!(first.as_ref().is_some_and(|c| !c.evict.is_cancelled()));
        assert_eq!(connections.count(), 2);
        // Both left are busy now: a new one is refused.
        let also_busy = third.as_ref().map(Connection::request_started);
        assert!(connections.admit().is_none());
        drop((busy, also_busy));
    }

    #[test]
    fn the_default_cap_leaves_room_for_children_and_the_database() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(256), 128);
        assert_eq!(default_max_connections(64), 1);
        assert_eq!(default_max_connections(1 << 20), 786_432);
    }
}
