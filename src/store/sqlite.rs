//! Opening one of the store's SQLite databases (the queue, the snapshot) the same way: created
//! 0600 before SQLite sees it, WAL mode, this process alone (`locking_mode=EXCLUSIVE`: the store
//! lock guarantees it), a bounded page cache, the format number checked, a quick integrity
//! check, the schema created.

use super::format;
use rusqlite::Connection;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// How a database is configured.
pub(super) struct Settings<'a> {
    /// `FULL` (a commit returns once its WAL frames are fdatasync'ed) or `NORMAL`.
    pub synchronous: &'a str,
    /// Page cache, KiB.
    pub cache_kib: i64,
    /// Pages after which a commit copies the WAL back (0: never inside a commit; the owner
    /// checkpoints).
    pub wal_autocheckpoint: i64,
    /// Statements that create the tables (idempotent).
    pub schema: &'a str,
    /// What the database holds, for messages (`queue`, `snapshot`).
    pub what: &'a str,
}

/// Why a database could not be opened.
#[derive(Debug)]
pub(super) enum OpenProblem {
    /// The disk or the system refuses now (full, read-only, permissions): try again later,
    /// never move the database aside for it.
    Transient(String),
    /// Damaged, not a database, or a newer format: move it aside.
    Unusable(String),
}

impl From<rusqlite::Error> for OpenProblem {
    fn from(error: rusqlite::Error) -> OpenProblem {
        use rusqlite::ErrorCode::*;
        let transient = matches!(
            error.sqlite_error_code(),
            Some(
                DiskFull
                    | CannotOpen
                    | ReadOnly
                    | PermissionDenied
                    | DatabaseBusy
                    | DatabaseLocked
                    | OutOfMemory
            )
        );
        if transient {
            OpenProblem::Transient(error.to_string())
        } else {
            OpenProblem::Unusable(error.to_string())
        }
    }
}

impl std::fmt::Display for OpenProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenProblem::Transient(text) | OpenProblem::Unusable(text) => f.write_str(text),
        }
    }
}

/// Opens, configures and checks the database at `path`, creating it when absent.
pub(super) fn open(path: &Path, settings: &Settings<'_>) -> Result<Connection, OpenProblem> {
    if !path.exists() {
        // Created 0600 before SQLite sees it; SQLite gives its WAL the same mode.
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| OpenProblem::Transient(e.to_string()))?;
    }
    let text = OpenProblem::from;
    let conn = Connection::open(path).map_err(text)?;
    // Only this process uses the database (the store lock guarantees it): no shared-memory
    // index file, and nobody else can read a half-written state.
    let _: String = conn
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))
        .map_err(text)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(text)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenProblem::Transient(format!("journal mode {mode}, not wal")));
    }
    conn.pragma_update(None, "synchronous", settings.synchronous)
        .map_err(text)?;
    conn.pragma_update(None, "cache_size", -settings.cache_kib)
        .map_err(text)?;
    conn.pragma_update(None, "wal_autocheckpoint", settings.wal_autocheckpoint)
        .map_err(text)?;
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
        .map_err(text)?;
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(text)?;
    if version > format::FORMAT {
        return Err(OpenProblem::Unusable(format!(
            "written in {} format {version} by a newer doorflow-agent; this one reads up to format {}",
            settings.what,
            format::FORMAT
        )));
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(text)?;
    if check != "ok" {
        return Err(OpenProblem::Unusable(format!("integrity check failed: {check}")));
    }
    conn.execute_batch(settings.schema).map_err(text)?;
    if version == 0 {
        conn.pragma_update(None, "user_version", format::FORMAT)
            .map_err(text)?;
    }
    Ok(conn)
}
