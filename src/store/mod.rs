//! Sessions and messages, persisted with sqlx in SQLite (the default, embedded).
//!
//! Invariants: the schema is created and upgraded only by the numbered migrations in
//! `migrations/`, run at open; every write is one statement (its own transaction), committed
//! before the call returns, and the database is in WAL mode with `synchronous = NORMAL`, so a
//! write that returned survives the process being killed (only a power loss may take the last
//! transactions back). All writes go through one connection, in the order they were asked (SQLite
//! has one writer at a time; several connections would only wait on each other's locks); reads
//! use connections of their own and never wait for a write. Connections are handed out by
//! `connections`, not by `sqlx::Pool` (which pings each one on every use). The read every
//! message starts with (the session with its context) runs on the calling thread through
//! `inline`, falling back to sqlx when it would have to wait for a lock.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{FromRow, Row};

mod connections;
mod inline;
mod writer;

use connections::Connections;
use inline::{InlineConnection, InlineError, Param};
use writer::MessageWriter;
pub use writer::PendingWrite;

/// How long a statement waits for a lock held by another process sharing the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections; SQLite readers in WAL mode run in parallel.
const READERS: u32 = 4;

/// A session as the API shows it (the predecessor's `SessionResponse`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub name: Option<String>,
    pub backends: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub message_count: i64,
}

/// A message as the API shows it (the predecessor's `MessageResponse`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub content: String,
    pub role: String,
    pub backend: Option<String>,
    pub model: Option<String>,
    pub timestamp: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl Message {
    /// The message as it would be stored (fresh id, timestamp now), without storing it: the
    /// steps of a stateless exchange.
    pub fn unsaved(message: NewMessage<'_>) -> Self {
        Self {
            // Time-ordered (UUIDv7): each append goes to the last leaf of the id index instead of
            // a random one, so a batch of rows shares its pages (1.9 instead of 3.1 WAL pages a
            // row in batches of 16, BENCHMARKS.md), and a large database reads no cold index
            // page per message.
            id: uuid::Uuid::now_v7().to_string(),
            content: message.content.to_owned(),
            role: message.role.to_owned(),
            backend: message.backend.map(str::to_owned),
            model: message.model.map(str::to_owned),
            timestamp: now(),
            metadata: message.metadata,
        }
    }
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
    pub backend: Option<&'a str>,
    pub model: Option<&'a str>,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error("cannot open the database {path}: {message}")]
    Open { path: String, message: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the database is closed")]
    Closed,
    #[error("database write failed: {0}")]
    Write(String),
    #[error("database error: {0}")]
    Inline(#[from] InlineError),
}

/// The database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The one write connection.
    writer: Arc<Connections>,
    readers: Arc<Connections>,
    /// Readers for the statement every message runs first (see `inline`).
    inline_readers: Arc<InlineReaders>,
    appends: MessageWriter,
}

/// Idle read connections of `inline`, opened when first needed.
struct InlineReaders {
    path: PathBuf,
    /// `None` once the store is closed.
    idle: std::sync::Mutex<Option<Vec<InlineConnection>>>,
}

impl InlineReaders {
    /// Runs `read` on an idle connection, or a new one; `None` when none can be had (the store
    /// is closed, or opening failed), and the caller reads through sqlx instead.
    fn read<T>(
        &self,
        read: impl FnOnce(&mut InlineConnection) -> Result<T, InlineError>,
    ) -> Option<Result<T, InlineError>> {
        let idle = self.idle().as_mut()?.pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => match InlineConnection::open(&self.path, true) {
                Ok(connection) => connection,
                Err(err) => {
                    tracing::debug!(%err, "opening an inline reader failed; reading through sqlx");
                    return None;
                }
            },
        };
        let result = read(&mut connection);
        if let Some(idle) = self.idle().as_mut()
            && idle.len() < READERS as usize
        {
            idle.push(connection);
        }
        Some(result)
    }

    fn close(&self) {
        let idle = self.idle().take();
        drop(idle);
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Option<Vec<InlineConnection>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A message as the context builder needs it: no metadata to decode.
#[derive(Debug, Clone)]
pub struct ContextMessage {
    pub role: String,
    pub content: String,
    pub backend: Option<String>,
    /// The user's call failed (metadata `status` is `failed`).
    pub failed: bool,
    /// For a step of a tool loop, its metadata as JSON text: for a tool result (any mode), the
    /// tool, whether it failed and which call it answers; for an answer of a native loop
    /// (metadata `tool_mode` is `native`), its calls.
    pub tool_step: Option<String>,
}

/// Where the database is: `storage.url` (`sqlite://PATH`, `sqlite:PATH` or a plain path), else
/// `$XDG_DATA_HOME/lit-mux/lit-mux.db`.
pub fn database_path(url: Option<&str>) -> Result<PathBuf, StoreError> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(crate::config::xdg_dir("XDG_DATA_HOME", ".local/share")
            .join("lit-mux")
            .join("lit-mux.db"));
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Open {
            // Not the URL itself: it may carry a password.
            path: "storage.url".to_owned(),
            message: "PostgreSQL storage is not supported by this version; use a SQLite path"
                .to_owned(),
        });
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    Ok(PathBuf::from(path.split('?').next().unwrap_or(path)))
}

