//! `[uplink]`: where door events go, and how queued calls are retried, expired and bounded.

use super::api::SecretSource;
use super::service_url::ServiceUrl;
use super::values::Ranged;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// HTTPS sink for events. DoorFlow's public API has no event ingestion endpoint; without a
    /// sink, events are journaled and kept in a bounded local log.
    pub events_url: Option<ServiceUrl>,
    /// Bearer token for the event sink (a file path or `systemd-credential:NAME`). DoorFlow's
    /// own credentials are never sent to the sink.
    pub events_token: Option<SecretSource>,
    /// Queued admits older than this are not sent (a late admit could open a door long after
    /// the swipe) and go to the dead letters as `expired`, s.
    #[serde(default)]
    pub admit_ttl_s: Ranged<1, 3600, 120>,
    /// First backoff ceiling after a 5xx or network error; doubles per attempt (full jitter), ms.
    #[serde(default)]
    pub retry_base_ms: Ranged<10, 60_000, 1000>,
    /// Highest backoff ceiling, s.
    #[serde(default)]
    pub retry_cap_s: Ranged<1, 3600, 120>,
    /// Most calls the outbox holds (both lanes).
    #[serde(default)]
    pub queue_max_records: Ranged<100, 10_000_000, 100_000>,
    /// Most bytes the outbox holds (both lanes).
    #[serde(default)]
    pub queue_max_bytes: Ranged<{ 64 * 1024 }, { 4 * 1024 * 1024 * 1024 }, { 64 * 1024 * 1024 }>,
    /// Most queued admits (default: a tenth of `queue_max_records`, at most 1,000). Below
    /// `queue_max_records`, so admits alone can never fill the queue and a new event (a
    /// forced-open alarm) always fits; beyond it the oldest admits are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_max_admits: Option<Ranged<1, 10_000_000, 1>>,
    /// Events kept locally when no sink is configured.
    #[serde(default)]
    pub local_event_log_max: Ranged<0, 10_000_000, 10_000>,
}

impl UplinkConfig {
    /// `queue_max_admits`, or its default.
    pub fn effective_queue_max_admits(&self) -> u64 {
        self.queue_max_admits.map_or_else(
            || (self.queue_max_records.get() / 10).clamp(1, 1_000),
            |admits| admits.get(),
        )
    }

    pub(super) fn validate(&self, report: &mut impl FnMut(String, String)) {
        if self.retry_base_ms.get() > self.retry_cap_s.get() * 1000 {
            report(
                "uplink.retry_base_ms".into(),
                format!(
                    "{} ms is more than uplink.retry_cap_s ({} s): every retry would wait the cap",
                    self.retry_base_ms, self.retry_cap_s
                ),
            );
        }
        if let Some(admits) = self.queue_max_admits {
            if admits.get() >= self.queue_max_records.get() {
                report(
                    "uplink.queue_max_admits".into(),
                    format!(
                        "{admits} must be below uplink.queue_max_records ({}), so admits alone never fill the queue",
                        self.queue_max_records
                    ),
                );
            }
        }
    }
}
