//! Secure Channel Base Keys (SCBK, OSDP v2.2 Annex D): one 16-byte AES key per reader, kept as
//! 32 hex digits in a file of mode 0600 and never logged.
//!
//! The install-mode key SCBK-D (the published default every factory-fresh reader accepts) is
//! used for one thing only: to hand a reader its own key with osdp_KEYSET. That is allowed
//! while a key the agent generated has not yet been confirmed on the reader (a `.pending`
//! marker next to the key file), or when the config says `install_mode = true`. Otherwise the
//! reader must prove it holds the key, and a reader that falls back to SCBK-D is refused.
//!
//! Generated keys live in `<key_dir>/<door>.key`; `key_dir` is `osdp-keys` beside the store.

use crate::config::SecretSource;
use crate::reader::key_file_stem;
use crate::secrets::{self, Secret, SecretError};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A reader's Secure Channel Base Key. Prints as `Scbk(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Scbk([u8; 16]);

impl Scbk {
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// 16 bytes from the kernel's CSPRNG (getrandom(2)).
    pub fn generate() -> std::io::Result<Scbk> {
        let mut key = [0u8; 16];
        let mut filled = 0;
        while filled < key.len() {
            // SAFETY: the pointer and length describe the unfilled tail of `key`.
            let n = unsafe { libc::getrandom(key[filled..].as_mut_ptr().cast(), key.len() - filled, 0) };
            if n < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
                continue;
            }
            filled += n as usize;
        }
        Ok(Scbk(key))
    }

    /// Parses 32 hex digits (case-insensitive). The text is never echoed in the error.
    pub fn from_hex(text: &str) -> Result<Scbk, &'static str> {
        let text = text.trim();
        if text.len() != 32 {
            return Err("an OSDP key is 32 hex digits (16 bytes)");
        }
        let mut key = [0u8; 16];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| "an OSDP key is 32 hex digits (0-9, a-f)")?;
        }
        Ok(Scbk(key))
    }

    fn to_hex(&self) -> Secret {
        Secret::new(self.0.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

impl fmt::Debug for Scbk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scbk(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("OSDP key file {path}: {reason}")]
    Invalid { path: String, reason: &'static str },
    #[error("OSDP key directory {path}: {reason}")]
    Directory { path: String, reason: String },
    #[error("cannot generate an OSDP key: {0}")]
    Random(std::io::Error),
}

/// A reader's key and whether it may still be installed with SCBK-D.
#[derive(Debug)]
pub struct ReaderKey {
    pub key: Scbk,
    /// Where the key came from (for messages; never the key itself).
    pub path: PathBuf,
    /// SCBK-D may be used to install `key` on the reader.
    pub install_allowed: bool,
    /// The marker that records a generated key as not yet installed; removed on confirmation.
    pending_marker: Option<PathBuf>,
}

impl ReaderKey {
    /// Loads the configured key file, or the generated key for `door` in `key_dir`, generating
    /// one (and its pending marker) on first use. `install_mode` is the door's config flag.
    pub fn load(
        configured: Option<&SecretSource>,
        key_dir: &Path,
        door: &str,
        install_mode: bool,
    ) -> Result<ReaderKey, KeyError> {
        if let Some(source) = configured {
            let secret = secrets::read(source)?;
            let key = Scbk::from_hex(secret.expose()).map_err(|reason| KeyError::Invalid {
                path: source.to_string(),
                reason,
            })?;
            return Ok(ReaderKey {
                key,
                path: source.path().unwrap_or_default(),
                install_allowed: install_mode,
                pending_marker: None,
            });
        }
        let path = default_key_path(key_dir, door);
        let marker = pending_marker_path(&path);
        if !path.exists() {
            create_private_dir(key_dir)?;
            // The marker goes first: a crash between the two leaves a marker without a key,
            // which the next start completes. The other order could leave a key that counts as
            // installed although the reader never received it.
            create_marker(&marker)?;
            let key = Scbk::generate().map_err(KeyError::Random)?;
            secrets::write_atomic(&path, &key.to_hex())?;
            tracing::info!(%door, path = %path.display(), "generated a new OSDP secure channel key; it is installed on the reader while the reader is in install mode");
        }
        let secret = secrets::read_file(&path)?;
        let key = Scbk::from_hex(secret.expose()).map_err(|reason| KeyError::Invalid {
            path: path.display().to_string(),
            reason,
        })?;
        let pending = marker.exists();
        Ok(ReaderKey {
            key,
            path,
            install_allowed: install_mode || pending,
            pending_marker: pending.then_some(marker),
        })
    }

    /// The reader proved it holds the key: SCBK-D is no longer allowed for it, and a generated
    /// key's pending marker is removed so a restart keeps refusing SCBK-D.
    pub fn confirm_installed(&mut self) -> Result<(), KeyError> {
        self.install_allowed = false;
        if let Some(marker) = self.pending_marker.take() {
            fs::remove_file(&marker).map_err(|e| KeyError::Directory {
                path: marker.display().to_string(),
                reason: e.to_string(),
            })?;
            if let Some(dir) = marker.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
        }
        Ok(())
    }
}

/// `<key_dir>/<door>.key`, the door name reduced to characters safe in a file name.
pub fn default_key_path(key_dir: &Path, door: &str) -> PathBuf {
    key_dir.join(format!("{}.key", key_file_stem(door)))
}

fn pending_marker_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pending");
    PathBuf::from(name)
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| KeyError::Directory {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })
}

