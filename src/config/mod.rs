//! The agent's TOML configuration: parsing with `deny_unknown_fields`, then validation that names
//! the offending key, its value and what is wrong with it.
//!
//! Each section has its own module, and each key is declared once: its field, its default and
//! its range (range-checked types from `values`, refused while the file is read). `validate`
//! keeps only the rules that span several keys.
//!
//! Secrets are never part of this file: it only names the files (or systemd credentials) that
//! hold them, so the config can be world-readable and logged.

mod admin;
mod api;
mod doors;
mod formats;
mod gpio;
mod metrics;
mod reader;
mod service_url;
mod shifts;
mod source;
mod store;
mod strings;
mod sync;
mod uplink;
pub mod values;

pub use admin::AdminConfig;
pub use api::{ApiConfig, AuthConfig, AuthMethod, SecretSource};
pub use doors::{
    DoorConfig, FacilityCodes, FailMode, InputLineConfig, OutputLineConfig, WiegandReaderConfig,
};
pub use formats::{CardFormatConfig, ParityConfig};
pub use gpio::{Bias, GpioBackend, GpioConfig};
pub use metrics::MetricsConfig;
pub use reader::{OsdpReaderConfig, ReaderConfig, OSDP_BAUD_RATES};
pub use service_url::ServiceUrl;
pub use shifts::{ShiftConfig, ShiftTimeConfig};
pub use source::line_of_key;
pub use store::StoreConfig;
pub use strings::{template_placeholders, PLACEHOLDER};
pub use sync::SyncConfig;
pub use uplink::UplinkConfig;

use crate::snapshot::Shift;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/doorflow-agent/config.toml";

/// Longest Unix socket path: `sun_path` holds 108 bytes on Linux, the terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub uplink: UplinkConfig,
    #[serde(default)]
    pub gpio: GpioConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub doors: Vec<DoorConfig>,
    /// Wiegand card formats defined by field map, listed by name in `doors.reader.formats`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub card_formats: Vec<CardFormatConfig>,
    /// Shift windows by DoorFlow shift id. The v3 API does not publish shifts, so roles with a
    /// `shift_id` are evaluated against these.
    #[serde(default)]
    pub shifts: Vec<ShiftConfig>,
}

