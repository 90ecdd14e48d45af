//! `[[doors]]`: each door's lines, timing, decision policy and fail mode, the cross-door rules
//! (unique names, channels and GPIO lines), and the conversions into the pure door logic's own
//! types, so `access` and `door` never see the config.

use super::gpio::{normalise_chip, Bias};
use super::reader::ReaderConfig;
use super::values::{Ranged, Seconds};
use super::Config;
use crate::access::DoorPolicy;
use crate::credential::{CardFormat, CardValueMapping};
use crate::door::DoorTiming;
use crate::reader::feedback::ReaderFeedback;
use crate::wiegand::{self, CardFormats};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What the lock does with no power or when the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Stay locked (the default: a failure never opens a door).
    #[default]
    Secure,
    /// Release (fire-exit doors where local code requires it).
    Safe,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    pub name: String,
    /// DoorFlow channel this door is; its mode, lockdown and reservations apply.
    pub channel_id: Option<u64>,
    /// Also post `admit_person` to DoorFlow for granted known people (needs `channel_id`).
    #[serde(default)]
    pub admit_via_api: bool,
    /// Relay release per grant, s (0.1 to 300).
    #[serde(default)]
    pub unlock_s: Seconds<100, 300_000, 5_000>,
    /// Door-open time before a held-open alarm, s (1 to 3600).
    #[serde(default)]
    pub held_open_s: Seconds<1_000, 3_600_000, 30_000>,
    /// A read of the credential that released the door, within this long of its previous read
    /// and while the door is still released for it, extends the release and is counted on the
    /// first read's event instead of being granted again, s (0 to 60; 0 turns it off).
    #[serde(default)]
    pub repeat_window_s: Seconds<0, 60_000, 5_000>,
    #[serde(default)]
    pub fail_mode: FailMode,
    #[serde(default)]
    pub card_value: CardValueMapping,
    /// Facility codes accepted on cards (`[1]`), or `"any"`. Required when `card_value` is
    /// `number`, which ignores the facility; absent otherwise means any (the enrolled value
    /// already contains the facility). Cards with another facility code are denied as
    /// `wrong_facility_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility_codes: Option<FacilityCodes>,
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

/// `facility_codes`: a non-empty list of codes, or `"any"` to accept every facility code (a
/// deliberate choice, written in the file, never a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FacilityCodesToml", into = "FacilityCodesToml")]
pub enum FacilityCodes {
    Any,
    Only(Vec<u32>),
}

/// How `facility_codes` is written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum FacilityCodesToml {
    /// Wider than a code, so a negative or huge one is named in the message rather than
    /// failing every variant ("did not match any variant of untagged enum").
    List(Vec<i64>),
    Word(String),
    One(i64),
}

impl TryFrom<FacilityCodesToml> for FacilityCodes {
    type Error = String;
    fn try_from(value: FacilityCodesToml) -> Result<Self, Self::Error> {
        match value {
            FacilityCodesToml::Word(word) if word == "any" => Ok(FacilityCodes::Any),
            FacilityCodesToml::List(codes) if !codes.is_empty() => codes
                .into_iter()
                .map(|code| {
                    u32::try_from(code)
                        .map_err(|_| format!("facility code {code} is out of range (0 to {})", u32::MAX))
                })
                .collect::<Result<Vec<u32>, String>>()
                .map(FacilityCodes::Only),
            FacilityCodesToml::One(code) => Err(format!("write a list of facility codes: [{code}], or \"any\"")),
            FacilityCodesToml::List(_) => Err(
                "an empty list would deny every card: list this site's facility codes, e.g. [1], or write \"any\""
                    .into(),
            ),
            FacilityCodesToml::Word(word) => Err(format!(
                "`{word}` is neither a list of facility codes (e.g. [1]) nor \"any\""
            )),
        }
    }
}

impl From<FacilityCodes> for FacilityCodesToml {
    fn from(value: FacilityCodes) -> Self {
        match value {
            FacilityCodes::Any => FacilityCodesToml::Word("any".into()),
            FacilityCodes::Only(codes) => FacilityCodesToml::List(codes.into_iter().map(i64::from).collect()),
        }
    }
}

