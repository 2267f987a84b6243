//! The [`Store`] in SQLite, through sqlx: one embedded database file.
//!
//! Invariants: the schema is created and upgraded only by the numbered migrations in
//! `migrations/sqlite/`, run at open; every write is one transaction, committed before the call
//! returns, and the database is in WAL mode with `synchronous = NORMAL`, so a write that
//! returned survives the process being killed (only a power loss may take the last
//! transactions back). All writes go through one connection, in the order they were issued
//! (SQLite has one writer at a time; several connections would only wait on each other's
//! locks), appends grouped into shared commits by `writer`; reads use connections of their own
//! and never wait for a write. Connections are handed out by `connections`, not by
//! `sqlx::Pool` (which pings each one on every use). Every read and every write batch first
//! checks that the database is still the file at its path (`files`); a failure of the storage
//! is [`StoreError::Unavailable`], or [`StoreError::Full`] for a full disk, never a bare
//! database error. Only the first connection, at open, may create the database file.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{FromRow, Row};

use super::status::{FAILED as STATUS_FAILED, INTERRUPTED as STATUS_INTERRUPTED};
use super::types::with_utc_offset;
use super::{ContextMessage, Message, Page, Session, Store, StoreError};

mod connections;
mod files;
mod writer;

use connections::Connections;
use files::DatabaseFiles;
use writer::Writer;

/// How long a statement waits for a lock held by another process sharing the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections; SQLite readers in WAL mode run in parallel.
const READERS: u32 = 4;
/// SQLite's `LIMIT` for no limit: its grammar has no `OFFSET` without a `LIMIT` before it.
const NO_LIMIT: i64 = -1;

/// Where the database is, given `storage.url` (`sqlite://PATH`, `sqlite:PATH` or a plain
/// path): that file, else `$XDG_DATA_HOME/lit-mux/lit-mux.db`.
pub fn database_path(url: Option<&str>) -> PathBuf {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return crate::config::xdg_dir("XDG_DATA_HOME", ".local/share")
            .join("lit-mux")
            .join("lit-mux.db");
    };
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(path.split('?').next().unwrap_or(path))
}

