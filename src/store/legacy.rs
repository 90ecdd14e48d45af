//! Stores of earlier versions kept the credential snapshot and the sync metadata in sled
//! (`snapshot/`; 0.1.0 also its queue). sled is opened only to import them, once: the current
//! snapshot generation and the metadata go into the snapshot database, 0.1.0's queue trees into
//! the queue database, then sled's directory is removed.
//!
//! Why sled went: it holds about 27 MB whatever it stores (41 statistics histograms of 512 KiB
//! that sled 0.34 allocates and zero-fills even with its `no_metrics` feature, and a 6 MB page
//! table), and grows to 55–86 MB writing 230,000 records with its cache capped at 8 MB: more
//! than the agent's whole memory budget. Those histograms are a process-wide static: after an
//! import they stay until the agent restarts (`doorflow-agent` logs it).

use super::format::{self, SnapshotHeaderV1};
use super::queue::{Lane, LegacyQueue};
use super::StoreError;
use crate::snapshot::{Record, RecordKind};
use std::path::{Path, PathBuf};

const META_TREE: &str = "meta";
const ACTIVE_KEY: &[u8] = b"snapshot.active";
const SNAPSHOT_PREFIX: &str = "snapshot.";
const HEADER_KEY: &[u8] = b"header";
/// 0.1.0 kept the queue in these trees (and its drop count in `meta`).
const LEGACY_TREES: [(&str, Option<Lane>); 4] = [
    ("outbox.admit", Some(Lane::Admit)),
    ("outbox.event", Some(Lane::Event)),
    ("dead", None),
    ("event_log", None),
];
const LEGACY_DROPPED_KEY: &[u8] = b"outbox.dropped_events";

/// An opened sled store of an earlier version.
pub(super) struct LegacySled {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
}

/// The snapshot a legacy store held (its records were handed over in chunks).
pub(super) struct LegacySnapshot {
    pub header: SnapshotHeaderV1,
    /// Records that no longer decode, left out.
    pub unreadable: usize,
}

/// Records handed over at a time while importing.
const CHUNK: usize = 1000;

impl LegacySled {
    /// Opens sled's directory at `path` with a small cache.
    pub(super) fn open(path: &Path) -> Result<LegacySled, StoreError> {
        let engine = |source| StoreError::Engine {
            path: path.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(1 << 20)
            .open()
            .map_err(engine)?;
        let meta = db.open_tree(META_TREE).map_err(engine)?;
        Ok(LegacySled {
            path: path.to_path_buf(),
            db,
            meta,
        })
    }

    fn engine(&self, source: sled::Error) -> StoreError {
        StoreError::Engine {
            path: self.path.clone(),
            source,
        }
    }

    /// The queue 0.1.0 kept in sled, if any is left.
    pub(super) fn queue(&self) -> Result<LegacyQueue, StoreError> {
        let mut legacy = LegacyQueue::default();
        let names = self.db.tree_names();
        for (name, lane) in LEGACY_TREES {
            if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
                continue;
            }
            let tree = self.db.open_tree(name).map_err(|e| self.engine(e))?;
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
        legacy.dropped_events = self
            .meta
            .get(LEGACY_DROPPED_KEY)
            .map_err(|e| self.engine(e))?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or(0);
        Ok(legacy)
    }

    /// The active snapshot generation: its records, handed to `each` in chunks, and its
    /// header (earlier versions kept records as `<kind>/<index>` keys in a
    /// `snapshot.<generation>` tree).
    pub(super) fn snapshot(
        &self,
        each: &mut dyn FnMut(&[Record]) -> Result<(), StoreError>,
    ) -> Result<Option<LegacySnapshot>, StoreError> {
        let active = self
            .meta
            .get(ACTIVE_KEY)
            .map_err(|e| self.engine(e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        let name = match active {
            Some(generation) => format!("{SNAPSHOT_PREFIX}{generation:020}"),
            None => return Ok(None),
        };
        if !self.db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()) {
            return Ok(None);
        }
        let tree = self.db.open_tree(&name).map_err(|e| self.engine(e))?;
        let Some(header) = tree.get(HEADER_KEY).map_err(|e| self.engine(e))? else {
            return Ok(None);
        };
        let header: SnapshotHeaderV1 = serde_json::from_slice(&header).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            generation: active.unwrap_or(0),
            detail: format!("header: {e}"),
        })?;
        let mut records = Vec::with_capacity(CHUNK);
        let mut unreadable = 0;
        for kind in RecordKind::ALL {
            for entry in tree.scan_prefix(format!("{}/", kind.as_str()).as_bytes()) {
                let (key, value) = entry.map_err(|e| self.engine(e))?;
                match format::decode_record(kind, &value) {
                    Ok(record) => records.push(record),
                    Err(error) => {
                        unreadable += 1;
                        tracing::error!(record = %String::from_utf8_lossy(&key), %error, "unreadable record of the old credential cache left out");
                    }
                }
                if records.len() == CHUNK {
                    each(&records)?;
                    records.clear();
                }
            }
        }
        each(&records)?;
        Ok(Some(LegacySnapshot { header, unreadable }))
    }

    /// The sync metadata (cursor, last outcome, ...) as stored: key and JSON value.
    pub(super) fn meta(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut entries = Vec::new();
        for entry in self.meta.iter() {
            let (key, value) = entry.map_err(|e| self.engine(e))?;
            if key.as_ref() == ACTIVE_KEY || key.as_ref() == LEGACY_DROPPED_KEY {
                continue;
            }
            entries.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
        }
        Ok(entries)
    }
}
