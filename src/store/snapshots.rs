//! The credential snapshot in sled (the decision data, whose loss a sync repairs) and the sync
//! metadata that belongs with it (cursor, last sync outcome).
//!
//! Each snapshot is written into its own tree `snapshot.<generation>` and only then made
//! current by flipping `meta["snapshot.active"]`, flushed. A crash before the flip leaves the
//! old snapshot in force and an orphan tree that the next open removes; a reader in this
//! process holds a shared lock for its whole read, so it sees one generation or the other,
//! never a mix.
//!
//! sled keeps the first I/O error (a full disk) as a global error until the database is
//! reopened, so after a failed write the handle is dropped and reopened on next use.

use super::format::{self, RecordSink, RecordSource, SnapshotHeaderV1};
use super::queue::{Lane, LegacyQueue};
use super::{testing, StoreError};
use crate::snapshot::{SnapshotCounts, SnapshotParts};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

const META_TREE: &str = "meta";
const ACTIVE_KEY: &[u8] = b"snapshot.active";
const SNAPSHOT_PREFIX: &str = "snapshot.";
const HEADER_KEY: &[u8] = b"header";
/// Records per sled batch when writing a snapshot: bounds memory while keeping writes fast.
const BATCH: usize = 4096;

/// 0.1.0 kept the queue in these trees (and its drop count in `meta`).
const LEGACY_TREES: [(&str, Option<Lane>); 4] = [
    ("outbox.admit", Some(Lane::Admit)),
    ("outbox.event", Some(Lane::Event)),
    ("dead", None),
    ("event_log", None),
];
const LEGACY_DROPPED_KEY: &[u8] = b"outbox.dropped_events";

/// What is known about the current snapshot without loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
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

/// A snapshot as loaded, with the records that had to be left out.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub header: SnapshotHeader,
    pub parts: SnapshotParts,
    /// `kind/key: error` for each record that did not decode (that person or credential is
    /// denied until the next sync).
    pub unreadable: Vec<String>,
}

struct Handle {
    db: sled::Db,
    meta: sled::Tree,
}

pub(super) struct SnapshotDb {
    path: PathBuf,
    cache_capacity_bytes: u64,
    handle: RwLock<Option<Handle>>,
    /// Set after a failed write: sled refuses everything until reopened.
    broken: AtomicBool,
    /// Shared by snapshot readers, exclusive for the flip that retires a generation.
    swap: RwLock<()>,
}

impl std::fmt::Debug for SnapshotDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDb").field("path", &self.path).finish()
    }
}

fn open_handle(path: &Path, cache_capacity_bytes: u64) -> Result<Handle, StoreError> {
    let engine = |source| StoreError::Engine {
        path: path.to_path_buf(),
        source,
    };
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(engine)?;
    let meta = db.open_tree(META_TREE).map_err(engine)?;
    Ok(Handle { db, meta })
}

impl SnapshotDb {
    /// Opens (or creates) sled's database with its page cache capped at
    /// `cache_capacity_bytes`, and removes snapshot trees left behind by a crash mid-write.
    pub(super) fn open(path: &Path, cache_capacity_bytes: u64) -> Result<SnapshotDb, StoreError> {
        let handle = open_handle(path, cache_capacity_bytes)?;
        let snapshots = SnapshotDb {
            path: path.to_path_buf(),
            cache_capacity_bytes,
            handle: RwLock::new(Some(handle)),
            broken: AtomicBool::new(false),
            swap: RwLock::new(()),
        };
        snapshots.remove_orphan_snapshots()?;
        Ok(snapshots)
    }

