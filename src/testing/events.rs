//! The one builder of audit events for tests and benchmarks, as the door task would emit them.

use crate::audit::{new_event_id, AuditEvent};
use jiff::Timestamp;

/// A swipe at the demo's front door (channel 1340): granted to `person_id` (code 10, with an
/// admit when `admit`), or, with `None`, denied as unknown (code 20). `n` picks the masked
/// credential's last two digits so swipes can be told apart.
pub fn front_door_swipe(n: u64, person_id: Option<u64>, admit: bool) -> AuditEvent {
    let granted = person_id.is_some();
    AuditEvent {
        id: new_event_id(),
        event_code: if granted { 10 } else { 20 },
        reason: if granted {
            "authorised"
        } else {
            "unknown_credential"
        }
        .into(),
        door: "front".into(),
        channel_id: Some(1340),
        person_id,
        credential: Some(format!("****{:02}", n % 100)),
        created_at: Timestamp::now(),
        admit: granted && admit,
        repeats: 0,
        updated_at: None,
    }
}

/// A denied swipe at the front door, as the uplink queues thousands of them.
pub fn denied_swipe(n: u64) -> AuditEvent {
    front_door_swipe(n, None, false)
}
