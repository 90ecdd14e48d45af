//! `[doors.reader]`: which kind of reader a door has. `type = "wiegand"` (the default when
//! `type` is left out) is two GPIO data lines; `type = "osdp"` is a reader on an RS-485 bus.

use super::api::SecretSource;
use super::doors::{default_card_formats, DoorConfig, WiegandReaderConfig};
use super::values::Ranged;
use crate::credential::CardFormat;
use crate::reader::feedback::ReaderFeedback;
use crate::reader::{key_file_stem, ReaderStatus};
use jiff::Timestamp;
use serde::{de::Error as _, Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// Baud rates OSDP v2.2 allows (§5.2); readers ship at 9600.
pub const OSDP_BAUD_RATES: [u32; 6] = [9600, 19200, 38400, 57600, 115200, 230400];

/// Written back as a table with its `type` (tests write configs for the real binary).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReaderConfig {
    Wiegand(WiegandReaderConfig),
    Osdp(OsdpReaderConfig),
}

impl ReaderConfig {
    /// The card formats a card read from this reader is decoded with.
    pub fn formats(&self) -> &[CardFormat] {
        match self {
            ReaderConfig::Wiegand(reader) => &reader.formats,
            ReaderConfig::Osdp(reader) => &reader.formats,
        }
    }

    pub fn wiegand(&self) -> Option<&WiegandReaderConfig> {
        match self {
            ReaderConfig::Wiegand(reader) => Some(reader),
            ReaderConfig::Osdp(_) => None,
        }
    }

    /// The status of this reader before anything is known about it; `running` is false when
    /// the report comes from a stopped agent.
    pub fn initial_status(&self, running: bool) -> ReaderStatus {
        match self {
            ReaderConfig::Wiegand(_) => ReaderStatus::wiegand(),
            ReaderConfig::Osdp(osdp) => ReaderStatus {
                kind: "osdp".into(),
                state: if running { "connecting" } else { "unknown" }.into(),
                reason: None,
                port: Some(osdp.port.display().to_string()),
                address: Some(osdp.address()),
                secure_channel: running.then_some(false),
                tamper: None,
                since: running.then(Timestamp::now),
            },
        }
    }
}

/// Dispatches on `type`; the rest of the table must fit that type exactly (unknown keys are
/// refused, as everywhere in the config).
impl<'de> Deserialize<'de> for ReaderConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let kind = match table.remove("type") {
            None => "wiegand".to_string(),
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`type` must be \"wiegand\" or \"osdp\", not {other}"
                )))
            }
        };
        let rest = toml::Value::Table(table);
        match kind.as_str() {
            "wiegand" => typed(rest, &kind).map(ReaderConfig::Wiegand),
            "osdp" => typed(rest, &kind).map(ReaderConfig::Osdp),
            other => Err(format!(
                "unknown reader type `{other}`; expected \"wiegand\" or \"osdp\""
            )),
        }
        .map_err(D::Error::custom)
    }
}

/// The table as one reader type; the message names the key inside the table at fault.
fn typed<T: serde::de::DeserializeOwned>(table: toml::Value, kind: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().message().trim().to_string();
        match key.as_str() {
            "" | "." => format!("{kind} reader: {message}"),
            key => format!("{kind} reader: key `{key}`: {message}"),
        }
    })
}

