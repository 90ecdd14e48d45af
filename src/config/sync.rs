//! `[sync]`: how often DoorFlow is pulled, and the fallback time zone for shifts.

use super::values::Ranged;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Incremental pull (people and group reservations since the last cursor), s.
    #[serde(default)]
    pub interval_s: Ranged<10, 86_400, 60>,
    /// Full reconcile, which also drops deleted people and credentials, s.
    #[serde(default)]
    pub full_interval_s: Ranged<60, { 7 * 86_400 }, 3600>,
    /// Longest time between two full pulls of the credentials in incremental syncs, s (the
    /// API has no `since` for them; between pulls a one-request probe catches a changed count
    /// or a new last credential). Bounds how long an edited card value goes unseen. A full
    /// sync pulls them anyway, so more than `full_interval_s` acts as `full_interval_s`.
    #[serde(default)]
    pub credentials_interval_s: Ranged<10, { 7 * 86_400 }, 900>,
    /// Ask DoorFlow for whole lists at once (`skip_pagination=true`, parsed as it arrives)
    /// instead of page by page: one request per list instead of 1,000 for 100,000 people.
    /// A server that refuses or ignores it is paged as usual.
    #[serde(default)]
    pub skip_pagination: bool,
    /// IANA time zone used for shifts when a door's channel has no site time zone.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval_s: Default::default(),
            full_interval_s: Default::default(),
            credentials_interval_s: Default::default(),
            skip_pagination: false,
            time_zone: default_time_zone(),
        }
    }
}

impl SyncConfig {
    pub(super) fn validate(&self, report: &mut impl FnMut(String, String)) {
        if self.full_interval_s.get() < self.interval_s.get() {
            report(
                "sync.full_interval_s".into(),
                format!(
                    "{} is shorter than sync.interval_s ({})",
                    self.full_interval_s, self.interval_s
                ),
            );
        }
        if jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            report(
                "sync.time_zone".into(),
                format!("`{}` is not a known IANA time zone", self.time_zone),
            );
        }
    }
}
