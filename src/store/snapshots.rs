//! The credential snapshot and the sync metadata, in SQLite (`snapshot.sqlite`).
//!
//! A snapshot lives in a *slot*: its records are rows `(slot, kind, key, body)` and its header
//! a row of `slots`. Exactly one slot is current. A sync writes into a new, staged slot page by
//! page (each page its own transaction, so a pull that pauses for a rate limit keeps what it
//! has), then commits in one transaction:
//!
//! - every kind pulled in full: the staged slot becomes current (the old one is deleted after);
//! - otherwise the staged rows are merged into the current slot — kinds pulled in full replace
//!   the current rows of their kind, changed records (people since the cursor) replace theirs
//!   by key — and the header is rewritten.
//!
//! Either way the doors' snapshot, its counts and the sync cursor change in the same
//! transaction: a crash leaves the old snapshot with the old cursor or the new with the new,
//! never a mix. Staged slots left by a crash are deleted at the next open.
//!
//! Memory: SQLite's page cache for this database is `store.cache_capacity_mb`; records are
//! read and written one at a time, never as a whole snapshot.

use super::format::{self, RecordSource, SnapshotHeaderV1};
use super::layout::Layout;
use super::sqlite::{self, OpenProblem};
use super::{testing, StoreError};
use crate::snapshot::{Record, RecordKind, SnapshotCounts, SnapshotSink};
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slots (slot INTEGER PRIMARY KEY, current INTEGER NOT NULL DEFAULT 0, header BLOB);
CREATE TABLE IF NOT EXISTS records (
    slot INTEGER NOT NULL, kind INTEGER NOT NULL, key BLOB NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (slot, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
";

/// What is known about the current snapshot without loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    /// Grows with every change to the snapshot, also past the last good copy's.
    pub generation: u64,
    pub synced_at: Option<Timestamp>,
    pub written_at: Timestamp,
    pub counts: SnapshotCounts,
}

impl SnapshotHeader {
    pub(super) fn to_disk(&self) -> SnapshotHeaderV1 {
        SnapshotHeaderV1 {
            format: format::FORMAT,
            generation: self.generation,
            synced_at: self.synced_at,
            written_at: self.written_at,
            counts: format::DiskRecord::to_disk(&self.counts),
        }
    }

    /// The header of a stored snapshot, refusing a format this binary does not know.
    pub(super) fn from_disk(disk: SnapshotHeaderV1, path: &Path) -> Result<SnapshotHeader, StoreError> {
        if disk.format > format::FORMAT {
            return Err(StoreError::NewerFormat {
                path: path.to_path_buf(),
                found: disk.format,
                supported: format::FORMAT,
            });
        }
        Ok(SnapshotHeader {
            generation: disk.generation,
            synced_at: disk.synced_at,
            written_at: disk.written_at,
            counts: format::DiskRecord::from_disk(disk.counts),
        })
    }
}

/// What loading a snapshot into a sink found.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub header: SnapshotHeader,
    /// `kind/key: error` for each record that did not decode (that person or credential is
    /// denied until the next sync).
    pub unreadable: Vec<String>,
}

/// How a commit treats one kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Pulled in full: the staged records are all there is.
    Replace,
    /// Changed records only: each replaces the current record with its key, the others stay.
    Overlay,
    /// Not pulled: the current records stay.
    Keep,
}

/// Position of `kind` in [`RecordKind::ALL`]: its stored number, and the order kinds are read.
fn kind_number(kind: RecordKind) -> i64 {
    RecordKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as i64
}

pub(super) struct SnapshotDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SnapshotDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDb").field("path", &self.path).finish()
    }
}

/// What opening the snapshot database did besides opening it.
#[derive(Debug, Default)]
pub(super) struct SnapshotOpened {
    /// Where an unusable database was moved.
    pub moved_to: Option<PathBuf>,
    pub problem: Option<String>,
}

