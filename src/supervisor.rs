//! systemd integration: READY=1 once the snapshot is loaded and the doors run, STATUS= lines,
//! STOPPING=1 on the way out, and watchdog pings that are sent only while every vital loop
//! (each door, each uplink lane) has shown a sign of life recently. A wedged loop stops the
//! pings and systemd restarts the service.
//!
//! Every cadence comes from systemd's watchdog interval (`WATCHDOG_USEC`, from `WatchdogSec=`;
//! see sd_watchdog_enabled(3)), so a site that shortens it in a drop-in never gets a healthy
//! agent killed: loops beat every eighth of the interval, a ping goes out every quarter, and a
//! loop counts as stuck after half of it without a beat.

use crate::hw::monotonic_ns;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often loops beat when the service has no watchdog (nobody checks then).
const BEAT_WITHOUT_WATCHDOG: Duration = Duration::from_secs(2);
/// Shortest beat: a watchdog interval under ~10 ms is not a real configuration.
const MIN_BEAT: Duration = Duration::from_millis(1);

/// The cadences derived from the watchdog interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogTiming {
    /// `WATCHDOG_USEC` as a duration; `None` when the service has no watchdog (or it is meant
    /// for another process, `WATCHDOG_PID`).
    pub interval: Option<Duration>,
    /// How often each vital loop beats: an eighth of the interval.
    pub beat: Duration,
    /// How often a ping is sent while every loop is fresh: a quarter of the interval.
    pub ping: Duration,
    /// A loop without a beat for this long is stuck: half the interval.
    pub stale_after: Duration,
}

impl WatchdogTiming {
    pub fn from_interval(interval: Option<Duration>) -> WatchdogTiming {
        match interval {
            None => WatchdogTiming {
                interval: None,
                beat: BEAT_WITHOUT_WATCHDOG,
                ping: BEAT_WITHOUT_WATCHDOG,
                stale_after: BEAT_WITHOUT_WATCHDOG * 4,
            },
            Some(interval) => WatchdogTiming {
                interval: Some(interval),
                beat: (interval / 8).max(MIN_BEAT),
                ping: (interval / 4).max(MIN_BEAT),
                stale_after: (interval / 2).max(MIN_BEAT * 4),
            },
        }
    }

    /// From the environment systemd gives the service.
    pub fn from_env() -> WatchdogTiming {
        WatchdogTiming::from_interval(sd_notify::watchdog_enabled())
    }
}

/// How long a loop may take to beat for the first time: start-up (opening the store, the first
/// requests) is slower than a loop's period, much slower on a loaded or emulated CPU, and a
/// loop that has not started is not a stuck one until then.
pub const FIRST_BEAT_GRACE: Duration = Duration::from_secs(30);

/// The last heartbeat of each vital loop (0: not yet beaten).
#[derive(Debug)]
pub struct Liveness {
    loops: Vec<(String, AtomicU64)>,
    created_ns: u64,
    timing: WatchdogTiming,
}

/// A handle one loop uses to report that it is alive.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    liveness: Arc<Liveness>,
    index: usize,
}

impl Heartbeat {
    pub fn beat(&self) {
        self.liveness.loops[self.index]
            .1
            .store(monotonic_ns(), Ordering::Relaxed);
    }

    /// How often the loop must beat while it waits (derived from the watchdog interval).
    pub fn period(&self) -> Duration {
        self.liveness.timing.beat
    }
}

impl Liveness {
    /// One heartbeat per named loop; each is judged from its first beat, or after
    /// `FIRST_BEAT_GRACE` if it never beats.
    pub fn new(names: &[String], timing: WatchdogTiming) -> (Arc<Liveness>, Vec<Heartbeat>) {
        let liveness = Arc::new(Liveness {
            loops: names.iter().map(|n| (n.clone(), AtomicU64::new(0))).collect(),
            created_ns: monotonic_ns(),
            timing,
        });
        let beats = (0..names.len())
            .map(|index| Heartbeat {
                liveness: Arc::clone(&liveness),
                index,
            })
            .collect();
        (liveness, beats)
    }

