//! A real, small filesystem for the tests that fill a disk, and helpers that damage or copy store
//! files as power loss and cheap flash do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the test may mount filesystems (root here and in CI).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs of a few MiB mounted on a temporary directory for one test, unmounted on drop.
pub struct SmallFs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// `None` (with a message saying why) when not running as root.
    pub fn mount(size_mib: u64, test: &str) -> Option<SmallFs> {
        if !is_root() {
            eprintln!("SKIPPED {test}: mounting a small filesystem needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount tmpfs on {}", dir.path().display());
        Some(SmallFs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Remounts it read-only (what `ProtectSystem=strict` makes of a path the unit does not
    /// list as writable): writes fail with EROFS, even for root.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount {} read-only", self.path.display());
    }

    /// Bytes still free for an unprivileged writer.
    pub fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
        unsafe {
            let mut stats: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut stats), 0);
            stats.f_bavail as u64 * stats.f_frsize as u64
        }
    }

    /// Fills the filesystem to 0 bytes free with one file; returns it (delete it to free).
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let bytes = vec![0xA5u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
        assert_eq!(self.available(), 0, "the filesystem is full");
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Copies a directory tree (a store fixture) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Shortens a file to `fraction` of its length, as a torn write on flash leaves it.
pub fn truncate(path: &Path, fraction: f64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len((len as f64 * fraction) as u64)
        .unwrap();
}
