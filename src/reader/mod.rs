//! Card readers that are not plain GPIO lines, and what every reader kind shares with the door
//! task: the inputs a reader hands over (card frames, keys, link alarms) and the feedback the
//! door task asks of it after a decision.
//!
//! The seam: a door task decodes Wiegand edges itself; any other reader kind (OSDP today) sends
//! `ReaderInput`s on a channel, and the door task runs them through the same card decoding,
//! PIN entry, `access::decide` and relay-first pipeline. Feedback goes back through a
//! `FeedbackSink`, called after the relay has been written.

pub mod feedback;

use crate::wiegand::{Bits, Key};
use feedback::Outcome;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Bound on reader inputs waiting for a door task. A reader sends a few per second at most;
/// when the door task is this far behind, further inputs are dropped and logged.
pub const INPUT_BUFFER: usize = 64;

/// Something a reader reports to its door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderInput {
    /// A card's bits as the reader sent them (first bit first, parity bits included), decoded
    /// with the door's card formats exactly like a Wiegand frame. `at_ns`: CLOCK_MONOTONIC.
    Card { bits: Bits, at_ns: u64 },
    /// Keys pressed on the reader's keypad, in order, for the door's PIN entry.
    Keys { keys: Vec<Key>, at_ns: u64 },
    /// A change in the reader's link or housing, logged and sent as a door event.
    Alarm(ReaderAlarm),
}

/// Why a supervised reader is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    /// Nothing answers at the reader's address (unpowered, unwired, wrong address or baud).
    NoAnswer,
    /// The reader answers but the secure channel cannot be set up with its key (a reader with
    /// another key, a swapped reader, or one reset to factory state without install mode).
    KeyRefused,
    /// The serial port cannot be opened or has failed (USB adapter unplugged, permissions).
    PortError,
}

impl OfflineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OfflineReason::NoAnswer => "reader_no_answer",
            OfflineReason::KeyRefused => "reader_key_refused",
            OfflineReason::PortError => "reader_port_error",
        }
    }
}

/// Reader conditions that become door events (EN 60839-11-1 asks for loss of communication
/// with a reader to be recorded). DoorFlow's public API names tamper codes 90/91 and door
/// alarm codes 31-37 but no reader-communication code, so the agent uses 34 (communication
/// lost) and 35 (restored) from the door alarm range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderAlarm {
    /// 34: communication with the reader lost, or never established after start.
    Offline(OfflineReason),
    /// 35: communication restored after a loss.
    Online,
    /// 90: the reader's tamper switch opened.
    Tamper,
    /// 91: the tamper switch closed again.
    TamperCleared,
}

impl ReaderAlarm {
    pub fn code(self) -> u16 {
        match self {
            ReaderAlarm::Offline(_) => 34,
            ReaderAlarm::Online => 35,
            ReaderAlarm::Tamper => 90,
            ReaderAlarm::TamperCleared => 91,
        }
    }

    /// The reason word sent with the event.
    pub fn reason(self) -> &'static str {
        match self {
            ReaderAlarm::Offline(reason) => reason.as_str(),
            ReaderAlarm::Online => "reader_online",
            ReaderAlarm::Tamper => "reader_tamper",
            ReaderAlarm::TamperCleared => "reader_tamper_cleared",
        }
    }
}

/// Signals a decision at the reader. Called on the door task after the relay was written; must
/// not block (implementations hand the request to the reader's own thread or line driver).
pub trait FeedbackSink: Send {
    fn signal(&mut self, outcome: Outcome);
}

/// What a non-GPIO reader gives its door task.
pub struct ReaderLink {
    pub inputs: mpsc::Receiver<ReaderInput>,
    pub feedback: Box<dyn FeedbackSink>,
}

/// A door's reader in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderStatus {
    /// `wiegand` or `osdp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// OSDP: `connecting` (since start, not yet online), `online`, `offline`, or `unknown` (agent
    /// stopped). Wiegand: `unsupervised` (the interface has no link supervision).
    pub state: String,
    /// OSDP: why the reader is offline (`reader_no_answer`, `reader_key_refused`,
    /// `reader_port_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// OSDP: serial port and bus address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u8>,
    /// OSDP: whether the secure channel is up now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_channel: Option<bool>,
    /// OSDP: the reader's tamper input, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<bool>,
    /// When `state` last changed (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

impl ReaderStatus {
    /// A Wiegand reader's status: always `unsupervised` (the interface has no link supervision).
    pub fn wiegand() -> ReaderStatus {
        ReaderStatus {
            kind: "wiegand".into(),
            state: "unsupervised".into(),
            reason: None,
            port: None,
            address: None,
            secure_channel: None,
            tamper: None,
            since: None,
        }
    }

    /// One line for `status` without `--json`, e.g. `osdp /dev/ttyS1 address 0 online, secure`.
    pub fn describe(&self) -> String {
        let mut text = self.kind.clone();
        if let (Some(port), Some(address)) = (&self.port, self.address) {
            text.push_str(&format!(" {port} address {address}"));
        }
        text.push(' ');
        text.push_str(&self.state);
        if let Some(reason) = &self.reason {
            text.push_str(&format!(" ({reason})"));
        }
        if self.secure_channel == Some(true) {
            text.push_str(", secure channel");
        }
        if self.tamper == Some(true) {
            text.push_str(", TAMPER");
        }
        text
    }
}

/// A door name as a file name (a generated reader key is kept as `<stem>.key`): letters, digits, `.`, `-` and `_` kept, anything else `_`.
pub fn key_file_stem(door: &str) -> String {
    let stem: String = door
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Never a hidden file or a path component.
    stem.trim_start_matches('.').to_string()
}
