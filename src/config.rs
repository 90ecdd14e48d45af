//! The agent's TOML configuration: parsing with `deny_unknown_fields`, then validation that names
//! the offending key, its value and what is wrong with it.
//!
//! Secrets are never part of this file: it only names the files (or systemd credentials) that
//! hold them, so the config can be world-readable and logged.

use crate::credential::{CardFormat, CardValueMapping};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/doorflow-agent/config.toml";

#[derive(Debug, Clone, Deserialize)]
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
    pub doors: Vec<DoorConfig>,
    /// Shift windows by DoorFlow shift id. The v3 API does not publish shifts, so roles with a
    /// `shift_id` are evaluated against these.
    #[serde(default)]
    pub shifts: Vec<ShiftConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// DoorFlow API root, e.g. `https://api.doorflow.com`. Plain http only for loopback.
    pub base_url: String,
    #[serde(default = "defaults::connect_timeout_s")]
    pub connect_timeout_s: u64,
    #[serde(default = "defaults::request_timeout_s")]
    pub request_timeout_s: u64,
    /// Requests per minute assumed before the server's rate-limit headers are seen.
    #[serde(default = "defaults::requests_per_minute")]
    pub requests_per_minute: u32,
    pub auth: AuthConfig,
}

impl UplinkConfig {
    /// `queue_max_admits`, or its default.
    pub fn effective_queue_max_admits(&self) -> u64 {
        self.queue_max_admits
            .unwrap_or_else(|| (self.queue_max_records / 10).clamp(1, 1_000))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// OAuth 2.0 refresh-token flow; the refresh token is rotated and written back.
    Oauth,
    /// A personal API key sent as HTTP Basic user name.
    ApiKey,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// OAuth client id (not a secret).
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    /// Where the refresh token lives. The agent rewrites it (mode 0600) when DoorFlow rotates
    /// it, so it must be a writable path, normally under the state directory.
    pub refresh_token_file: Option<PathBuf>,
    pub api_key: Option<SecretSource>,
}

/// Where a secret is read from: a file path, or `systemd-credential:NAME`, which resolves to
/// `$CREDENTIALS_DIRECTORY/NAME` (systemd's `LoadCredential=`). Never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SecretSource {
    File(PathBuf),
    SystemdCredential(String),
}

impl TryFrom<String> for SecretSource {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if let Some(name) = value.strip_prefix("systemd-credential:") {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "`{value}`: a systemd credential name must be non-empty and contain no `/`"
                ));
            }
            return Ok(SecretSource::SystemdCredential(name.to_string()));
        }
        if !value.starts_with('/') {
            // The value is not echoed: someone may have pasted the secret itself.
            return Err(
                "must be an absolute file path or `systemd-credential:NAME`; secrets are never written inline"
                    .to_string(),
            );
        }
        Ok(SecretSource::File(PathBuf::from(value)))
    }
}

