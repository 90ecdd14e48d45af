//! What `check-config` checks beyond the file itself: the things the config points at. Each
//! finding names the key it comes from, so the message can carry the key's line.
//!
//! - Secrets (`api.auth.api_key`, `client_secret`, `refresh_token_file`, `uplink.events_token`)
//!   must exist, be readable and not be empty: without them the agent cannot talk to DoorFlow
//!   (it would run on its stored snapshot, degraded). A secret readable by group or others is
//!   a warning. A `systemd-credential:NAME` source can only be checked where systemd provides
//!   it (`CREDENTIALS_DIRECTORY`, i.e. inside the unit); elsewhere that is a note.
//! - GPIO chips (backend `gpiod`) must exist and be GPIO character devices, and every line
//!   offset must exist on its chip, as `run` will request those lines.
//!
//! The config's own rules (ranges, URLs, socket path lengths, NUL bytes, template
//! placeholders) are in `config` and apply to `run` as well.

use crate::config::{AuthMethod, Config, GpioBackend, ReaderConfig, SecretSource};
use crate::hw::chardev::chip_path;
use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Shown, does not fail the check.
    Note,
    /// Shown, does not fail the check (`check-config` still exits 0).
    Warning,
    /// Fails the check (`check-config` exits 2).
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The dotted config key the finding is about.
    pub key: String,
    pub message: String,
}

/// Every finding for `config`, errors first.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut findings = secrets(config);
    findings.extend(trust_store(config));
    let chip_findings = gpio_chips(config);
    // Offsets are checked only on chips that opened (an absent chip is already an error).
    if chip_findings.is_empty() {
        findings.extend(gpio_offsets(config));
    }
    findings.extend(chip_findings);
    findings.extend(metrics_directory(config));
    findings.extend(socket_paths(config));
    findings.extend(writable_places(config));
    findings.extend(doors_nobody_opens(config));
    findings.extend(refresh_token_writable(config));
    findings.extend(outside_the_units_writable_paths(config));
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

/// What a secret holds, for the checks beyond "readable and not empty".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretKind {
    Credential,
    /// An OSDP secure channel base key (32 hex digits); a bad one stops `run`.
    OsdpKey,
}

/// The secret sources the config uses, with their keys.
fn secret_sources(config: &Config) -> Vec<(String, SecretSource, SecretKind)> {
    let auth = &config.api.auth;
    let mut sources: Vec<(String, SecretSource, SecretKind)> = Vec::new();
    let mut add = |key: &str, source: Option<SecretSource>| {
        sources.extend(source.map(|s| (key.to_string(), s, SecretKind::Credential)));
    };
    match auth.method {
        AuthMethod::ApiKey => add("api.auth.api_key", auth.api_key.clone()),
        AuthMethod::Oauth => {
            add("api.auth.client_secret", auth.client_secret.clone());
            add(
                "api.auth.refresh_token_file",
                auth.refresh_token_file.clone().map(SecretSource::File),
            );
        }
    }
    if config.uplink.events_url.is_some() {
        add("uplink.events_token", config.uplink.events_token.clone());
    }
    for (index, door) in config.doors.iter().enumerate() {
        if let ReaderConfig::Osdp(reader) = &door.reader {
            if let (true, Some(source)) = (reader.secure_channel, &reader.key_file) {
                let key = format!("doors[{index}].reader.key_file");
                sources.push((key, source.clone(), SecretKind::OsdpKey));
            }
        }
    }
    sources
}

/// Whether each secret can be read, is not empty and is private.
pub fn secrets(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (key, source, kind) in secret_sources(config) {
        let finding = |severity, message: String| Finding {
            severity,
            key: key.clone(),
            message,
        };
        if let SecretSource::SystemdCredential(name) = &source {
            if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
                findings.push(finding(
                    Severity::Note,
                    format!(
                        "systemd credential `{name}` is provided by the unit (LoadCredential=); \
                         it is checked when the service starts"
                    ),
                ));
                continue;
            }
        }
        let path = match source.path() {
            Ok(path) => path,
            Err(reason) => {
                findings.push(finding(Severity::Error, reason));
                continue;
            }
        };
        match secret_file(&path) {
            Some((Severity::Error, message)) => findings.push(finding(Severity::Error, message)),
            warning => {
                findings.extend(warning.map(|(severity, message)| finding(severity, message)));
                if kind == SecretKind::OsdpKey {
                    if let Err(reason) = osdp_key(&path) {
                        findings.push(finding(Severity::Error, reason));
                    }
                }
            }
        }
    }
    findings
}