/// A Wiegand reader on two GPIO lines (`[doors.reader]` with no `type`, or `type = "wiegand"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WiegandReaderConfig {
    pub chip: Option<String>,
    pub d0: u32,
    pub d1: u32,
    #[serde(default = "default_card_formats")]
    pub formats: Vec<CardFormat>,
    /// Silence that ends a Wiegand frame, ms: the longest wait (the standard allows 20 ms
    /// between bits), and the wait until the reader's bit interval is learned.
    #[serde(default)]
    pub frame_gap_ms: Ranged<5, 500, 30>,
    /// End frames after 4 times the longest bit interval the reader has shown (at least 2 ms,
    /// at most `frame_gap_ms`) once it has sent a frame; `false` always waits `frame_gap_ms`.
    #[serde(default = "default_true")]
    pub learn_frame_end: bool,
    #[serde(default)]
    pub bias: Bias,
    /// The reader's LED input (its LED shows green while the line is driven), if wired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub led: Option<OutputLineConfig>,
    /// The reader's beeper input (it sounds while the line is driven), if wired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beeper: Option<OutputLineConfig>,
    /// What the LED and beeper lines play on grant and deny.
    #[serde(default)]
    pub feedback: ReaderFeedback,
}

pub(super) fn default_true() -> bool {
    true
}