impl SecretSource {
    /// The file that holds the secret right now.
    pub fn path(&self) -> Result<PathBuf, String> {
        match self {
            SecretSource::File(path) => Ok(path.clone()),
            SecretSource::SystemdCredential(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|dir| Path::new(&dir).join(name))
                .ok_or_else(|| {
                    format!("systemd credential `{name}` requested but CREDENTIALS_DIRECTORY is not set")
                }),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "{}", path.display()),
            SecretSource::SystemdCredential(name) => write!(f, "systemd-credential:{name}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "defaults::store_path")]
    pub path: PathBuf,
    /// sled's page cache cap. sled defaults to 1 GiB, far beyond a door controller's RAM.
    #[serde(default = "defaults::cache_capacity_mb")]
    pub cache_capacity_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: defaults::store_path(),
            cache_capacity_mb: defaults::cache_capacity_mb(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Incremental pull (people and group reservations since the last cursor).
    #[serde(default = "defaults::sync_interval_s")]
    pub interval_s: u64,
    /// Full reconcile, which also drops deleted people and credentials.
    #[serde(default = "defaults::full_sync_interval_s")]
    pub full_interval_s: u64,
    /// IANA time zone used for shifts when a door's channel has no site time zone.
    #[serde(default = "defaults::time_zone")]
    pub time_zone: String,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval_s: defaults::sync_interval_s(),
            full_interval_s: defaults::full_sync_interval_s(),
            time_zone: defaults::time_zone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// HTTPS sink for events. DoorFlow's public API has no event ingestion endpoint; without a
    /// sink, events are journaled and kept in a bounded local log.
    pub events_url: Option<String>,
    /// Bearer token for the event sink (a file path or `systemd-credential:NAME`). DoorFlow's
    /// own credentials are never sent to the sink.
    pub events_token: Option<SecretSource>,
    /// Queued admits older than this are not sent (a late admit could open a door long after
    /// the swipe) and go to the dead letters as `expired`.
    #[serde(default = "defaults::admit_ttl_s")]
    pub admit_ttl_s: u64,
    /// First backoff ceiling after a 5xx or network error; doubles per attempt (full jitter).
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: u64,
    /// Highest backoff ceiling.
    #[serde(default = "defaults::retry_cap_s")]
    pub retry_cap_s: u64,
    #[serde(default = "defaults::queue_max_records")]
    pub queue_max_records: u64,
    #[serde(default = "defaults::queue_max_bytes")]
    pub queue_max_bytes: u64,
    /// Most queued admits (default: a tenth of `queue_max_records`, at most 1,000). Below
    /// `queue_max_records`, so admits alone can never fill the queue and a new event (a
    /// forced-open alarm) always fits; beyond it the oldest admits are dropped.
    #[serde(default)]
    pub queue_max_admits: Option<u64>,
    /// Events kept locally when no sink is configured.
    #[serde(default = "defaults::local_event_log_max")]
    pub local_event_log_max: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            events_url: None,
            events_token: None,
            admit_ttl_s: defaults::admit_ttl_s(),
            retry_base_ms: defaults::retry_base_ms(),
            retry_cap_s: defaults::retry_cap_s(),
            queue_max_records: defaults::queue_max_records(),
            queue_max_bytes: defaults::queue_max_bytes(),
            queue_max_admits: None,
            local_event_log_max: defaults::local_event_log_max(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpioBackend {
    /// Linux GPIO character device (uAPI v2) through the gpiod crate.
    Gpiod,
    /// In-memory lines driven through a JSON-lines control socket, for x86 and tests.
    Mock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    #[serde(default = "defaults::gpio_backend")]
    pub backend: GpioBackend,
    /// Default chip for every line, e.g. `gpiochip0` or `/dev/gpiochip0`.
    #[serde(default = "defaults::gpio_chip")]
    pub chip: String,
    /// Control socket of the mock backend.
    #[serde(default = "defaults::mock_socket")]
    pub mock_socket: PathBuf,
}

impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            backend: defaults::gpio_backend(),
            chip: defaults::gpio_chip(),
            mock_socket: defaults::mock_socket(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Unix socket for `status` and `queue` against a running agent (mode 0660).
    #[serde(default = "defaults::admin_socket")]
    pub socket: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: defaults::admin_socket(),
        }
    }
}

/// What the lock does with no power or when the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Stay locked (the default: a failure never opens a door).
    #[default]
    Secure,
    /// Release (fire-exit doors where local code requires it).
    Safe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    #[default]
    AsIs,
    PullUp,
    PullDown,
    Disabled,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    pub name: String,
    /// DoorFlow channel this door is; its mode, lockdown and reservations apply.
    pub channel_id: Option<u64>,
    /// Also post `admit_person` to DoorFlow for granted known people (needs `channel_id`).
    #[serde(default)]
    pub admit_via_api: bool,
    #[serde(default = "defaults::unlock_s")]
    pub unlock_s: f64,
    #[serde(default = "defaults::held_open_s")]
    pub held_open_s: f64,
    #[serde(default)]
    pub fail_mode: FailMode,
    #[serde(default)]
    pub card_value: CardValueMapping,
    /// Role ids that open this door (within each role's shift).
    #[serde(default)]
    pub allowed_roles: Vec<u64>,
    /// Group ids that open this door (at any time).
    #[serde(default)]
    pub allowed_groups: Vec<u64>,
    /// Whether REX still releases the door during a lockdown.
    #[serde(default)]
    pub rex_in_lockdown: bool,
    pub reader: ReaderConfig,
    pub relay: OutputLineConfig,
    pub contact: Option<InputLineConfig>,
    pub rex: Option<InputLineConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    pub chip: Option<String>,
    pub d0: u32,
    pub d1: u32,
    #[serde(default = "defaults::card_formats")]
    pub formats: Vec<CardFormat>,
    /// Silence that ends a Wiegand frame. The standard allows 20 ms between bits.
    #[serde(default = "defaults::frame_gap_ms")]
    pub frame_gap_ms: u64,
    #[serde(default)]
    pub bias: Bias,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputLineConfig {
    pub chip: Option<String>,
    pub line: u32,
    /// Relay energised by a low level instead of a high one.
    #[serde(default)]
    pub active_low: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputLineConfig {
    pub chip: Option<String>,
    pub line: u32,
    #[serde(default)]
    pub active_low: bool,
    #[serde(default)]
    pub bias: Bias,
    /// Software debounce: a level must hold this long to count.
    #[serde(default = "defaults::debounce_ms")]
    pub debounce_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    pub times: Vec<ShiftTimeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftTimeConfig {
    /// Days this window starts on: `mon`..`sun`.
    pub days: Vec<String>,
    /// Local wall-clock `HH:MM`.
    pub start: String,
    /// Local wall-clock `HH:MM`; `24:00` for midnight; earlier than `start` runs past midnight.
    pub end: String,
}

mod defaults {
    use crate::credential::CardFormat;
    use std::path::PathBuf;

    pub fn connect_timeout_s() -> u64 {
        5
    }
    pub fn request_timeout_s() -> u64 {
        20
    }
    pub fn requests_per_minute() -> u32 {
        120
    }
    pub fn store_path() -> PathBuf {
        PathBuf::from("/var/lib/doorflow-agent/db")
    }
    pub fn cache_capacity_mb() -> u64 {
        8
    }
    pub fn sync_interval_s() -> u64 {
        60
    }
    pub fn full_sync_interval_s() -> u64 {
        3600
    }
    pub fn time_zone() -> String {
        "UTC".to_string()
    }
    pub fn admit_ttl_s() -> u64 {
        120
    }
    pub fn retry_base_ms() -> u64 {
        1000
    }
    pub fn retry_cap_s() -> u64 {
        120
    }
    pub fn queue_max_records() -> u64 {
        100_000
    }
    pub fn queue_max_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn local_event_log_max() -> u64 {
        10_000
    }
    pub fn gpio_backend() -> super::GpioBackend {
        super::GpioBackend::Gpiod
    }
    pub fn gpio_chip() -> String {
        "gpiochip0".to_string()
    }
    pub fn mock_socket() -> PathBuf {
        PathBuf::from("/run/doorflow-agent/mock-gpio.sock")
    }
    pub fn admin_socket() -> PathBuf {
        PathBuf::from("/run/doorflow-agent/admin.sock")
    }
    pub fn unlock_s() -> f64 {
        5.0
    }
    pub fn held_open_s() -> f64 {
        30.0
    }
    pub fn card_formats() -> Vec<CardFormat> {
        vec![CardFormat::H10301, CardFormat::H10306, CardFormat::H10304]
    }
    pub fn frame_gap_ms() -> u64 {
        30
    }
    pub fn debounce_ms() -> u64 {
        20
    }
}

/// A config problem, phrased for the person editing the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// The TOML could not be parsed or does not fit the schema (unknown key, wrong type,
    /// missing key). `key` is the dotted path serde was at.
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

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names the source in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = parse_toml(text, origin)?;
        if let Some(problem) = config.validate().into_iter().next() {
            return Err(ConfigError::Invalid {
                path: origin.to_string(),
                line: line_of_key(text, &problem.key),
                key: problem.key,
                message: problem.message,
            });
        }
        Ok(config)
    }

    /// Every semantic problem in the config, first one first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = |key: String, message: String| problems.push(Problem { key, message });

        if let Err(message) = check_url(&self.api.base_url) {
            report("api.base_url".into(), message);
        }
        check_range(
            &mut report,
            "api.connect_timeout_s",
            self.api.connect_timeout_s,
            1,
            120,
        );
        check_range(
            &mut report,
            "api.request_timeout_s",
            self.api.request_timeout_s,
            1,
            600,
        );
        check_range(
            &mut report,
            "api.requests_per_minute",
            self.api.requests_per_minute as u64,
            1,
            10_000,
        );
        let auth = &self.api.auth;
        match auth.method {
            AuthMethod::Oauth => {
                if auth.client_id.as_deref().unwrap_or("").is_empty() {
                    report(
                        "api.auth.client_id".into(),
                        "required when method = \"oauth\"".into(),
                    );
                }
                if auth.client_secret.is_none() {
                    report(
                        "api.auth.client_secret".into(),
                        "required when method = \"oauth\"".into(),
                    );
                }
                match &auth.refresh_token_file {
                    None => report(
                        "api.auth.refresh_token_file".into(),
                        "required when method = \"oauth\"".into(),
                    ),
                    Some(path) if !path.is_absolute() => report(
                        "api.auth.refresh_token_file".into(),
                        format!("`{}` must be an absolute path", path.display()),
                    ),
                    Some(_) => {}
                }
            }
            AuthMethod::ApiKey => {
                if auth.api_key.is_none() {
                    report(
                        "api.auth.api_key".into(),
                        "required when method = \"api_key\"".into(),
                    );
                }
            }
        }

        if !self.store.path.is_absolute() {
            report(
                "store.path".into(),
                format!("`{}` must be an absolute path", self.store.path.display()),
            );
        }
        check_range(
            &mut report,
            "store.cache_capacity_mb",
            self.store.cache_capacity_mb,
            1,
            1024,
        );

        check_range(&mut report, "sync.interval_s", self.sync.interval_s, 10, 86_400);
        check_range(
            &mut report,
            "sync.full_interval_s",
            self.sync.full_interval_s,
            60,
            7 * 86_400,
        );
        if self.sync.full_interval_s < self.sync.interval_s {
            report(
                "sync.full_interval_s".into(),
                format!(
                    "{} is shorter than sync.interval_s ({})",
                    self.sync.full_interval_s, self.sync.interval_s
                ),
            );
        }
        if jiff::tz::TimeZone::get(&self.sync.time_zone).is_err() {
            report(
                "sync.time_zone".into(),
                format!("`{}` is not a known IANA time zone", self.sync.time_zone),
            );
        }

        if let Some(url) = &self.uplink.events_url {
            if let Err(message) = check_url(url) {
                report("uplink.events_url".into(), message);
            }
        }
        check_range(
            &mut report,
            "uplink.admit_ttl_s",
            self.uplink.admit_ttl_s,
            1,
            3600,
        );
        check_range(
            &mut report,
            "uplink.retry_base_ms",
            self.uplink.retry_base_ms,
            10,
            60_000,
        );
        check_range(
            &mut report,
            "uplink.retry_cap_s",
            self.uplink.retry_cap_s,
            1,
            3600,
        );
        check_range(
            &mut report,
            "uplink.queue_max_records",
            self.uplink.queue_max_records,
            100,
            10_000_000,
        );
        check_range(
            &mut report,
            "uplink.queue_max_bytes",
            self.uplink.queue_max_bytes,
            64 * 1024,
            4 * 1024 * 1024 * 1024,
        );
        if let Some(admits) = self.uplink.queue_max_admits {
            check_range(
                &mut report,
                "uplink.queue_max_admits",
                admits,
                1,
                self.uplink.queue_max_records.saturating_sub(1).max(1),
            );
        }
        check_range(
            &mut report,
            "uplink.local_event_log_max",
            self.uplink.local_event_log_max,
            0,
            10_000_000,
        );

        if self.gpio.chip.trim().is_empty() {
            report(
                "gpio.chip".into(),
                "must name a GPIO chip, e.g. \"gpiochip0\"".into(),
            );
        }

        self.validate_doors(&mut report);
        self.validate_shifts(&mut report);
        problems
    }

    fn validate_doors(&self, report: &mut impl FnMut(String, String)) {
        if self.doors.is_empty() {
            report("doors".into(), "at least one [[doors]] entry is required".into());
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut channels: HashMap<u64, usize> = HashMap::new();
        // (chip, offset) → the key that claimed it, to name both ends of a clash.
        let mut lines: HashMap<(String, u32), String> = HashMap::new();
        for (index, door) in self.doors.iter().enumerate() {
            let at = |field: &str| format!("doors[{index}].{field}");
            if door.name.trim().is_empty() {
                report(at("name"), "must not be empty".into());
            } else if let Some(first) = names.insert(&door.name, index) {
                report(
                    at("name"),
                    format!("`{}` is already used by doors[{first}]", door.name),
                );
            }
            if let Some(channel) = door.channel_id {
                if let Some(first) = channels.insert(channel, index) {
                    report(
                        at("channel_id"),
                        format!("{channel} is already used by doors[{first}]"),
                    );
                }
            } else if door.admit_via_api {
                report(at("admit_via_api"), "needs channel_id to be set".into());
            }
            if !(0.1..=300.0).contains(&door.unlock_s) {
                report(
                    at("unlock_s"),
                    format!("{} is out of range (0.1 to 300)", door.unlock_s),
                );
            }
            if !(1.0..=3600.0).contains(&door.held_open_s) {
                report(
                    at("held_open_s"),
                    format!("{} is out of range (1 to 3600)", door.held_open_s),
                );
            }
            if door.reader.formats.is_empty() {
                report(at("reader.formats"), "must list at least one card format".into());
            }
            if !(5..=500).contains(&door.reader.frame_gap_ms) {
                report(
                    at("reader.frame_gap_ms"),
                    format!("{} is out of range (5 to 500)", door.reader.frame_gap_ms),
                );
            }
            let mut claim = |key: String, chip: &Option<String>, line: u32| {
                let chip = normalise_chip(chip.as_deref().unwrap_or(&self.gpio.chip));
                match lines.get(&(chip.clone(), line)) {
                    Some(first) => Some((
                        key,
                        format!("GPIO line {line} on {chip} is already used by {first}"),
                    )),
                    None => {
                        lines.insert((chip, line), key);
                        None
                    }
                }
            };
            let mut clashes = vec![
                claim(at("reader.d0"), &door.reader.chip, door.reader.d0),
                claim(at("reader.d1"), &door.reader.chip, door.reader.d1),
                claim(at("relay.line"), &door.relay.chip, door.relay.line),
            ];
            for (field, input) in [("contact", &door.contact), ("rex", &door.rex)] {
                if let Some(input) = input {
                    clashes.push(claim(at(&format!("{field}.line")), &input.chip, input.line));
                    if input.debounce_ms > 1000 {
                        report(
                            at(&format!("{field}.debounce_ms")),
                            format!("{} is out of range (0 to 1000)", input.debounce_ms),
                        );
                    }
                }
            }
            for (key, message) in clashes.into_iter().flatten() {
                report(key, message);
            }
            for role in &door.allowed_roles {
                if *role == 0 {
                    report(at("allowed_roles"), "role id 0 is not a DoorFlow id".into());
                }
            }
        }
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
            if let Err((time_index, field, message)) = crate::snapshot::Shift::from_config(shift) {
                report(format!("shifts[{index}].times[{time_index}].{field}"), message);
            }
        }
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
            self.uplink
                .events_url
                .as_deref()
                .unwrap_or("kept locally (no uplink.events_url)"),
        )
    }
}

/// One validation finding: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

fn parse_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| parse_error(origin, text, &e, None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        parse_error(origin, text, e.inner(), Some(key))
    })
}