/// Whether an OSDP key file holds a key `run` accepts.
fn osdp_key(path: &Path) -> Result<(), String> {
    let text = crate::small_file::read_text(path, crate::small_file::SECRET_LIMIT)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::osdp::keys::Scbk::from_hex(text.trim())
        .map(|_| ())
        .map_err(|reason| format!("OSDP key file {}: {reason}", path.display()))
}

/// A secret file's problem, if it has one.
fn secret_file(path: &Path) -> Option<(Severity, String)> {
    let shown = path.display();
    // What `run` reads, with the same rules (a small regular file, one line, not empty).
    if let Err(error) = crate::secrets::read_file(path) {
        return Some((Severity::Error, error.to_string()));
    }
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        (
            Severity::Warning,
            format!("secret file {shown} is readable by group or others (mode {mode:o}); chmod 600 it"),
        )
    })
}

/// https needs CA certificates to verify the server: the system's bundle (the
/// `ca-certificates` package) or `SSL_CERT_FILE` / `SSL_CERT_DIR`.
fn trust_store(config: &Config) -> Option<Finding> {
    let (key, https) = [
        ("api.base_url", Some(&config.api.base_url)),
        ("uplink.events_url", config.uplink.events_url.as_ref()),
    ]
    .into_iter()
    .find_map(|(key, url)| {
        url.filter(|u| u.url().scheme() == "https")
            .map(|u| (key, u.url()))
    })?;
    let loaded = rustls_native_certs::load_native_certs();
    if !loaded.certs.is_empty() {
        return None;
    }
    let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    Some(Finding {
        severity: Severity::Error,
        key: key.into(),
        message: format!(
            "no CA trust store: no CA certificates could be loaded ({}), so {https} cannot be \
             verified; install the ca-certificates package (or set SSL_CERT_FILE)",
            if errors.is_empty() {
                "none found".to_string()
            } else {
                errors.join("; ")
            }
        ),
    })
}

/// A door with no `channel_id`, `allowed_roles` or `allowed_groups` denies every credential
/// (only REX opens it): allowed, as a door may be meant to be opened only from inside, but
/// worth a warning since it is more often a forgotten key.
fn doors_nobody_opens(config: &Config) -> Vec<Finding> {
    config
        .doors
        .iter()
        .enumerate()
        .filter(|(_, door)| door.channel_id.is_none() && door.allowed_roles.is_empty() && door.allowed_groups.is_empty())
        .map(|(index, door)| Finding {
            severity: Severity::Warning,
            key: format!("doors[{index}].name"),
            message: format!(
                "door `{}` has no channel_id, allowed_roles or allowed_groups: every card and PIN is denied there (only REX opens it)",
                door.name
            ),
        })
        .collect()
}

/// Where the agent creates files (the store directory, the admin socket's directory) must be a
/// directory it can write, or be creatable in one: `run` fails to start otherwise.
fn writable_places(config: &Config) -> Vec<Finding> {
    let mut places = vec![("store.path", config.store.path.clone())];
    if let Some(dir) = config.admin.socket.parent() {
        places.push(("admin.socket", dir.to_path_buf()));
    }
    places
        .into_iter()
        .filter_map(|(key, dir)| {
            directory_problem(&dir).map(|message| Finding {
                severity: Severity::Error,
                key: key.into(),
                message,
            })
        })
        .collect()
}

