//! The message writer: appends from every request go through one task that writes whatever has
//! queued up as one multi-row `INSERT` (group commit), and a checkpointer that moves the WAL into
//! the database file on its own connection.
//!
//! Why: SQLite has one writer at a time. One transaction per batch lets 64 concurrent requests
//! share a commit. Checkpoints copy pages into the database file and `fsync`; run by the writing
//! connection (SQLite's default) they stall one write in a few hundred for milliseconds, so the
//! bulk of each runs beside it instead. But a checkpoint running beside the writes never
//! finishes (frames keep arriving while it copies), and SQLite only starts the WAL over from its
//! beginning after one that did: the WAL would grow by every commit, without end. So once the
//! WAL holds `max_wal_bytes`, the writer runs a second checkpoint between two batches, after one
//! beside it: that one copies only the few frames written meanwhile, and the next transaction
//! starts the WAL over. It does not run after every checkpoint: its two `fsync`s hold up the
//! appends queued behind it for milliseconds, which would set the p99 of the messages
//! (BENCHMARKS.md).
//!
//! A message's metadata is updated through the same queue, so an update always lands after the
//! append it follows, even when the request did not wait for that append's commit (a request
//! calls its backend while its user message is being written).
//!
//! Invariants: an append is acknowledged only after the transaction holding it committed; the
//! messages of one append are committed together; an append for a session deleted meanwhile
//! fails only its own request, not its batch; writes are applied in the order they were queued,
//! and a queued write is applied even if its requester stopped waiting.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connections::Connections;
use super::{Message, StoreError, database, json_text};

/// Most writes taken from the queue at once.
const MAX_BATCH: usize = 256;
/// Most rows in one statement (8 parameters each, far below SQLite's 32766); a run of appends
/// with more is written as one transaction of several statements.
pub(super) const MAX_ROWS: usize = 1024;
/// Appends queued before a request waits for room.
const QUEUE: usize = 1024;
/// Rows appended between checkpoints (each row a few pages of WAL: the message, its two
/// indexes, its session, the rowid sequence).
const CHECKPOINT_EVERY: usize = 256;
/// Bytes of WAL per page it holds: the page and a frame header.
const FRAME_HEADER: u64 = 24;

/// What the writer and the checkpointer tell each other.
#[derive(Default)]
struct Checkpoints {
    /// The writer has appended `CHECKPOINT_EVERY` rows since the last checkpoint.
    due: Notify,
    /// A checkpoint beside the writes ended with the WAL at its bound: the writer should
    /// finish it, so that the WAL starts over.
    finish: std::sync::atomic::AtomicBool,
}

/// What requests queue for the writer.
enum Write {
    Append(Append),
    SetMetadata(MetadataUpdate),
}

struct Append {
    session_id: String,
    /// Committed together, in this order.
    messages: Vec<Message>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

struct MetadataUpdate {
    message_id: String,
    /// The whole new metadata, as JSON text.
    metadata: String,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A queued write, not yet known to be committed.
pub(super) struct PendingWrite(oneshot::Receiver<Result<(), StoreError>>);

impl PendingWrite {
    /// Waits until the write is committed (or failed).
    pub async fn committed(self) -> Result<(), StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

/// The handle requests write through. Cheap to clone.
#[derive(Clone)]
pub struct MessageWriter {
    queue: mpsc::Sender<Write>,
    stopped: CancellationToken,
    tasks: TaskTracker,
}

impl MessageWriter {
    /// Starts the writer on `writer` (the one write connection) and the checkpointer on
    /// `checkpointer` (a connection of its own); the WAL starts over once it holds
    /// `max_wal_bytes`.
    pub fn start(
        writer: Arc<Connections>,
        checkpointer: Arc<Connections>,
        max_wal_bytes: u64,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let checkpoints = Arc::new(Checkpoints::default());
        let stopped = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(write_batches(
            writer,
            requests,
            Arc::clone(&checkpoints),
            stopped.clone(),
        ));
        tasks.spawn(checkpoint_when_due(
            checkpointer,
            checkpoints,
            max_wal_bytes,
            stopped.clone(),
        ));
        tasks.close();
        Self {
            queue,
            stopped,
            tasks,
        }
    }

    /// Queues `messages` to be appended to `session_id` in one transaction, after every write
    /// queued before it.
    pub async fn append(
        &self,
        session_id: &str,
        messages: Vec<Message>,
    ) -> Result<PendingWrite, StoreError> {
        let (done, committed) = oneshot::channel();
        self.queue(Write::Append(Append {
            session_id: session_id.to_owned(),
            messages,
            done,
        }))
        .await?;
        Ok(PendingWrite(committed))
    }

    /// Queues the replacement of a message's metadata (JSON text), after every write queued
    /// before it; an unknown message is no error (there is nothing to mark).
    pub async fn set_metadata(
        &self,
        message_id: &str,
        metadata: String,
    ) -> Result<PendingWrite, StoreError> {
        let (done, committed) = oneshot::channel();
        self.queue(Write::SetMetadata(MetadataUpdate {
            message_id: message_id.to_owned(),
            metadata,
            done,
        }))
        .await?;
        Ok(PendingWrite(committed))
    }

