//! All persistent state goes through this module. It keeps two engines, each for what it is
//! good at (see ARCHITECTURE.md, "Storage"):
//!
//! - **SQLite** (`queue`): the durable queue — both outbox lanes with their holds and attempt
//!   counts, dead letters, the local event log, the queue counters. Every commit is fsynced
//!   before it returns, so "acknowledged" means on stable storage.
//! - **sled** (`snapshots`): the credential snapshot and the sync metadata, which a sync can
//!   always rebuild. A copy of the last snapshot is also kept outside sled (`last_good`).
//!
//! On-disk shapes live in `format` (versioned, apart from the in-memory model), the directory
//! and its permissions in `layout`, test-only crash points in `testing`.
//!
//! Opening never gives up on a damaged part: whatever cannot be opened is moved aside into
//! `damaged/` (kept for inspection), reported plainly in the journal and in `status`, and
//! started afresh, so the agent always comes up and its doors always decide.

pub mod format;
mod last_good;
mod layout;
mod queue;
mod snapshots;
pub mod testing;

pub use queue::{
    Call, Capacity, DeadLetter, DropNote, Entry, Group, Hold, Lane, LossNote, OutboxStats, QueuedCall,
};
pub use snapshots::{LoadedSnapshot, SnapshotHeader};

use crate::snapshot::SnapshotParts;
use layout::{Layout, OpenAttempts, OwnerLock};
use queue::QueueDb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use snapshots::SnapshotDb;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Start-ups that stopped while opening the store before the credential cache is moved aside
/// (sled can abort on a damaged file; under `Restart=always` that would loop forever).
const FAILED_OPENS_BEFORE_SNAPSHOT_ASIDE: u32 = 2;
/// ... and before the queue database is moved aside as well.
const FAILED_OPENS_BEFORE_QUEUE_ASIDE: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path} is in use by another process (is the agent running? use its admin socket)")]
    Locked { path: PathBuf },
    #[error("credential cache {path}: {source}")]
    Engine {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("queue database {path}: {source}")]
    Queue {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store task did not finish: {0}")]
    Task(String),
    #[error("store {path}: snapshot generation {generation} is corrupt: {detail}")]
    Corrupt {
        path: PathBuf,
        generation: u64,
        detail: String,
    },
    #[error("store {path} was written in format {found} by a newer doorflow-agent; this one reads formats up to {supported}. Upgrade the agent, or let a sync rewrite the snapshot")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
    /// Not damage: a full disk or missing permissions. Nothing is moved aside.
    #[error("store {path} cannot be opened now: {detail}")]
    Unavailable { path: PathBuf, detail: String },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether the store is accepting writes right now (a full disk, an I/O error), for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// The last queue write failed with this error (cleared by the next that succeeds).
    pub queue_error: Option<String>,
    /// The last snapshot write failed with this error.
    pub snapshot_error: Option<String>,
    /// Queue and snapshot writes that failed since the store was opened (for metrics).
    #[serde(default)]
    pub write_errors: u64,
}

/// Where the snapshot the doors start with came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotSource {
    /// sled's current snapshot.
    Cache,
    /// `snapshot.last-good`, because sled's was missing, older or unusable.
    LastGood,
    /// Nothing usable: every card is denied until a sync.
    None,
}

/// The snapshot the agent starts with.
#[derive(Debug)]
pub struct StartingSnapshot {
    pub parts: SnapshotParts,
    pub source: SnapshotSource,
    pub generation: Option<u64>,
}

/// Problems found while opening, for the journal (already logged) and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenReport {
    /// Parts moved into `damaged/`.
    pub moved_aside: Vec<String>,
    /// Plain sentences: what was wrong and what was done.
    pub problems: Vec<String>,
}

