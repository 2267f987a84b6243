//! The writer: every write (sessions created and deleted, appends from every request, metadata
//! updates) goes through one task, in the order it was queued; runs of appends are written as one
//! multi-row `INSERT` (group commit). Beside it, a checkpointer moves the WAL into the database
//! file on its own connection.
//!
//! Why: SQLite has one writer at a time. One transaction per batch lets 64 concurrent requests
//! share a commit. Checkpoints copy pages into the database file and `fsync`; run by the writing
//! connection (SQLite's default) they stall one write in a few hundred for milliseconds, so the
//! bulk of each runs beside it instead. But a checkpoint running beside the writes never
//! finishes (frames keep arriving while it copies), and SQLite only starts the WAL over from its
//! beginning after one that did: the WAL would grow by every commit, without end. So once the
//! WAL holds half of `max_wal_bytes`, the writer runs a second checkpoint between two batches,
//! after one beside it: that one copies only the few frames written meanwhile, and the next
//! transaction starts the WAL over (and cuts the file back to half the bound: SQLite's
//! `journal_size_limit`). It does not run after every checkpoint: its two `fsync`s hold up the
//! appends queued behind it for milliseconds, which would set the p99 of the messages
//! (BENCHMARKS.md); only once the WAL is past the bound itself (writes outran the checkpoints
//! beside them) does the writer run one without waiting. A checkpoint is due every `CHECKPOINT_EVERY` writes, and whenever the WAL
//! file has grown past half the bound, whatever wrote it. Once no write has come for
//! `IDLE_CHECKPOINT`, the checkpointer empties the WAL file (`TRUNCATE`).
//!
//! A message's metadata is updated through the same queue, so an update always lands after the
//! append it follows, even when the request did not wait for that append's commit (a request
//! calls its backend while its user message is being written).
//!
//! Invariants: a write is acknowledged only after the transaction holding it committed and the
//! database it went to was found still at its path (`files`); the messages of one append are
//! committed together; an append for a session deleted meanwhile fails only its own request,
//! not its batch; writes are applied in the order they were queued, and a queued write is
//! applied even if its requester stopped waiting; nothing is written once the store is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connections::Connections;
use super::files::DatabaseFiles;
use super::{Message, Session, StoreError, database, json_text};

/// Most writes taken from the queue at once.
const MAX_BATCH: usize = 256;
/// Most rows in one statement (8 parameters each, far below SQLite's 32766); a run of appends
/// with more is written as one transaction of several statements.
pub(super) const MAX_ROWS: usize = 1024;
/// Writes queued before a request waits for room.
const QUEUE: usize = 1024;
/// Rows written between checkpoints (each row a few pages of WAL: the message, its two
/// indexes, its session, the rowid sequence).
const CHECKPOINT_EVERY: usize = 256;
/// Bytes of WAL per page it holds: the page and a frame header.
const FRAME_HEADER: u64 = 24;
/// How long after the last write the WAL file is emptied.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(2);

/// What the writer and the checkpointer tell each other.
#[derive(Default)]
struct Checkpoints {
    /// The writer has written `CHECKPOINT_EVERY` rows since the last checkpoint, or the WAL
    /// has grown past half its bound.
    due: Notify,
    /// No write has come for `IDLE_CHECKPOINT`.
    idle: Notify,
    /// A checkpoint beside the writes ended with the WAL at half its bound: the writer should
    /// finish it, so that the WAL starts over.
    finish: std::sync::atomic::AtomicBool,
}

/// What requests queue for the writer.
enum Write {
    CreateSession(Session, Reply),
    DeleteSession(String, Reply),
    Append(Append),
    SetMetadata(MetadataUpdate),
}

/// Where a write's outcome goes.
type Reply = oneshot::Sender<Result<(), StoreError>>;

struct Append {
    session_id: String,
    /// Committed together, in this order.
    messages: Vec<Message>,
    /// A message stored before (the question these answer) and its whole new metadata, as
    /// JSON text: replaced in the same transaction.
    settles: Option<(String, String)>,
    done: Reply,
}

