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
        let what = self.what();
        format!("{what} at {} ({})", self.door, self.reason)
    }

    /// What happened, in words (`Door forced open`).
    fn what(&self) -> &'static str {
        match self.event_code {
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
        }
    }

    /// The event as one log line, e.g. `front: denied card ****21 (person 21): out_of_hours`
    /// or `front: door forced open`: plain `journalctl` shows this text; the fields carry the
    /// same facts for filtering.
    pub fn summary(&self) -> String {
        let door = &self.door;
        let verdict = match self.event_code {
            10..=18 => "granted",
            20..=29 => "denied",
            // The word says it all for the door's own alarms.
            30..=33 => return format!("{door}: {}", self.what().to_lowercase()),
            code => {
                let what = match self.what() {
                    "Door event" => format!("door event {code}"),
                    what => what.to_lowercase(),
                };
                return format!("{door}: {what}: {}", self.reason);
            }
        };
        // DoorFlow's codes tell a PIN (11, 24) from a card (10, 20); 16, 21 and 22 are either,
        // but a PIN is always masked whole, so visible digits mean a card.
        let presented = match (self.event_code, self.credential.as_deref()) {
            (11 | 24, Some(masked)) => format!(" PIN {masked}"),
            (16 | 21 | 22, Some(masked)) if masked.trim_start_matches('*').is_empty() => {
                format!(" credential {masked}")
            }
            (_, Some(masked)) => format!(" card {masked}"),
            (13, None) => " exit".to_string(),
            (_, None) => String::new(),
        };
        let person = self
            .person_id
            .map(|id| format!(" (person {id})"))
            .unwrap_or_default();
        format!("{door}: {verdict}{presented}{person}: {}", self.reason)
    }

    /// Writes the event to the log: the summary as the message, and structured fields
    /// (journald keeps them as DOOR, EVENT_CODE, REASON, …). Denials and door alarms are
    /// warnings; the rest is info.
    pub fn log(&self) {
        let credential = self.credential.as_deref().unwrap_or("-");
        let summary = self.summary();
        // A cleared fault (35, 91) is good news: info.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_code: u16, reason: &str, person_id: Option<u64>, credential: Option<&str>) -> AuditEvent {
        AuditEvent {
            id: 1,
            event_code,
            reason: reason.into(),
            door: "front".into(),
            channel_id: Some(1340),
            person_id,
            credential: credential.map(str::to_string),
            created_at: Timestamp::UNIX_EPOCH,
            admit: false,
        }
    }

    #[test]
    fn the_summary_reads_as_a_log_line() {
        let cases = [
            (
                event(20, "person_disabled", Some(50), Some("****50")),
                "front: denied card ****50 (person 50): person_disabled",
            ),
            (
                event(21, "out_of_hours", None, Some("****21")),
                "front: denied card ****21: out_of_hours",
            ),
            (
                event(22, "lockdown", None, Some("****")),
                "front: denied credential ****: lockdown",
            ),
            (
                event(10, "authorised", Some(17), Some("****17")),
                "front: granted card ****17 (person 17): authorised",
            ),
            (
                event(11, "authorised", Some(5), Some("****")),
                "front: granted PIN **** (person 5): authorised",
            ),
            (
                event(20, "unknown_credential", None, Some("****")),
                "front: denied card ****: unknown_credential",
            ),
            (
                event(13, "request_to_exit", None, None),
                "front: granted exit: request_to_exit",
            ),
            (event(32, "forced_open", None, None), "front: door forced open"),
            (event(30, "rex_pressed", None, None), "front: exit button pressed"),
            (
                event(34, "no_answer", None, None),
                "front: reader offline: no_answer",
            ),
            (event(99, "mystery", None, None), "front: door event 99: mystery"),
        ];
        for (event, expected) in cases {
            assert_eq!(event.summary(), expected);
        }
    }
}