/// A config problem, phrased for the person editing the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// The TOML could not be parsed or does not fit the schema (unknown key, wrong type,
    /// missing key, a value out of its range). The message names the line and the dotted key.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{} invalid value for `{key}`: {message}", line.map(|l| format!(" line {l}:")).unwrap_or_default())]
    Invalid {
        path: String,
        /// Line of the key in the file, when it appears there (defaults do not).
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// One validation finding: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&Config::read_text(path)?, &path.display().to_string())
    }

    /// A config file's text: a regular file of at most 1 MiB, UTF-8.
    pub fn read_text(path: &Path) -> Result<String, ConfigError> {
        crate::small_file::read_text(path, crate::small_file::CONFIG_LIMIT).map_err(|reason| {
            ConfigError::Read {
                path: path.display().to_string(),
                reason,
            }
        })
    }

    /// Parses and validates config text; `origin` names the source in messages. The first
    /// problem is the error.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_all(text, origin).map_err(|mut errors| errors.swap_remove(0))
    }

    /// `parse`, with every problem the rules that span keys find (`check-config` lists them
    /// all). A file that does not parse or fit the schema stops at its first error, as the
    /// TOML reader does. Never an empty list.
    pub fn parse_all(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
        let config = source::parse_toml(text, origin).map_err(|error| vec![error])?;
        let problems = config.validate();
        if problems.is_empty() {
            return Ok(config);
        }
        Err(problems
            .into_iter()
            .map(|problem| ConfigError::Invalid {
                path: origin.to_string(),
                line: line_of_key(text, &problem.key),
                key: problem.key,
                message: problem.message,
            })
            .collect())
    }

    /// Every rule that spans keys (single values were checked while parsing), first one first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = |key: String, message: String| problems.push(Problem { key, message });
        self.api.auth.validate(&mut report);
        self.store.validate(&mut report);
        self.sync.validate(&mut report);
        self.uplink.validate(&mut report);
        self.admin.validate(&mut report);
        self.metrics.validate(&mut report);
        self.gpio.validate(&mut report);
        self.validate_doors(&mut report);
        self.validate_card_formats(&mut report);
        for (key, message) in reader::bus_problems(&self.doors) {
            report(key, message);
        }
        self.validate_shifts(&mut report);
        self.validate_distinct_paths(&mut report);
        match serde_json::to_value(self) {
            Ok(value) => strings::validate(&value, &mut report),
            Err(error) => report(String::new(), format!("cannot be checked: {error}")),
        }
        problems
    }

    fn validate_shifts(&self, report: &mut impl FnMut(String, String)) {
        let mut ids = BTreeSet::new();
        for (index, shift) in self.shifts.iter().enumerate() {
            if !ids.insert(shift.id) {
                report(
                    format!("shifts[{index}].id"),
                    format!("shift {} is defined twice", shift.id),
                );
            }
            if let Err((time_index, field, message)) = shift.to_shift() {
                report(format!("shifts[{index}].times[{time_index}].{field}"), message);
            }
        }
    }

    /// Every file path the config names, with its key and its role. One path in two roles (the
    /// admin socket on the mock socket, a socket on the refresh token) is a typo that would
    /// make the agent refuse to start or overwrite a file; one role shared by several doors (an
    /// RS-485 bus's port, a key file) is how a bus is wired.
    fn validate_distinct_paths(&self, report: &mut impl FnMut(String, String)) {
        let mut named: Vec<(String, &'static str, PathBuf)> = vec![
            (
                "store.path".into(),
                "the store directory",
                self.store.path.clone(),
            ),
            (
                "admin.socket".into(),
                "the admin socket",
                self.admin.socket.clone(),
            ),
        ];
        if self.gpio.backend == GpioBackend::Mock {
            named.push((
                "gpio.mock_socket".into(),
                "the mock GPIO socket",
                self.gpio.mock_socket.clone(),
            ));
        }
        let auth = &self.api.auth;
        for (key, source) in [
            ("api.auth.api_key", &auth.api_key),
            ("api.auth.client_secret", &auth.client_secret),
            ("uplink.events_token", &self.uplink.events_token),
        ] {
            if let Some(SecretSource::File(path)) = source {
                named.push((key.into(), "a secret file", path.clone()));
            }
        }
        if let Some(path) = &auth.refresh_token_file {
            named.push((
                "api.auth.refresh_token_file".into(),
                "the refresh token",
                path.clone(),
            ));
        }
        if let Some(path) = &self.metrics.textfile {
            named.push(("metrics.textfile".into(), "the metrics file", path.clone()));
        }
        for (index, door) in self.doors.iter().enumerate() {
            if let ReaderConfig::Osdp(reader) = &door.reader {
                named.push((
                    format!("doors[{index}].reader.port"),
                    "an OSDP port",
                    reader.port.clone(),
                ));
                if let Some(SecretSource::File(path)) = &reader.key_file {
                    named.push((
                        format!("doors[{index}].reader.key_file"),
                        "an OSDP key file",
                        path.clone(),
                    ));
                }
            }
        }
        // Compared as the file system resolves them (`./`, `..`, symlinked directories), not
        // as spelled: a metrics file reached through a symlink onto the API key replaced it.
        let named: Vec<(String, &'static str, PathBuf)> = named
            .into_iter()
            .map(|(key, role, path)| (key, role, resolved(&path)))
            .collect();
        let store = &named[0].2;
        for (key, _, path) in &named[1..] {
            // The store owns its directory: a socket there collided with `snapshot.last-good`.
            if path.starts_with(store) {
                report(
                    key.clone(),
                    format!(
                        "`{}` is inside the store directory `store.path` ({}), whose files the store owns; put it elsewhere",
                        path.display(),
                        store.display()
                    ),
                );
            }
        }
        for (at, (key, role, path)) in named.iter().enumerate() {
            let clash = named[..at]
                .iter()
                .find(|(_, other_role, other)| other == path && other_role != role);
            if let Some((other_key, other_role, _)) = clash {
                report(
                    key.clone(),
                    format!(
                        "`{}` is also `{other_key}` ({other_role}); each role needs a path of its own",
                        path.display()
                    ),
                );
            }
        }
    }

    /// The configured shifts as the decision uses them (validated by `parse`, so none fails
    /// here).
    pub fn shifts(&self) -> Vec<Shift> {
        self.shifts.iter().filter_map(|s| s.to_shift().ok()).collect()
    }

    /// The chip a line config refers to, falling back to `gpio.chip`.
    pub fn chip_for<'a>(&'a self, line_chip: &'a Option<String>) -> &'a str {
        line_chip.as_deref().unwrap_or(&self.gpio.chip)
    }

    /// One-paragraph summary for `check-config`.
    pub fn summary(&self) -> String {
        let auth = match self.api.auth.method {
            AuthMethod::Oauth => "oauth refresh token",
            AuthMethod::ApiKey => "personal API key",
        };
        let backend = match self.gpio.backend {
            GpioBackend::Gpiod => format!("gpiod on {}", self.gpio.chip),
            GpioBackend::Mock => format!("mock (control socket {})", self.gpio.mock_socket.display()),
        };
        let doors: Vec<String> = self
            .doors
            .iter()
            .map(|d| match d.channel_id {
                Some(channel) => format!("{} (channel {channel})", d.name),
                None => d.name.clone(),
            })
            .collect();
        format!(
            "api {} ({auth}); store {} (cache {} MB); gpio {backend}; {} door(s): {}; {} shift(s); events {}",
            self.api.base_url,
            self.store.path.display(),
            self.store.cache_capacity_mb,
            self.doors.len(),
            doors.join(", "),
            self.shifts.len(),
            self.uplink.events_url.as_ref().map_or_else(
                || "kept locally (no uplink.events_url)".into(),
                ToString::to_string
            ),
        )
    }
}

/// `path` as the file system resolves it: its longest existing ancestor canonicalised
/// (symlinks, `.` and `..` followed), the rest appended with `.` and `..` folded in.
fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let existing = path
        .ancestors()
        .find_map(|a| a.canonicalize().ok().map(|c| (a, c)));
    let (base, rest) = match existing {
        Some((ancestor, canonical)) => (canonical, path.strip_prefix(ancestor).unwrap_or(Path::new(""))),
        None => (PathBuf::new(), path),
    };
    let mut out = base;
    for part in rest.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