/// Builds a message with the line number (from the TOML span) and the key path (from serde).
fn parse_error(origin: &str, text: &str, error: &toml::de::Error, key: Option<String>) -> ConfigError {
    let location = error
        .span()
        .map(|span| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: ")
        })
        .unwrap_or_default();
    let key = key
        .filter(|k| !k.is_empty() && k != ".")
        .map(|k| format!("key `{k}`: "))
        .unwrap_or_default();
    ConfigError::Parse {
        path: origin.to_string(),
        message: format!("{location}{key}{}", error.message().trim()),
    }
}

/// The line on which a dotted key such as `doors[1].reader.d1` is written, found through the
/// TOML parser's spans; `None` when the key is not in the text (a default was used).
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut span = None;
    let mut segments = key.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let mut value = table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == name)
            .map(|(_, v)| v)?;
        if let Some(index) = index {
            match value.get_ref() {
                DeValue::Array(items) => value = items.get(index)?,
                _ => return None,
            }
        }
        span = Some(value.span());
        if segments.peek().is_some() {
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return None,
            }
        }
    }
    span.map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
}

fn check_range(report: &mut impl FnMut(String, String), key: &str, value: u64, min: u64, max: u64) {
    if value < min || value > max {
        report(
            key.to_string(),
            format!("{value} is out of range ({min} to {max})"),
        );
    }
}