struct MetadataUpdate {
    message_id: String,
    /// The whole new metadata, as JSON text.
    metadata: String,
    done: Reply,
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
pub struct Writer {
    queue: mpsc::Sender<Write>,
    stopped: CancellationToken,
    tasks: TaskTracker,
}

impl Writer {
    /// Starts the writer on `writer` (the one write connection) and the checkpointer on
    /// `checkpointer` (a connection of its own); the WAL starts over once it holds half of
    /// `max_wal_bytes`.
    pub fn start(
        writer: Arc<Connections>,
        checkpointer: Arc<Connections>,
        files: Arc<DatabaseFiles>,
        max_wal_bytes: u64,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let checkpoints = Arc::new(Checkpoints::default());
        let stopped = CancellationToken::new();
        let tasks = TaskTracker::new();
        let restart_at = max_wal_bytes / 2;
        tasks.spawn(write_batches(
            writer,
            requests,
            WriteContext {
                checkpoints: Arc::clone(&checkpoints),
                files: Arc::clone(&files),
                restart_at,
                bound: max_wal_bytes,
            },
            stopped.clone(),
        ));
        tasks.spawn(checkpoint_when_due(
            checkpointer,
            checkpoints,
            files,
            restart_at,
            stopped.clone(),
        ));
        tasks.close();
        Self {
            queue,
            stopped,
            tasks,
        }
    }

    /// Queues the creation of `session`, after every write queued before it.
    pub async fn create_session(&self, session: Session) -> Result<PendingWrite, StoreError> {
        let (done, committed) = oneshot::channel();
        self.queue(Write::CreateSession(session, done)).await?;
        Ok(PendingWrite(committed))
    }

