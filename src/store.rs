//! All persistent state goes through this module. It keeps two engines, each for what it is
//! good at (see ARCHITECTURE.md, "Storage"):
//!
//! - **SQLite** (`queue`): the durable queue — both outbox lanes with their holds and attempt
//!   counts, dead letters, the local event log, the queue counters. Every commit is fsynced
//!   before it returns, so "acknowledged" means on stable storage.
//! - **SQLite** (`snapshots`, a second database): the credential snapshot and the sync metadata,
//!   which a sync can always rebuild, staged page by page and swapped in one transaction. A copy
//!   of the last snapshot is also kept outside it (`last_good`).
//! - **sled** (`legacy`): only to import what earlier versions kept there, once.
//!
//! On-disk shapes live in `format` (versioned, apart from the in-memory model), the directory
//! and its permissions in `layout`, the shared SQLite set-up in `sqlite`, test-only crash
//! points in `testing`.
//!
//! Opening never gives up on a damaged part: whatever cannot be opened is moved aside into
//! `damaged/` (kept for inspection), reported plainly in the journal and in `status`, and
//! started afresh, so the agent always comes up and its doors always decide.

pub mod format;
mod last_good;
mod layout;
mod legacy;
mod queue;
mod snapshots;
mod sqlite;
pub mod testing;

pub use queue::{
    Call, Capacity, DeadLetter, DropNote, Entry, Group, Hold, Lane, LossNote, OutboxStats, QueuedCall,
};
pub use snapshots::{LoadedSnapshot, Merge, SnapshotHeader, Staged};