pub struct Store {
    layout: Layout,
    snapshots: SnapshotDb,
    queue: QueueDb,
    health: Mutex<StoreHealth>,
    report: Mutex<OpenReport>,
    /// Last: released after the engines are closed.
    _lock: OwnerLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.layout.root())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` with sled's page cache capped at
    /// `cache_capacity_bytes`. Fails at once with `Locked` when another process has it.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        let layout = Layout::new(path);
        layout.create()?;
        let lock = layout.try_lock()?;
        layout.prepare()?;
        Store::open_locked(layout, lock, cache_capacity_bytes, 0)
    }

    /// Opens the store as the agent does: waits up to `wait` for a process that has it briefly
    /// (a `status` or `queue` command reading a stopped agent's store), moves aside what
    /// cannot be opened, and loads the best snapshot there is.
    pub fn open_for_agent(
        path: &Path,
        cache_capacity_bytes: u64,
        wait: Duration,
    ) -> Result<(Store, StartingSnapshot), StoreError> {
        let layout = Layout::new(path);
        layout.create()?;
        let lock = lock_waiting(&layout, wait)?;
        layout.prepare()?;
        let (attempts, unfinished) = OpenAttempts::begin(&layout);
        let store = match Store::open_locked(layout, lock, cache_capacity_bytes, unfinished) {
            Ok(store) => store,
            Err(error) => {
                // An orderly failure (a full disk, permissions) is not a crash while opening.
                attempts.finished();
                return Err(error);
            }
        };
        let starting = store.load_best_snapshot();
        attempts.finished();
        Ok((store, starting))
    }

    fn open_locked(
        layout: Layout,
        lock: OwnerLock,
        cache_capacity_bytes: u64,
        unfinished_opens: u32,
    ) -> Result<Store, StoreError> {
        let mut report = OpenReport::default();
        let _ = std::fs::remove_file(format!("{}.tmp", layout.last_good().display()));
        if unfinished_opens >= FAILED_OPENS_BEFORE_SNAPSHOT_ASIDE {
            let why = format!("the last {unfinished_opens} start-ups stopped while opening the store");
            move_aside(&layout, &layout.snapshot_db(), &why, &mut report)?;
            if unfinished_opens >= FAILED_OPENS_BEFORE_QUEUE_ASIDE {
                move_aside(&layout, &layout.queue_db(), &why, &mut report)?;
            }
        }
        let snapshot_path = layout.snapshot_db();
        let snapshots = match SnapshotDb::open(&snapshot_path, cache_capacity_bytes) {
            Ok(snapshots) => snapshots,
            Err(error) if is_transient(&error) => return Err(error),
            Err(error) => {
                move_aside(
                    &layout,
                    &snapshot_path,
                    &format!("it cannot be opened: {error}"),
                    &mut report,
                )?;
                SnapshotDb::open(&snapshot_path, cache_capacity_bytes)?
            }
        };
        let (queue, opened) = QueueDb::open(&layout)?;
        if let Some(moved) = opened.moved_to {
            report.moved_aside.push(moved.display().to_string());
            report.problems.push(format!(
                "the queue database could not be used and was moved to {}; {} queued records were lost",
                moved.display(),
                opened.lost
            ));
        } else if opened.lost > 0 {
            report.problems.push(format!(
                "{} acknowledged queued records were missing from the queue database",
                opened.lost
            ));
        }
        let store = Store {
            layout,
            snapshots,
            queue,
            health: Mutex::new(StoreHealth::default()),
            report: Mutex::new(report),
            _lock: lock,
        };
        store.import_legacy_queue()?;
        store.layout.tighten_new_files();
        Ok(store)
    }

    /// Moves 0.1.0's queue (sled trees) into the queue database, once.
    fn import_legacy_queue(&self) -> Result<(), StoreError> {
        let legacy = self.snapshots.legacy_queue()?;
        if legacy.is_empty() {
            return Ok(());
        }
        if self.queue.import_legacy(&legacy)? {
            tracing::info!(
                queued = legacy.queued.len(),
                dead = legacy.dead.len(),
                event_log = legacy.event_log.len(),
                "queue of an earlier version moved into the queue database"
            );
        }
        testing::failpoint("legacy.imported");
        if self.queue.legacy_imported()? {
            self.snapshots.drop_legacy_queue()?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.layout.root()
    }

    /// What opening found wrong (also logged when it happened).
    pub fn open_report(&self) -> OpenReport {
        lock(&self.report).clone()
    }

    pub fn health(&self) -> StoreHealth {
        lock(&self.health).clone()
    }

    fn note_queue_write<T>(&self, result: &Result<T, StoreError>) {
        let mut health = lock(&self.health);
        match result {
            Ok(_) if health.queue_error.is_some() => {
                tracing::warn!("queue database writable again");
                health.queue_error = None;
            }
            Ok(_) => {}
            Err(error) => {
                health.queue_error = Some(error.to_string());
                health.write_errors += 1;
            }
        }
    }

    fn note_snapshot_write(&self, error: Option<&StoreError>) {
        let mut health = lock(&self.health);
        health.snapshot_error = error.map(|e| e.to_string());
        health.write_errors += u64::from(error.is_some());
    }

    /// The snapshot the doors start with: sled's current one, or the last good copy when
    /// sled's is missing, older or unusable, or nothing (deny every card until a sync). Every
    /// fallback is logged and noted in the open report.
    fn load_best_snapshot(&self) -> StartingSnapshot {
        let copy = last_good::header(&self.layout.last_good());
        let cached = self.snapshots.load();
        let problem = match cached {
            Ok(Some(loaded))
                if copy
                    .as_ref()
                    .is_none_or(|c| c.generation <= loaded.header.generation) =>
            {
                return self.starting(loaded, SnapshotSource::Cache);
            }
            Ok(Some(loaded)) => {
                let problem = format!(
                    "the credential cache holds snapshot {} but the last good copy is the newer {}",
                    loaded.header.generation,
                    copy.as_ref().map_or(0, |c| c.generation)
                );
                match self.load_last_good(&problem) {
                    Some(starting) => return starting,
                    None => return self.starting(loaded, SnapshotSource::Cache),
                }
            }
            Ok(None) if copy.is_none() => {
                return StartingSnapshot {
                    parts: SnapshotParts::default(),
                    source: SnapshotSource::None,
                    generation: None,
                }
            }
            Ok(None) => "the credential cache has no snapshot".to_string(),
            Err(error) => format!("the credential cache's snapshot is unusable: {error}"),
        };
        if let Some(starting) = self.load_last_good(&problem) {
            return starting;
        }
        let sentence = format!(
            "{problem}, and there is no usable last good copy: every card is denied until the next sync"
        );
        tracing::error!("{sentence}");
        lock(&self.report).problems.push(sentence);
        StartingSnapshot {
            parts: SnapshotParts::default(),
            source: SnapshotSource::None,
            generation: None,
        }
    }

    fn load_last_good(&self, problem: &str) -> Option<StartingSnapshot> {
        match last_good::load(&self.layout.last_good()) {
            Ok(Some(loaded)) => {
                let sentence = format!(
                    "{problem}; the doors decide from the last good copy (snapshot {}, synced {}) until the next sync",
                    loaded.header.generation,
                    loaded
                        .header
                        .synced_at
                        .map_or_else(|| "never".to_string(), |t| t.to_string())
                );
                tracing::error!("{sentence}");
                lock(&self.report).problems.push(sentence);
                Some(self.starting(loaded, SnapshotSource::LastGood))
            }
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "the last good snapshot copy is unusable too");
                None
            }
        }
    }

    fn starting(&self, loaded: LoadedSnapshot, source: SnapshotSource) -> StartingSnapshot {
        for record in &loaded.unreadable {
            tracing::error!(generation = loaded.header.generation, record = %record, "UNREADABLE SNAPSHOT RECORD left out: the person or credential it held is denied until the next sync");
        }
        if !loaded.unreadable.is_empty() {
            lock(&self.report).problems.push(format!(
                "{} snapshot records could not be read and were left out (denied until the next sync)",
                loaded.unreadable.len()
            ));
        }
        StartingSnapshot {
            generation: Some(loaded.header.generation),
            parts: loaded.parts,
            source,
        }
    }

    /// The current snapshot's header, cheap enough for `status`.
    pub fn snapshot_header(&self) -> Result<Option<SnapshotHeader>, StoreError> {
        self.snapshots.header()
    }

    /// Only the channels of the current snapshot (for `status`).
    pub fn load_channels(&self) -> Result<Vec<crate::snapshot::Channel>, StoreError> {
        self.snapshots.load_channels()
    }

    /// Loads sled's current snapshot, checking every record count against the header.
    /// Unreadable records are left out (and logged).
    pub fn load_snapshot(&self) -> Result<Option<SnapshotParts>, StoreError> {
        Ok(self.snapshots.load()?.map(|loaded| {
            for record in &loaded.unreadable {
                tracing::error!(record = %record, "unreadable snapshot record left out");
            }
            loaded.parts
        }))
    }

    /// Writes `parts` as the new current snapshot, then replaces the last good copy. Returns
    /// once sled's copy is current; on any error the previous snapshot stays current.
    pub fn save_snapshot(&self, parts: &SnapshotParts) -> Result<SnapshotHeader, StoreError> {
        let at_least = last_good::header(&self.layout.last_good()).map_or(0, |h| h.generation + 1);
        let header = match self.snapshots.save(parts, at_least) {
            Ok(header) => header,
            Err(error) => {
                self.note_snapshot_write(Some(&error));
                return Err(error);
            }
        };
        match last_good::write(&self.layout.last_good(), &header, parts) {
            Ok(()) => self.note_snapshot_write(None),
            Err(error) => {
                tracing::warn!(%error, "the last good snapshot copy was not updated; the previous copy stays");
                self.note_snapshot_write(Some(&error));
            }
        }
        Ok(header)
    }

    /// A small value kept with the snapshot (sync cursors and similar), JSON-encoded.
    pub fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.snapshots.meta_get(key)
    }

    /// Stores a meta value (with sled's flush, not an fsync: meta is rebuilt by a sync).
    pub fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.snapshots.meta_put(key, value)
    }

    pub fn meta_remove(&self, key: &str) -> Result<(), StoreError> {
        self.snapshots.meta_remove(key)
    }

    /// Writes sled's buffers out (queue commits are already on disk).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.snapshots.flush()
    }
}

/// A sled error that says nothing about the files themselves (a full disk, permissions): the
/// store must not be moved aside for it.
fn is_transient(error: &StoreError) -> bool {
    let StoreError::Engine {
        source: sled::Error::Io(io),
        ..
    } = error
    else {
        return false;
    };
    matches!(
        io.raw_os_error(),
        Some(
            libc::ENOSPC
                | libc::EDQUOT
                | libc::EACCES
                | libc::EPERM
                | libc::EROFS
                | libc::EAGAIN
                | libc::ENOMEM
        )
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes the store lock, waiting up to `wait` for a process that holds it briefly.
fn lock_waiting(layout: &Layout, wait: Duration) -> Result<OwnerLock, StoreError> {
    let start = Instant::now();
    let mut told = false;
    loop {
        match layout.try_lock() {
            Err(StoreError::Locked { .. }) if start.elapsed() < wait => {
                if !told && start.elapsed() > Duration::from_millis(500) {
                    tracing::warn!(path = %layout.root().display(), "another process has the store (a `status` or `queue` command?); waiting for it");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn move_aside(layout: &Layout, part: &Path, why: &str, report: &mut OpenReport) -> Result<(), StoreError> {
    if !part.exists() {
        return Ok(());
    }
    let moved = layout.move_aside(part).map_err(|e| StoreError::io(part, e))?;
    let sentence = format!(
        "{} moved to {} because {why}; a new one was started",
        part.display(),
        moved.display()
    );
    tracing::error!("STORE DAMAGED: {sentence}");
    report.moved_aside.push(moved.display().to_string());
    report.problems.push(sentence);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn parts(people: u64) -> SnapshotParts {
        SnapshotParts {
            synced_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
            ..SnapshotParts::synthetic(people)
        }
    }

    #[test]
    fn a_crash_mid_write_leaves_the_old_snapshot_and_the_orphan_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path, 1 << 20).unwrap();
            let header = store.save_snapshot(&parts(3)).unwrap();
            // What a crash between writing records and flipping the pointer leaves behind.
            let orphan = store
                .snapshots
                .raw_tree(&snapshots::tree_name(header.generation + 5));
            orphan.insert("people/0000000000", b"{}".as_slice()).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&path, 1 << 20).unwrap();
        let snapshot_trees = store
            .snapshots
            .tree_names()
            .iter()
            .filter(|n| n.starts_with("snapshot."))
            .count();
        assert_eq!(snapshot_trees, 1);
        assert_eq!(store.load_snapshot().unwrap().unwrap().people.len(), 3);
    }

    #[test]
    fn a_missing_record_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let header = store.save_snapshot(&parts(5)).unwrap();
        let tree = store.snapshots.raw_tree(&snapshots::tree_name(header.generation));
        tree.remove("people/0000000002").unwrap();
        let error = store.load_snapshot().unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("record counts"), "{error}");
    }

    #[test]
    fn an_unreadable_record_denies_only_its_own_person() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let header = store.save_snapshot(&parts(4)).unwrap();
        let tree = store.snapshots.raw_tree(&snapshots::tree_name(header.generation));
        tree.insert("people/0000000001", b"{not json".as_slice()).unwrap();
        let loaded = store.snapshots.load().unwrap().unwrap();
        assert_eq!(loaded.unreadable.len(), 1);
        assert!(
            loaded.unreadable[0].starts_with("people/0000000001"),
            "{:?}",
            loaded.unreadable
        );
        let ids: Vec<u64> = loaded.parts.people.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 3, 4], "person 2 is left out, everyone else stays");
        assert_eq!(loaded.parts.credentials.len(), 4);
    }

    #[test]
    fn a_newer_format_is_refused_with_a_message_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let header = store.save_snapshot(&parts(2)).unwrap();
        let tree = store.snapshots.raw_tree(&snapshots::tree_name(header.generation));
        let mut disk = header.to_disk();
        disk.format = format::FORMAT + 1;
        tree.insert("header", serde_json::to_vec(&disk).unwrap()).unwrap();
        let error = store.load_snapshot().unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::NewerFormat {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("newer doorflow-agent"), "{error}");
    }

    #[test]
    fn replacing_a_snapshot_drops_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let first = store.save_snapshot(&parts(2)).unwrap();
        let second = store.save_snapshot(&parts(4)).unwrap();
        assert!(second.generation > first.generation);
        let names = store.snapshots.tree_names();
        assert!(!names.contains(&snapshots::tree_name(first.generation)));
        assert_eq!(store.snapshot_header().unwrap().unwrap().counts.people, 4);
    }
}