    fn engine(&self, source: sled::Error) -> StoreError {
        StoreError::Engine {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `op` on the open handle, reopening first if an earlier write failed. A sled error
    /// marks the handle for reopening.
    fn with<T>(&self, op: impl FnOnce(&Handle) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            self.reopen()?;
        }
        let guard = self.handle.read().unwrap_or_else(|p| p.into_inner());
        let Some(handle) = guard.as_ref() else {
            return Err(StoreError::Task("credential cache is being reopened".into()));
        };
        let result = op(handle);
        if let Err(StoreError::Engine { .. }) = &result {
            self.broken.store(true, Ordering::SeqCst);
        }
        result
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.handle.write().unwrap_or_else(|p| p.into_inner());
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        // The old handle must be gone (sled's file lock with it) before opening again.
        *guard = None;
        let handle = open_handle(&self.path, self.cache_capacity_bytes)?;
        *guard = Some(handle);
        self.broken.store(false, Ordering::SeqCst);
        tracing::warn!(path = %self.path.display(), "credential cache reopened after a write error");
        Ok(())
    }

    fn active_generation(&self, handle: &Handle) -> Result<Option<u64>, StoreError> {
        let value = handle.meta.get(ACTIVE_KEY).map_err(|e| self.engine(e))?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn remove_orphan_snapshots(&self) -> Result<(), StoreError> {
        self.with(|handle| {
            let active = self.active_generation(handle)?.map(tree_name);
            for name in handle.db.tree_names() {
                let name = String::from_utf8_lossy(&name).into_owned();
                if name.starts_with(SNAPSHOT_PREFIX) && Some(&name) != active.as_ref() {
                    tracing::warn!(tree = %name, "removing a snapshot left incomplete by an earlier crash");
                    handle.db.drop_tree(name.as_bytes()).map_err(|e| self.engine(e))?;
                }
            }
            Ok(())
        })
    }

    /// The current generation's tree and header. Callers hold the `swap` read lock.
    fn current_tree(&self, handle: &Handle) -> Result<Option<(sled::Tree, SnapshotHeader)>, StoreError> {
        let Some(generation) = self.active_generation(handle)? else {
            return Ok(None);
        };
        let tree = handle
            .db
            .open_tree(tree_name(generation))
            .map_err(|e| self.engine(e))?;
        let header = tree.get(HEADER_KEY).map_err(|e| self.engine(e))?;
        let header = header.ok_or_else(|| self.corrupt(generation, "header missing"))?;
        let header: SnapshotHeaderV1 =
            serde_json::from_slice(&header).map_err(|e| self.corrupt(generation, &format!("header: {e}")))?;
        Ok(Some((tree, SnapshotHeader::from_disk(header, &self.path)?)))
    }

    fn corrupt(&self, generation: u64, detail: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            generation,
            detail: detail.to_string(),
        }
    }

    /// The current snapshot's header, cheap enough for `status`.
    pub(super) fn header(&self) -> Result<Option<SnapshotHeader>, StoreError> {
        self.with(|handle| {
            let _reading = self.swap.read().unwrap_or_else(|p| p.into_inner());
            Ok(self.current_tree(handle)?.map(|(_, header)| header))
        })
    }

    /// Only the channels of the current snapshot: enough for `status` to show door modes
    /// without loading 100,000 credentials.
    pub(super) fn load_channels(&self) -> Result<Vec<crate::snapshot::Channel>, StoreError> {
        self.with(|handle| {
            let _reading = self.swap.read().unwrap_or_else(|p| p.into_inner());
            let Some((tree, _)) = self.current_tree(handle)? else {
                return Ok(Vec::new());
            };
            let mut channels = Vec::new();
            for entry in tree.scan_prefix(b"channels/") {
                let (key, value) = entry.map_err(|e| self.engine(e))?;
                match format::decode(&value) {
                    Ok(channel) => channels.push(channel),
                    Err(error) => tracing::error!(key = %String::from_utf8_lossy(&key), %error, "unreadable channel record skipped"),
                }
            }
            Ok(channels)
        })
    }

    /// Loads the current snapshot. Records that do not decode are left out and listed; a
    /// record count that differs from the header (records missing) is corruption.
    pub(super) fn load(&self) -> Result<Option<LoadedSnapshot>, StoreError> {
        self.with(|handle| {
            let _reading = self.swap.read().unwrap_or_else(|p| p.into_inner());
            let Some((tree, header)) = self.current_tree(handle)? else {
                return Ok(None);
            };
            let mut source = TreeSource {
                tree,
                kind: String::new(),
                scan: None,
                path: &self.path,
            };
            let read = format::read_parts(&mut source, header.synced_at)?;
            if read.found != header.counts {
                let detail = format!(
                    "record counts {:?} differ from header {:?}",
                    read.found, header.counts
                );
                return Err(self.corrupt(header.generation, &detail));
            }
            Ok(Some(LoadedSnapshot {
                header,
                parts: read.parts,
                unreadable: read.unreadable,
            }))
        })
    }

    /// Writes `parts` as the new current snapshot, with a generation above `at_least`.
    /// Returns only once it is current; on any error the previous snapshot stays current.
    pub(super) fn save(&self, parts: &SnapshotParts, at_least: u64) -> Result<SnapshotHeader, StoreError> {
        self.with(|handle| {
            let previous = self.active_generation(handle)?;
            let generation = handle.db.generate_id().map_err(|e| self.engine(e))?.max(at_least);
            let name = tree_name(generation);
            let tree = handle.db.open_tree(&name).map_err(|e| self.engine(e))?;
            let written = (|| -> Result<SnapshotHeader, StoreError> {
                let mut sink = TreeSink {
                    tree: &tree,
                    batch: sled::Batch::default(),
                    pending: 0,
                    path: &self.path,
                };
                format::write_parts(parts, &mut sink)?;
                let header = SnapshotHeader {
                    generation,
                    synced_at: parts.synced_at,
                    written_at: Timestamp::now(),
                    counts: parts.counts(),
                };
                let bytes = serde_json::to_vec(&header.to_disk()).unwrap_or_default();
                tree.insert(HEADER_KEY, bytes).map_err(|e| self.engine(e))?;
                testing::failpoint("snapshot.records_written");
                // The new tree must be on disk before it becomes current.
                handle.db.flush().map_err(|e| self.engine(e))?;
                Ok(header)
            })();
            let header = match written {
                Ok(header) => header,
                Err(error) => {
                    let _ = handle.db.drop_tree(name.as_bytes());
                    return Err(error);
                }
            };
            testing::failpoint("snapshot.before_flip");
            {
                let _flipping = self.swap.write().unwrap_or_else(|p| p.into_inner());
                handle
                    .meta
                    .insert(ACTIVE_KEY, &generation.to_be_bytes())
                    .map_err(|e| self.engine(e))?;
                handle.db.flush().map_err(|e| self.engine(e))?;
                testing::failpoint("snapshot.after_flip");
                if let Some(old) = previous.filter(|old| *old != generation) {
                    handle
                        .db
                        .drop_tree(tree_name(old).as_bytes())
                        .map_err(|e| self.engine(e))?;
                }
            }
            Ok(header)
        })
    }

    /// A small value in the meta tree (sync cursors and similar), JSON-encoded.
    pub(super) fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.with(|handle| {
            let value = handle.meta.get(key.as_bytes()).map_err(|e| self.engine(e))?;
            Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
        })
    }