    /// Queues the deletion of a session and its messages, after every write queued before it;
    /// an unknown session is [`StoreError::SessionNotFound`].
    pub async fn delete_session(&self, session_id: &str) -> Result<PendingWrite, StoreError> {
        let (done, committed) = oneshot::channel();
        self.queue(Write::DeleteSession(session_id.to_owned(), done))
            .await?;
        Ok(PendingWrite(committed))
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
            settles: None,
            done,
        }))
        .await?;
        Ok(PendingWrite(committed))
    }

    /// [`append`](Self::append), and in the same transaction the replacement of `settles`'s
    /// message's metadata (`(id, JSON text)`).
    pub async fn append_settling(
        &self,
        session_id: &str,
        messages: Vec<Message>,
        settles: (String, String),
    ) -> Result<PendingWrite, StoreError> {
        let (done, committed) = oneshot::channel();
        self.queue(Write::Append(Append {
            session_id: session_id.to_owned(),
            messages,
            settles: Some(settles),
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

    /// Writes what is queued, then stops the writer (writes fail from then on) and the
    /// checkpointer after a last, complete checkpoint; returns once both are done.
    pub async fn stop(&self) {
        self.stopped.cancel();
        self.tasks.wait().await;
    }
}

/// What the writer task shares with the rest of the store.
struct WriteContext {
    checkpoints: Arc<Checkpoints>,
    files: Arc<DatabaseFiles>,
    /// WAL bytes past which a checkpoint is due and the WAL is started over.
    restart_at: u64,
    /// WAL bytes past which the writer finishes a checkpoint without waiting for one beside it.
    bound: u64,
}

async fn write_batches(
    writer: Arc<Connections>,
    mut requests: mpsc::Receiver<Write>,
    context: WriteContext,
    stopped: CancellationToken,
) {
    let mut since_checkpoint = 0;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut appends = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    // Reset by every batch: fires once the writes have paused for `IDLE_CHECKPOINT`.
    let idle = tokio::time::sleep(IDLE_CHECKPOINT);
    tokio::pin!(idle);
    let mut written_since_idle = false;
    loop {
        let received = tokio::select! {
            received = requests.recv_many(&mut batch, MAX_BATCH) => received,
            () = stopped.cancelled() => {
                // What was queued before the stop is still written; later writes fail.
                requests.close();
                requests.recv_many(&mut batch, MAX_BATCH).await
            }
            () = &mut idle, if written_since_idle => {
                written_since_idle = false;
                context.checkpoints.idle.notify_one();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let (rows, wal_bytes) = write_batch(
            &writer,
            &context.files,
            &mut batch,
            &mut appends,
            &mut replies,
        )
        .await;
        written_since_idle = true;
        idle.as_mut()
            .reset(tokio::time::Instant::now() + IDLE_CHECKPOINT);
        since_checkpoint += rows;
        if since_checkpoint >= CHECKPOINT_EVERY || wal_bytes > context.restart_at {
            since_checkpoint = 0;
            context.checkpoints.due.notify_one();
        }
        // Past the bound the writes outran the checkpoints beside them: the writer catches up
        // now rather than after the next one.
        if context.checkpoints.finish.swap(false, Ordering::AcqRel) || wal_bytes > context.bound {
            // PASSIVE: never waits, for the busy timeout or anything else. Busy while the
            // checkpointer's own is under way: tried again after the next batch.
            match checkpoint_outcome(&writer, "PRAGMA wal_checkpoint(PASSIVE)").await {
                Ok(outcome) if outcome.busy => {
                    context.checkpoints.finish.store(true, Ordering::Release);
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "finishing a WAL checkpoint failed"),
            }
        }
    }
}

/// Applies `batch` in order, then tells each request its outcome once the database is known to
/// be still at its path; the rows written (a session counts as one) and the WAL's size.
/// `appends` is room for a run of appends and `replies` for the outcomes, both left empty.
async fn write_batch(
    writer: &Arc<Connections>,
    files: &DatabaseFiles,
    batch: &mut Vec<Write>,
    appends: &mut Vec<Append>,
    replies: &mut Vec<(Reply, Result<(), StoreError>)>,
) -> (usize, u64) {
    let mut rows = 0;
    match files.lost() {
        // Nothing is written to a database no path names any more.
        Err(err) => replies.extend(
            batch
                .drain(..)
                .map(|write| (reply_of(write), Err(err.clone()))),
        ),
        Ok(()) => rows = write_in_order(writer, batch, appends, replies).await,
    }
    // Committed is not yet stored: the commits may have gone to a file deleted meanwhile.
    let wal_bytes = match files.check() {
        Ok(wal_bytes) => wal_bytes,
        Err(err) => {
            for (_, outcome) in replies.iter_mut() {
                if outcome.is_ok() {
                    *outcome = Err(err.clone());
                }
            }
            0
        }
    };
    if let Some((_, last)) = replies.last() {
        files.record_write(last);
    }
    for (done, outcome) in replies.drain(..) {
        let _ = done.send(outcome);
    }
    (rows, wal_bytes)
}

fn reply_of(write: Write) -> Reply {
    match write {
        Write::CreateSession(_, done) | Write::DeleteSession(_, done) => done,
        Write::Append(append) => append.done,
        Write::SetMetadata(update) => update.done,
    }
}

/// Applies `batch` in order, each run of appends as one statement, and puts each request's
/// outcome in `replies`; the rows written. `appends` is room for a run, left empty.
async fn write_in_order(
    writer: &Arc<Connections>,
    batch: &mut Vec<Write>,
    appends: &mut Vec<Append>,
    replies: &mut Vec<(Reply, Result<(), StoreError>)>,
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
                    replies.push((append.done, outcome));
                }
            }
            Write::SetMetadata(update) => {
                rows += 1;
                let outcome = set_metadata(writer, &update).await;
                replies.push((update.done, outcome));
            }
            Write::CreateSession(session, done) => {
                rows += 1;
                replies.push((done, create_session(writer, &session).await));
            }
            Write::DeleteSession(id, done) => {
                rows += 1;
                replies.push((done, delete_session(writer, &id).await));
            }
        }
    }
    rows
}

async fn create_session(writer: &Arc<Connections>, session: &Session) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, name, backends, metadata, options, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&session.id)
    .bind(&session.name)
    .bind(json_text(&session.backends))
    .bind(json_text(&session.metadata))
    .bind(json_text(&session.options))
    .bind(&session.created_at)
    .bind(&session.updated_at)
    .execute(&mut *writer.acquire().await?)
    .await
    .map_err(database)?;
    Ok(())
}

