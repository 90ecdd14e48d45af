//! systemd integration: READY=1 once the snapshot is loaded and the doors run, STOPPING=1 on the
//! way out, and watchdog pings that are sent only while every vital loop (each door, the
//! uplink) has shown a sign of life recently. A wedged loop stops the pings and systemd restarts
//! the service.

use crate::hw::monotonic_ns;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The last heartbeat of each vital loop.
#[derive(Debug)]
pub struct Liveness {
    loops: Vec<(String, AtomicU64)>,
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
}

impl Liveness {
    /// One heartbeat per named loop, all counted as alive now.
    pub fn new(names: &[String]) -> (Arc<Liveness>, Vec<Heartbeat>) {
        let now = monotonic_ns();
        let liveness = Arc::new(Liveness {
            loops: names.iter().map(|n| (n.clone(), AtomicU64::new(now))).collect(),
        });
        let beats = (0..names.len())
            .map(|index| Heartbeat {
                liveness: Arc::clone(&liveness),
                index,
            })
            .collect();
        (liveness, beats)
    }

    /// Loops that have not beaten within `max_age` of `now`.
    pub fn stale(&self, now_ns: u64, max_age: Duration) -> Vec<&str> {
        let max_age = max_age.as_nanos() as u64;
        self.loops
            .iter()
            .filter(|(_, beat)| now_ns.saturating_sub(beat.load(Ordering::Relaxed)) > max_age)
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

/// Pings systemd's watchdog at half its interval while every loop is alive, until `stop` is
/// cancelled. Returns at once when the service has no watchdog.
pub async fn run_watchdog(liveness: Arc<Liveness>, stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    let mut reported = false;
    loop {
        if stop
            .run_until_cancelled(tokio::time::sleep(period))
            .await
            .is_none()
        {
            return;
        }
        let stale = liveness.stale(monotonic_ns(), period);
        if stale.is_empty() {
            reported = false;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else if !reported {
            reported = true;
            tracing::error!(loops = ?stale, "a vital loop is not responding; withholding watchdog pings so systemd restarts the agent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_stale() {
        let names = vec!["door front".to_string(), "uplink".to_string()];
        let (liveness, beats) = Liveness::new(&names);
        let now = monotonic_ns();
        assert!(liveness.stale(now, Duration::from_secs(1)).is_empty());
        beats[0].beat();
        let later = monotonic_ns() + 2_000_000_000;
        liveness.loops[0].1.store(later, Ordering::Relaxed);
        assert_eq!(liveness.stale(later, Duration::from_secs(1)), ["uplink"]);
    }
}
