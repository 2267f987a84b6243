//! The message writer: appends from every request go through one task that writes whatever has
//! queued up as one multi-row `INSERT` (group commit), and a checkpointer that moves the WAL into
//! the database file on its own connection.
//!
//! Why: SQLite has one writer at a time, and every statement through sqlx is a round trip to the
//! connection's thread. One statement per message serialises all requests on that round trip;
//! one statement per batch lets 64 concurrent requests share it. Checkpoints `fsync`; run by the
//! writing connection (SQLite's default) they stall one write in a few hundred for milliseconds,
//! so they run beside it instead.
//!
//! Invariants: an append is acknowledged only after the statement holding it committed; a batch
//! that fails (a message for a session deleted meanwhile) is retried row by row, so one bad row
//! fails only its own request.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::connections::Connections;
use super::{Message, StoreError, json_text};

/// Most rows in one statement (8 parameters each, far below SQLite's 32766).
const MAX_BATCH: usize = 256;
/// Appends queued before a request waits for room.
const QUEUE: usize = 1024;
/// Rows appended between checkpoints (a few pages each).
const CHECKPOINT_EVERY: usize = 500;

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
}

impl MessageWriter {
    /// Starts the writer on `writer` (the one write connection) and the checkpointer on
    /// `checkpointer` (a connection of its own).
    pub fn start(writer: Arc<Connections>, checkpointer: Arc<Connections>) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let checkpoint_due = Arc::new(Notify::new());
        let stopped = CancellationToken::new();
        tokio::spawn(write_batches(writer, requests, Arc::clone(&checkpoint_due)));
        tokio::spawn(checkpoint_when_due(
            checkpointer,
            checkpoint_due,
            stopped.clone(),
        ));
        Self { queue, stopped }
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

    /// Stops the checkpointer after a last, complete checkpoint.
    pub fn stop(&self) {
        self.stopped.cancel();
    }
}

async fn write_batches(
    writer: Arc<Connections>,
    mut requests: mpsc::Receiver<Append>,
    checkpoint_due: Arc<Notify>,
) {
    let mut since_checkpoint = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let rows = batch.len();
        match insert(&writer, &batch).await {
            Ok(()) => {
                for append in batch.drain(..) {
                    let _ = append.done.send(Ok(()));
                }
            }
            Err(_) if rows > 1 => {
                // Find the row at fault: each alone, so the others still succeed.
                for append in batch.drain(..) {
                    let result = insert(&writer, std::slice::from_ref(&append)).await;
                    let _ = append.done.send(result);
                }
            }
            Err(err) => {
                for append in batch.drain(..) {
                    let _ = append.done.send(Err(clone_error(&err)));
                }
            }
        }
        since_checkpoint += rows;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            checkpoint_due.notify_one();
        }
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

/// A batch's error, for each request of the batch.
fn clone_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::SessionNotFound(id) => StoreError::SessionNotFound(id.clone()),
        other => StoreError::Write(other.to_string()),
    }
}

async fn checkpoint_when_due(
    checkpointer: Arc<Connections>,
    due: Arc<Notify>,
    stopped: CancellationToken,
) {
    loop {
        tokio::select! {
            () = due.notified() => {
                if let Err(err) = checkpoint(&checkpointer, "PRAGMA wal_checkpoint(PASSIVE)").await {
                    tracing::warn!(%err, "WAL checkpoint failed");
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
