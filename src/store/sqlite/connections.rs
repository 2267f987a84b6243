//! A fixed set of SQLite connections handed out one request at a time.
//!
//! Why not `sqlx::Pool`: a pooled connection is pinged when it is handed back (and, by default,
//! before it is handed out) and its return is a spawned task. For SQLite a ping is a round trip
//! to the connection's own thread, so each statement would cost two or three extra thread
//! wake-ups (with the echo backend, 28 context switches and 765 µs of CPU per session message,
//! against 15–21 and 515–660 µs without; BENCHMARKS.md). An embedded database has no network
//! connection to test, and no request can leave a transaction open on these connections: a
//! request's statement is its own transaction, so a connection handed back mid-statement only
//! finishes it before the next one runs (only the writer task, which is never cancelled
//! mid-write, runs a transaction of several statements).
//!
//! Invariant: an open connection is either idle here or held by exactly one `Checkout`, which
//! puts it back when dropped; at most `count` are open; `close` waits for every one of them.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{StoreError, database};

pub struct Connections {
    options: SqliteConnectOptions,
    idle: Mutex<Vec<SqliteConnection>>,
    /// One permit per connection that may be open; closed by `close`.
    permits: Arc<Semaphore>,
    count: u32,
}

/// A connection taken from [`Connections`]; handed back on drop.
pub struct Checkout {
    connection: Option<SqliteConnection>,
    from: Arc<Connections>,
    _permit: OwnedSemaphorePermit,
}

impl Connections {
    /// Up to `count` connections with `options`, opened when first needed (an idle server
    /// keeps only those it has used: each is a thread and a page cache).
    pub fn new(options: SqliteConnectOptions, count: u32) -> Arc<Self> {
        Arc::new(Self {
            options,
            idle: Mutex::new(Vec::with_capacity(count as usize)),
            permits: Arc::new(Semaphore::new(count as usize)),
            count,
        })
    }

    /// Waits for an idle connection, or opens one while fewer than `count` are open.
    pub async fn acquire(self: &Arc<Self>) -> Result<Checkout, StoreError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            // Holding a permit while none is idle: fewer than `count` are open.
            None => SqliteConnection::connect_with(&self.options)
                .await
                .map_err(database)?,
        };
        Ok(Checkout {
            connection: Some(connection),
            from: Arc::clone(self),
            _permit: permit,
        })
    }

    /// Waits until every connection is back, then closes them all; `acquire` fails from then on.
    pub async fn close(&self) {
        let Ok(all) = self.permits.acquire_many(self.count).await else {
            return; // Already closed.
        };
        self.permits.close();
        drop(all);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for connection in idle {
            if let Err(err) = connection.close().await {
                tracing::warn!(%err, "closing a database connection failed");
            }
        }
    }
}

impl Deref for Checkout {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        // Present from construction until drop.
        self.connection.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.connection.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.from
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(connection);
        }
        // The permit is released after the connection is back (field order).
    }
}