impl Store {
    /// Opens (creating it if needed) the database at `path` and brings its schema up to date;
    /// its write-ahead log is started over once it holds `max_wal_bytes` (see `writer`).
    pub async fn open(path: &Path, max_wal_bytes: u64) -> Result<Self, StoreError> {
        let open_error = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        create_private(path).map_err(|err| open_error(err.to_string()))?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|err| open_error(err.to_string()))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Checkpoints run on a connection of their own (see `writer`), not on the writer's.
            .pragma("wal_autocheckpoint", "0")
            // No memory-mapped reads: a connection starting a read after another connection's
            // commit drops its whole map (SQLite's `unixUnfetch`), so with a map every message
            // cost each reader an munmap, a TLB shootdown across cores and the page faults to map
            // again, more than the pread(2)s it saves (7 % of lit-mux's CPU in the messaging
            // benchmark; see BENCHMARKS.md).
            .pragma("mmap_size", "0");
        let writer = Connections::new(options.clone(), 1);
        sqlx::migrate!("./migrations")
            .run(
                &mut *writer
                    .acquire()
                    .await
                    .map_err(|err| open_error(err.to_string()))?,
            )
            .await
            .map_err(|err| open_error(format!("migration failed: {err}")))?;
        let checkpointer = Connections::new(options.clone(), 1);
        let readers = Connections::new(options.read_only(true), READERS);
        let appends = MessageWriter::start(Arc::clone(&writer), checkpointer, max_wal_bytes);
        Ok(Self {
            writer,
            readers,
            inline_readers: Arc::new(InlineReaders {
                path: path.to_owned(),
                idle: std::sync::Mutex::new(Some(Vec::new())),
            }),
            appends,
        })
    }

    /// Closes every connection after a last checkpoint, leaving only the database file.
    pub async fn close(&self) {
        self.inline_readers.close();
        self.appends.stop().await;
        match self.writer.acquire().await {
            Ok(mut writer) => {
                if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *writer)
                    .await
                {
                    tracing::warn!(%err, "final WAL checkpoint failed");
                }
            }
            Err(err) => tracing::warn!(%err, "final WAL checkpoint skipped"),
        }
        self.readers.close().await;
        self.writer.close().await;
    }

    pub async fn create_session(
        &self,
        name: Option<&str>,
        backends: &[String],
        metadata: &Map<String, Value>,
    ) -> Result<Session, StoreError> {
        let now = now();
        let session = Session {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.map(str::to_owned),
            backends: backends.to_vec(),
            created_at: now.clone(),
            updated_at: now,
            metadata: metadata.clone(),
            message_count: 0,
        };
        sqlx::query(
            "INSERT INTO sessions (id, name, backends, metadata, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.id)
        .bind(&session.name)
        .bind(json_text(&session.backends))
        .bind(json_text(&session.metadata))
        .bind(&session.created_at)
        .bind(&session.updated_at)
        .execute(&mut *self.writer.acquire().await?)
        .await?;
        Ok(session)
    }

    /// Newest first.
    pub async fn list_sessions(&self, limit: i64, offset: i64) -> Result<Vec<Session>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT id, name, backends, metadata, created_at, updated_at, message_count \
             FROM sessions ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *self.readers.acquire().await?)
        .await?;
        rows.into_iter().map(SessionRow::into_session).collect()
    }

    pub async fn count_sessions(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM sessions")
            .fetch_one(&mut *self.readers.acquire().await?)
            .await?
            .try_get(0)?)
    }

    pub async fn session(&self, id: &str) -> Result<Session, StoreError> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT id, name, backends, metadata, created_at, updated_at, message_count \
             FROM sessions WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *self.readers.acquire().await?)
        .await?;
        row.ok_or_else(|| StoreError::SessionNotFound(id.to_owned()))?
            .into_session()
    }

    /// Deletes the session and its messages.
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id)
            .execute(&mut *self.writer.acquire().await?)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::SessionNotFound(id.to_owned()));
        }
        Ok(())
    }

    /// The session's messages in conversation order, from `offset`, at most `limit`.
    pub async fn messages(
        &self,
        session_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, role, content, backend, model, timestamp, metadata FROM messages \
             WHERE session_id = ? ORDER BY seq LIMIT ? OFFSET ?",
        )
        .bind(session_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *self.readers.acquire().await?)
        .await?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    /// The last `count` messages of the session, oldest first, as the context builder needs them.
    pub async fn context_messages(
        &self,
        session_id: &str,
        count: i64,
    ) -> Result<Vec<ContextMessage>, StoreError> {
        let context: String = sqlx::query_scalar(CONTEXT_OF_ONE_SESSION)
            .bind(count)
            .bind(session_id)
            .fetch_one(&mut *self.readers.acquire().await?)
            .await?;
        decode_context(&context)
    }

    /// The session and its last `count` messages (oldest first): on the calling thread, two
    /// statements with a row per message (see `CONTEXT_ROWS`); through sqlx, when that would
    /// wait for a lock, one statement and one row (see `context_of`).
    pub async fn session_with_context(
        &self,
        id: &str,
        count: i64,
    ) -> Result<(Session, Vec<ContextMessage>), StoreError> {
        let inline = self.inline_readers.read(|connection| {
            let mut session = None;
            connection.run(SESSION_BY_ID, &[Param::Text(id)], |row| {
                session = Some(SessionRow {
                    id: row.required_text(0)?.to_owned(),
                    name: row.text(1)?.map(str::to_owned),
                    backends: row.required_text(2)?.to_owned(),
                    metadata: row.required_text(3)?.to_owned(),
                    created_at: row.required_text(4)?.to_owned(),
                    updated_at: row.required_text(5)?.to_owned(),
                    message_count: row.integer(6),
                });
                Ok(())
            })?;
            let Some(session) = session else {
                return Ok(None);
            };
            // A second read, not in the first one's snapshot: a message appended in between
            // is in the context too, as it would be a moment later.
            let mut context = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            connection.run(
                CONTEXT_ROWS,
                &[Param::Integer(count), Param::Text(id)],
                |row| {
                    context.push(ContextMessage {
                        role: row.required_text(1)?.to_owned(),
                        content: row.required_text(2)?.to_owned(),
                        backend: row.text(3)?.map(str::to_owned),
                        failed: row.integer(4) != 0,
                        tool_step: row.text(5)?.map(str::to_owned),
                    });
                    Ok(())
                },
            )?;
            context.reverse();
            Ok(Some((session, context)))
        });
        match inline {
            Some(Ok(Some((session, context)))) => return Ok((session.into_session()?, context)),
            Some(Ok(None)) => return Err(StoreError::SessionNotFound(id.to_owned())),
            Some(Err(InlineError::Busy)) | None => {} // Through sqlx, which may wait.
            Some(Err(err)) => return Err(err.into()),
        }
        let row = sqlx::query(SESSION_WITH_CONTEXT)
            .bind(count)
            .bind(id)
            .fetch_optional(&mut *self.readers.acquire().await?)
            .await?
            .ok_or_else(|| StoreError::SessionNotFound(id.to_owned()))?;
        let context: String = row.try_get("context")?;
        let session = SessionRow::from_row(&row)?.into_session()?;
        Ok((session, decode_context(&context)?))
    }

    /// Appends a message and updates the session's `updated_at` and count, atomically.
    pub async fn append_message(
        &self,
        session_id: &str,
        message: NewMessage<'_>,
    ) -> Result<Message, StoreError> {
        let (stored, pending) = self.queue_message(session_id, message).await?;
        pending.committed().await?;
        Ok(stored)
    }

    /// Queues a message to be appended as `append_message` does, and returns it with what to
    /// wait on for its commit: the caller may do other work meanwhile (not answer the client).
    /// Writes queued after it, metadata updates included, are applied after it.
    pub async fn queue_message(
        &self,
        session_id: &str,
        message: NewMessage<'_>,
    ) -> Result<(Message, PendingWrite), StoreError> {
        let stored = Message::unsaved(message);
        // The trigger of migration 0002 updates the session; the foreign key refuses a message
        // for a session that does not exist (or was just deleted).
        let pending = self.appends.append(session_id, stored.clone()).await?;
        Ok((stored, pending))
    }

    /// Merges `changes` into a message's metadata (in the order of the writer's queue, so after
    /// the message's own append).
    pub async fn update_message_metadata(
        &self,
        message: &mut Message,
        changes: Map<String, Value>,
    ) -> Result<(), StoreError> {
        message.metadata.extend(changes);
        self.appends
            .set_metadata(&message.id, json_text(&message.metadata))
            .await?
            .committed()
            .await
    }
}

