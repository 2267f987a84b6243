//! The message writer: appends from every request go through one task that writes whatever has
//! queued up as one multi-row `INSERT` (group commit), and a checkpointer that moves the WAL into
//! the database file on its own connection.
//!
//! Why: SQLite has one writer at a time. One transaction per batch lets 64 concurrent requests
//! share a commit. Checkpoints copy pages into the database file and `fsync`; run by the writing
//! connection (SQLite's default) they stall one write in a few hundred for milliseconds, so the
//! bulk of each runs beside it instead. But a checkpoint running beside the writes never
//! finishes (frames keep arriving while it copies), and SQLite only starts the WAL over from its
//! beginning after one that did: the WAL grew by every commit, without end (150 MB in a few
//! seconds of messages, each write into fresh file pages). So after each checkpoint beside
//! it, the writer runs a second one between two batches, which copies only the few frames
//! written meanwhile, and the next transaction starts the WAL over.
//!
//! A batch is one transaction on a connection of `inline`, run in the writer task itself (no
//! round trip to a connection thread); when another connection holds the write lock (a
//! statement through sqlx, another process), the batch goes through sqlx's writer instead,
//! which waits for it.
//!
//! Invariants: an append is acknowledged only after the transaction holding it committed; a
//! message for a session deleted meanwhile fails only its own request, not its batch.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connections::Connections;
use super::inline::{InlineConnection, InlineError, Param};
use super::{Message, StoreError, json_text};

/// Most rows in one statement (8 parameters each, far below SQLite's 32766).
const MAX_BATCH: usize = 256;
/// Appends queued before a request waits for room.
const QUEUE: usize = 1024;
/// Rows appended between checkpoints (each row a few pages of WAL: the message, its two
/// indexes, its session, the rowid sequence).
const CHECKPOINT_EVERY: usize = 256;

/// What the writer and the checkpointer tell each other.
#[derive(Default)]
struct Checkpoints {
    /// The writer has appended `CHECKPOINT_EVERY` rows since the last checkpoint.
    due: Notify,
    /// A checkpoint beside the writes ended: the writer should finish it.
    finish: std::sync::atomic::AtomicBool,
}

struct Append {
    session_id: String,
    message: Message,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle requests append through. Cheap to clone.
#[derive(Clone)]
pub struct MessageWriter {
    queue: mpsc::Sender<Append>,
    stopped: CancellationToken,
    tasks: TaskTracker,
}

impl MessageWriter {
    /// Starts the writer on `writer` (the one sqlx write connection) and an inline connection
    /// to `path`, and the checkpointer on `checkpointer` (a connection of its own).
    pub fn start(writer: Arc<Connections>, path: PathBuf, checkpointer: Arc<Connections>) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let checkpoints = Arc::new(Checkpoints::default());
        let stopped = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(write_batches(
            writer,
            InlineWriter::new(path),
            requests,
            Arc::clone(&checkpoints),
            stopped.clone(),
        ));
        tasks.spawn(checkpoint_when_due(
            checkpointer,
            checkpoints,
            stopped.clone(),
        ));
        tasks.close();
        Self {
            queue,
            stopped,
            tasks,
        }
    }

    /// Appends `message` to `session_id`; returns once it is committed.
    pub async fn append(&self, session_id: &str, message: Message) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Append {
                session_id: session_id.to_owned(),
                message,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        committed.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes what is queued, then stops the writer (appends fail from then on) and the
    /// checkpointer after a last, complete checkpoint; returns once both are done.
    pub async fn stop(&self) {
        self.stopped.cancel();
        self.tasks.wait().await;
    }
}

async fn write_batches(
    writer: Arc<Connections>,
    mut inline: InlineWriter,
    mut requests: mpsc::Receiver<Append>,
    checkpoints: Arc<Checkpoints>,
    stopped: CancellationToken,
) {
    let mut since_checkpoint = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            received = requests.recv_many(&mut batch, MAX_BATCH) => received,
            () = stopped.cancelled() => {
                // What was queued before the stop is still written; later appends fail.
                requests.close();
                requests.recv_many(&mut batch, MAX_BATCH).await
            }
        };
        if received == 0 {
            break;
        }
        let rows = batch.len();
        let outcomes = match inline.insert(&batch) {
            Some(outcomes) => outcomes,
            None => insert_through_sqlx(&writer, &batch).await,
        };
        for (append, outcome) in batch.drain(..).zip(outcomes) {
            let _ = append.done.send(outcome);
        }
        since_checkpoint += rows;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            checkpoints.due.notify_one();
        }
        if checkpoints.finish.swap(false, Ordering::AcqRel) {
            let finished = match inline.checkpoint() {
                Some(result) => result.map_err(StoreError::from),
                None => checkpoint(&writer, "PRAGMA wal_checkpoint(PASSIVE)").await,
            };
            if let Err(err) = finished {
                tracing::warn!(%err, "finishing a WAL checkpoint failed");
            }
        }
    }
}

const INSERT_ONE: &str = "INSERT INTO messages \
     (id, session_id, role, content, backend, model, timestamp, metadata) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The writer's inline connection, opened when first needed.
struct InlineWriter {
    path: PathBuf,
    connection: Option<InlineConnection>,
    /// Opening failed once: every batch goes through sqlx.
    unavailable: bool,
}

