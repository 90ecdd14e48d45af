//! All persistent state goes through this module, so the engine underneath (sled) could change
//! without touching the rest of the agent.
//!
//! Snapshot layout: each snapshot is written into its own tree `snapshot.<generation>` and only
//! then made current by flipping `meta["snapshot.active"]`, flushed to disk. A crash before the
//! flip leaves the old snapshot in force and an orphan tree that the next open removes; a reader
//! in this process holds a shared lock for its whole read, so it sees one generation or the
//! other, never a mix.

mod outbox;

pub use outbox::{Call, Capacity, DeadLetter, Entry, Lane, OutboxStats, QueuedCall};

use crate::snapshot::{SnapshotCounts, SnapshotParts};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

const META_TREE: &str = "meta";
const ACTIVE_KEY: &[u8] = b"snapshot.active";
const SNAPSHOT_PREFIX: &str = "snapshot.";
const HEADER_KEY: &[u8] = b"header";
/// Records per sled batch when writing a snapshot: bounds memory while keeping writes fast.
const BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path} is in use by another process (is the agent running? use its admin socket)")]
    Locked { path: PathBuf },
    #[error("store {path}: {source}")]
    Engine {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store task did not finish: {0}")]
    Task(String),
    #[error("store {path}: snapshot generation {generation} is corrupt: {detail}")]
    Corrupt {
        path: PathBuf,
        generation: u64,
        detail: String,
    },
}

/// What is known about the current snapshot without loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub generation: u64,
    pub synced_at: Option<Timestamp>,
    pub written_at: Timestamp,
    pub counts: SnapshotCounts,
}

