//! The store directory (`store.path`): what lives where, private permissions, the one-process
//! lock, the move from 0.1.0's layout, and moving damaged parts aside.
//!
//! ```text
//! <store.path>/            0700
//!   lock                   flock held by the process that has the store open
//!   snapshot.sqlite (-wal) SQLite: the credential snapshot and the sync metadata
//!   snapshot.last-good     the last good snapshot, written atomically (see `last_good`)
//!   snapshot/              sled, as earlier versions kept the snapshot: imported, then removed
//!   queue.sqlite (-wal)    SQLite: the outbox, dead letters, local event log, queue counters
//!   queue.counters         the queue's counters, mirrored outside the database
//!   open-attempts          start-ups that have not finished opening the store yet
//!   damaged/               parts that could not be opened, kept for inspection
//! ```
//!
//! 0.1.0 used `store.path` as sled's own directory; [`Layout::prepare`] moves those files into
//! `snapshot/` first.

use super::StoreError;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Files sled 0.34 keeps in its directory.
const SLED_ENTRIES: [&str; 3] = ["conf", "db", "blobs"];
const SLED_SNAP_PREFIX: &str = "snap.";

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn snapshot_db(&self) -> PathBuf {
        self.root.join("snapshot.sqlite")
    }

    /// sled's directory, as earlier versions kept the snapshot (imported once, then removed).
    pub fn legacy_snapshot_db(&self) -> PathBuf {
        self.root.join("snapshot")
    }

    pub fn last_good(&self) -> PathBuf {
        self.root.join("snapshot.last-good")
    }

    pub fn queue_db(&self) -> PathBuf {
        self.root.join("queue.sqlite")
    }

    pub fn queue_counters(&self) -> PathBuf {
        self.root.join("queue.counters")
    }

    fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub fn open_attempts(&self) -> PathBuf {
        self.root.join("open-attempts")
    }

    pub fn damaged(&self) -> PathBuf {
        self.root.join("damaged")
    }

    /// Creates the directory 0700 (whatever the umask) if it is missing.
    pub fn create(&self) -> Result<(), StoreError> {
        if !self.root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|e| StoreError::io(&self.root, e))?;
        }
        Ok(())
    }

    /// With the lock held: tightens a directory that others could read (with a warning) and
    /// moves a 0.1.0 layout into place.
    pub fn prepare(&self) -> Result<(), StoreError> {
        let io = |e: std::io::Error| StoreError::io(&self.root, e);
        let loosened = tighten(&self.root).map_err(io)?;
        if loosened > 0 {
            tracing::warn!(
                path = %self.root.display(),
                entries = loosened,
                "store was readable by other users; tightened to 0700 (directories) and 0600 (files)"
            );
        }
        self.move_legacy_sled_files().map_err(io)
    }

    /// After the engines opened: SQLite (and sled, importing an earlier version's store) creates
    /// its files with the process umask's mode (the 0700 directory already keeps them private);
    /// this makes them 0600 as well.
    pub fn tighten_new_files(&self) {
        if let Err(error) = tighten(&self.root) {
            tracing::warn!(%error, path = %self.root.display(), "cannot tighten store file permissions");
        }
    }

    /// 0.1.0 kept sled's files directly in `store.path`. Moves them into `snapshot/` through
    /// `snapshot.moving/`, so a crash half-way resumes on the next start.
    fn move_legacy_sled_files(&self) -> std::io::Result<()> {
        let target = self.legacy_snapshot_db();
        let moving = self.root.join("snapshot.moving");
        let legacy: Vec<PathBuf> = fs::read_dir(&self.root)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                SLED_ENTRIES.contains(&name) || name.starts_with(SLED_SNAP_PREFIX)
            })
            .collect();
        if legacy.is_empty() && !moving.exists() {
            return Ok(());
        }
        if target.exists() && !moving.exists() {
            tracing::warn!(path = %self.root.display(), "files of an old store layout beside the current one are left alone");
            return Ok(());
        }
        tracing::info!(from = %self.root.display(), to = %target.display(), "moving the 0.1.0 store layout into place");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&moving)?;
        for path in legacy {
            if let Some(name) = path.file_name() {
                fs::rename(&path, moving.join(name))?;
            }
        }
        sync_dir(&moving)?;
        fs::rename(&moving, &target)?;
        sync_dir(&self.root)
    }

    /// Takes the store for this process, or says who has it. Non-blocking.
    pub fn try_lock(&self) -> Result<OwnerLock, StoreError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.lock())
            .map_err(|e| StoreError::io(&self.root, e))?;
        // SAFETY: flock on a file descriptor we own.
        let taken = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if taken != 0 {
            return Err(StoreError::Locked {
                path: self.root.clone(),
            });
        }
        Ok(OwnerLock { _file: file })
    }

    /// Moves a part that cannot be opened into `damaged/` under a time-stamped name and says
    /// where. SQLite's `-wal` and `-shm` files travel with their database.
    pub fn move_aside(&self, part: &Path) -> std::io::Result<PathBuf> {
        let damaged = self.damaged();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&damaged)?;
        let name = part.file_name().and_then(|n| n.to_str()).unwrap_or("part");
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let mut target = damaged.join(format!("{name}.{stamp}"));
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = damaged.join(format!("{name}.{stamp}.{n}"));
        }
        if part.exists() {
            fs::rename(part, &target)?;
        }
        for suffix in ["-wal", "-shm"] {
            let companion = PathBuf::from(format!("{}{suffix}", part.display()));
            if companion.exists() {
                fs::rename(&companion, format!("{}{suffix}", target.display()))?;
            }
        }
        sync_dir(&self.root)?;
        Ok(target)
    }
}

