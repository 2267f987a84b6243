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
//! The writes stay on sqlx's connection thread, not on `inline` as the reads do. Run in the
//! writer task, a write blocks the runtime thread it runs on: a `pwrite` waiting for ext4's
//! journal (tens of milliseconds, seen here) or a slow disk would hold up every request queued
//! on that thread, `/health` included, where on sqlx's thread only the appends wait. Tried at
//! stop 15: in place, a message cost 3.4 instead of 11 context switches and ~390 instead of
//! ~560 µs of CPU (echo backend, one client), but at 64 clients no more messages a second and
//! no better tails (BENCHMARKS.md).
//!
//! Invariants: an append is acknowledged only after the transaction holding it committed; a
//! message for a session deleted meanwhile fails only its own request, not its batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connections::Connections;
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
    /// Starts the writer on `writer` (the one write connection) and the checkpointer on
    /// `checkpointer` (a connection of its own).
    pub fn start(writer: Arc<Connections>, checkpointer: Arc<Connections>) -> Self {
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
        let outcomes = insert_through_sqlx(&writer, &batch).await;
        for (append, outcome) in batch.drain(..).zip(outcomes) {
            let _ = append.done.send(outcome);
        }
        since_checkpoint += rows;
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
