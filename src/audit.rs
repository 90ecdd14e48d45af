//! Audit events: what happened at a door, in DoorFlow's event vocabulary. Produced by the door
//! tasks after the relay has been driven, consumed by the event writer (journal, outbox).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
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

impl AuditEvent {
    /// Writes the event to the log with structured fields (journald keeps them as DOOR,
    /// EVENT_CODE, REASON, …). Denials and door alarms are warnings; the rest is info.
    pub fn log(&self) {
        let credential = self.credential.as_deref().unwrap_or("-");
        let summary = match self.event_code {
            10..=18 => "access granted",
            20..=29 => "access denied",
            _ => "door event",
        };
        let warning = matches!(self.event_code, 20..=29 | 32 | 33 | 90 | 91);
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(
                    door = %self.door,
                    event_code = self.event_code,
                    reason = %self.reason,
                    person_id = ?self.person_id,
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