use crate::snapshot::{Record, RecordKind, SnapshotParts, SnapshotSink};
use jiff::Timestamp;
use layout::{Layout, OpenAttempts, OwnerLock};
use legacy::LegacySled;
use queue::QueueDb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use snapshots::SnapshotDb;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Start-ups that stopped while opening the store before the credential cache (and an old
/// version's sled directory, which sled can abort on) is moved aside: under `Restart=always` a
/// crash while opening would loop forever.
const FAILED_OPENS_BEFORE_SNAPSHOT_ASIDE: u32 = 2;
/// ... and before the queue database is moved aside as well.
const FAILED_OPENS_BEFORE_QUEUE_ASIDE: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path} is in use by another process (is the agent running? use its admin socket)")]
    Locked { path: PathBuf },
    /// Another agent has the store: waiting for it is pointless.
    #[error("store {path} is in use by another agent ({holder}); stop that one first, or give this one its own `store.path`")]
    HeldByAgent { path: PathBuf, holder: String },
    /// Still held when the start-up's wait ran out.
    #[error("store {path} is still in use by another process after {waited_s} s (not an agent answering on this config's admin socket; a `status` or `queue` command holds it for well under a second, so perhaps an agent configured with another `admin.socket`)")]
    LockWaitExpired { path: PathBuf, waited_s: u64 },
    /// The start-up was told to stop (SIGTERM) while it waited for the store.
    #[error("stopped while waiting for store {path}, which another process has")]
    Interrupted { path: PathBuf },
    #[error("credential cache of an earlier version {path}: {source}")]
    Engine {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("credential cache {path}: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
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
    /// The snapshot database's (`snapshot.sqlite`) current snapshot.
    Cache,
    /// `snapshot.last-good`, because the database's was missing, older or unusable.
    LastGood,
    /// Nothing usable: every card is denied until a sync.
    None,
}

/// The snapshot the agent starts with, loaded into a sink of the caller's choice (the agent's
/// compact [`crate::snapshot::SnapshotBuilder`], or [`SnapshotParts`]).
#[derive(Debug)]
pub struct StartingSnapshot<S> {
    pub parts: S,
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
    /// Opens (or creates) the store at `path` with the snapshot database's page cache capped
    /// at `cache_capacity_bytes`. Fails at once with `Locked` when another process has it.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        let layout = Layout::new(path);
        layout.create()?;
        let lock = layout.try_lock()?;
        layout.prepare()?;
        Store::open_locked(layout, lock, cache_capacity_bytes, 0)
    }

    /// Opens the store as the agent does: waits as `wait` says for a process that has it
    /// briefly (a `status` or `queue` command reading a stopped agent's store), moves aside
    /// what cannot be opened, and loads the best snapshot there is into a fresh `S`.
    pub fn open_for_agent<S: SnapshotSink + Default>(
        path: &Path,
        cache_capacity_bytes: u64,
        wait: &LockWait<'_>,
    ) -> Result<(Store, StartingSnapshot<S>), StoreError> {
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
            move_aside(&layout, &layout.legacy_snapshot_db(), &why, &mut report)?;
            move_aside(&layout, &layout.snapshot_db(), &why, &mut report)?;
            if unfinished_opens >= FAILED_OPENS_BEFORE_QUEUE_ASIDE {
                move_aside(&layout, &layout.queue_db(), &why, &mut report)?;
            }
        }
        let cache_kib = (cache_capacity_bytes / 1024).max(64) as i64;
        let (snapshots, opened) = SnapshotDb::open(&layout, cache_kib)?;
        if let (Some(moved), Some(problem)) = (opened.moved_to, opened.problem) {
            let sentence = format!(
                "{} moved to {} because it cannot be used ({problem}); a new one was started",
                layout.snapshot_db().display(),
                moved.display()
            );
            tracing::error!("STORE DAMAGED: {sentence}");
            report.moved_aside.push(moved.display().to_string());
            report.problems.push(sentence);
        }
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
        store.import_legacy()?;
        store.layout.tighten_new_files();
        Ok(store)
    }

    /// Imports what an earlier version kept in sled (its snapshot, the sync metadata and
    /// 0.1.0's queue), then removes sled's directory. A sled directory that cannot be opened is
    /// moved aside: the last good copy decides until the next sync.
    fn import_legacy(&self) -> Result<(), StoreError> {
        let path = self.layout.legacy_snapshot_db();
        if !path.exists() {
            return Ok(());
        }
        let legacy = match LegacySled::open(&path) {
            Ok(legacy) => legacy,
            Err(error) if is_transient(&error) => return Err(error),
            Err(error) => {
                let mut report = lock(&self.report);
                return move_aside(
                    &self.layout,
                    &path,
                    &format!("it cannot be opened: {error}"),
                    &mut report,
                );
            }
        };
        let queue = legacy.queue()?;
        if !queue.is_empty() && self.queue.import_legacy(&queue)? {
            tracing::info!(
                queued = queue.queued.len(),
                dead = queue.dead.len(),
                event_log = queue.event_log.len(),
                "queue of an earlier version moved into the queue database"
            );
        }
        testing::failpoint("legacy.imported");
        if self.snapshots.header()?.is_none() {
            let staged = self.snapshots.stage()?;
            let imported =
                legacy.snapshot(&mut |records| self.snapshots.put(&staged, records).map(|_| ()))?;
            match imported {
                Some(imported) => {
                    let meta = legacy.meta()?;
                    let meta: Vec<(&str, Vec<u8>)> =
                        meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                    let all = RecordKind::ALL.map(|k| (k, Merge::Replace));
                    let header = self.snapshots.commit(
                        staged,
                        &all,
                        imported.header.synced_at,
                        imported.header.generation,
                        &meta,
                    )?;
                    tracing::info!(
                        generation = header.generation,
                        people = header.counts.people,
                        credentials = header.counts.credentials,
                        unreadable = imported.unreadable,
                        "the credential cache of an earlier version was imported; sled's fixed memory stays until the agent restarts"
                    );
                }
                None => self.snapshots.abandon(staged)?,
            }
        }
        drop(legacy);
        std::fs::remove_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
        layout::sync_dir(self.layout.root()).map_err(|e| StoreError::io(self.layout.root(), e))
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

    fn note_snapshot_write<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let mut health = lock(&self.health);
        health.snapshot_error = result.as_ref().err().map(|e| e.to_string());
        health.write_errors += u64::from(result.is_err());
        drop(health);
        result
    }

    /// The snapshot the doors start with: the database's current one, or the last good copy
    /// when the database's is missing, older or unusable, or nothing (deny every card until a
    /// sync). Every fallback is logged and noted in the open report.
    fn load_best_snapshot<S: SnapshotSink + Default>(&self) -> StartingSnapshot<S> {
        let copy = last_good::header(&self.layout.last_good());
        let cached_header = self.snapshots.header();
        let problem = match cached_header {
            Ok(Some(cached)) if copy.as_ref().is_none_or(|c| c.generation <= cached.generation) => {
                let mut sink = S::default();
                match self.snapshots.load_into(&mut sink) {
                    Ok(Some(loaded)) => return self.starting(sink, loaded, SnapshotSource::Cache),
                    Ok(None) => "the credential cache has no snapshot".to_string(),
                    Err(error) => format!("the credential cache's snapshot is unusable: {error}"),
                }
            }
            Ok(Some(cached)) => format!(
                "the credential cache holds snapshot {} but the last good copy is the newer {}",
                cached.generation,
                copy.as_ref().map_or(0, |c| c.generation)
            ),
            Ok(None) if copy.is_none() => {
                return StartingSnapshot {
                    parts: S::default(),
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
            parts: S::default(),
            source: SnapshotSource::None,
            generation: None,
        }
    }

    fn load_last_good<S: SnapshotSink + Default>(&self, problem: &str) -> Option<StartingSnapshot<S>> {
        let mut sink = S::default();
        match last_good::load_into(&self.layout.last_good(), &mut sink) {
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
                Some(self.starting(sink, loaded, SnapshotSource::LastGood))
            }
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "the last good snapshot copy is unusable too");
                None
            }
        }
    }

    fn starting<S>(&self, sink: S, loaded: LoadedSnapshot, source: SnapshotSource) -> StartingSnapshot<S> {
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
            parts: sink,
            source,
        }
    }

    /// The current snapshot's header, cheap enough for `status`.
    pub fn snapshot_header(&self) -> Result<Option<SnapshotHeader>, StoreError> {
        self.snapshots.header()
    }

    /// Only the channels of the current snapshot (for `status`).
    pub fn load_channels(&self) -> Result<Vec<crate::snapshot::Channel>, StoreError> {
        let mut parts = SnapshotParts::default();
        self.snapshots.load_kind(RecordKind::Channels, &mut parts)?;
        Ok(parts.channels)
    }

    /// Loads the current snapshot into `sink`, checking every record count against the header
    /// (on an error `sink` holds part of it: throw it away). Unreadable records are left out
    /// (and logged).
    pub fn load_snapshot_into(
        &self,
        sink: &mut dyn SnapshotSink,
    ) -> Result<Option<SnapshotHeader>, StoreError> {
        Ok(self.snapshots.load_into(sink)?.map(|loaded| {
            for record in &loaded.unreadable {
                tracing::error!(record = %record, "unreadable snapshot record left out");
            }
            loaded.header
        }))
    }

    /// The current snapshot, every list expanded (tests, tools; the agent uses
    /// [`Store::load_snapshot_into`]).
    pub fn load_snapshot(&self) -> Result<Option<SnapshotParts>, StoreError> {
        let mut parts = SnapshotParts::default();
        Ok(self.load_snapshot_into(&mut parts)?.map(|_| parts))
    }

    /// Writes `parts` as the new current snapshot (every kind replaced), then replaces the last
    /// good copy. Returns once the database's copy is current; on any error the previous
    /// snapshot stays current.
    pub fn save_snapshot(&self, parts: &SnapshotParts) -> Result<SnapshotHeader, StoreError> {
        let staged = self.stage_snapshot()?;
        let written = parts
            .clone()
            .into_records()
            .collect::<Vec<Record>>()
            .chunks(4096)
            .try_for_each(|chunk| self.stage_records(&staged, chunk).map(|_| ()));
        if let Err(error) = written {
            let _ = self.snapshots.abandon(staged);
            return Err(error);
        }
        let all = RecordKind::ALL.map(|k| (k, Merge::Replace));
        self.commit_snapshot(staged, &all, parts.synced_at, &[])
    }

    /// A staged snapshot for a sync to fill (see [`Store::stage_records`] and
    /// [`Store::commit_snapshot`]). Staged records survive until committed or abandoned, or
    /// until the store is next opened.
    pub fn stage_snapshot(&self) -> Result<Staged, StoreError> {
        self.note_snapshot_write(self.snapshots.stage())
    }

    /// Adds records to a staged snapshot (one transaction). Returns how many had a key already
    /// staged, for the sync's count check.
    pub fn stage_records(&self, staged: &Staged, records: &[Record]) -> Result<u64, StoreError> {
        self.note_snapshot_write(self.snapshots.put(staged, records))
    }

    /// Records of `kind` in a staged snapshot.
    pub fn staged_count(&self, staged: &Staged, kind: RecordKind) -> Result<u64, StoreError> {
        self.snapshots.staged_count(staged, kind)
    }

    /// Drops a staged snapshot.
    pub fn abandon_snapshot(&self, staged: Staged) -> Result<(), StoreError> {
        self.snapshots.abandon(staged)
    }

    /// Makes a staged snapshot current in one transaction, each kind merged as `merges` says
    /// (unnamed kinds kept), with `meta` (e.g. the sync cursor) written in the same
    /// transaction; then replaces the last good copy from it. Returns once the new snapshot is
    /// current; on any error the previous one stays current with its metadata.
    pub fn commit_snapshot(
        &self,
        staged: Staged,
        merges: &[(RecordKind, Merge)],
        synced_at: Option<Timestamp>,
        meta: &[(&str, serde_json::Value)],
    ) -> Result<SnapshotHeader, StoreError> {
        let at_least = last_good::header(&self.layout.last_good()).map_or(0, |h| h.generation + 1);
        let meta: Vec<(&str, Vec<u8>)> = meta
            .iter()
            .map(|(k, v)| (*k, serde_json::to_vec(v).unwrap_or_default()))
            .collect();
        let header =
            self.note_snapshot_write(self.snapshots.commit(staged, merges, synced_at, at_least, &meta))?;
        let path = self.layout.last_good();
        let copied = self
            .snapshots
            .export(&mut |header, records| last_good::write(&path, header, records));
        if let Err(error) = copied {
            tracing::warn!(%error, "the last good snapshot copy was not updated; the previous copy stays");
            lock(&self.health).snapshot_error = Some(error.to_string());
        }
        Ok(header)
    }

    /// Marks the current snapshot as confirmed by DoorFlow at `synced_at` (nothing changed),
    /// with `meta` (the sync cursor) in the same transaction. The last good copy is left as it
    /// is: it holds the same records.
    pub fn mark_synced(
        &self,
        synced_at: Timestamp,
        meta: &[(&str, serde_json::Value)],
    ) -> Result<(), StoreError> {
        let meta: Vec<(&str, Vec<u8>)> = meta
            .iter()
            .map(|(k, v)| (*k, serde_json::to_vec(v).unwrap_or_default()))
            .collect();
        self.note_snapshot_write(self.snapshots.touch(synced_at, &meta))
    }

    /// A small value kept with the snapshot (sync cursors and similar), JSON-encoded.
    pub fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.snapshots.meta_get(key)
    }

    /// Stores a meta value (committed, not synced: meta is rebuilt by a sync).
    pub fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.snapshots.meta_put(key, value)
    }

    pub fn meta_remove(&self, key: &str) -> Result<(), StoreError> {
        self.snapshots.meta_remove(key)
    }

    /// Copies the snapshot database's WAL back (queue commits are already on disk).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.snapshots.checkpoint()
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