fn normalise_chip(chip: &str) -> String {
    chip.trim_start_matches("/dev/").to_string()
}

/// https everywhere; plain http only to loopback (tests, the simulator).
pub fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host_of(authority);
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(format!(
            "`{url}` uses plain http to a non-loopback host; use https (http is allowed only for 127.0.0.0/8, ::1 and localhost)"
        )),
        other => Err(format!("`{url}`: scheme `{other}` is not supported; use https")),
    }
}

fn host_of(authority: &str) -> &str {
    let without_user = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = without_user.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    without_user.split(':').next().unwrap_or("")
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_https_except_loopback() {
        assert!(check_url("https://api.doorflow.com").is_ok());
        assert!(check_url("http://127.0.0.1:8080/api").is_ok());
        assert!(check_url("http://127.9.9.9").is_ok());
        assert!(check_url("http://[::1]:9000").is_ok());
        assert!(check_url("http://localhost:9000").is_ok());
        assert!(check_url("http://user@localhost:9000").is_ok());
        let err = check_url("http://api.doorflow.com").unwrap_err();
        assert!(err.contains("non-loopback"), "{err}");
        assert!(check_url("http://localhost.evil.com").is_err());
        assert!(check_url("http://10.0.0.1").is_err());
        assert!(check_url("ftp://localhost").is_err());
        assert!(check_url("api.doorflow.com").is_err());
        assert!(check_url("https://").is_err());
    }

    #[test]
    fn secret_sources_are_paths_or_credentials() {
        assert_eq!(
            SecretSource::try_from("/etc/doorflow-agent/key".to_string()),
            Ok(SecretSource::File("/etc/doorflow-agent/key".into()))
        );
        assert_eq!(
            SecretSource::try_from("systemd-credential:api_key".to_string()),
            Ok(SecretSource::SystemdCredential("api_key".into()))
        );
        assert!(SecretSource::try_from("dfk_live_secret".to_string()).is_err());
        assert!(SecretSource::try_from("systemd-credential:".to_string()).is_err());
    }
}
