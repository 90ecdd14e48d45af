//! Audit events: what happened at a door, in DoorFlow's event vocabulary. Produced by the door
//! tasks after the relay has been driven, consumed by the event writer (journal, outbox).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The event's id in DoorFlow's event shape (an integer there). Random, below 2^53 so
    /// JavaScript consumers keep it exact; the queued call's UUID is the deduplication key.
    pub id: u64,
    /// DoorFlow event code (10 admitted card, 20 unauthorised card, 32 forced open, …).
    pub event_code: u16,
    /// Why, in a word: a decision reason (`person_expired`) or a door condition (`forced_open`).
    pub reason: String,
    pub door: String,
    pub channel_id: Option<u64>,
    pub person_id: Option<u64>,
    /// Already masked (`credential::mask`): the full value never leaves the door task.
    pub credential: Option<String>,
    pub created_at: Timestamp,
    /// Whether DoorFlow should also be asked to admit this person on the channel.
    pub admit: bool,
}

/// A fresh event id: random, non-zero, below 2^53.
pub fn new_event_id() -> u64 {
    fastrand::u64(1..(1 << 53))
}

impl AuditEvent {
    /// The event as posted to the event sink, in DoorFlow's `Event` schema: the door is the
    /// channel (`door_controller_*` and its `channel_*` aliases) and the credential is already
    /// masked. `updated_at` equals `created_at`: the agent never edits an event.
    pub fn to_doorflow(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "event_id": self.id,
            "event_code": self.event_code,
            "event_label": self.label(),
            "door_controller_id": self.channel_id,
            "door_controller_name": self.door,
            "channel_id": self.channel_id,
            "channel_name": self.door,
            "person_id": self.person_id,
            "person_name": null,
            "credentials_number": self.credential,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        })
    }

    /// A human-readable line, e.g. `Access granted at front (authorised)`.
    pub fn label(&self) -> String {
        let what = match self.event_code {
            10..=18 => "Access granted",
            20..=29 => "Access denied",
            30 => "Exit button pressed",
            31 => "Door back to normal",
            32 => "Door forced open",
            33 => "Door held open",
            34 => "Reader offline",
            35 => "Reader back online",
            90 => "Tamper or input failure",
            91 => "Tamper or input failure cleared",
            _ => "Door event",
        };
        format!("{what} at {} ({})", self.door, self.reason)
    }

    /// Writes the event to the log with structured fields (journald keeps them as DOOR,
    /// EVENT_CODE, REASON, …). Denials and door alarms are warnings; the rest is info.
    pub fn log(&self) {
        let credential = self.credential.as_deref().unwrap_or("-");
        let summary = match self.event_code {
            10..=18 => "access granted",
            20..=29 => "access denied",
            _ => "door event",
        };
        let warning = matches!(self.event_code, 20..=29 | 32..=34 | 90);
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(
                    event_id = self.id,
                    door = %self.door,
                    event_code = self.event_code,
                    reason = %self.reason,
                    person_id = self.person_id,
                    channel_id = self.channel_id,
                    credential,
                    "{summary}"
                )
            };
        }
        if warning {
            emit!(warn);
        } else {
            emit!(info);
        }
    }
}
