//! `snapshot.last-good`: a copy of the last snapshot that was saved, outside the snapshot
//! database, written atomically (temporary file, fdatasync, rename, directory fsync). When the
//! database's copy cannot be opened or has lost its last snapshot, the doors decide from this one instead of denying
//! everyone until a sync.
//!
//! Text, one JSON value per line, in the store's on-disk format (`format::*V1`):
//!
//! ```text
//! {"format":1,"generation":…,"synced_at":…,"written_at":…,"counts":{…}}   header
//! {…}                                                                      one line per record,
//! …                                                                        kinds in format::KINDS
//! {"records":N,"crc32":C}                                                  order, counts as in
//! ```                                                                      the header
//!
//! The trailer's CRC-32 covers every byte before it: a torn or damaged file is refused whole
//! (it is only the fallback).

use super::format::{self, RecordSource, SnapshotHeaderV1};
use super::layout::sync_dir;
use super::snapshots::{LoadedSnapshot, SnapshotHeader};
use super::{testing, StoreError};
#[cfg(test)]
use crate::snapshot::SnapshotParts;
use crate::snapshot::{RecordKind, SnapshotCounts, SnapshotSink};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct Trailer {
    records: u64,
    crc32: u32,
}

/// A writer that keeps a CRC-32 of what went through it.
struct Checksummed<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    records: u64,
}

impl<W: Write> Checksummed<W> {
    fn line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.crc.update(b"\n");
        self.inner.write_all(bytes)?;
        self.inner.write_all(b"\n")
    }
}

/// Replaces the last good copy with the snapshot `header` describes, its records read from
/// `records` kind by kind as stored (no decoding): written to a temporary file, fdatasync'ed,
/// renamed over the copy, the directory fsynced.
pub(super) fn write(
    path: &Path,
    header: &SnapshotHeader,
    records: &mut dyn RecordSource,
) -> Result<(), StoreError> {
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    let io = |e| StoreError::io(path, e);
    let result = (|| {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io)?;
        let mut out = Checksummed {
            inner: BufWriter::new(file),
            crc: crc32fast::Hasher::new(),
            records: 0,
        };
        out.line(&serde_json::to_vec(&header.to_disk()).unwrap_or_default())
            .map_err(io)?;
        for kind in RecordKind::ALL {
            while let Some((_, bytes)) = records.next(kind)? {
                out.records += 1;
                out.line(&bytes).map_err(io)?;
            }
        }
        let trailer = Trailer {
            records: out.records,
            crc32: out.crc.clone().finalize(),
        };
        out.inner
            .write_all(&serde_json::to_vec(&trailer).unwrap_or_default())
            .map_err(io)?;
        out.inner.write_all(b"\n").map_err(io)?;
        let file = out.inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_data().map_err(io)?;
        testing::failpoint("last_good.temporary_written");
        fs::rename(&temporary, path).map_err(io)?;
        testing::failpoint("last_good.renamed");
        sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(io)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// The header of the last good copy, if there is a readable one (first line only: cheap).
pub(super) fn header(path: &Path) -> Option<SnapshotHeaderV1> {
    let file = fs::File::open(path).ok()?;
    let mut line = String::new();
    BufReader::new(file).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// Lines of the file after the header, handed out kind by kind.
struct LineSource<R: BufRead> {
    lines: std::io::Split<R>,
    counts: SnapshotCounts,
    kind: Option<RecordKind>,
    left: u64,
    crc: crc32fast::Hasher,
    path: PathBuf,
}

impl<R: BufRead> LineSource<R> {
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        match self.lines.next() {
            None => Ok(None),
            Some(Ok(line)) => Ok(Some(line)),
            Some(Err(e)) => Err(StoreError::io(&self.path, e)),
        }
    }
}

impl<R: BufRead> RecordSource for LineSource<R> {
    fn next(&mut self, kind: RecordKind) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        if self.kind != Some(kind) {
            self.kind = Some(kind);
            self.left = self.counts.of(kind);
        }
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let index = self.counts.of(kind) - self.left - 1;
        let line = self
            .next_line()?
            .ok_or_else(|| damaged(&self.path, "ends before its last record"))?;
        self.crc.update(&line);
        self.crc.update(b"\n");
        Ok(Some((format!("{}/{index}", kind.as_str()), line)))
    }
}

fn damaged(path: &Path, detail: &str) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Loads the last good copy into `sink`, checking its trailer. `Ok(None)` when there is none.
/// On an error `sink` holds part of a snapshot and must be thrown away.
pub(super) fn load_into(
    path: &Path,
    sink: &mut dyn SnapshotSink,
) -> Result<Option<LoadedSnapshot>, StoreError> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut lines = BufReader::new(file).split(b'\n');
    let first = match lines.next() {
        Some(Ok(line)) => line,
        _ => return Err(damaged(path, "empty")),
    };
    let disk: SnapshotHeaderV1 =
        serde_json::from_slice(&first).map_err(|e| damaged(path, &format!("header: {e}")))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&first);
    crc.update(b"\n");
    let header = SnapshotHeader::from_disk(disk, path)?;
    sink.synced_at(header.synced_at);
    let mut source = LineSource {
        lines,
        counts: header.counts.clone(),
        kind: None,
        left: 0,
        crc,
        path: path.to_path_buf(),
    };
    let read = format::read_records(&mut source, sink)?;
    let trailer = source
        .next_line()?
        .and_then(|line| serde_json::from_slice::<Trailer>(&line).ok())
        .ok_or_else(|| damaged(path, "trailer missing or unreadable (torn write?)"))?;
    let total: u64 = RecordKind::ALL.iter().map(|k| header.counts.of(*k)).sum();
    if trailer.records != total || trailer.crc32 != source.crc.finalize() {
        return Err(damaged(path, "checksum or record count does not match"));
    }
    Ok(Some(LoadedSnapshot {
        header,
        unreadable: read.unreadable,
    }))
}