    async fn queue(&self, write: Write) -> Result<(), StoreError> {
        self.queue.send(write).await.map_err(|_| StoreError::Closed)
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
    mut requests: mpsc::Receiver<Write>,
    checkpoints: Arc<Checkpoints>,
    stopped: CancellationToken,
) {
    let mut since_checkpoint = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut appends = Vec::with_capacity(MAX_BATCH);
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
        since_checkpoint += write_in_order(&writer, &mut batch, &mut appends).await;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            checkpoints.due.notify_one();
        }
        if checkpoints.finish.swap(false, Ordering::AcqRel) {
            // PASSIVE: never waits, for the busy timeout or anything else.
            if let Err(err) = checkpoint(&writer, "PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::warn!(%err, "finishing a WAL checkpoint failed");
            }
        }
    }
}

/// Applies `batch` in order, each run of appends as one statement, and tells each request its
/// outcome; the rows written. `appends` is room for a run, left empty.
async fn write_in_order(
    writer: &Arc<Connections>,
    batch: &mut Vec<Write>,
    appends: &mut Vec<Append>,
) -> usize {
    let mut rows = 0;
    let mut writes = batch.drain(..).peekable();
    while let Some(write) = writes.next() {
        match write {
            Write::Append(append) => {
                appends.push(append);
                while let Some(Write::Append(_)) = writes.peek() {
                    if let Some(Write::Append(append)) = writes.next() {
                        appends.push(append);
                    }
                }
                rows += appends.iter().map(|a| a.messages.len()).sum::<usize>();
                let outcomes = insert_each_on_failure(writer, appends).await;
                for (append, outcome) in appends.drain(..).zip(outcomes) {
                    let _ = append.done.send(outcome);
                }
            }
            Write::SetMetadata(update) => {
                let outcome = set_metadata(writer, &update).await;
                let _ = update.done.send(outcome);
            }
        }
    }
    rows
}

async fn set_metadata(
    writer: &Arc<Connections>,
    update: &MetadataUpdate,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE messages SET metadata = ? WHERE id = ?")
        .bind(&update.metadata)
        .bind(&update.message_id)
        .execute(&mut *writer.acquire().await?)
        .await
        .map_err(database)?;
    Ok(())
}

/// Each append's outcome: the batch as one unit, or, when it fails, each append alone, so that
/// one bad append fails only its own request.
async fn insert_each_on_failure(
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

/// Writes `batch` in one transaction: one statement when its rows fit in one.
async fn insert(writer: &Arc<Connections>, batch: &[Append]) -> Result<(), StoreError> {
    let rows: Vec<(&str, &Message)> = batch
        .iter()
        .flat_map(|append| {
            append
                .messages
                .iter()
                .map(|message| (append.session_id.as_str(), message))
        })
        .collect();
    let mut connection = writer.acquire().await?;
    let outcome = if rows.len() <= MAX_ROWS {
        insert_rows(&mut connection, &rows).await
    } else {
        insert_in_transaction(&mut connection, &rows).await
    };
    match outcome {
        Ok(()) => Ok(()),
        // The foreign key: the session does not exist (or was just deleted).
        Err(sqlx::Error::Database(err)) if err.is_foreign_key_violation() && batch.len() == 1 => {
            Err(StoreError::SessionNotFound(batch[0].session_id.clone()))
        }
        Err(err) => Err(database(err)),
    }
}

async fn insert_in_transaction(
    connection: &mut SqliteConnection,
    rows: &[(&str, &Message)],
) -> Result<(), sqlx::Error> {
    let mut transaction = connection.begin().await?;
    for chunk in rows.chunks(MAX_ROWS) {
        insert_rows(&mut transaction, chunk).await?;
    }
    transaction.commit().await
}

/// One `INSERT` of `rows`, each `(session id, message)`.
async fn insert_rows(
    connection: &mut SqliteConnection,
    rows: &[(&str, &Message)],
) -> Result<(), sqlx::Error> {
    let mut sql = String::from(
        "INSERT INTO messages (id, session_id, role, content, backend, model, timestamp, metadata) VALUES ",
    );
    for index in 0..rows.len() {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (session_id, message) in rows {
        query = query
            .bind(message.id.clone())
            .bind((*session_id).to_owned())
            .bind(message.role.clone())
            .bind(message.content.clone())
            .bind(message.backend.clone())
            .bind(message.model.clone())
            .bind(message.timestamp.clone())
            .bind(json_text(&message.metadata));
    }
    query.execute(connection).await?;
    Ok(())
}

async fn checkpoint_when_due(
    checkpointer: Arc<Connections>,
    checkpoints: Arc<Checkpoints>,
    max_wal_bytes: u64,
    stopped: CancellationToken,
) {
    let mut max_frames = None;
    loop {
        tokio::select! {
            () = checkpoints.due.notified() => {
                if max_frames.is_none() {
                    max_frames = wal_frames_in(&checkpointer, max_wal_bytes).await;
                }
                match checkpoint(&checkpointer, "PRAGMA wal_checkpoint(PASSIVE)").await {
                    Ok(frames) if max_frames.is_some_and(|max| frames >= max) => {
                        checkpoints.finish.store(true, Ordering::Release);
                    }
                    Ok(_) => {}
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

/// How many frames `bytes` of WAL hold (at least one); `None` if the page size is unknown.
async fn wal_frames_in(on: &Arc<Connections>, bytes: u64) -> Option<u64> {
    let page_size = async {
        sqlx::query_scalar::<_, i64>("PRAGMA page_size")
            .fetch_one(&mut *on.acquire().await?)
            .await
            .map_err(database)
    };
    match page_size.await {
        Ok(page_size) => Some((bytes / (page_size.unsigned_abs() + FRAME_HEADER)).max(1)),
        Err(err) => {
            tracing::warn!(%err, "cannot read the page size; the WAL will not be started over");
            None
        }
    }
}

/// Runs `statement`, a `wal_checkpoint` pragma; the frames in the WAL after it.
async fn checkpoint(on: &Arc<Connections>, statement: &'static str) -> Result<u64, StoreError> {
    // (busy, frames in the WAL, frames checkpointed); -1 for both when not in WAL mode.
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as(statement)
        .fetch_one(&mut *on.acquire().await?)
        .await
        .map_err(database)?;
    Ok(u64::try_from(frames).unwrap_or(0))
}