pub struct Store {
    path: PathBuf,
    /// Records and bytes in the outbox, `None` until first counted (see `outbox`).
    outbox_tally: std::sync::Mutex<Option<outbox::Tally>>,
    db: sled::Db,
    meta: sled::Tree,
    /// Shared by snapshot readers, exclusive for the flip that retires a generation.
    swap: RwLock<()>,
    /// Test seam: every write fails as on a full disk (see `simulate_disk_full`).
    disk_full: std::sync::atomic::AtomicBool,
    /// Engine errors since the store was opened (for metrics).
    errors: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store with sled's page cache capped at `cache_capacity_bytes`,
    /// and removes snapshot trees left behind by a crash mid-write.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent() {
            // sled creates the directory itself; make the parent private first.
            let _ = std::fs::create_dir_all(parent);
        }
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| open_error(path, source))?;
        let meta = db.open_tree(META_TREE).map_err(|source| StoreError::Engine {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Store {
            path: path.to_path_buf(),
            outbox_tally: std::sync::Mutex::new(None),
            db,
            meta,
            swap: RwLock::new(()),
            disk_full: std::sync::atomic::AtomicBool::new(false),
            errors: std::sync::atomic::AtomicU64::new(0),
        };
        store.remove_orphan_snapshots()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every write fail with ENOSPC until turned off, so the failure paths of everything
    /// that writes (audit writer, uplink, sync) can be tested without filling a disk.
    #[doc(hidden)]
    #[cfg(any(test, feature = "testing"))]
    pub fn simulate_disk_full(&self, full: bool) {
        self.disk_full.store(full, std::sync::atomic::Ordering::SeqCst);
    }

    /// Called first by every write, before anything changes.
    fn writable(&self) -> Result<(), StoreError> {
        if self.disk_full.load(std::sync::atomic::Ordering::SeqCst) {
            let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(self.engine(sled::Error::Io(full)));
        }
        Ok(())
    }

    /// Engine errors since the store was opened: reads and writes sled refused.
    pub fn error_count(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn engine(&self, source: sled::Error) -> StoreError {
        self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StoreError::Engine {
            path: self.path.clone(),
            source,
        }
    }

    fn active_generation(&self) -> Result<Option<u64>, StoreError> {
        let value = self.meta.get(ACTIVE_KEY).map_err(|e| self.engine(e))?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn remove_orphan_snapshots(&self) -> Result<(), StoreError> {
        let active = self.active_generation()?.map(tree_name);
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with(SNAPSHOT_PREFIX) && Some(&name) != active.as_ref() {
                tracing::warn!(tree = %name, "removing a snapshot left incomplete by an earlier crash");
                self.db.drop_tree(name.as_bytes()).map_err(|e| self.engine(e))?;
            }
        }
        Ok(())
    }

    /// The current snapshot's header, cheap enough for `status`.
    pub fn snapshot_header(&self) -> Result<Option<SnapshotHeader>, StoreError> {
        let _reading = self.swap.read().unwrap_or_else(|p| p.into_inner());
        Ok(self.current_tree()?.map(|(_, header)| header))
    }

    /// The current generation's tree and header. Callers hold the `swap` read lock.
    fn current_tree(&self) -> Result<Option<(sled::Tree, SnapshotHeader)>, StoreError> {
        let Some(generation) = self.active_generation()? else {
            return Ok(None);
        };
        let tree = self
            .db
            .open_tree(tree_name(generation))
            .map_err(|e| self.engine(e))?;
        let header = tree.get(HEADER_KEY).map_err(|e| self.engine(e))?;
        let header = header.ok_or_else(|| self.corrupt(generation, "header missing"))?;
        let header = serde_json::from_slice(&header).map_err(|e| self.corrupt(generation, &e.to_string()))?;
        Ok(Some((tree, header)))
    }

    /// Only the channels of the current snapshot: enough for `status` to show door modes
    /// without loading 100,000 credentials.
    pub fn load_channels(&self) -> Result<Vec<crate::snapshot::Channel>, StoreError> {
        let _reading = self.swap.read().unwrap_or_else(|p| p.into_inner());
        match self.current_tree()? {
            Some((tree, header)) => self.read_records(&tree, header.generation, "channels"),
            None => Ok(Vec::new()),
        }
    }

    fn corrupt(&self, generation: u64, detail: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            generation,
            detail: detail.to_string(),
        }
    }

    /// Loads the current snapshot, checking every record count against the header.
    pub fn load_snapshot(&self) -> Result<Option<SnapshotParts>, StoreError> {
        let _reading = self.swap.read().unwrap_or_else(|p| p.into_inner());
        let Some((tree, header)) = self.current_tree()? else {
            return Ok(None);
        };
        let generation = header.generation;
        let parts = SnapshotParts {
            synced_at: header.synced_at,
            people: self.read_records(&tree, generation, "people")?,
            credentials: self.read_records(&tree, generation, "credentials")?,
            credential_types: self.read_records(&tree, generation, "credential_types")?,
            roles: self.read_records(&tree, generation, "roles")?,
            groups: self.read_records(&tree, generation, "groups")?,
            group_reservations: self.read_records(&tree, generation, "group_reservations")?,
            reservations: self.read_records(&tree, generation, "reservations")?,
            channels: self.read_records(&tree, generation, "channels")?,
            sites: self.read_records(&tree, generation, "sites")?,
            shifts: self.read_records(&tree, generation, "shifts")?,
        };
        if parts.counts() != header.counts {
            let detail = format!(
                "record counts {:?} differ from header {:?}",
                parts.counts(),
                header.counts
            );
            return Err(self.corrupt(generation, &detail));
        }
        Ok(Some(parts))
    }

    fn read_records<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        generation: u64,
        kind: &str,
    ) -> Result<Vec<T>, StoreError> {
        let prefix = format!("{kind}/");
        let mut records = Vec::new();
        for entry in tree.scan_prefix(prefix.as_bytes()) {
            let (key, value) = entry.map_err(|e| self.engine(e))?;
            let record = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(generation, &format!("{}: {e}", String::from_utf8_lossy(&key))))?;
            records.push(record);
        }
        Ok(records)
    }

    /// Writes `parts` as the new current snapshot. Returns only once it is on disk and current;
    /// on any error the previous snapshot stays current.
    pub fn save_snapshot(&self, parts: &SnapshotParts) -> Result<SnapshotHeader, StoreError> {
        self.writable()?;
        let previous = self.active_generation()?;
        let generation = self.next_generation()?;
        let tree = self
            .db
            .open_tree(tree_name(generation))
            .map_err(|e| self.engine(e))?;
        let written = (|| -> Result<SnapshotHeader, StoreError> {
            self.write_records(&tree, "people", &parts.people)?;
            self.write_records(&tree, "credentials", &parts.credentials)?;
            self.write_records(&tree, "credential_types", &parts.credential_types)?;
            self.write_records(&tree, "roles", &parts.roles)?;
            self.write_records(&tree, "groups", &parts.groups)?;
            self.write_records(&tree, "group_reservations", &parts.group_reservations)?;
            self.write_records(&tree, "reservations", &parts.reservations)?;
            self.write_records(&tree, "channels", &parts.channels)?;
            self.write_records(&tree, "sites", &parts.sites)?;
            self.write_records(&tree, "shifts", &parts.shifts)?;
            let header = SnapshotHeader {
                generation,
                synced_at: parts.synced_at,
                written_at: Timestamp::now(),
                counts: parts.counts(),
            };
            tree.insert(HEADER_KEY, to_json(&header))
                .map_err(|e| self.engine(e))?;
            // The new tree must be durable before it becomes current.
            self.db.flush().map_err(|e| self.engine(e))?;
            Ok(header)
        })();
        let header = match written {
            Ok(header) => header,
            Err(error) => {
                let _ = self.db.drop_tree(tree_name(generation).as_bytes());
                return Err(error);
            }
        };
        {
            let _flipping = self.swap.write().unwrap_or_else(|p| p.into_inner());
            self.meta
                .insert(ACTIVE_KEY, &generation.to_be_bytes())
                .map_err(|e| self.engine(e))?;
            self.db.flush().map_err(|e| self.engine(e))?;
            if let Some(old) = previous {
                self.db
                    .drop_tree(tree_name(old).as_bytes())
                    .map_err(|e| self.engine(e))?;
            }
        }
        Ok(header)
    }

    fn next_generation(&self) -> Result<u64, StoreError> {
        // sled's id generator is monotonic across restarts.
        self.db.generate_id().map_err(|e| self.engine(e))
    }

    fn write_records<T: Serialize>(
        &self,
        tree: &sled::Tree,
        kind: &str,
        records: &[T],
    ) -> Result<(), StoreError> {
        for (chunk_index, chunk) in records.chunks(BATCH).enumerate() {
            let mut batch = sled::Batch::default();
            for (offset, record) in chunk.iter().enumerate() {
                let index = chunk_index * BATCH + offset;
                batch.insert(format!("{kind}/{index:010}").into_bytes(), to_json(record));
            }
            tree.apply_batch(batch).map_err(|e| self.engine(e))?;
        }
        Ok(())
    }

    /// A small value in the meta tree (sync cursors and similar), JSON-encoded.
    pub fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let value = self.meta.get(key.as_bytes()).map_err(|e| self.engine(e))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Stores and flushes a meta value.
    pub fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.writable()?;
        self.meta
            .insert(key.as_bytes(), to_json(value))
            .map_err(|e| self.engine(e))?;
        self.flush()
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.engine(e))
    }
}

