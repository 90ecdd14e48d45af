//! Shared by the benchmarks; each uses only some of it.
#![allow(dead_code)]

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

/// The demo config with its state in `dir`, pointed at a simulator at `base_url`, assuming
/// `per_minute` requests before the server's headers are seen. Its own periodic sync waits a
/// day: benchmarks that want sync traffic drive it themselves.
pub fn agent_config(
    dir: &std::path::Path,
    base_url: &str,
    per_minute: u32,
) -> doorflow_agent::config::Config {
    std::fs::write(dir.join("api_key"), "sim-api-key").unwrap();
    let text = include_str!("../../config/demo.toml")
        .replace("/tmp/doorflow-agent-demo", &dir.display().to_string())
        .replace("http://127.0.0.1:18080", base_url)
        .replace(
            "requests_per_minute = 120",
            &format!("requests_per_minute = {per_minute}"),
        )
        .replace(
            "interval_s = 10\nfull_interval_s = 60",
            "interval_s = 86400\nfull_interval_s = 86400",
        );
    doorflow_agent::config::Config::parse(&text, "bench.toml").unwrap()
}

/// Queues `n` denied swipes in the agent's outbox, as the audit writer would.
pub fn queue_denied_swipes(agent: &doorflow_agent::agent::Agent, n: u64) {
    let uplink = &agent.config.uplink;
    let capacity = doorflow_agent::store::Capacity::from_config(uplink);
    let events: Vec<AuditEvent> = (0..n).map(denied_swipe).collect();
    doorflow_agent::audit_writer::write_group(&agent.store, uplink, capacity, &events).unwrap();
}