/// The database file, its write connection (with the writer on it) and its readers.
pub struct SqliteStore {
    /// The one write connection.
    writer: Arc<Connections>,
    readers: Arc<Connections>,
    writes: Writer,
    files: Arc<DatabaseFiles>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path` and brings its schema up to date;
    /// its write-ahead log is started over before it holds `max_wal_bytes` (see `writer`).
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
            // Where a WAL that is started over is cut back to (see `writer`).
            .pragma("journal_size_limit", (max_wal_bytes / 2).to_string())
            // No memory-mapped reads: a connection starting a read after another connection's
            // commit drops its whole map (SQLite's `unixUnfetch`), so with a map every message
            // costs each reader an munmap, a TLB shootdown across cores and the page faults to
            // map again, more than the pread(2)s it saves (7 % of lit-mux's CPU in the messaging
            // benchmark; see BENCHMARKS.md).
            .pragma("mmap_size", "0");
        let writer = Connections::new(options.clone(), 1);
        sqlx::migrate!("./migrations/sqlite")
            .run(
                &mut *writer
                    .acquire()
                    .await
                    .map_err(|err| open_error(err.to_string()))?,
            )
            .await
            .map_err(|err| open_error(format!("migration failed: {err}")))?;
        let files =
            Arc::new(DatabaseFiles::opened(path).map_err(|err| open_error(err.to_string()))?);
        // Opened later, if at all: they must find the file the writer opened, never create one.
        let options = options.create_if_missing(false);
        let checkpointer = Connections::new(options.clone(), 1);
        let readers = Connections::new(options.read_only(true), READERS);
        let writes = Writer::start(
            Arc::clone(&writer),
            checkpointer,
            Arc::clone(&files),
            max_wal_bytes,
        );
        Ok(Self {
            writer,
            readers,
            writes,
            files,
        })
    }

    /// A read connection, once the database is known to be still the file at its path.
    async fn reader(&self) -> Result<connections::Checkout, StoreError> {
        self.files.check()?;
        self.readers.acquire().await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_session(
        &self,
        name: Option<&str>,
        backends: &[String],
        metadata: &Map<String, Value>,
        options: &Map<String, Value>,
    ) -> Result<Session, StoreError> {
        let session = Session::new(name, backends, metadata, options);
        self.writes
            .create_session(session.clone())
            .await?
            .committed()
            .await?;
        Ok(session)
    }

    async fn list_sessions(&self, page: Page) -> Result<Vec<Session>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT id, name, backends, metadata, options, created_at, updated_at, message_count \
             FROM sessions ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
        )
        .bind(limit(page))
        .bind(offset(page))
        .fetch_all(&mut *self.reader().await?)
        .await
        .map_err(database)?;
        rows.into_iter().map(SessionRow::into_session).collect()
    }

    async fn session(&self, id: &str) -> Result<Session, StoreError> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT id, name, backends, metadata, options, created_at, updated_at, message_count \
             FROM sessions WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *self.reader().await?)
        .await
        .map_err(database)?;
        row.ok_or_else(|| StoreError::SessionNotFound(id.to_owned()))?
            .into_session()
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.writes.delete_session(id).await?.committed().await
    }

    async fn messages(&self, session_id: &str, page: Page) -> Result<Vec<Message>, StoreError> {
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, role, content, backend, model, timestamp, metadata FROM messages \
             WHERE session_id = ? ORDER BY seq LIMIT ? OFFSET ?",
        )
        .bind(session_id)
        .bind(limit(page))
        .bind(offset(page))
        .fetch_all(&mut *self.reader().await?)
        .await
        .map_err(database)?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    async fn context_messages(
        &self,
        session_id: &str,
        count: usize,
    ) -> Result<Vec<ContextMessage>, StoreError> {
        let context: String = sqlx::query_scalar(CONTEXT_OF_ONE_SESSION)
            .bind(sql_count(count))
            .bind(session_id)
            .fetch_one(&mut *self.reader().await?)
            .await
            .map_err(database)?;
        decode_context(&context)
    }

    async fn session_with_context(
        &self,
        id: &str,
        count: usize,
    ) -> Result<(Session, Vec<ContextMessage>), StoreError> {
        let row = sqlx::query(SESSION_WITH_CONTEXT)
            .bind(sql_count(count))
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(database)?
            .ok_or_else(|| StoreError::SessionNotFound(id.to_owned()))?;
        let context: String = row.try_get("context").map_err(database)?;
        let session = SessionRow::from_row(&row)
            .map_err(database)?
            .into_session()?;
        Ok((session, decode_context(&context)?))
    }

    async fn append_messages(
        &self,
        session_id: &str,
        messages: &[Message],
    ) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        // The trigger of migration 0002 updates the session; the foreign key refuses a message
        // for a session that does not exist (or was just deleted).
        self.writes
            .append(session_id, messages.to_vec())
            .await?
            .committed()
            .await
    }

    async fn set_message_metadata(
        &self,
        message_id: &str,
        metadata: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        self.writes
            .set_metadata(message_id, json_text(metadata))
            .await?
            .committed()
            .await
    }

    async fn append_settling(
        &self,
        session_id: &str,
        messages: &[Message],
        settled_id: &str,
        metadata: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        self.writes
            .append_settling(
                session_id,
                messages.to_vec(),
                (settled_id.to_owned(), json_text(metadata)),
            )
            .await?
            .committed()
            .await
    }

    async fn interrupt_pending(&self) -> Result<u64, StoreError> {
        // Run before the writer has anything to do: at start, on the write connection. The
        // `instr` spares parsing the metadata of every message but the few that can match.
        let interrupted = sqlx::query(INTERRUPT_PENDING)
            .execute(&mut *self.writer.acquire().await?)
            .await
            .map_err(database)?;
        Ok(interrupted.rows_affected())
    }

    /// Closes every connection after a last checkpoint, leaving only the database file.
    async fn close(&self) {
        self.writes.stop().await;
        match self.writer.acquire().await {
            // Nothing is written to a database no path names any more.
            Ok(_) if self.files.lost().is_err() => {}
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

    fn health(&self) -> Result<(), StoreError> {
        self.files.health()
    }
}

/// The context rows of the session whose id is `$session` (a parameter or a column): the last
/// `?1` of its messages as `(seq, role, content, backend, status, tool_step)`, newest first.
/// Only a user message can have failed or been interrupted (the context builder asks no
/// other), so only theirs, mostly small, are parsed for it: parsing every answer's metadata
/// (usage, timings) for `json_extract` would cost 4 % of a message's instructions.
macro_rules! context_rows {
    ($session:literal) => {
        concat!(
            "SELECT seq, role, content, backend, \
                    CASE WHEN role = 'user' \
                         THEN json_extract(metadata, '$.status') END AS status, \
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

/// [`context_rows`] as one JSON array of `[role, content, backend, status, tool_step]`, oldest
/// first: one row instead of one per message, because sqlx hands each row over from its
/// connection thread on its own, and a context is tens of rows. (`ORDER BY` inside an
/// aggregate needs SQLite 3.44; sqlx's `sqlite` feature builds the bundled 3.46.)
macro_rules! context_of {
    ($session:literal) => {
        concat!(
            "(SELECT json_group_array(json_array(role, content, backend, status, tool_step) \
                                      ORDER BY seq) FROM (",
            context_rows!($session),
            "))"
        )
    };
}

const CONTEXT_OF_ONE_SESSION: &str = concat!("SELECT ", context_of!("?2"));

/// The session and its context in one statement: one round trip to sqlx's connection thread.
const SESSION_WITH_CONTEXT: &str = concat!(
    "SELECT id, name, backends, metadata, options, created_at, updated_at, message_count, ",
    context_of!("sessions.id"),
    " AS context FROM sessions WHERE id = ?2"
);

/// Every question whose answer was under way when the server stopped, marked interrupted.
const INTERRUPT_PENDING: &str = "UPDATE messages \
     SET metadata = json_set(metadata, '$.status', 'interrupted', \
                             '$.error', 'the server stopped before the answer was complete') \
     WHERE role = 'user' AND instr(metadata, '\"pending\"') > 0 \
       AND json_extract(metadata, '$.status') = 'pending'";

/// A context as [`context_of`] encodes it.
fn decode_context(text: &str) -> Result<Vec<ContextMessage>, StoreError> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<Value>,
        Option<String>,
    );
    let rows: Vec<Row> = from_json_text(text)?;
    Ok(rows
        .into_iter()
        .map(|(role, content, backend, status, tool_step)| {
            let status = status.as_ref().and_then(Value::as_str);
            ContextMessage {
                role,
                content,
                backend,
                failed: status == Some(STATUS_FAILED),
                interrupted: status == Some(STATUS_INTERRUPTED),
                tool_step,
            }
        })
        .collect())
}

#[derive(FromRow)]
struct SessionRow {
    id: String,
    name: Option<String>,
    backends: String,
    metadata: String,
    options: String,
    created_at: String,
    updated_at: String,
    message_count: i64,
}

impl SessionRow {
    fn into_session(self) -> Result<Session, StoreError> {
        Ok(Session {
            backends: from_json_text(&self.backends)?,
            metadata: from_json_text(&self.metadata)?,
            options: from_json_text(&self.options)?,
            id: self.id,
            name: self.name,
            created_at: with_utc_offset(self.created_at),
            updated_at: with_utc_offset(self.updated_at),
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
            timestamp: with_utc_offset(self.timestamp),
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

/// A page's `LIMIT`.
fn limit(page: Page) -> i64 {
    page.limit.map_or(NO_LIMIT, sql_count_u64)
}

/// A page's `OFFSET`.
fn offset(page: Page) -> i64 {
    sql_count_u64(page.offset)
}

/// A count as SQLite's integers hold it (beyond them, as many as there can be).
fn sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn sql_count_u64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A database failure, as the store reports it (no sqlx types outside this module): the
/// storage full, the storage failing (I/O, locks, a file that cannot be opened or is not a
/// database), or a statement refused (a bug: a constraint, bad SQL).
fn database(err: sqlx::Error) -> StoreError {
    // SQLite's primary result codes (the low byte of an extended one).
    const FULL: i64 = 13;
    const FAILING: &[i64] = &[
        3,  // PERM
        5,  // BUSY
        6,  // LOCKED
        7,  // NOMEM
        8,  // READONLY
        10, // IOERR
        11, // CORRUPT
        14, // CANTOPEN
        15, // PROTOCOL
        22, // NOLFS
        23, // AUTH
        26, // NOTADB
    ];
    let sqlx::Error::Database(failure) = &err else {
        // The connection itself failed (its thread, its I/O).
        return StoreError::Unavailable(err.to_string());
    };
    let code = failure
        .code()
        .and_then(|code| code.parse::<i64>().ok())
        .map(|code| code & 0xff);
    match code {
        Some(FULL) => StoreError::Full(failure.message().to_owned()),
        Some(code) if FAILING.contains(&code) => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Refused(err.to_string()),
    }
}

fn json_text(value: &impl Serialize) -> String {
    // Maps and lists of strings and JSON values always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn from_json_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt(format!("{err}: {text}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