/// Why `dir` cannot be used (or created) as a writable directory: the nearest part of it that
/// exists must be a directory this process may write.
fn directory_problem(dir: &Path) -> Option<String> {
    let existing = dir.ancestors().find(|p| std::fs::symlink_metadata(p).is_ok())?;
    let meta = std::fs::metadata(existing).ok()?;
    if !meta.is_dir() {
        return Some(format!(
            "{} is {}, not a directory",
            existing.display(),
            crate::small_file::describe(&meta.file_type())
        ));
    }
    let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: access reads a NUL-terminated path and has no other preconditions.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let error = std::io::Error::last_os_error();
        return Some(format!("{} cannot be written ({error})", existing.display()));
    }
    None
}

/// A socket path the agent binds must be free or hold a stale socket: `run` replaces nothing
/// else (a typo naming the queue database must not delete it), so it refuses to start.
fn socket_paths(config: &Config) -> Vec<Finding> {
    let mut sockets = vec![("admin.socket", &config.admin.socket)];
    if config.gpio.backend == GpioBackend::Mock {
        sockets.push(("gpio.mock_socket", &config.gpio.mock_socket));
    }
    sockets
        .into_iter()
        .filter_map(|(key, path)| {
            crate::line_server::not_a_socket(path).map(|problem| Finding {
                severity: Severity::Error,
                key: key.into(),
                message: format!("{}: {problem}", path.display()),
            })
        })
        .collect()
}

/// DoorFlow may rotate the refresh token at every refresh; the agent writes the new one to a
/// temporary file beside `refresh_token_file` and renames it over the old, so the file's
/// directory must be writable (a read-only path, as `ProtectSystem=strict` makes /etc, would
/// keep the new token only in memory, and a restart would lose access).
fn refresh_token_writable(config: &Config) -> Option<Finding> {
    if config.api.auth.method != AuthMethod::Oauth {
        return None;
    }
    let file = config.api.auth.refresh_token_file.as_deref()?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let problem = directory_problem(dir)?;
    Some(Finding {
        severity: Severity::Error,
        key: "api.auth.refresh_token_file".into(),
        message: format!(
            "its directory is not writable: {problem}; DoorFlow rotates the refresh token and the \
             agent must save the new one there, or a restart loses access (keep it in the state \
             directory)"
        ),
    })
}

/// The packaged unit's unit file, and the only places it may write (`ProtectSystem=strict`:
/// `StateDirectory=` and `RuntimeDirectory=`; a drop-in may add `ReadWritePaths=`).
const PACKAGED_UNIT: &str = "/usr/lib/systemd/system/doorflow-agent.service";
const UNIT_WRITABLE: [&str; 2] = ["/var/lib/doorflow-agent", "/run/doorflow-agent"];

/// Where the package is installed, `check-config` (often run as root, who may write anywhere)
/// says which paths the service would find read-only: the store, and the refresh token it
/// rewrites at every rotation.
fn outside_the_units_writable_paths(config: &Config) -> Vec<Finding> {
    if !Path::new(PACKAGED_UNIT).exists() {
        return Vec::new();
    }
    let mut places = vec![("store.path", config.store.path.as_path())];
    if config.api.auth.method == AuthMethod::Oauth {
        places.extend(
            config
                .api
                .auth
                .refresh_token_file
                .as_deref()
                .map(|file| ("api.auth.refresh_token_file", file)),
        );
    }
    places
        .into_iter()
        .filter(|(_, path)| !UNIT_WRITABLE.iter().any(|dir| path.starts_with(dir)))
        .map(|(key, path)| Finding {
            severity: Severity::Warning,
            key: key.into(),
            message: format!(
                "{} is outside what the packaged unit may write ({}; ProtectSystem=strict makes the \
                 rest read-only): move it there, or add a ReadWritePaths= drop-in",
                path.display(),
                UNIT_WRITABLE.join(", ")
            ),
        })
        .collect()
}

/// The metrics file's directory must exist for the agent to write there (it does not create
/// node_exporter's directory).
fn metrics_directory(config: &Config) -> Option<Finding> {
    let dir = config.metrics.textfile.as_deref()?.parent()?;
    (!dir.is_dir()).then(|| Finding {
        severity: Severity::Warning,
        key: "metrics.textfile".into(),
        message: format!(
            "directory {} does not exist; no metrics file is written until it does",
            dir.display()
        ),
    })
}