/// Records of `parts` as a [`RecordSource`] (tests and the in-memory save path).
#[cfg(test)]
pub(super) struct PartsSource {
    records: std::collections::VecDeque<crate::snapshot::Record>,
}

#[cfg(test)]
impl PartsSource {
    pub(super) fn new(parts: &SnapshotParts) -> PartsSource {
        PartsSource {
            records: parts.clone().into_records().collect(),
        }
    }
}

#[cfg(test)]
impl RecordSource for PartsSource {
    fn next(&mut self, kind: RecordKind) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        match self.records.front() {
            Some(record) if record.kind() == kind => {
                let record = self.records.pop_front().expect("front exists");
                Ok(Some((kind.as_str().to_string(), format::encode_record(&record))))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn saved(dir: &Path) -> (PathBuf, SnapshotParts) {
        let path = dir.join("snapshot.last-good");
        let parts = SnapshotParts::synthetic(50);
        let header = SnapshotHeader {
            generation: 9,
            synced_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
            written_at: Timestamp::now(),
            counts: parts.counts(),
        };
        write(&path, &header, &mut PartsSource::new(&parts)).unwrap();
        (path, parts)
    }

    #[test]
    fn round_trips_and_header_alone_is_cheap() {
        let dir = tempfile::tempdir().unwrap();
        let (path, parts) = saved(dir.path());
        assert_eq!(header(&path).unwrap().generation, 9);
        let mut read = SnapshotParts::default();
        let loaded = load_into(&path, &mut read).unwrap().unwrap();
        assert_eq!(read.people, parts.people);
        assert_eq!(read.credentials, parts.credentials);
        assert_eq!(loaded.header.counts, parts.counts());
        assert!(loaded.unreadable.is_empty());
    }

    #[test]
    fn a_torn_or_altered_copy_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = saved(dir.path());
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let load = |path: &Path| load_into(path, &mut SnapshotParts::default());
        assert!(matches!(load(&path), Err(StoreError::Damaged { .. })));
        let mut altered = bytes.clone();
        let at = altered.iter().position(|b| *b == b'7').unwrap();
        altered[at] = b'8';
        fs::write(&path, &altered).unwrap();
        let error = load(&path).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }
}