/// The context rows of the session whose id is `$session` (a parameter or a column): the last
/// `?1` of its messages as `(seq, role, content, backend, failed, tool_step)`, newest first.
/// Only a user message can have failed (the context builder asks no other), so only theirs,
/// mostly `{}`, are parsed for it: parsing an answer's metadata (usage, timings) for
/// `json_extract` was 4 % of a message's instructions.
macro_rules! context_rows {
    ($session:literal) => {
        concat!(
            "SELECT seq, role, content, backend, \
                    CASE WHEN role = 'user' \
                         THEN coalesce(json_extract(metadata, '$.status') = 'failed', 0) \
                         ELSE 0 END AS failed, \
                    CASE WHEN role = 'tool' \
                           OR (role = 'assistant' \
                               AND json_extract(metadata, '$.tool_mode') = 'native') \
                         THEN metadata END AS tool_step \
             FROM messages WHERE session_id = ",
            $session,
            " ORDER BY seq DESC LIMIT ?1"
        )
    };
}

/// [`context_rows`] as one JSON array of `[role, content, backend, failed, tool_step]`, oldest
/// first, for sqlx: one row instead of one per message, because sqlx hands each row over from
/// its connection thread on its own, and a context is tens of rows. (`ORDER BY` inside an
/// aggregate needs SQLite 3.44; sqlx's `sqlite` feature builds the bundled 3.46.)
macro_rules! context_of {
    ($session:literal) => {
        concat!(
            "(SELECT json_group_array(json_array(role, content, backend, failed, tool_step) \
                                      ORDER BY seq) FROM (",
            context_rows!($session),
            "))"
        )
    };
}