impl InlineWriter {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            connection: None,
            unavailable: false,
        }
    }

    /// A checkpoint on this connection (no busy handler: when another connection is
    /// checkpointing, it is skipped); `None` without a connection.
    fn checkpoint(&mut self) -> Option<Result<(), InlineError>> {
        let connection = self.connection.as_mut()?;
        Some(
            match connection.execute_script(c"PRAGMA wal_checkpoint(PASSIVE)") {
                Err(InlineError::Busy) => Ok(()),
                other => other,
            },
        )
    }

    /// Each row's outcome, all committed in one transaction; `None` when nothing was written
    /// (the write lock is held elsewhere, or the transaction failed as a whole).
    fn insert(&mut self, batch: &[Append]) -> Option<Vec<Result<(), StoreError>>> {
        if self.unavailable {
            return None;
        }
        if self.connection.is_none() {
            match InlineConnection::open(&self.path, false) {
                Ok(connection) => self.connection = Some(connection),
                Err(err) => {
                    tracing::warn!(%err, "the inline database writer cannot open; writing through sqlx");
                    self.unavailable = true;
                    return None;
                }
            }
        }
        let connection = self.connection.as_mut()?;
        match insert_in_transaction(connection, batch) {
            Ok(outcomes) => Some(outcomes),
            Err(err) => {
                if connection.in_transaction()
                    && let Err(err) = connection.execute_script(c"ROLLBACK")
                {
                    // A connection in an unknown state is not used again.
                    tracing::warn!(%err, "rolling back a failed batch failed");
                    self.connection = None;
                }
                if !matches!(err, InlineError::Busy) {
                    tracing::debug!(%err, "an inline batch failed; writing it through sqlx");
                }
                None
            }
        }
    }
}

fn insert_in_transaction(
    connection: &mut InlineConnection,
    batch: &[Append],
) -> Result<Vec<Result<(), StoreError>>, InlineError> {
    connection.execute_script(c"BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for append in batch {
        let message = &append.message;
        let metadata = json_text(&message.metadata);
        let params = [
            Param::Text(&message.id),
            Param::Text(&append.session_id),
            Param::Text(&message.role),
            Param::Text(&message.content),
            Param::OptionalText(message.backend.as_deref()),
            Param::OptionalText(message.model.as_deref()),
            Param::Text(&message.timestamp),
            Param::Text(&metadata),
        ];
        match connection.run(INSERT_ONE, &params, |_| Ok(())) {
            Ok(()) => outcomes.push(Ok(())),
            // The foreign key: the session does not exist (or was just deleted). Only this
            // statement is undone; the transaction goes on.
            Err(err) if err.is_foreign_key_violation() => {
                outcomes.push(Err(StoreError::SessionNotFound(append.session_id.clone())));
            }
            Err(err) => return Err(err),
        }
    }
    connection.execute_script(c"COMMIT")?;
    Ok(outcomes)
}

/// Each row's outcome, written through sqlx: the batch as one statement, or, when it fails,
/// each row alone, so that one bad row fails only its own request.
async fn insert_through_sqlx(
    writer: &Arc<Connections>,
    batch: &[Append],
) -> Vec<Result<(), StoreError>> {
    match insert(writer, batch).await {
        Ok(()) => batch.iter().map(|_| Ok(())).collect(),
        Err(_) if batch.len() > 1 => {
            let mut outcomes = Vec::with_capacity(batch.len());
            for append in batch {
                outcomes.push(insert(writer, std::slice::from_ref(append)).await);
            }
            outcomes
        }
        Err(err) => vec![Err(err)],
    }
}

async fn insert(writer: &Arc<Connections>, batch: &[Append]) -> Result<(), StoreError> {
    let mut sql = String::from(
        "INSERT INTO messages (id, session_id, role, content, backend, model, timestamp, metadata) VALUES ",
    );
    for index in 0..batch.len() {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for append in batch {
        let message = &append.message;
        query = query
            .bind(message.id.clone())
            .bind(append.session_id.clone())
            .bind(message.role.clone())
            .bind(message.content.clone())
            .bind(message.backend.clone())
            .bind(message.model.clone())
            .bind(message.timestamp.clone())
            .bind(json_text(&message.metadata));
    }
    match query.execute(&mut *writer.acquire().await?).await {
        Ok(_) => Ok(()),
        // The foreign key: the session does not exist (or was just deleted).
        Err(sqlx::Error::Database(err)) if err.is_foreign_key_violation() && batch.len() == 1 => {
            Err(StoreError::SessionNotFound(batch[0].session_id.clone()))
        }
        Err(err) => Err(err.into()),
    }
}

async fn checkpoint_when_due(
    checkpointer: Arc<Connections>,
    checkpoints: Arc<Checkpoints>,
    stopped: CancellationToken,
) {
    loop {
        tokio::select! {
            () = checkpoints.due.notified() => {
                match checkpoint(&checkpointer, "PRAGMA wal_checkpoint(PASSIVE)").await {
                    Ok(()) => checkpoints.finish.store(true, Ordering::Release),
                    Err(err) => tracing::warn!(%err, "WAL checkpoint failed"),
                }
            }
            () = stopped.cancelled() => break,
        }
    }
    if let Err(err) = checkpoint(&checkpointer, "PRAGMA wal_checkpoint(TRUNCATE)").await {
        tracing::warn!(%err, "final WAL checkpoint failed");
    }
    checkpointer.close().await;
}

async fn checkpoint(on: &Arc<Connections>, statement: &'static str) -> Result<(), StoreError> {
    sqlx::query(statement)
        .execute(&mut *on.acquire().await?)
        .await?;
    Ok(())
}
