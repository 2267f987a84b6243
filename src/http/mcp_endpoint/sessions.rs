//! The `/mcp` sessions, at most `mcp_endpoint.max_sessions` of them: rmcp's in-memory session
//! manager with a cap and least-recently-used eviction around it.
//!
//! A session is *busy* while it has a response stream open (a request being answered, its
//! standalone `GET` stream, a resumed stream) or is being initialized, and *idle* otherwise.
//!
//! Invariants:
//! - Sessions plus those being created never exceed the cap: at the cap, creating one first
//!   closes the idle session used least recently; when every session is busy the creation is
//!   refused ([`SessionsFull`]) and nothing is created.
//! - An evicted session is closed in rmcp too, so its worker and handler go, and a client that
//!   uses its id again gets 404 as for any unknown session.
//! - The bookkeeping lock is never held across an `.await`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};

tokio::task_local! {
    /// Set by a refused creation inside [`CappedSessions::refusals_seen`], so the endpoint can
    /// answer 503 where rmcp would answer a creation error with 500.
    static REFUSED: std::cell::Cell<bool>;
    /// Set by a close inside [`CappedSessions::close_seen`]: whether the session existed, so the
    /// endpoint can answer 404 for an unknown or ended one where rmcp answers 202 to any.
    static CLOSED: std::cell::Cell<Option<bool>>;
}

/// Why a session could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error(transparent)]
    Full(#[from] SessionsFull),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// Every one of the `max_sessions` sessions is busy.
#[derive(Debug, thiserror::Error)]
#[error(
    "too many MCP sessions: all {max_sessions} are busy (mcp_endpoint.max_sessions); retry later"
)]
pub struct SessionsFull {
    pub max_sessions: usize,
}

/// rmcp's [`LocalSessionManager`] with at most `max_sessions` sessions.
pub struct CappedSessions {
    inner: LocalSessionManager,
    max_sessions: usize,
    usage: Arc<Mutex<Usage>>,
}

#[derive(Default)]
struct Usage {
    /// Ticks on every use; a session's `last_used` orders eviction.
    clock: u64,
    /// Creations under way, counted against the cap before their id exists.
    creating: usize,
    sessions: HashMap<SessionId, SessionUse>,
}

struct SessionUse {
    last_used: u64,
    /// Open streams and initializations under way.
    busy: usize,
}

impl Usage {
    /// Marks `id` used now.
    fn touch(&mut self, id: &SessionId) {
        self.clock += 1;
        if let Some(session) = self.sessions.get_mut(id) {
            session.last_used = self.clock;
        }
    }

    /// The idle session used least recently.
    fn least_recently_used_idle(&self) -> Option<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, session)| session.busy == 0)
            .min_by_key(|(_, session)| session.last_used)
            .map(|(id, _)| id.clone())
    }
}

fn lock(usage: &Mutex<Usage>) -> MutexGuard<'_, Usage> {
    // Each critical section leaves the map consistent; a panic cannot leave it half-changed.
    usage.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CappedSessions {
    /// `max_sessions` is at least 1 (the config checks it).
    pub fn new(max_sessions: usize) -> Self {
        Self {
            inner: LocalSessionManager::default(),
            max_sessions: max_sessions.max(1),
            usage: Arc::default(),
        }
    }

    /// Whether a new session would be refused now (every session is busy).
    pub fn is_full_of_busy_sessions(&self) -> bool {
        let usage = lock(&self.usage);
        usage.sessions.len() + usage.creating >= self.max_sessions
            && usage.sessions.values().all(|session| session.busy > 0)
    }

    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Runs `request` (a call of the endpoint) and tells whether a session creation inside it was
    /// refused for the cap.
    pub async fn refusals_seen<T>(request: impl Future<Output = T>) -> (T, bool) {
        REFUSED
            .scope(std::cell::Cell::new(false), async move {
                let output = request.await;
                (output, REFUSED.with(std::cell::Cell::get))
            })
            .await
    }

    /// Runs `request` (a `DELETE` of the endpoint) and tells whether it closed a session that
    /// existed (`Some(true)`), found none (`Some(false)`), or closed nothing (`None`: refused
    /// before).
    pub async fn close_seen<T>(request: impl Future<Output = T>) -> (T, Option<bool>) {
        CLOSED
            .scope(std::cell::Cell::new(None), async move {
                let output = request.await;
                (output, CLOSED.with(std::cell::Cell::get))
            })
            .await
    }

    /// Marks `id` used now and busy until the guard is dropped.
    fn busy(&self, id: &SessionId) -> BusyGuard {
        let mut usage = lock(&self.usage);
        usage.touch(id);
        if let Some(session) = usage.sessions.get_mut(id) {
            session.busy += 1;
        }
        BusyGuard {
            id: id.clone(),
            usage: Arc::clone(&self.usage),
        }
    }

    fn touch(&self, id: &SessionId) {
        lock(&self.usage).touch(id);
    }
}