impl SnapshotDb {
    /// Opens (or creates) the snapshot database with a page cache of `cache_kib`. One that
    /// cannot be used (not a database, damaged, a newer format) is moved aside and a new, empty
    /// one created: a sync or the last good copy refills it. Staged slots of an interrupted
    /// sync are deleted.
    pub(super) fn open(layout: &Layout, cache_kib: i64) -> Result<(SnapshotDb, SnapshotOpened), StoreError> {
        let path = layout.snapshot_db();
        let settings = sqlite::Settings {
            // A power cut may take the last commit back; the database stays whole, the cursor
            // with it, and `snapshot.last-good` (fsynced) has the newest copy.
            synchronous: "NORMAL",
            cache_kib,
            wal_autocheckpoint: 1000,
            schema: SCHEMA,
            what: "snapshot",
        };
        let mut opened = SnapshotOpened::default();
        let conn = match sqlite::open(&path, &settings) {
            Ok(conn) => conn,
            Err(OpenProblem::Transient(detail)) => {
                return Err(StoreError::Unavailable {
                    path: path.clone(),
                    detail,
                })
            }
            Err(OpenProblem::Unusable(problem)) => {
                let moved_to = layout.move_aside(&path).map_err(|e| StoreError::io(&path, e))?;
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                opened.moved_to = Some(moved_to);
                opened.problem = Some(problem);
                sqlite::open(&path, &settings).map_err(|p| StoreError::Damaged {
                    path: path.clone(),
                    detail: p.to_string(),
                })?
            }
        };
        let db = SnapshotDb {
            path,
            conn: Mutex::new(conn),
        };
        db.delete_staged()?;
        Ok((db, opened))
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Snapshot {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn delete_staged(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        let staged: Vec<i64> = {
            let mut statement = conn
                .prepare("SELECT slot FROM slots WHERE current = 0")
                .map_err(|e| self.error(e))?;
            let rows = statement.query_map([], |r| r.get(0)).map_err(|e| self.error(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.error(e))?
        };
        for slot in staged {
            tracing::info!(slot, "deleting the staged records of an interrupted sync");
            delete_slot(&conn, slot).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn current(&self, conn: &Connection) -> Result<Option<(i64, SnapshotHeader)>, StoreError> {
        let row: Option<(i64, Option<Vec<u8>>)> = conn
            .query_row(
                "SELECT slot, header FROM slots WHERE current = 1 ORDER BY slot DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((slot, header)) = row else {
            return Ok(None);
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            path: self.path.clone(),
            generation: slot as u64,
            detail,
        };
        let header = header.ok_or_else(|| corrupt("header missing".into()))?;
        let disk: SnapshotHeaderV1 =
            serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
        Ok(Some((slot, SnapshotHeader::from_disk(disk, &self.path)?)))
    }

    /// The current snapshot's header, cheap enough for `status`.
    pub(super) fn header(&self) -> Result<Option<SnapshotHeader>, StoreError> {
        let conn = self.lock();
        Ok(self.current(&conn)?.map(|(_, header)| header))
    }

    /// Loads the current snapshot into `sink`, one record at a time. Records that do not decode
    /// are left out and listed; a record count that differs from the header (records missing)
    /// is corruption, and `sink` must then be thrown away.
    pub(super) fn load_into(
        &self,
        sink: &mut dyn SnapshotSink,
    ) -> Result<Option<LoadedSnapshot>, StoreError> {
        let conn = self.lock();
        let Some((slot, header)) = self.current(&conn)? else {
            return Ok(None);
        };
        sink.synced_at(header.synced_at);
        let mut source = SlotSource::new(&conn, slot, &self.path)?;
        let report = format::read_records(&mut source, sink);
        drop(source);
        release_cache(&conn);
        let report = report?;
        if report.found != header.counts {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                generation: header.generation,
                detail: format!(
                    "record counts {:?} differ from header {:?}",
                    report.found, header.counts
                ),
            });
        }
        Ok(Some(LoadedSnapshot {
            header,
            unreadable: report.unreadable,
        }))
    }

    /// The current records of one kind into `sink` (unreadable ones skipped and logged): the
    /// channels for `status` without loading 100,000 credentials.
    pub(super) fn load_kind(&self, kind: RecordKind, sink: &mut dyn SnapshotSink) -> Result<(), StoreError> {
        let conn = self.lock();
        let Some((slot, _)) = self.current(&conn)? else {
            return Ok(());
        };
        let mut source = SlotSource::new(&conn, slot, &self.path)?;
        while let Some((name, bytes)) = source.next(kind)? {
            match format::decode_record(kind, &bytes) {
                Ok(record) => sink.record(record),
                Err(error) => tracing::error!(record = %name, %error, "unreadable snapshot record skipped"),
            }
        }
        Ok(())
    }

    /// Hands the current snapshot's header and its records as stored, kind by kind, to `write`
    /// (the last good copy is written from it without decoding).
    pub(super) fn export(
        &self,
        write: &mut dyn FnMut(&SnapshotHeader, &mut dyn RecordSource) -> Result<(), StoreError>,
    ) -> Result<Option<SnapshotHeader>, StoreError> {
        let conn = self.lock();
        let Some((slot, header)) = self.current(&conn)? else {
            return Ok(None);
        };
        let mut source = SlotSource::new(&conn, slot, &self.path)?;
        let written = write(&header, &mut source);
        drop(source);
        release_cache(&conn);
        written?;
        Ok(Some(header))
    }

    /// A new staged slot for a sync to fill.
    pub(super) fn stage(&self) -> Result<Staged, StoreError> {
        let conn = self.lock();
        conn.execute("INSERT INTO slots (current) VALUES (0)", [])
            .map_err(|e| self.error(e))?;
        Ok(Staged {
            slot: conn.last_insert_rowid(),
        })
    }

    /// Writes `records` into the staged slot in one transaction. Returns how many had a key
    /// already staged (the later record replaces the earlier).
    pub(super) fn put(&self, staged: &Staged, records: &[Record]) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let mut repeated = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO records (slot, kind, key, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.error(e))?;
            let mut replace = tx
                .prepare_cached("UPDATE records SET body = ?4 WHERE slot = ?1 AND kind = ?2 AND key = ?3")
                .map_err(|e| self.error(e))?;
            for record in records {
                let key = format::encode_key(&record.key());
                let body = format::encode_record(record);
                let kind = kind_number(record.kind());
                let added = insert
                    .execute(params![staged.slot, kind, key, body])
                    .map_err(|e| self.error(e))?;
                if added == 0 {
                    repeated += 1;
                    replace
                        .execute(params![staged.slot, kind, key, body])
                        .map_err(|e| self.error(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(repeated)
    }

    /// Records of `kind` staged so far.
    pub(super) fn staged_count(&self, staged: &Staged, kind: RecordKind) -> Result<u64, StoreError> {
        let conn = self.lock();
        count(&conn, staged.slot, kind).map_err(|e| self.error(e))
    }

    /// Makes the staged slot the snapshot, as `merges` says for each kind (a kind it does not
    /// name is kept), with `meta` written in the same transaction. The new header's generation
    /// is above both the current one and `at_least`. On any error nothing changed.
    pub(super) fn commit(
        &self,
        staged: Staged,
        merges: &[(RecordKind, Merge)],
        synced_at: Option<Timestamp>,
        at_least: u64,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<SnapshotHeader, StoreError> {
        let merge_of = |kind| {
            merges
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(Merge::Keep, |(_, m)| *m)
        };
        let mut conn = self.lock();
        let previous = self.current(&conn)?;
        testing::failpoint("snapshot.records_written");
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let e = |e| self.error(e);
        let all_replaced = RecordKind::ALL.iter().all(|k| merge_of(*k) == Merge::Replace);
        let (slot, retired) = match &previous {
            Some((current, _)) if !all_replaced => {
                for kind in RecordKind::ALL {
                    let number = kind_number(kind);
                    match merge_of(kind) {
                        Merge::Keep => continue,
                        Merge::Replace => {
                            tx.execute(
                                "DELETE FROM records WHERE slot = ?1 AND kind = ?2",
                                params![current, number],
                            )
                            .map_err(e)?;
                        }
                        Merge::Overlay => {}
                    }
                    tx.execute(
                        "INSERT OR REPLACE INTO records (slot, kind, key, body)
                         SELECT ?1, kind, key, body FROM records WHERE slot = ?2 AND kind = ?3",
                        params![current, staged.slot, number],
                    )
                    .map_err(e)?;
                }
                delete_slot(&tx, staged.slot).map_err(e)?;
                (*current, None)
            }
            _ => (staged.slot, previous.as_ref().map(|(slot, _)| *slot)),
        };
        let mut counts = SnapshotCounts::default();
        for kind in RecordKind::ALL {
            counts.set(kind, count(&tx, slot, kind).map_err(e)?);
        }
        let generation = previous
            .as_ref()
            .map_or(0, |(_, h)| h.generation + 1)
            .max(at_least);
        let header = SnapshotHeader {
            generation,
            synced_at,
            written_at: Timestamp::now(),
            counts,
        };
        let bytes = serde_json::to_vec(&header.to_disk()).unwrap_or_default();
        testing::failpoint("snapshot.before_flip");
        tx.execute(
            "UPDATE slots SET current = 1, header = ?2 WHERE slot = ?1",
            params![slot, bytes],
        )
        .map_err(e)?;
        if let Some(retired) = retired {
            tx.execute("UPDATE slots SET current = 0 WHERE slot = ?1", params![retired])
                .map_err(e)?;
        }
        for (key, value) in meta {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        testing::failpoint("snapshot.after_flip");
        // The retired slot is no longer current: deleting it can wait for the next open if
        // this fails or the process stops here.
        if let Some(retired) = retired {
            if let Err(error) = delete_slot(&conn, retired) {
                tracing::warn!(%error, "the previous snapshot's records were not deleted yet");
            }
        }
        release_cache(&conn);
        Ok(header)
    }

    /// Marks the current snapshot as confirmed at `synced_at` (a sync that found nothing to
    /// change) with `meta`, in one transaction; the records and the generation stay.
    pub(super) fn touch(&self, synced_at: Timestamp, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let current = self.current(&conn)?;
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        if let Some((slot, mut header)) = current {
            header.synced_at = Some(synced_at);
            let bytes = serde_json::to_vec(&header.to_disk()).unwrap_or_default();
            tx.execute(
                "UPDATE slots SET header = ?2 WHERE slot = ?1",
                params![slot, bytes],
            )
            .map_err(|e| self.error(e))?;
        }
        for (key, value) in meta {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// Deletes a staged slot that will not be committed.
    pub(super) fn abandon(&self, staged: Staged) -> Result<(), StoreError> {
        let conn = self.lock();
        delete_slot(&conn, staged.slot).map_err(|e| self.error(e))
    }

    /// A small value kept with the snapshot (sync cursors and similar), JSON-encoded.
    pub(super) fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let conn = self.lock();
        let value: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.error(e))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub(super) fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let conn = self.lock();
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, bytes],
        )
        .map_err(|e| self.error(e))?;
        testing::failpoint("meta.written");
        Ok(())
    }

    pub(super) fn meta_remove(&self, key: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute("DELETE FROM meta WHERE key = ?1", [key])
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Copies the WAL back into the database.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.error(e))
    }

    #[cfg(test)]
    pub(super) fn slots(&self) -> Vec<(i64, bool)> {
        let conn = self.lock();
        let mut statement = conn
            .prepare("SELECT slot, current FROM slots ORDER BY slot")
            .unwrap();
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? == 1)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[cfg(test)]
    pub(super) fn execute(&self, sql: &str) {
        self.lock().execute_batch(sql).unwrap();
    }
}

/// A slot being filled by a sync; committed or abandoned (dropping it leaves the rows for the
/// next open to delete). Copies name the same slot (the list parser stages on its own thread).
#[derive(Debug, Clone)]
pub struct Staged {
    slot: i64,
}

fn count(conn: &Connection, slot: i64, kind: RecordKind) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM records WHERE slot = ?1 AND kind = ?2",
        params![slot, kind_number(kind)],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// Hands the pages SQLite cached while a whole snapshot went through back to the allocator:
/// the cache is for the sync's work, and between syncs nothing reads the database.
fn release_cache(conn: &Connection) {
    let _ = conn.execute_batch("PRAGMA shrink_memory");
}

fn delete_slot(conn: &Connection, slot: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM records WHERE slot = ?1", [slot])?;
    conn.execute("DELETE FROM slots WHERE slot = ?1", [slot])?;
    Ok(())
}

/// A slot's records, kind by kind in key order, read one row at a time.
struct SlotSource<'c> {
    statement: rusqlite::Statement<'c>,
    slot: i64,
    kind: Option<RecordKind>,
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// The last key read of the current kind (rows are fetched in chunks after it).
    after: Option<Vec<u8>>,
    done: bool,
    path: &'c Path,
}

/// Rows fetched per query: bounds memory while reading 130,000 credentials.
const CHUNK: i64 = 1024;

impl<'c> SlotSource<'c> {
    fn new(conn: &'c Connection, slot: i64, path: &'c Path) -> Result<SlotSource<'c>, StoreError> {
        let statement = conn
            .prepare(
                "SELECT key, body FROM records WHERE slot = ?1 AND kind = ?2 AND key > ?3
                 ORDER BY key LIMIT ?4",
            )
            .map_err(|source| StoreError::Snapshot {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SlotSource {
            statement,
            slot,
            kind: None,
            rows: Vec::new(),
            after: None,
            done: false,
            path,
        })
    }

    fn fetch(&mut self, kind: RecordKind) -> Result<(), StoreError> {
        let after = self.after.clone().unwrap_or_default();
        let rows = self
            .statement
            .query_map(params![self.slot, kind_number(kind), after, CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<(Vec<u8>, Vec<u8>)>, _>>())
            .map_err(|source| StoreError::Snapshot {
                path: self.path.to_path_buf(),
                source,
            })?;
        self.done = (rows.len() as i64) < CHUNK;
        self.rows = rows;
        self.rows.reverse();
        Ok(())
    }
}

impl RecordSource for SlotSource<'_> {
    fn next(&mut self, kind: RecordKind) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        if self.kind != Some(kind) {
            self.kind = Some(kind);
            self.after = None;
            self.fetch(kind)?;
        } else if self.rows.is_empty() && !self.done {
            self.fetch(kind)?;
        }
        let Some((key, body)) = self.rows.pop() else {
            return Ok(None);
        };
        let name = format!("{}/{}", kind.as_str(), key_text(&key));
        self.after = Some(key);
        Ok(Some((name, body)))
    }
}

/// A stored key for messages: the id, and a credential's own id after its person's.
fn key_text(key: &[u8]) -> String {
    let id = <[u8; 8]>::try_from(&key[..key.len().min(8)])
        .map(u64::from_be_bytes)
        .unwrap_or_default();
    match &key[key.len().min(8)..] {
        [] => id.to_string(),
        rest => format!("{id}/{}", String::from_utf8_lossy(rest)),
    }
}
