//! Reading the small files an operator names (the config, secret files, OSDP keys): regular
//! files only, of a bounded size, opened so that a FIFO or device never blocks or floods the
//! agent (`api_key = "/dev/zero"` grew `check-config` to 10 GB; a FIFO hung `run` before it
//! could answer SIGTERM).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The longest secret file read (a key or token is well under 1 KiB).
pub const SECRET_LIMIT: u64 = 64 * 1024;
/// The longest config file read.
pub const CONFIG_LIMIT: u64 = 1024 * 1024;

/// Reads `path` whole. Errors (as messages without the path, which the caller names): the
/// file cannot be opened, is not a regular file (a directory, FIFO, socket or device), or is
/// longer than `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It does not
    // change how a regular file reads.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(format!("is {}, not a regular file", describe(&kind)));
    }
    if meta.len() > limit {
        return Err(format!("is {} bytes long; at most {limit} are read", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The length can change after the check (a file still being written): read no more than
    // the limit plus one byte to tell.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("is longer than {limit} bytes"));
    }
    Ok(bytes)
}

/// What kind of file this is, for messages ("a FIFO").
pub fn describe(kind: &std::fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// `read`, as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, String> {
    String::from_utf8(read(path, limit)?).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count();
        format!("is not UTF-8 text: line {line}, byte {at} (save it as UTF-8)")
    })
}

/// Makes a FIFO at `path` (for tests of paths that are not regular files).
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(read_text(&path, 4).unwrap(), "abc\n");
        assert!(read(&path, 3).unwrap_err().contains("4 bytes long; at most 3"));
    }

    /// The kinds of path that are not a small regular file, each refused without reading it:
    /// a FIFO without a writer (would block), an endless device, a directory, a missing path,
    /// and bytes that are not UTF-8.
    #[test]
    fn what_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        make_fifo(&fifo);
        assert_eq!(read(&fifo, 10).unwrap_err(), "is a FIFO, not a regular file");
        assert_eq!(
            read(Path::new("/dev/zero"), 10).unwrap_err(),
            "is a device, not a regular file"
        );
        assert_eq!(
            read(dir.path(), 10).unwrap_err(),
            "is a directory, not a regular file"
        );
        assert!(read(&dir.path().join("missing"), 10)
            .unwrap_err()
            .contains("No such file"));
        let latin1 = dir.path().join("latin1");
        std::fs::write(&latin1, b"[x]\nname = \"caf\xe9\"").unwrap();
        assert!(read_text(&latin1, 100).unwrap_err().contains("line 2, byte 15"));
    }
}
