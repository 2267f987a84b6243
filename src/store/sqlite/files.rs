//! The database file and its write-ahead log as the store opened them, and whether they are still
//! the files at their paths; the outcome of the last write, for `/health`.
//!
//! Why: SQLite goes on writing to a file deleted (or replaced) under it. Every commit succeeds
//! into an inode that no path names any more and that vanishes when the process exits, and a
//! restart opens, or creates empty, whatever is at the path then. So every read, every write
//! batch (after its commit, before it is acknowledged) and every health probe compares the
//! identity (device, inode) of what is at the paths with what was opened: two `stat`s, no I/O on
//! the database, nothing written.
//!
//! Invariants: once the files are found gone or replaced, the store stays lost until the process
//! restarts, even if the path comes back (the database open is not the one there, and no new
//! connection is opened to whatever is there now; nothing creates a database under a running
//! server); a write that failed for want of storage (disk full, I/O error) is reported by
//! [`DatabaseFiles::health`] until a later write succeeds.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::StoreError;

/// What a path names: the device and inode of the file.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
}

impl Identity {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

pub struct DatabaseFiles {
    database: PathBuf,
    wal: PathBuf,
    opened: Identity,
    /// `None` when SQLite had not created the log yet at open.
    wal_opened: Option<Identity>,
    /// Why the store is lost, once it is: set once, never cleared.
    lost: OnceLock<String>,
    /// The failure of the last write that failed for want of storage, until one succeeds.
    last_write: Mutex<Option<StoreError>>,
}

impl DatabaseFiles {
    /// The files at `database` and beside it (`-wal`) as they are now, just after they were
    /// opened.
    pub fn opened(database: &Path) -> std::io::Result<Self> {
        let wal = wal_path(database);
        let opened = Identity::of(&std::fs::metadata(database)?);
        let wal_opened = std::fs::metadata(&wal).ok().map(|m| Identity::of(&m));
        Ok(Self {
            database: database.to_owned(),
            wal,
            opened,
            wal_opened,
            lost: OnceLock::new(),
            last_write: Mutex::new(None),
        })
    }

    /// Whether the store was already found lost (no `stat`): the error every operation fails
    /// with from then on.
    pub fn lost(&self) -> Result<(), StoreError> {
        match self.lost.get() {
            Some(why) => Err(StoreError::Unavailable(why.clone())),
            None => Ok(()),
        }
    }

    /// Whether the opened files are still the ones at their paths; the size of the write-ahead
    /// log in bytes when they are.
    pub fn check(&self) -> Result<u64, StoreError> {
        self.lost()?;
        match std::fs::metadata(&self.database) {
            Ok(metadata) if Identity::of(&metadata) == self.opened => {}
            Ok(_) => return Err(self.lose("was replaced by another file")),
            Err(err) => return Err(self.lose(&format!("is gone ({err})"))),
        }
        let Some(wal_opened) = self.wal_opened else {
            return Ok(0);
        };
        match std::fs::metadata(&self.wal) {
            Ok(metadata) if Identity::of(&metadata) == wal_opened => Ok(metadata.len()),
            Ok(_) => Err(self.lose("has its write-ahead log replaced")),
            Err(err) => Err(self.lose(&format!("has lost its write-ahead log ({err})"))),
        }
    }

    /// Marks the store lost for good, with `what` happened to the database file; the error.
    fn lose(&self, what: &str) -> StoreError {
        let why = format!(
            "the database file {} {what} while lit-mux was running; nothing more is read or \
             written until lit-mux is restarted",
            self.database.display()
        );
        if self.lost.set(why.clone()).is_ok() {
            tracing::error!(reason = %why, "storage lost");
        }
        StoreError::Unavailable(self.lost.get().cloned().unwrap_or(why))
    }

    /// Records the outcome of a write for [`health`](Self::health): a failure of the storage
    /// is kept until a write succeeds; other failures (a missing session) say nothing of it.
    pub fn record_write(&self, outcome: &Result<(), StoreError>) {
        let mut last = self
            .last_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(()) => *last = None,
            Err(err @ (StoreError::Full(_) | StoreError::Unavailable(_))) => {
                *last = Some(err.clone());
            }
            Err(_) => {}
        }
    }

    /// Whether the store can be used: the files are the ones opened and the last write did
    /// not fail for want of storage.
    pub fn health(&self) -> Result<(), StoreError> {
        self.check()?;
        match &*self
            .last_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

/// SQLite's write-ahead log of the database at `database`.
fn wal_path(database: &Path) -> PathBuf {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}