fn create_marker(marker: &Path) -> Result<(), KeyError> {
    let fail = |e: std::io::Error| KeyError::Directory {
        path: marker.display().to_string(),
        reason: e.to_string(),
    };
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(marker)
        .and_then(|f| f.sync_all())
        .map_err(fail)?;
    if let Some(dir) = marker.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_key_is_0600_pending_until_confirmed_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("osdp-keys");
        let mut first = ReaderKey::load(None, &key_dir, "front door", false).unwrap();
        assert!(first.install_allowed, "a fresh key may be installed with SCBK-D");
        assert_eq!(first.path, key_dir.join("front_door.key"));
        let mode = fs::metadata(&first.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&key_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);

        let again = ReaderKey::load(None, &key_dir, "front door", false).unwrap();
        assert_eq!(again.key, first.key, "the stored key is reused");
        assert!(again.install_allowed, "still pending: not confirmed yet");

        first.confirm_installed().unwrap();
        assert!(!first.install_allowed);
        let after = ReaderKey::load(None, &key_dir, "front door", false).unwrap();
        assert_eq!(after.key, first.key);
        assert!(!after.install_allowed, "confirmed keys never allow SCBK-D again");
        let forced = ReaderKey::load(None, &key_dir, "front door", true).unwrap();
        assert!(forced.install_allowed, "install_mode = true allows it explicitly");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Scbk::generate().unwrap(), Scbk::generate().unwrap());
    }

    #[test]
    fn a_configured_key_file_is_read_and_counts_as_installed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reader.key");
        fs::write(&path, "000102030405060708090A0B0C0D0E0F\n").unwrap();
        let source = SecretSource::File(path.clone());
        let key = ReaderKey::load(Some(&source), dir.path(), "front", false).unwrap();
        assert_eq!(key.key.bytes(), core::array::from_fn(|i| i as u8));
        assert!(!key.install_allowed);
        assert!(
            !dir.path().join("front.key").exists(),
            "no key generated beside a configured one"
        );
    }

    #[test]
    fn a_bad_key_file_names_the_file_but_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reader.key");
        fs::write(&path, "secretsecretsecretsecretsecretZZ").unwrap();
        let error = ReaderKey::load(Some(&SecretSource::File(path)), dir.path(), "front", false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("reader.key"), "{error}");
        assert!(!error.contains("secret"), "{error}");
        assert_eq!(
            Scbk::from_hex("0011"),
            Err("an OSDP key is 32 hex digits (16 bytes)")
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let key = Scbk::from_hex("00112233445566778899aabbccddeeff").unwrap();
        assert_eq!(format!("{key:?}"), "Scbk(***)");
    }

    #[test]
    fn door_names_become_safe_file_names() {
        assert_eq!(key_file_stem("Front Door/1"), "Front_Door_1");
        assert_eq!(key_file_stem("../etc"), "_etc");
        assert_eq!(key_file_stem("a.b-c_d"), "a.b-c_d");
    }

    #[test]
    fn an_unwritable_key_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let error = ReaderKey::load(None, &blocker.join("keys"), "front", false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("keys"), "{error}");
    }
}