const CONTEXT_OF_ONE_SESSION: &str = concat!("SELECT ", context_of!("?2"));

const SESSION_WITH_CONTEXT: &str = concat!(
    "SELECT id, name, backends, metadata, created_at, updated_at, message_count, ",
    context_of!("sessions.id"),
    " AS context FROM sessions WHERE id = ?2"
);

/// The session, for `inline`.
const SESSION_BY_ID: &str = "SELECT id, name, backends, metadata, created_at, updated_at, \
                             message_count FROM sessions WHERE id = ?1";

/// The context rows for `inline`, one row per message, newest first: on the calling thread a
/// row costs nothing to hand over, so the JSON that sqlx needs is not built (in SQLite) and
/// parsed again (8 % of a message's instructions).
const CONTEXT_ROWS: &str = context_rows!("?2");

/// A context as [`context_of`] encodes it.
fn decode_context(text: &str) -> Result<Vec<ContextMessage>, StoreError> {
    type Row = (String, String, Option<String>, i64, Option<String>);
    let rows: Vec<Row> = from_json_text(text)?;
    Ok(rows
        .into_iter()
        .map(
            |(role, content, backend, failed, tool_step)| ContextMessage {
                role,
                content,
                backend,
                failed: failed != 0,
                tool_step,
            },
        )
        .collect())
}

#[derive(FromRow)]
struct SessionRow {
    id: String,
    name: Option<String>,
    backends: String,
    metadata: String,
    created_at: String,
    updated_at: String,
    message_count: i64,
}

impl SessionRow {
    fn into_session(self) -> Result<Session, StoreError> {
        Ok(Session {
            backends: from_json_text(&self.backends)?,
            metadata: from_json_text(&self.metadata)?,
            id: self.id,
            name: self.name,
            created_at: self.created_at,
            updated_at: self.updated_at,
            message_count: self.message_count,
        })
    }
}

#[derive(FromRow)]
struct MessageRow {
    id: String,
    role: String,
    content: String,
    backend: Option<String>,
    model: Option<String>,
    timestamp: String,
    metadata: String,
}

impl MessageRow {
    fn into_message(self) -> Result<Message, StoreError> {
        Ok(Message {
            metadata: from_json_text(&self.metadata)?,
            id: self.id,
            content: self.content,
            role: self.role,
            backend: self.backend,
            model: self.model,
            timestamp: self.timestamp,
        })
    }
}

/// Creates the database's directory (`0700`; its parents as usual) and the file itself (`0600`)
/// where they do not exist yet: the file holds every conversation, and SQLite would create it,
/// and its `-wal` and `-shm` files after it, readable by everyone (umask 022). Existing ones are
/// left as they are.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => return Err(err),
            _ => {}
        }
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// Now, as stored: RFC 3339 UTC with microseconds (fixed width, so text order is time order).
fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn json_text(value: &impl Serialize) -> String {
    // Maps and lists of strings and JSON values always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn from_json_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt(format!("{err}: {text}")))
}
