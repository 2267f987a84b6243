//! SQLite connections run on the calling thread, for the read every message starts with: the
//! session with its context.
//!
//! Why: sqlx runs each SQLite connection on a thread of its own, so every statement is a round
//! trip to that thread: wake it, wait, be woken by it, each a context switch. The read takes
//! tens of microseconds from the page cache, less than handing it over. Everything else stays
//! on sqlx: migrations, checkpoints, listings, and the writes (see `writer` for why).
//!
//! Invariants: a connection here has no busy handler, so a statement never waits on the
//! calling thread for another connection's lock: it fails at once with [`InlineError::Busy`],
//! and the caller runs it through sqlx, whose thread may wait. Every statement is reset before
//! `run` returns, so no read transaction outlives its call (a kept snapshot would stop
//! checkpoints). All `unsafe` of the store is in this module.

// The SQLite C API, each call's contract stated where it is made.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    /// Another connection holds a lock this statement needs.
    #[error("the database is locked by another connection")]
    Busy,
    #[error("{message}")]
    Sqlite { code: c_int, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// A value bound to a statement's parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Text(&'a str),
    Integer(i64),
}

/// One SQLite connection, used by one thread at a time.
pub struct InlineConnection {
    db: NonNull<ffi::sqlite3>,
    /// Prepared statements by their SQL; a handful, found by a linear search.
    statements: Vec<(&'static str, NonNull<ffi::sqlite3_stmt>)>,
}

// SAFETY: the connection is opened with SQLITE_OPEN_NOMUTEX (SQLite's multi-thread mode): it may
// be used from any thread, one at a time, which `&mut self` on every use guarantees.
unsafe impl Send for InlineConnection {}

impl InlineConnection {
    /// Opens the existing database at `path` (its schema made and WAL mode set by sqlx).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, InlineError> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| InlineError::Invalid("the database path contains a NUL byte".into()))?;
        let access = if read_only {
            ffi::SQLITE_OPEN_READONLY
        } else {
            ffi::SQLITE_OPEN_READWRITE
        };
        let flags = access | ffi::SQLITE_OPEN_NOMUTEX | ffi::SQLITE_OPEN_EXRESCODE;
        let mut db = ptr::null_mut();
        // SAFETY: `path` is a NUL-terminated string that outlives the call; `db` receives a
        // handle (also on failure, when SQLite could allocate one), closed below if so.
        let code = unsafe { ffi::sqlite3_open_v2(path.as_ptr(), &mut db, flags, ptr::null()) };
        let Some(db) = NonNull::new(db) else {
            return Err(InlineError::Sqlite {
                code,
                message: "out of memory opening the database".into(),
            });
        };
        let mut connection = Self {
            db,
            statements: Vec::new(),
        };
        if code != ffi::SQLITE_OK {
            return Err(connection.error(code)); // Dropping it closes the handle.
        }
        // The same settings as sqlx's connections (`Store::open`), but no busy timeout.
        connection.execute_script(
            c"PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
              PRAGMA wal_autocheckpoint = 0; PRAGMA mmap_size = 0;",
        )?;
        Ok(connection)
    }

    /// Runs statements without parameters or results (pragmas).
    pub fn execute_script(&mut self, sql: &CStr) -> Result<(), InlineError> {
        // SAFETY: `sql` is NUL-terminated; no callback, so no callback argument; SQLite's own
        // error message is not asked for (read from the handle instead).
        let code = unsafe {
            ffi::sqlite3_exec(
                self.db.as_ptr(),
                sql.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if code == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(code))
        }
    }