/// A session busy until this is dropped.
struct BusyGuard {
    id: SessionId,
    usage: Arc<Mutex<Usage>>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut usage = lock(&self.usage);
        usage.touch(&self.id);
        if let Some(session) = usage.sessions.get_mut(&self.id) {
            session.busy = session.busy.saturating_sub(1);
        }
    }
}

/// A creation counted against the cap until its session is registered or it fails.
struct Creating(Arc<Mutex<Usage>>);

impl Drop for Creating {
    fn drop(&mut self) {
        let mut usage = lock(&self.0);
        usage.creating = usage.creating.saturating_sub(1);
    }
}

/// A response stream that keeps its session busy while it is open.
struct BusyStream<S> {
    inner: Pin<Box<S>>,
    _busy: BusyGuard,
}

impl<S: Stream> Stream for BusyStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut().inner.as_mut().poll_next(cx)
    }
}

impl SessionManager for CappedSessions {
    type Error = SessionsError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (evict, creating) = {
            let mut usage = lock(&self.usage);
            let evict = if usage.sessions.len() + usage.creating >= self.max_sessions {
                let Some(victim) = usage.least_recently_used_idle() else {
                    let _ = REFUSED.try_with(|refused| refused.set(true));
                    return Err(SessionsFull {
                        max_sessions: self.max_sessions,
                    }
                    .into());
                };
                usage.sessions.remove(&victim);
                Some(victim)
            } else {
                None
            };
            usage.creating += 1;
            (evict, Creating(Arc::clone(&self.usage)))
        };
        if let Some(victim) = evict {
            tracing::debug!(session = %victim, "MCP session closed to make room for a new one");
            self.inner.close_session(&victim).await?;
        }
        let (id, transport) = self.inner.create_session().await?;
        {
            let mut usage = lock(&self.usage);
            usage.clock += 1;
            let last_used = usage.clock;
            // Busy until `initialize_session` has answered: a session being set up is not idle.
            usage
                .sessions
                .insert(id.clone(), SessionUse { last_used, busy: 1 });
        }
        // After the lock is released: the guard takes it too.
        drop(creating);
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        // Takes over the busy mark `create_session` left.
        let _initializing = BusyGuard {
            id: id.clone(),
            usage: Arc::clone(&self.usage),
        };
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        // Every live session is counted here: an evicted one left the count when it was closed.
        let existed = lock(&self.usage).sessions.remove(id).is_some();
        let _ = CLOSED.try_with(|closed| closed.set(Some(existed)));
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let busy = self.busy(id);
        let stream = self.inner.create_stream(id, message).await?;
        Ok(BusyStream {
            inner: Box::pin(stream),
            _busy: busy,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let busy = self.busy(id);
        let stream = self.inner.create_standalone_stream(id).await?;
        Ok(BusyStream {
            inner: Box::pin(stream),
            _busy: busy,
        })
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let busy = self.busy(id);
        let stream = self.inner.resume(id, last_event_id).await?;
        Ok(BusyStream {
            inner: Box::pin(stream),
            _busy: busy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_sessions(entries: &[(&str, u64, usize)]) -> Usage {
        let mut usage = Usage::default();
        for (id, last_used, busy) in entries {
            usage.sessions.insert(
                SessionId::from(id.to_string()),
                SessionUse {
                    last_used: *last_used,
                    busy: *busy,
                },
            );
        }
        usage
    }

    #[test]
    fn the_least_recently_used_idle_session_is_the_one_to_go() {
        let usage = with_sessions(&[("old-busy", 1, 1), ("old-idle", 2, 0), ("new-idle", 3, 0)]);
        assert_eq!(
            usage.least_recently_used_idle().as_deref(),
            Some("old-idle")
        );
        let all_busy = with_sessions(&[("a", 1, 1), ("b", 2, 2)]);
        assert_eq!(all_busy.least_recently_used_idle(), None);
    }
}
