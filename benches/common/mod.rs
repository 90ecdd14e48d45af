//! Shared by the benchmarks.

use doorflow_agent::audit::{new_event_id, AuditEvent};

/// A denied swipe at the front door, as the uplink queues thousands of them.
pub fn denied_swipe(i: u64) -> AuditEvent {
    AuditEvent {
        id: new_event_id(),
        event_code: 20,
        reason: "unknown_credential".into(),
        door: "front".into(),
        channel_id: Some(1340),
        person_id: None,
        credential: Some(format!("****{:02}", i % 100)),
        created_at: jiff::Timestamp::now(),
        admit: false,
    }
}