    /// Runs the one statement `sql` with `params` (bound to `?1`, `?2`, … in order), calling
    /// `on_row` for each row it returns.
    pub fn run(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
        mut on_row: impl FnMut(&Row<'_>) -> Result<(), InlineError>,
    ) -> Result<(), InlineError> {
        let statement = self.prepared(sql)?;
        let running = Running { statement };
        for (index, param) in params.iter().enumerate() {
            let index = c_int::try_from(index + 1)
                .map_err(|_| InlineError::Invalid("too many parameters".into()))?;
            let code = match *param {
                Param::Text(text) => {
                    let length = c_int::try_from(text.len()).map_err(|_| {
                        InlineError::Invalid("a text is too long for SQLite".into())
                    })?;
                    // SAFETY: `text` outlives the statement's use of it: `running` resets the
                    // statement and clears its bindings before this function returns, so
                    // SQLITE_STATIC (no copy) is sound.
                    unsafe {
                        ffi::sqlite3_bind_text(
                            statement.as_ptr(),
                            index,
                            text.as_ptr().cast::<c_char>(),
                            length,
                            ffi::SQLITE_STATIC(),
                        )
                    }
                }
                // SAFETY: a valid statement and parameter index.
                Param::Integer(value) => unsafe {
                    ffi::sqlite3_bind_int64(statement.as_ptr(), index, value)
                },
            };
            if code != ffi::SQLITE_OK {
                return Err(self.error(code));
            }
        }
        loop {
            // SAFETY: a valid, bound statement.
            match unsafe { ffi::sqlite3_step(statement.as_ptr()) } {
                ffi::SQLITE_ROW => on_row(&Row {
                    statement,
                    _running: std::marker::PhantomData,
                })?,
                ffi::SQLITE_DONE => break,
                code => return Err(self.error(code)),
            }
        }
        drop(running);
        Ok(())
    }

    fn prepared(&mut self, sql: &'static str) -> Result<NonNull<ffi::sqlite3_stmt>, InlineError> {
        if let Some((_, statement)) = self
            .statements
            .iter()
            .find(|(known, _)| ptr::eq(*known, sql) || *known == sql)
        {
            return Ok(*statement);
        }
        let length = c_int::try_from(sql.len())
            .map_err(|_| InlineError::Invalid("a statement is too long".into()))?;
        let mut statement = ptr::null_mut();
        // SAFETY: `sql` is valid for `length` bytes (no NUL needed with a length); the statement
        // is finalized when the connection drops.
        let code = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                sql.as_ptr().cast::<c_char>(),
                length,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut statement,
                ptr::null_mut(),
            )
        };
        if code != ffi::SQLITE_OK {
            return Err(self.error(code));
        }
        let statement = NonNull::new(statement)
            .ok_or_else(|| InlineError::Invalid("an empty statement".into()))?;
        self.statements.push((sql, statement));
        Ok(statement)
    }

    /// The error SQLite reports for `code`.
    fn error(&self, code: c_int) -> InlineError {
        // SAFETY: a valid handle; the message is copied before any other call on it.
        let (code, message) = unsafe {
            let extended = ffi::sqlite3_extended_errcode(self.db.as_ptr());
            let message = ffi::sqlite3_errmsg(self.db.as_ptr());
            let message = if message.is_null() {
                format!("SQLite error {code}")
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            };
            (
                if extended != ffi::SQLITE_OK {
                    extended
                } else {
                    code
                },
                message,
            )
        };
        match code & 0xff {
            ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => InlineError::Busy,
            _ => InlineError::Sqlite { code, message },
        }
    }
}

impl Drop for InlineConnection {
    fn drop(&mut self) {
        // SAFETY: each statement and then the handle are released once, here (`sqlite3_close`
        // needs every statement finalized first).
        unsafe {
            for (_, statement) in self.statements.drain(..) {
                ffi::sqlite3_finalize(statement.as_ptr());
            }
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
}

/// A statement being run: reset, with its bindings cleared, when dropped (also on an early
/// return), which ends its read transaction and releases the borrowed texts.
struct Running {
    statement: NonNull<ffi::sqlite3_stmt>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: a valid statement of a live connection.
        unsafe {
            ffi::sqlite3_reset(self.statement.as_ptr());
            ffi::sqlite3_clear_bindings(self.statement.as_ptr());
        }
    }
}

/// The current row of a running statement.
pub struct Row<'r> {
    statement: NonNull<ffi::sqlite3_stmt>,
    _running: std::marker::PhantomData<&'r ()>,
}

impl Row<'_> {
    /// Column `index` as text; `None` for NULL.
    pub fn text(&self, index: c_int) -> Result<Option<&str>, InlineError> {
        // SAFETY: a valid statement on a row; the text stays valid until the next step, reset
        // or type conversion of this column, none of which can happen while `self` is borrowed.
        unsafe {
            let text = ffi::sqlite3_column_text(self.statement.as_ptr(), index);
            if text.is_null() {
                return Ok(None);
            }
            let length = ffi::sqlite3_column_bytes(self.statement.as_ptr(), index);
            let length = usize::try_from(length).unwrap_or(0);
            let bytes = std::slice::from_raw_parts(text, length);
            std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|err| InlineError::Invalid(format!("a stored text is not UTF-8: {err}")))
        }
    }

    /// Column `index` as text; NULL is an error.
    pub fn required_text(&self, index: c_int) -> Result<&str, InlineError> {
        self.text(index)?
            .ok_or_else(|| InlineError::Invalid(format!("column {index} is NULL")))
    }

    pub fn integer(&self, index: c_int) -> i64 {
        // SAFETY: a valid statement on a row.
        unsafe { ffi::sqlite3_column_int64(self.statement.as_ptr(), index) }
    }
}