    /// Stores and flushes a meta value.
    pub(super) fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.with(|handle| {
            handle
                .meta
                .insert(key.as_bytes(), bytes)
                .map_err(|e| self.engine(e))?;
            handle.db.flush().map_err(|e| self.engine(e))?;
            testing::failpoint("meta.written");
            Ok(())
        })
    }

    pub(super) fn meta_remove(&self, key: &str) -> Result<(), StoreError> {
        self.with(|handle| {
            handle.meta.remove(key.as_bytes()).map_err(|e| self.engine(e))?;
            handle.db.flush().map(|_| ()).map_err(|e| self.engine(e))
        })
    }

    /// Writes sled's buffers out (sled's flush is not an fsync; nothing that must survive a
    /// power cut relies on it).
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        self.with(|handle| handle.db.flush().map(|_| ()).map_err(|e| self.engine(e)))
    }

    /// The queue 0.1.0 kept in sled, if any is left.
    pub(super) fn legacy_queue(&self) -> Result<LegacyQueue, StoreError> {
        self.with(|handle| {
            let mut legacy = LegacyQueue::default();
            let names = handle.db.tree_names();
            for (name, lane) in LEGACY_TREES {
                if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
                    continue;
                }
                let tree = handle.db.open_tree(name).map_err(|e| self.engine(e))?;
                for entry in tree.iter() {
                    let (key, value) = entry.map_err(|e| self.engine(e))?;
                    let Some(key) = <[u8; 8]>::try_from(key.as_ref()).ok().map(u64::from_be_bytes) else {
                        continue;
                    };
                    match (lane, name) {
                        (Some(lane), _) => legacy.queued.push((key, lane, value.to_vec())),
                        (None, "dead") => legacy.dead.push((key, value.to_vec())),
                        (None, _) => legacy.event_log.push((key, value.to_vec())),
                    }
                }
            }
            legacy.dropped_events = handle
                .meta
                .get(LEGACY_DROPPED_KEY)
                .map_err(|e| self.engine(e))?
                .and_then(|v| serde_json::from_slice(&v).ok())
                .unwrap_or(0);
            Ok(legacy)
        })
    }

    /// Removes 0.1.0's queue trees once their records are in the queue database.
    pub(super) fn drop_legacy_queue(&self) -> Result<(), StoreError> {
        self.with(|handle| {
            for (name, _) in LEGACY_TREES {
                handle.db.drop_tree(name.as_bytes()).map_err(|e| self.engine(e))?;
            }
            handle
                .meta
                .remove(LEGACY_DROPPED_KEY)
                .map_err(|e| self.engine(e))?;
            handle.db.flush().map(|_| ()).map_err(|e| self.engine(e))
        })
    }

    #[cfg(test)]
    pub(super) fn raw_tree(&self, name: &str) -> sled::Tree {
        let guard = self.handle.read().unwrap();
        guard.as_ref().unwrap().db.open_tree(name).unwrap()
    }

    #[cfg(test)]
    pub(super) fn tree_names(&self) -> Vec<String> {
        let guard = self.handle.read().unwrap();
        guard
            .as_ref()
            .unwrap()
            .db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }
}

