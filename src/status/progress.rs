//! How far a sync has got, for `status` (`sync.progress`), the journal (the sync logs it every
//! 30 s while it runs, and at the end of each list) and the systemd status line
//! ([`SyncProgress::summary`]).
//!
//! The expected finish counts the requests still to send — the current list's pages left (from
//! the server's totals), and for the lists not started yet their size in the current snapshot
//! divided by their page size — at the rate this sync has achieved so far (the configured
//! rate until a few pages have gone). The rate is measured on the monotonic clock, so a step
//! of the wall clock mid-sync neither stretches nor shrinks it; the finish is that remaining
//! time added to the caller's "now" (DoorFlow's time, as `started_at` and `waiting_until`).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Pages after which the achieved rate is trusted over the configured one.
const RATE_AFTER_PAGES: u64 = 3;

/// A sync in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// `full` or `incremental`.
    pub kind: String,
    /// The list being pulled (`people`, `credentials`, ...).
    pub list: String,
    /// Items of that list received so far.
    pub fetched: u64,
    /// Its size as the server's headers give it (null without them).
    pub total: Option<u64>,
    /// Requests left for this list (null without totals).
    pub pages_left: Option<u64>,
    /// Requests still expected for the lists after it.
    pub later_requests: u64,
    /// Requests sent by this sync so far.
    pub requests: u64,
    /// When the sync started, on DoorFlow's clock (the board's until DoorFlow has answered).
    pub started_at: Timestamp,
    /// When the sync is expected to end at its rate so far, on the same clock.
    pub expected_finish: Option<Timestamp>,
    /// Set while the sync waits before retrying (a 429, a 5xx, a broken answer): until when
    /// (same clock), and why.
    pub waiting_until: Option<Timestamp>,
    pub waiting_for: Option<String>,
}

impl SyncProgress {
    pub fn new(kind: &str, started_at: Timestamp) -> SyncProgress {
        SyncProgress {
            kind: kind.to_string(),
            list: String::new(),
            fetched: 0,
            total: None,
            pages_left: None,
            later_requests: 0,
            requests: 0,
            started_at,
            expected_finish: None,
            waiting_until: None,
            waiting_for: None,
        }
    }

    /// Recomputes the expected finish: `now` on the clock of `started_at` (DoorFlow's time),
    /// `elapsed` the sync's running time on the monotonic clock (never a difference of wall
    /// times, which a clock step would distort), `per_minute` the configured rate, used until
    /// the sync has its own.
    pub fn estimate(&mut self, now: Timestamp, elapsed: Duration, per_minute: u32) {
        let left = self.pages_left.unwrap_or(1) + self.later_requests;
        let elapsed = elapsed.as_secs_f64();
        let seconds_per_request = if self.requests >= RATE_AFTER_PAGES && elapsed > 0.0 {
            elapsed / self.requests as f64
        } else {
            60.0 / f64::from(per_minute.max(1))
        };
        let wait = self
            .waiting_until
            .map_or(0.0, |until| until.duration_since(now).as_secs_f64().max(0.0));
        let seconds = left as f64 * seconds_per_request + wait;
        self.expected_finish = now
            .checked_add(SignedDuration::from_secs_f64(seconds.min(1e9)))
            .ok();
    }

    /// One line: `full sync: credentials 12000/130000, 236 pages left, done about 12:04:10Z`.
    pub fn summary(&self) -> String {
        let of = self.total.map(|t| format!("/{t}")).unwrap_or_default();
        let left = self
            .pages_left
            .map(|p| format!(", {} requests left", p + self.later_requests))
            .unwrap_or_default();
        let finish = self
            .expected_finish
            .map(|t| format!(", done about {}", t.round(jiff::Unit::Second).unwrap_or(t)))
            .unwrap_or_default();
        let waiting = match (&self.waiting_for, self.waiting_until) {
            (Some(why), Some(until)) => format!(
                "; waiting until {} ({why})",
                until.round(jiff::Unit::Second).unwrap_or(until)
            ),
            _ => String::new(),
        };
        format!(
            "{} sync: {} {}{of}{left}{finish}{waiting}",
            self.kind, self.list, self.fetched
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn the_finish_follows_the_rate_achieved_once_there_is_one() {
        let mut progress = SyncProgress::new("full", t(1_000));
        progress.list = "credentials".into();
        progress.pages_left = Some(100);
        progress.later_requests = 20;
        progress.estimate(t(1_000), Duration::ZERO, 120);
        assert_eq!(progress.expected_finish, Some(t(1_060)), "120 requests at 2/s");
        // 30 requests took 60 s: 2 s each.
        progress.requests = 30;
        progress.estimate(t(1_060), secs(60), 120);
        assert_eq!(progress.expected_finish, Some(t(1_060 + 240)));
        progress.waiting_until = Some(t(1_090));
        progress.estimate(t(1_060), secs(60), 120);
        assert_eq!(progress.expected_finish, Some(t(1_060 + 240 + 30)));
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_wall_clock_step_mid_sync_moves_neither_the_rate_nor_the_finish() {
        // Started at DoorFlow time 1 000; 30 requests in 60 s of monotonic time; 120 left.
        let mut progress = SyncProgress::new("full", t(1_000));
        progress.pages_left = Some(100);
        progress.later_requests = 20;
        progress.requests = 30;
        // DoorFlow's time says 60 s went by, whatever the board's wall clock did meanwhile
        // (stepped two days ahead: the rate is still 2 s a request, not 5 760 s).
        progress.estimate(t(1_060), secs(60), 120);
        assert_eq!(progress.expected_finish, Some(t(1_060 + 240)));
        // With the board's wall clock as the "now" (DoorFlow never answered in this boot), a
        // step of +2 days moves the finish by exactly the step: now + the same 240 s.
        let two_days = 2 * 86_400;
        progress.estimate(t(1_060 + two_days), secs(60), 120);
        assert_eq!(progress.expected_finish, Some(t(1_060 + two_days + 240)));
        // A step back: the same 240 s left, from that now.
        progress.estimate(t(1_060 - 3_600), secs(60), 120);
        assert_eq!(progress.expected_finish, Some(t(1_060 - 3_600 + 240)));
    }

    #[test]
    fn the_summary_says_list_count_and_finish() {
        let mut progress = SyncProgress::new("full", t(0));
        progress.list = "credentials".into();
        progress.fetched = 12_000;
        progress.total = Some(130_000);
        progress.pages_left = Some(236);
        progress.later_requests = 7;
        progress.expected_finish = Some(t(3_600));
        assert_eq!(
            progress.summary(),
            "full sync: credentials 12000/130000, 243 requests left, done about 1970-01-01T01:00:00Z"
        );
    }
}
