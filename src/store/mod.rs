//! Persistence of sessions and messages behind one trait, [`Store`]; SQLite (embedded, the
//! default) in [`sqlite`]. [`open`] picks the implementation from `storage.url`.
//!
//! Invariants every implementation keeps: a write returns only once it is committed (durable
//! across a kill of the process) to the database the server opened, and that database is still
//! the one at its path; the messages of one append land together or not at all, in
//! the conversation's order, and update their session's `updated_at` and `message_count` in
//! the same transaction; a write issued after another (see [`Store::append_messages`]) is
//! applied after it; a message for a session that does not exist, or was just deleted, is
//! [`StoreError::SessionNotFound`]. A failure of the storage itself is
//! [`StoreError::Unavailable`] ([`StoreError::Full`] when it is out of room), for reads and writes
//! alike, and [`Store::health`] reports it without writing. Nothing outside this module sees
//! SQL, a connection or a write queue.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::StorageConfig;

pub mod sqlite;
mod types;

pub use types::{ContextMessage, Message, NewMessage, Page, Session};

/// The `status` a message's metadata may carry that the store itself reads: for the context
/// (a failed or interrupted question), and at start (the questions still pending when the
/// server stopped). What each means is `chat::context`'s.
pub mod status {
    pub const KEY: &str = "status";
    pub const FAILED: &str = "failed";
    pub const PENDING: &str = "pending";
    pub const INTERRUPTED: &str = "interrupted";
}

/// The store the services share.
pub type SharedStore = Arc<dyn Store>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error("cannot open the database {path}: {message}")]
    Open { path: String, message: String },
    /// The storage cannot be read or written (I/O error, lock, database file deleted or
    /// replaced under the server): nothing of the operation is stored.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the file size limit) has no room for the write: nothing of it is stored.
    #[error("storage full: {0}")]
    Full(String),
    /// The database refused a statement (a constraint, bad SQL): a bug, not the storage.
    #[error("database error: {0}")]
    Refused(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage unavailable: the database is closed")]
    Closed,
}

/// Sessions and their messages.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Creates a session with no messages yet.
    async fn create_session(
        &self,
        name: Option<&str>,
        backends: &[String],
        metadata: &Map<String, Value>,
        options: &Map<String, Value>,
    ) -> Result<Session, StoreError>;

    /// Sessions, newest first.
    async fn list_sessions(&self, page: Page) -> Result<Vec<Session>, StoreError>;

    async fn session(&self, id: &str) -> Result<Session, StoreError>;

    /// Deletes the session and its messages.
    async fn delete_session(&self, id: &str) -> Result<(), StoreError>;

    /// The session's messages in conversation order.
    async fn messages(&self, session_id: &str, page: Page) -> Result<Vec<Message>, StoreError>;

    /// The last `count` messages of the session, oldest first, as the context builder needs
    /// them.
    async fn context_messages(
        &self,
        session_id: &str,
        count: usize,
    ) -> Result<Vec<ContextMessage>, StoreError>;

    /// The session and its last `count` messages (oldest first): the read every message starts
    /// with, so one round trip where the database allows it.
    async fn session_with_context(
        &self,
        id: &str,
        count: usize,
    ) -> Result<(Session, Vec<ContextMessage>), StoreError>;

    /// Appends `messages` (built by [`Message::unsaved`]) to the session, in order, in one
    /// transaction: a message and the tool steps it comes with land together.
    ///
    /// The write is issued when the returned future is first polled (or, while the store is
    /// saturated, as soon as it has room). From then on it is carried out even if the future
    /// is dropped, and every write issued after it, an update of these messages' metadata
    /// included, is applied after it. So a caller may poll this future beside other work
    /// (first, in a `biased` select) and know the write is under way before that work starts.
    async fn append_messages(
        &self,
        session_id: &str,
        messages: &[Message],
    ) -> Result<(), StoreError>;

    /// Replaces a message's metadata; an unknown message is no error (there is nothing to
    /// mark). Applied after every write issued before it.
    async fn set_message_metadata(
        &self,
        message_id: &str,
        metadata: &Map<String, Value>,
    ) -> Result<(), StoreError>;

    /// [`append_messages`](Self::append_messages), and in the same transaction replaces the
    /// metadata of the message `settled_id` (stored before them: the question they answer)
    /// with `metadata`: an answer and the end of its question's `pending` status land together,
    /// in the commit the answer needs anyway.
    async fn append_settling(
        &self,
        session_id: &str,
        messages: &[Message],
        settled_id: &str,
        metadata: &Map<String, Value>,
    ) -> Result<(), StoreError>;

    /// Marks every user message still `pending` (its answer was under way when the server
    /// stopped) `interrupted`, with an `error` saying so; how many. One statement, run at
    /// start before anything else is written.
    async fn interrupt_pending(&self) -> Result<u64, StoreError>;

    /// Finishes the writes issued so far, then releases the database; later calls fail with
    /// [`StoreError::Closed`].
    async fn close(&self);

    /// Whether the store can be used, without writing: `Err` with what reads or writes would
    /// fail with (the database gone from its path), or what the last write failed with (disk
    /// full, I/O error) until a write succeeds again. Cheap enough for every health probe.
    fn health(&self) -> Result<(), StoreError>;

    /// Appends one message built from `message`; the message as stored.
    async fn append_message(
        &self,
        session_id: &str,
        message: NewMessage<'_>,
    ) -> Result<Message, StoreError> {
        let stored = Message::unsaved(message);
        self.append_messages(session_id, std::slice::from_ref(&stored))
            .await?;
        Ok(stored)
    }

    /// Merges `changes` into a message's metadata, here and in the store.
    async fn update_message_metadata(
        &self,
        message: &mut Message,
        changes: Map<String, Value>,
    ) -> Result<(), StoreError> {
        message.metadata.extend(changes);
        self.set_message_metadata(&message.id, &message.metadata)
            .await
    }
}

/// Opens the store `storage.url` names (creating it if needed) and brings its schema up to
/// date.
pub async fn open(config: &StorageConfig) -> Result<SharedStore, StoreError> {
    let url = config
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    if url.is_some_and(|url| url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::Open {
            // Not the URL itself: it may carry a password.
            path: "storage.url".to_owned(),
            message: "PostgreSQL storage is not supported by this version; use a SQLite path"
                .to_owned(),
        });
    }
    let path = sqlite::database_path(url);
    let store = sqlite::SqliteStore::open(&path, config.max_wal_mb.saturating_mul(1 << 20)).await?;
    tracing::info!(path = %path.display(), "database open");
    Ok(Arc::new(store))
}