async fn delete_session(writer: &Arc<Connections>, id: &str) -> Result<(), StoreError> {
    // The foreign key's `ON DELETE CASCADE` deletes the messages.
    let deleted = sqlx::query("DELETE FROM sessions WHERE id = ?")
        .bind(id)
        .execute(&mut *writer.acquire().await?)
        .await
        .map_err(database)?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::SessionNotFound(id.to_owned()));
    }
    Ok(())
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
    let settles: Vec<&(String, String)> = batch
        .iter()
        .filter_map(|append| append.settles.as_ref())
        .collect();
    let mut connection = writer.acquire().await?;
    let outcome = if rows.len() <= MAX_ROWS && settles.is_empty() {
        insert_rows(&mut connection, &rows).await
    } else {
        insert_in_transaction(&mut connection, &rows, &settles).await
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

/// `rows` and the metadata `settles` replaces (`(message id, JSON text)`) in one transaction.
/// A settled question is an answer's: its update shares the answer's commit (and mostly its
/// page, the newest of the table) instead of being a commit of its own.
async fn insert_in_transaction(
    connection: &mut SqliteConnection,
    rows: &[(&str, &Message)],
    settles: &[&(String, String)],
) -> Result<(), sqlx::Error> {
    let mut transaction = connection.begin().await?;
    for chunk in rows.chunks(MAX_ROWS) {
        insert_rows(&mut transaction, chunk).await?;
    }
    for (message_id, metadata) in settles {
        sqlx::query("UPDATE messages SET metadata = ? WHERE id = ?")
            .bind(metadata)
            .bind(message_id)
            .execute(&mut *transaction)
            .await?;
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
    files: Arc<DatabaseFiles>,
    restart_at: u64,
    stopped: CancellationToken,
) {
    let mut max_frames = None;
    loop {
        tokio::select! {
            () = checkpoints.due.notified() => {
                // The writer finishes one after its next batch: one beside it would only make
                // that one busy.
                if files.lost().is_err() || checkpoints.finish.load(Ordering::Acquire) {
                    continue;
                }
                if max_frames.is_none() {
                    max_frames = wal_frames_in(&checkpointer, restart_at).await;
                }
                match checkpoint(&checkpointer, "PRAGMA wal_checkpoint(PASSIVE)").await {
                    Ok(frames) if max_frames.is_some_and(|max| frames >= max) => {
                        checkpoints.finish.store(true, Ordering::Release);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "WAL checkpoint failed"),
                }
            }
            () = checkpoints.idle.notified() => {
                if files.lost().is_err() {
                    continue;
                }
                // Waits (up to the busy timeout) for readers to finish: nothing else is waiting.
                if let Err(err) = checkpoint(&checkpointer, "PRAGMA wal_checkpoint(TRUNCATE)").await {
                    tracing::warn!(%err, "WAL checkpoint of an idle store failed");
                }
            }
            () = stopped.cancelled() => break,
        }
    }
    if files.lost().is_ok()
        && let Err(err) = checkpoint(&checkpointer, "PRAGMA wal_checkpoint(TRUNCATE)").await
    {
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
    Ok(checkpoint_outcome(on, statement).await?.frames)
}

/// What a `wal_checkpoint` pragma did.
struct Checkpointed {
    /// It could not run, or not to its end (another checkpoint was under way, a lock was held).
    busy: bool,
    /// Frames in the WAL after it.
    frames: u64,
}

async fn checkpoint_outcome(
    on: &Arc<Connections>,
    statement: &'static str,
) -> Result<Checkpointed, StoreError> {
    // (busy, frames in the WAL, frames checkpointed); -1 for both when not in WAL mode.
    let (busy, frames, _): (i64, i64, i64) = sqlx::query_as(statement)
        .fetch_one(&mut *on.acquire().await?)
        .await
        .map_err(database)?;
    Ok(Checkpointed {
        busy: busy != 0,
        frames: u64::try_from(frames).unwrap_or(0),
    })
}