pub(super) fn tree_name(generation: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{generation:020}")
}

/// Reads a generation's records kind by kind (`<kind>/<index>` keys).
struct TreeSource<'a> {
    tree: sled::Tree,
    kind: String,
    scan: Option<sled::Iter>,
    path: &'a Path,
}

impl RecordSource for TreeSource<'_> {
    fn next(&mut self, kind: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        if self.kind != kind || self.scan.is_none() {
            self.kind = kind.to_string();
            self.scan = Some(self.tree.scan_prefix(format!("{kind}/").as_bytes()));
        }
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        match scan.next() {
            None => Ok(None),
            Some(Ok((key, value))) => Ok(Some((String::from_utf8_lossy(&key).into_owned(), value.to_vec()))),
            Some(Err(source)) => Err(StoreError::Engine {
                path: self.path.to_path_buf(),
                source,
            }),
        }
    }
}

/// Writes records into a generation's tree in batches.
struct TreeSink<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    pending: usize,
    path: &'a Path,
}

impl TreeSink<'_> {
    fn apply(&mut self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut self.batch);
        self.pending = 0;
        self.tree.apply_batch(batch).map_err(|source| StoreError::Engine {
            path: self.path.to_path_buf(),
            source,
        })
    }
}

impl RecordSink for TreeSink<'_> {
    fn put(&mut self, kind: &str, index: usize, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.batch
            .insert(format!("{kind}/{index:010}").into_bytes(), bytes);
        self.pending += 1;
        if self.pending >= BATCH {
            self.apply()?;
        }
        Ok(())
    }

    fn end_kind(&mut self, _kind: &str) -> Result<(), StoreError> {
        self.apply()
    }
}