pub(super) fn default_card_formats() -> Vec<CardFormat> {
    vec![CardFormat::H10301, CardFormat::H10306, CardFormat::H10304]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputLineConfig {
    pub chip: Option<String>,
    pub line: u32,
    /// Relay energised by a low level instead of a high one.
    #[serde(default)]
    pub active_low: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputLineConfig {
    pub chip: Option<String>,
    pub line: u32,
    #[serde(default)]
    pub active_low: bool,
    #[serde(default)]
    pub bias: Bias,
    /// Software debounce: a level must hold this long to count, ms.
    #[serde(default)]
    pub debounce_ms: Ranged<0, 1000, 20>,
}

impl WiegandReaderConfig {
    /// Frame assembly settings for the decoder (`wiegand::WiegandDecoder`).
    pub fn decoder(&self) -> wiegand::DecoderConfig {
        wiegand::DecoderConfig {
            frame_gap_ns: self.frame_gap_ms.millis().as_nanos() as u64,
            learn_frame_end: self.learn_frame_end,
            ..Default::default()
        }
    }
}

impl DoorConfig {
    /// The parts of the config that decide who may pass (`access::decide`).
    pub fn policy(&self) -> DoorPolicy {
        DoorPolicy {
            channel_id: self.channel_id,
            allowed_roles: self.allowed_roles.clone(),
            allowed_groups: self.allowed_groups.clone(),
            card_value: self.card_value,
            facility_codes: match &self.facility_codes {
                Some(FacilityCodes::Only(codes)) => Some(codes.clone()),
                Some(FacilityCodes::Any) | None => None,
            },
        }
    }

    /// Timing and fail mode for the door state machine (`door::DoorMachine`).
    pub fn timing(&self) -> DoorTiming {
        let debounce_ns = |input: &Option<InputLineConfig>| {
            input
                .as_ref()
                .map_or(0, |i| i.debounce_ms.millis().as_nanos() as u64)
        };
        DoorTiming {
            unlock_ns: self.unlock_s.as_nanos(),
            held_open_ns: self.held_open_s.as_nanos(),
            contact_debounce_ns: debounce_ns(&self.contact),
            rex_debounce_ns: debounce_ns(&self.rex),
            rex_in_lockdown: self.rex_in_lockdown,
            fail_released: self.fail_mode == FailMode::Safe,
            repeat_window_ns: self.repeat_window_s.as_nanos(),
        }
    }
}

impl DoorConfig {
    /// `facility_codes` against `card_value` and the reader's formats (`formats`: the door's
    /// resolved formats).
    fn validate_facility_codes(&self, formats: &CardFormats, report: &mut impl FnMut(&str, String)) {
        let facility_widths: Vec<usize> = formats
            .layouts()
            .iter()
            .map(|layout| layout.field_widths().0)
            .filter(|width| *width > 0)
            .collect();
        match &self.facility_codes {
            None if self.card_value == CardValueMapping::Number && !facility_widths.is_empty() => report(
                "facility_codes",
                format!(
                    "door `{}` has none; required with card_value = \"number\": the card number \
                     alone would let a card from another site with the same number in. Add this \
                     site's facility codes to the door, e.g. facility_codes = [1] (or \"any\" to \
                     accept every site's cards)",
                    self.name
                ),
            ),
            Some(FacilityCodes::Only(_)) if facility_widths.is_empty() => report(
                "facility_codes",
                "the reader's formats carry no facility code (raw frames, UIDs, H10302)".into(),
            ),
            Some(FacilityCodes::Only(codes)) => {
                let widest = facility_widths.iter().copied().max().unwrap_or(0);
                let max = (1u64 << widest) - 1;
                if let Some(code) = codes.iter().find(|c| **c as u64 > max) {
                    report(
                        "facility_codes",
                        format!("{code} cannot occur in the reader's formats (facility codes up to {max})"),
                    );
                }
            }
            _ => {}
        }
    }
}

impl Config {
    /// Rules across doors: unique names and channels, each GPIO line used once.
    pub(super) fn validate_doors(&self, report: &mut impl FnMut(String, String)) {
        if self.doors.is_empty() {
            report("doors".into(), "at least one [[doors]] entry is required".into());
        }
        // Compared without case: `front` and `Front` are one door to a person reading the log.
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut channels: HashMap<u64, usize> = HashMap::new();
        // (chip, offset) → the key that claimed it, to name both ends of a clash.
        let mut lines: HashMap<(String, u32), String> = HashMap::new();
        for (index, door) in self.doors.iter().enumerate() {
            let at = |field: &str| format!("doors[{index}].{field}");
            if let Some(problem) = door_name_problem(&door.name) {
                report(at("name"), problem);
            } else if let Some(first) = names.insert(door.name.to_lowercase(), index) {
                report(
                    at("name"),
                    format!(
                        "`{}` is already used by doors[{first}] (names are compared without case)",
                        door.name
                    ),
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
            if door.reader.formats().is_empty() {
                report(at("reader.formats"), "must list at least one card format".into());
            }
            match &door.reader {
                ReaderConfig::Osdp(reader) => {
                    for (field, message) in reader.problems() {
                        report(at(&format!("reader.{field}")), message);
                    }
                }
                ReaderConfig::Wiegand(reader) => {
                    for (field, message) in reader.feedback.problems() {
                        report(at(&format!("reader.feedback.{field}")), message);
                    }
                }
            }
            let formats = self.card_formats_for(door);
            door.validate_facility_codes(&formats, &mut |field, message| report(at(field), message));
            let mut claim = |key: String, chip: &Option<String>, line: u32| {
                let chip = normalise_chip(self.chip_for(chip));
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
            let mut clashes = Vec::new();
            if let ReaderConfig::Wiegand(reader) = &door.reader {
                clashes.push(claim(at("reader.d0"), &reader.chip, reader.d0));
                clashes.push(claim(at("reader.d1"), &reader.chip, reader.d1));
                for (field, output) in [("led", &reader.led), ("beeper", &reader.beeper)] {
                    if let Some(output) = output {
                        clashes.push(claim(
                            at(&format!("reader.{field}.line")),
                            &output.chip,
                            output.line,
                        ));
                    }
                }
            }
            clashes.push(claim(at("relay.line"), &door.relay.chip, door.relay.line));
            for (field, input) in [("contact", &door.contact), ("rex", &door.rex)] {
                if let Some(input) = input {
                    clashes.push(claim(at(&format!("{field}.line")), &input.chip, input.line));
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
}

/// Longest door name, in characters.
const DOOR_NAME_MAX: usize = 64;

/// Why `name` cannot name a door. A door's name starts its log lines and labels its metrics
/// and events: a control character (a newline) would forge a line of its own, and padding or a
/// page-long name would make two doors hard to tell apart.
fn door_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!(
            "contains the control character U+{:04X}; a door name appears in log lines and metrics labels",
            c as u32
        ));
    }
    if name.trim() != name {
        return Some(format!("`{name}` has spaces at its start or end"));
    }
    let length = name.chars().count();
    (length > DOOR_NAME_MAX).then(|| format!("is {length} characters long; at most {DOOR_NAME_MAX}"))
}