fn tree_name(generation: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{generation:020}")
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn open_error(path: &Path, source: sled::Error) -> StoreError {
    if let sled::Error::Io(io) = &source {
        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") {
            return StoreError::Locked {
                path: path.to_path_buf(),
            };
        }
    }
    StoreError::Engine {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            store.save_snapshot(&parts(3)).unwrap();
            // What a crash between writing records and flipping the pointer leaves behind.
            let orphan = store
                .db
                .open_tree(tree_name(store.next_generation().unwrap()))
                .unwrap();
            orphan.insert("people/0000000000", b"{}".as_slice()).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&path, 1 << 20).unwrap();
        let snapshot_trees = store
            .db
            .tree_names()
            .iter()
            .filter(|n| n.starts_with(SNAPSHOT_PREFIX.as_bytes()))
            .count();
        assert_eq!(snapshot_trees, 1);
        assert_eq!(store.load_snapshot().unwrap().unwrap().people.len(), 3);
    }

    #[test]
    fn a_missing_record_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let header = store.save_snapshot(&parts(5)).unwrap();
        let tree = store.db.open_tree(tree_name(header.generation)).unwrap();
        tree.remove("people/0000000002").unwrap();
        let error = store.load_snapshot().unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("record counts"), "{error}");
    }

    #[test]
    fn an_unreadable_record_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let header = store.save_snapshot(&parts(2)).unwrap();
        let tree = store.db.open_tree(tree_name(header.generation)).unwrap();
        tree.insert("people/0000000001", b"{not json".as_slice()).unwrap();
        let error = store.load_snapshot().unwrap_err();
        assert!(error.to_string().contains("people/0000000001"), "{error}");
    }

    #[test]
    fn replacing_a_snapshot_drops_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let first = store.save_snapshot(&parts(2)).unwrap();
        let second = store.save_snapshot(&parts(4)).unwrap();
        assert!(second.generation > first.generation);
        let names = store.db.tree_names();
        assert!(!names
            .iter()
            .any(|n| n.as_ref() == tree_name(first.generation).as_bytes()));
        assert_eq!(store.snapshot_header().unwrap().unwrap().counts.people, 4);
    }
}