/// How an agent's start-up waits for a store another process has.
pub struct LockWait<'a> {
    /// The longest wait for a holder that is not known to be an agent (a CLI command has the
    /// store for well under a second).
    pub limit: Duration,
    /// Cancelled when the start-up should give up (SIGTERM, SIGINT): the open then fails at
    /// once with `StoreError::Interrupted`. Checked every 20 ms.
    pub stop: &'a tokio_util::sync::CancellationToken,
    /// Names the holder when it is known to be another agent (the caller asks the admin
    /// socket): the open then fails at once with `StoreError::HeldByAgent`. Asked when the lock
    /// is first found taken and about once a second after.
    pub other_agent: &'a dyn Fn() -> Option<String>,
}

/// Takes the store lock for an agent, waiting as `wait` says for a process that holds it
/// briefly.
fn lock_waiting(layout: &Layout, wait: &LockWait<'_>) -> Result<OwnerLock, StoreError> {
    const POLL: Duration = Duration::from_millis(20);
    const ASK_HOLDER_EVERY: u32 = 50;
    let path = || layout.root().to_path_buf();
    let start = Instant::now();
    let mut told = false;
    let mut poll = 0u32;
    loop {
        match layout.try_lock() {
            Err(StoreError::Locked { .. }) => {}
            other => return other,
        }
        if wait.stop.is_cancelled() {
            return Err(StoreError::Interrupted { path: path() });
        }
        if poll % ASK_HOLDER_EVERY == 0 {
            if let Some(holder) = (wait.other_agent)() {
                return Err(StoreError::HeldByAgent { path: path(), holder });
            }
        }
        if start.elapsed() >= wait.limit {
            return Err(StoreError::LockWaitExpired {
                path: path(),
                waited_s: wait.limit.as_secs(),
            });
        }
        if !told && start.elapsed() > Duration::from_millis(500) {
            tracing::warn!(
                path = %layout.root().display(),
                "another process has the store and no agent answers on the admin socket: a \
                 `status` or `queue` command has it briefly, or an agent configured with another \
                 admin.socket does; waiting up to {} s for it",
                wait.limit.as_secs()
            );
            told = true;
        }
        std::thread::sleep(POLL);
        poll = poll.wrapping_add(1);
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

    /// The error of `lock_waiting` on a store whose lock the test holds meanwhile.
    fn wait_for_held(
        limit: Duration,
        stop: &tokio_util::sync::CancellationToken,
        other_agent: &dyn Fn() -> Option<String>,
    ) -> StoreError {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let _held = layout.try_lock().unwrap();
        let wait = LockWait {
            limit,
            stop,
            other_agent,
        };
        lock_waiting(&layout, &wait).map(|_| ()).unwrap_err()
    }

    #[test]
    fn a_stop_request_ends_the_wait_for_the_store() {
        let stop = tokio_util::sync::CancellationToken::new();
        stop.cancel();
        let error = wait_for_held(Duration::from_secs(3600), &stop, &|| None);
        assert!(matches!(error, StoreError::Interrupted { .. }), "{error}");
    }

    #[test]
    fn another_agent_holding_the_store_is_named_and_not_waited_for() {
        let stop = tokio_util::sync::CancellationToken::new();
        let error = wait_for_held(Duration::from_secs(3600), &stop, &|| {
            Some("it answers on the admin socket /run/x.sock".into())
        });
        assert!(matches!(error, StoreError::HeldByAgent { .. }), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("another agent") && text.contains("/run/x.sock"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_holder_is_waited_for_up_to_the_limit() {
        let stop = tokio_util::sync::CancellationToken::new();
        let error = wait_for_held(Duration::ZERO, &stop, &|| None);
        assert!(matches!(error, StoreError::LockWaitExpired { .. }), "{error}");
        assert!(
            error.to_string().contains("`status` or `queue` command"),
            "{error}"
        );
    }

    #[test]
    fn a_lock_let_go_of_while_waiting_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let held = layout.try_lock().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let wait = LockWait {
            limit: Duration::from_secs(3600),
            stop: &stop,
            other_agent: &|| None,
        };
        lock_waiting(&layout, &wait).expect("taken once the holder let go");
        release.join().unwrap();
    }

    fn parts(people: u64) -> SnapshotParts {
        SnapshotParts {
            synced_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
            ..SnapshotParts::synthetic(people)
        }
    }

    #[test]
    fn a_crash_mid_write_leaves_the_old_snapshot_and_the_staged_rows_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path, 1 << 20).unwrap();
            store.save_snapshot(&parts(3)).unwrap();
            // What a crash while a sync was staging its pages leaves behind.
            let staged = store.stage_snapshot().unwrap();
            store
                .stage_records(&staged, &parts(7).into_records().collect::<Vec<_>>())
                .unwrap();
        }
        let store = Store::open(&path, 1 << 20).unwrap();
        assert_eq!(store.snapshots.slots().len(), 1, "only the current slot is left");
        assert_eq!(store.load_snapshot().unwrap().unwrap().people.len(), 3);
    }

    #[test]
    fn a_missing_record_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        store.save_snapshot(&parts(5)).unwrap();
        store
            .snapshots
            .execute("DELETE FROM records WHERE kind = 0 AND key = x'0000000000000002'");
        let error = store.load_snapshot().unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("record counts"), "{error}");
    }

    #[test]
    fn an_unreadable_record_denies_only_its_own_person() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        store.save_snapshot(&parts(4)).unwrap();
        store
            .snapshots
            .execute("UPDATE records SET body = x'7b6e6f74' WHERE kind = 0 AND key = x'0000000000000002'");
        let mut read = SnapshotParts::default();
        let loaded = store.snapshots.load_into(&mut read).unwrap().unwrap();
        assert_eq!(loaded.unreadable.len(), 1);
        assert!(
            loaded.unreadable[0].starts_with("people/2"),
            "{:?}",
            loaded.unreadable
        );
        let ids: Vec<u64> = read.people.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 3, 4], "person 2 is left out, everyone else stays");
        assert_eq!(read.credentials.len(), 4);
    }

    #[test]
    fn a_newer_format_is_refused_with_a_message_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let header = store.save_snapshot(&parts(2)).unwrap();
        let mut disk = header.to_disk();
        disk.format = format::FORMAT + 1;
        let text = String::from_utf8(serde_json::to_vec(&disk).unwrap()).unwrap();
        store.snapshots.execute(&format!(
            "UPDATE slots SET header = CAST('{text}' AS BLOB) WHERE current = 1"
        ));
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
    fn replacing_a_snapshot_drops_the_previous_slot_and_raises_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let first = store.save_snapshot(&parts(2)).unwrap();
        let second = store.save_snapshot(&parts(4)).unwrap();
        assert!(second.generation > first.generation);
        assert_eq!(store.snapshots.slots().len(), 1);
        assert_eq!(store.snapshot_header().unwrap().unwrap().counts.people, 4);
    }

    /// An incremental sync: changed people laid over the current ones by id, credentials
    /// replaced whole, the rest kept; cursor and snapshot in one commit.
    #[test]
    fn a_merge_overlays_replaces_and_keeps_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let first = store.save_snapshot(&parts(5)).unwrap();
        let mut delta = parts(0);
        let mut changed = parts(5).people[1].clone();
        changed.enabled = false;
        let mut added = changed.clone();
        added.id = 99;
        delta.people = vec![changed, added];
        delta.credentials = parts(5)
            .credentials
            .into_iter()
            .filter(|c| c.person_id != 3)
            .collect();
        let staged = store.stage_snapshot().unwrap();
        let repeated = store
            .stage_records(&staged, &delta.clone().into_records().collect::<Vec<_>>())
            .unwrap();
        assert_eq!(repeated, 0);
        assert_eq!(store.staged_count(&staged, RecordKind::People).unwrap(), 2);
        let cursor = serde_json::json!({"since": "2026-01-01T00:00:00Z"});
        let header = store
            .commit_snapshot(
                staged,
                &[
                    (RecordKind::People, Merge::Overlay),
                    (RecordKind::Credentials, Merge::Replace),
                ],
                Some(Timestamp::from_second(1_800_000_100).unwrap()),
                &[("sync.cursor", cursor.clone())],
            )
            .unwrap();
        assert!(header.generation > first.generation);
        assert_eq!((header.counts.people, header.counts.credentials), (6, 4));
        assert_eq!(header.counts.roles, 1, "roles kept");
        let merged = store.load_snapshot().unwrap().unwrap();
        let ids: Vec<u64> = merged.people.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 99]);
        assert!(!merged.people[1].enabled);
        assert!(merged.credentials.iter().all(|c| c.person_id != 3));
        assert_eq!(
            store.meta_get::<serde_json::Value>("sync.cursor").unwrap(),
            Some(cursor)
        );
        assert_eq!(store.snapshots.slots().len(), 1, "the staged slot is gone");
        // The last good copy follows every commit.
        let mut copy = SnapshotParts::default();
        let loaded = last_good::load_into(&store.layout.last_good(), &mut copy)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.header, header);
        assert_eq!(copy.people.len(), 6);
    }

    #[test]
    fn a_page_staged_twice_counts_its_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let staged = store.stage_snapshot().unwrap();
        let page: Vec<Record> = parts(3).people.into_iter().map(Record::Person).collect();
        assert_eq!(store.stage_records(&staged, &page).unwrap(), 0);
        assert_eq!(store.stage_records(&staged, &page[1..]).unwrap(), 2);
        assert_eq!(store.staged_count(&staged, RecordKind::People).unwrap(), 3);
        store.abandon_snapshot(staged).unwrap();
        assert!(store.snapshots.slots().is_empty());
    }
}