/// Each GPIO chip a door uses, with the key it comes from (the line's own `chip`, else
/// `gpio.chip`), must be a GPIO character device.
fn gpio_chips(config: &Config) -> Vec<Finding> {
    if config.gpio.backend != GpioBackend::Gpiod {
        return Vec::new();
    }
    let mut chips = Vec::new();
    for (index, door) in config.doors.iter().enumerate() {
        let mut uses = vec![("relay", &door.relay.chip)];
        uses.extend(door.reader.wiegand().map(|w| ("reader", &w.chip)));
        uses.extend(door.contact.as_ref().map(|c| ("contact", &c.chip)));
        uses.extend(door.rex.as_ref().map(|r| ("rex", &r.chip)));
        for (field, chip) in uses {
            chips.push(match chip {
                Some(chip) => (format!("doors[{index}].{field}.chip"), chip.clone()),
                None => ("gpio.chip".to_string(), config.gpio.chip.clone()),
            });
        }
    }
    let mut seen = BTreeSet::new();
    chips
        .into_iter()
        .filter(|(_, chip)| seen.insert(chip_path(chip)))
        .filter_map(|(key, chip)| {
            gpio_chip(&chip_path(&chip)).map(|message| Finding {
                severity: Severity::Error,
                key,
                message,
            })
        })
        .collect()
}

/// A line offset beyond its chip's last line (as `run` would refuse it), naming the line's key.
fn gpio_offsets(config: &Config) -> Option<Finding> {
    if config.gpio.backend != GpioBackend::Gpiod {
        return None;
    }
    let (problem, _absent) = crate::hw::chardev::check_offsets(config);
    problem.map(|(key, message)| Finding {
        severity: Severity::Error,
        key,
        message,
    })
}

/// Why `path` is not a usable GPIO chip, if it is not.
fn gpio_chip(path: &str) -> Option<String> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("no such GPIO chip {path} (`gpiodetect` lists the chips)"))
        }
        Err(error) => return Some(format!("GPIO chip {path}: {error}")),
    };
    if !metadata.file_type().is_char_device() {
        return Some(format!("{path} is not a character device, so not a GPIO chip"));
    }
    // sysfs names the device's subsystem; without sysfs the device type cannot be told.
    let rdev = metadata.rdev();
    let subsystem = format!(
        "/sys/dev/char/{}:{}/subsystem",
        libc::major(rdev),
        libc::minor(rdev)
    );
    match std::fs::read_link(&subsystem) {
        Ok(target) if target.file_name().is_some_and(|name| name != "gpio") => Some(format!(
            "{path} is a character device of subsystem `{}`, not a GPIO chip",
            target.file_name().unwrap_or_default().to_string_lossy()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_and_a_non_gpio_device_are_not_chips() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let message = gpio_chip(&file.path().display().to_string()).unwrap();
        assert!(message.contains("not a character device"), "{message}");
        assert!(gpio_chip("/dev/gpiochip-none")
            .unwrap()
            .contains("no such GPIO chip"));
        if Path::new("/sys/dev/char").exists() {
            let message = gpio_chip("/dev/null").unwrap();
            assert!(message.contains("subsystem `mem`"), "{message}");
        }
    }

    #[test]
    fn secret_files_must_be_readable_non_empty_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        assert_eq!(secret_file(&key).unwrap().0, Severity::Error);
        std::fs::write(&key, " \n").unwrap();
        assert!(secret_file(&key).unwrap().1.contains("is empty"));
        std::fs::write(&key, "k\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (severity, message) = secret_file(&key).unwrap();
        assert_eq!(severity, Severity::Warning);
        assert!(message.contains("mode 640"), "{message}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(secret_file(&key), None);
        assert_eq!(secret_file(dir.path()).unwrap().0, Severity::Error);
    }
}