/// Held while a process has the store open; the lock goes with the file descriptor.
#[derive(Debug)]
pub struct OwnerLock {
    _file: fs::File,
}

/// Removes group and other permissions below `dir` (and on it). Returns how many entries had
/// them.
fn tighten(dir: &Path) -> std::io::Result<usize> {
    let mut loosened = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(wanted))?;
            loosened += 1;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(loosened)
}

/// fsync of a directory, so a rename or a new file in it survives a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: a temporary file, fdatasync, rename, directory fsync.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(&temporary, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Counts start-ups that began opening the store and did not finish (a crash, an abort in the
/// engine, a watchdog kill), so a store that kills every start is moved aside instead of
/// looping forever.
#[derive(Debug)]
pub struct OpenAttempts {
    path: PathBuf,
}

impl OpenAttempts {
    /// Start-ups that did not finish, before this one.
    pub fn begin(layout: &Layout) -> (OpenAttempts, u32) {
        let path = layout.open_attempts();
        let earlier = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0u32);
        if let Err(error) = write_atomically(&path, format!("{}\n", earlier + 1).as_bytes()) {
            tracing::warn!(%error, path = %path.display(), "cannot count store start-ups");
        }
        (OpenAttempts { path }, earlier)
    }

    /// The store opened and loaded: the count starts again.
    pub fn finished(self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_0_1_0_layout_is_moved_into_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("db");
        fs::create_dir(&root).unwrap();
        for name in ["conf", "db", "snap.0000000000001234"] {
            fs::write(root.join(name), name).unwrap();
        }
        fs::create_dir(root.join("blobs")).unwrap();
        let layout = Layout::new(&root);
        layout.create().unwrap();
        layout.prepare().unwrap();
        for name in ["conf", "db", "snap.0000000000001234"] {
            assert_eq!(
                fs::read_to_string(layout.legacy_snapshot_db().join(name)).unwrap(),
                name
            );
            assert!(!root.join(name).exists());
        }
        assert!(layout.legacy_snapshot_db().join("blobs").is_dir());
    }

    #[test]
    fn a_world_readable_store_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("db");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("queue.sqlite"), b"x").unwrap();
        fs::set_permissions(root.join("queue.sqlite"), fs::Permissions::from_mode(0o644)).unwrap();
        Layout::new(&root).create().unwrap();
        Layout::new(&root).prepare().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("queue.sqlite")), 0o600);
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let first = layout.try_lock().unwrap();
        assert!(matches!(layout.try_lock(), Err(StoreError::Locked { .. })));
        drop(first);
        layout.try_lock().unwrap();
    }
}