/// An OSDP reader (PD) on a serial port. Several doors may name the same port: one bus, one
/// address each.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsdpReaderConfig {
    /// Serial device of the RS-485 bus: `/dev/ttyS1`, `/dev/ttyUSB0`, `/dev/ttyAMA0`, a stable
    /// `/dev/serial/by-id/...` link.
    pub port: PathBuf,
    /// Bits per second; every reader on a port uses the same rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// The reader's OSDP address (0-126; 127 is broadcast). Readers ship at 0.
    #[serde(default)]
    pub address: Ranged<0, 126, 0>,
    /// AES-128 Secure Channel (v2.2 Annex D). Off only for readers that cannot do it.
    #[serde(default = "default_true")]
    pub secure_channel: bool,
    /// The reader's key (32 hex digits), as a file path or `systemd-credential:NAME`. Without
    /// it the agent generates a key, keeps it in the state directory and installs it.
    pub key_file: Option<SecretSource>,
    /// Allow the install-mode key (SCBK-D) to set the reader's key on this run even though the
    /// key counts as installed. For re-keying a reader reset to factory state; turn it off
    /// again afterwards.
    #[serde(default)]
    pub install_mode: bool,
    /// Good exchanges in a row (polls every 50 ms) before the reader counts as online.
    #[serde(default)]
    pub online_after_polls: Ranged<1, 100, 5>,
    /// Card formats the reader's card data is decoded with (as for Wiegand).
    #[serde(default = "default_card_formats")]
    pub formats: Vec<CardFormat>,
    /// LED and buzzer on grant and deny.
    #[serde(default)]
    pub feedback: ReaderFeedback,
}

fn default_baud() -> u32 {
    9600
}

fn default_true() -> bool {
    true
}

impl OsdpReaderConfig {
    /// The reader's bus address.
    pub fn address(&self) -> u8 {
        self.address.get() as u8
    }

    /// Problems with one door's OSDP reader, as (field under `reader.`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut report = |field: &str, message: String| problems.push((field.to_string(), message));
        if !self.port.is_absolute() {
            report(
                "port",
                format!(
                    "`{}` must be an absolute device path, e.g. /dev/ttyS1",
                    self.port.display()
                ),
            );
        }
        if !OSDP_BAUD_RATES.contains(&self.baud) {
            report(
                "baud",
                format!(
                    "{} is not an OSDP baud rate (9600, 19200, 38400, 57600, 115200, 230400)",
                    self.baud
                ),
            );
        }
        if self.formats.is_empty() {
            report("formats", "must list at least one card format".into());
        }
        if !self.secure_channel && self.key_file.is_some() {
            report("key_file", "is only used with secure_channel = true".into());
        }
        if !self.secure_channel && self.install_mode {
            report("install_mode", "is only used with secure_channel = true".into());
        }
        for (outcome, pattern) in [("grant", &self.feedback.grant), ("deny", &self.feedback.deny)] {
            for (field, message) in pattern.problems() {
                report(&format!("feedback.{outcome}.{field}"), message);
            }
        }
        problems
    }
}

/// Problems across doors: readers sharing a port must agree on the baud rate and have
/// distinct addresses; generated key files must not collide. As (key, message).
pub fn bus_problems(doors: &[DoorConfig]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    // port → (first door index, baud); (port, address) → door index; key stem → door index.
    let mut bauds: HashMap<&PathBuf, (usize, u32)> = HashMap::new();
    let mut addresses: HashMap<(&PathBuf, u8), usize> = HashMap::new();
    let mut stems: HashMap<String, usize> = HashMap::new();
    for (index, door) in doors.iter().enumerate() {
        let ReaderConfig::Osdp(reader) = &door.reader else {
            continue;
        };
        let at = |field: &str| format!("doors[{index}].reader.{field}");
        match bauds.get(&reader.port) {
            Some(&(first, baud)) if baud != reader.baud => problems.push((
                at("baud"),
                format!(
                    "{} differs from doors[{first}] ({baud}) on the same port {}",
                    reader.baud,
                    reader.port.display()
                ),
            )),
            Some(_) => {}
            None => {
                bauds.insert(&reader.port, (index, reader.baud));
            }
        }
        if let Some(first) = addresses.insert((&reader.port, reader.address()), index) {
            problems.push((
                at("address"),
                format!(
                    "{} on {} is already used by doors[{first}]",
                    reader.address,
                    reader.port.display()
                ),
            ));
        }
        if reader.secure_channel && reader.key_file.is_none() {
            let stem = key_file_stem(&door.name);
            if let Some(first) = stems.insert(stem.clone(), index) {
                problems.push((
                    at("key_file"),
                    format!("the generated key file `{stem}.key` would be shared with doors[{first}]; rename a door or set key_file"),
                ));
            }
        }
    }
    problems
}