    /// Loops that have not beaten within `max_age` of `now` (monotonic ns), or not at all
    /// within `FIRST_BEAT_GRACE` of their creation.
    pub fn stale(&self, now_ns: u64, max_age: Duration) -> Vec<&str> {
        let max_age = max_age.as_nanos() as u64;
        let grace = FIRST_BEAT_GRACE.as_nanos() as u64;
        self.loops
            .iter()
            .filter(|(_, beat)| match beat.load(Ordering::Relaxed) {
                0 => now_ns.saturating_sub(self.created_ns) > grace.max(max_age),
                last => now_ns.saturating_sub(last) > max_age,
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

pub fn notify_ready(status: &str) {
    if let Err(error) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]) {
        tracing::warn!(%error, "could not notify systemd of readiness");
    }
}

/// Replaces the status line systemd shows for the unit.
pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings systemd's watchdog every `timing.ping` while every loop is fresh, until `stop` is
/// cancelled. Returns at once when the service has no watchdog.
pub async fn run_watchdog(liveness: Arc<Liveness>, stop: CancellationToken) {
    let timing = liveness.timing;
    if timing.interval.is_none() {
        return;
    }
    let mut ticks = tokio::time::interval(timing.ping);
    // A late tick is sent at once, never in a burst to catch up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = false;
    loop {
        if stop.run_until_cancelled(ticks.tick()).await.is_none() {
            return;
        }
        let stale = liveness.stale(monotonic_ns(), timing.stale_after);
        if stale.is_empty() {
            if reported {
                tracing::info!("every vital loop responds again; watchdog pings resumed");
            }
            reported = false;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else if !reported {
            reported = true;
            tracing::error!(
                loops = ?stale,
                "a vital loop is not responding ({}); withholding watchdog pings so systemd restarts the agent",
                stale.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_stale() {
        let names = vec!["door front".to_string(), "uplink".to_string()];
        let (liveness, beats) = Liveness::new(&names, WatchdogTiming::from_interval(None));
        beats[0].beat();
        beats[1].beat();
        let now = monotonic_ns();
        assert!(liveness.stale(now, Duration::from_secs(1)).is_empty());
        let later = monotonic_ns() + 2_000_000_000;
        liveness.loops[0].1.store(later, Ordering::Relaxed);
        assert_eq!(liveness.stale(later, Duration::from_secs(1)), ["uplink"]);
    }

    #[test]
    fn a_loop_still_starting_is_not_stuck_until_its_grace_ends() {
        let names = vec!["uplink".to_string()];
        let (liveness, _beats) = Liveness::new(&names, WatchdogTiming::from_interval(None));
        let start = liveness.created_ns;
        let slow_start = start + 5_000_000_000;
        assert!(liveness.stale(slow_start, Duration::from_millis(500)).is_empty());
        let never = start + FIRST_BEAT_GRACE.as_nanos() as u64 + 1;
        assert_eq!(liveness.stale(never, Duration::from_millis(500)), ["uplink"]);
    }

    #[test]
    fn every_cadence_follows_the_watchdog_interval() {
        for seconds in [1u64, 2, 5, 30] {
            let interval = Duration::from_secs(seconds);
            let timing = WatchdogTiming::from_interval(Some(interval));
            assert_eq!(timing.beat, interval / 8);
            assert_eq!(timing.ping, interval / 4);
            assert_eq!(timing.stale_after, interval / 2);
            // A loop beating on time is never stale, even a whole beat late.
            assert!(timing.beat * 2 < timing.stale_after);
            // A wedged loop is caught with a ping interval to spare before systemd's deadline.
            assert!(timing.stale_after + timing.ping < interval);
        }
        let (liveness, beats) = Liveness::new(
            &["door".to_string()],
            WatchdogTiming::from_interval(Some(Duration::from_secs(2))),
        );
        assert_eq!(beats[0].period(), Duration::from_millis(250));
        assert!(liveness
            .stale(monotonic_ns(), liveness.timing.stale_after)
            .is_empty());
    }
}
