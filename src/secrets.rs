//! Reading and writing secret files (API key, client secret, refresh token).
//!
//! Secrets are read fresh from their source, never logged, and written back atomically: a
//! rotated refresh token goes to a temporary file created with mode 0600, is fsynced, renamed
//! over the old one and the directory is fsynced, so a power cut leaves either the old token or
//! the new one, never a torn or world-readable file.

use crate::config::SecretSource;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A secret value that does not print itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("secret file {path} is empty")]
    Empty { path: String },
    #[error("cannot write secret file {path}: {reason}")]
    Write { path: String, reason: String },
}

/// Reads a secret from its configured source. Surrounding whitespace (a trailing newline from
/// `echo`) is dropped. A file readable by others is used but warned about.
pub fn read(source: &SecretSource) -> Result<Secret, SecretError> {
    let path = source.path().map_err(|reason| SecretError::Read {
        path: source.to_string(),
        reason,
    })?;
    read_file(&path)
}

pub fn read_file(path: &Path) -> Result<Secret, SecretError> {
    let shown = path.display().to_string();
    let text = crate::small_file::read_text(path, crate::small_file::SECRET_LIMIT).map_err(|reason| {
        SecretError::Read {
            path: shown.clone(),
            reason,
        }
    })?;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %shown, mode = format!("{:o}", meta.permissions().mode() & 0o777), "secret file is readable by group or others; chmod 600 it");
        }
    }
    let value = text.trim();
    if value.is_empty() {
        return Err(SecretError::Empty { path: shown });
    }
    // A key or token is one line; a second one is a file mixed up with another (and would be
    // refused in an HTTP header anyway).
    if value.contains(['\n', '\r']) {
        return Err(SecretError::Read {
            path: shown,
            reason: "holds more than one line; a secret file holds the secret alone".into(),
        });
    }
    Ok(Secret::new(value))
}

/// Replaces `path` with `secret` atomically, mode 0600.
pub fn write_atomic(path: &Path, secret: &Secret) -> Result<(), SecretError> {
    let fail = |reason: String| SecretError::Write {
        path: path.display().to_string(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| fail("not a file path".into()))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let _ = fs::remove_file(&temp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // Belt and braces: the umask cannot widen 0600, but an existing ACL-less mount could.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(secret.expose().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&temp);
        return Err(fail(error.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_secret_is_0600_and_reads_back_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh_token");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, &Secret::new("new-token")).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_file(&path).unwrap().expose(), "new-token");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn failed_write_keeps_the_old_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("token");
        let error = write_atomic(&path, &Secret::new("x")).unwrap_err();
        assert!(error.to_string().contains("missing-dir"), "{error}");
    }

    #[test]
    fn empty_and_missing_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, "  \n").unwrap();
        assert!(matches!(read_file(&path), Err(SecretError::Empty { .. })));
        let error = read_file(&dir.path().join("nope")).unwrap_err();
        assert!(error.to_string().contains("nope"));
    }

    #[test]
    fn a_secret_is_one_line_from_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, "first\nsecond\n").unwrap();
        assert!(read_file(&path)
            .unwrap_err()
            .to_string()
            .contains("more than one line"));
        let error = read_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(
            error.contains("/dev/zero: is a device, not a regular file"),
            "{error}"
        );
        fs::write(&path, "k".repeat(SECRET_LIMIT_FOR_TEST + 1)).unwrap();
        assert!(read_file(&path).unwrap_err().to_string().contains("at most"));
    }

    const SECRET_LIMIT_FOR_TEST: usize = crate::small_file::SECRET_LIMIT as usize;

    #[test]
    fn debug_does_not_print_the_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
