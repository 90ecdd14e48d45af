//! The agent's clocks.
//!
//! - **Wall time** (CLOCK_REALTIME) is for rules: validity windows, shifts, the times written in
//!   events. It can jump: a board without a real-time clock boots with a stale time and NTP
//!   steps it; an RTC drifts and gets corrected. The agent never uses a wall time earlier than
//!   the last time DoorFlow's `Date` header said it was (`trusted::TimeKeeper`).
//! - **Monotonic time** is for waiting: rate pacing, backoff, rate-limit holds, token expiry,
//!   the admit TTL, heartbeats and ages. Within the process that is `std::time::Instant`
//!   (CLOCK_MONOTONIC); what is written to disk and must survive a restart uses the boot clock
//!   (CLOCK_BOOTTIME: monotonic, counts suspend, zero at boot) tagged with the boot it belongs
//!   to (`/proc/sys/kernel/random/boot_id`), so a reboot is recognised rather than misread.
//!
//! libfaketime (the clock-step tests) moves CLOCK_REALTIME only when
//! `FAKETIME_DONT_FAKE_MONOTONIC=1`: it leaves CLOCK_MONOTONIC, _RAW, _COARSE and
//! CLOCK_BOOTTIME alone, which is the behaviour of a real NTP step.

pub mod trusted;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use trusted::{TimeKeeper, OFFSET_WARN};

/// Where the kernel publishes this boot's random id.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// The same id from the environment: the unit sets it from systemd's `%b`, because its
/// `ProcSubset=pid` hides /proc/sys from the service.
const BOOT_ID_ENV: &str = "DOORFLOW_BOOT_ID";
/// systemd-timesyncd's flag file: present once it has synchronised the clock.
const TIMESYNCD_SYNCHRONISED: &str = "/run/systemd/timesync/synchronized";

/// A point on the boot clock, with the boot it belongs to. Serialised in records that must
/// survive a restart (`{"boot": <first 64 bits of boot_id>, "ns": <ns since boot>}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInstant {
    /// This boot's id (the first 64 bits of the kernel's boot_id; a random per-process value
    /// when that file cannot be read, so a restart then counts as a new boot).
    pub boot: u64,
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub ns: u64,
}

impl BootInstant {
    /// The boot clock now.
    pub fn now() -> BootInstant {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes into the timespec we pass; CLOCK_BOOTTIME exists on
        // every Linux the agent supports (2.6.39+).
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
        BootInstant {
            boot: boot_id(),
            ns: now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64,
        }
    }

    /// Time from `earlier` to `self`, when both belong to the same boot and `earlier` is not
    /// later; `None` otherwise (the time across a reboot is unknown).
    pub fn since(self, earlier: BootInstant) -> Option<Duration> {
        (self.boot == earlier.boot && self.ns >= earlier.ns)
            .then(|| Duration::from_nanos(self.ns - earlier.ns))
    }

    pub fn same_boot(self, other: BootInstant) -> bool {
        self.boot == other.boot
    }
}

impl std::ops::Add<Duration> for BootInstant {
    type Output = BootInstant;

    /// Later on the same boot's clock (saturating).
    fn add(self, duration: Duration) -> BootInstant {
        BootInstant {
            boot: self.boot,
            ns: self
                .ns
                .saturating_add(duration.as_nanos().min(u64::MAX as u128) as u64),
        }
    }
}

/// This boot's id, read once: `$DOORFLOW_BOOT_ID`, else the kernel's file, else a random value
/// for this process (then a restart counts as a reboot: the wall clock decides, erring towards
/// expiry).
pub fn boot_id() -> u64 {
    static BOOT_ID: OnceLock<u64> = OnceLock::new();
    *BOOT_ID.get_or_init(|| {
        let from_env = std::env::var(BOOT_ID_ENV).ok().and_then(|id| parse_boot_id(&id));
        let from_file = || {
            std::fs::read_to_string(BOOT_ID_PATH)
                .ok()
                .and_then(|id| parse_boot_id(&id))
        };
        from_env.or_else(from_file).unwrap_or_else(|| {
            tracing::warn!(
                path = BOOT_ID_PATH,
                "boot id unreadable (and {BOOT_ID_ENV} unset); after an agent restart the admit TTL and backoff fall back to the wall clock"
            );
            fastrand::u64(..)
        })
    })
}

/// The first 64 bits of a boot id, with dashes (`xxxxxxxx-xxxx-…`, the kernel's form) or
/// without (systemd's `%b`).
fn parse_boot_id(text: &str) -> Option<u64> {
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    u64::from_str_radix(&hex[..16], 16).ok()
}

/// One reading of every clock, taken together: what the schedulers are given, so each can be
/// tested with a clock of the test's choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall time. From `TimeKeeper::now` it is never earlier than the trusted floor.
    pub wall: Timestamp,
    pub boot: BootInstant,
    pub mono: Instant,
}

impl Now {
    /// The clocks as they are, the wall clock unchecked (`TimeKeeper::now` applies the floor).
    pub fn read_raw() -> Now {
        Now {
            mono: Instant::now(),
            boot: BootInstant::now(),
            wall: Timestamp::now(),
        }
    }

    /// `self` moved on by `elapsed` on every clock (tests).
    pub fn after(self, elapsed: Duration) -> Now {
        Now {
            wall: self.wall + elapsed,
            boot: self.boot + elapsed,
            mono: self.mono + elapsed,
        }
    }
}

/// Whether the wall clock is synchronised: the kernel's own view (adjtimex, read only: not
/// `TIME_ERROR` and no `STA_UNSYNC`), or, where that call is refused (systemd's
/// `ProtectClock=` blocks it, with EPERM), whether systemd-timesyncd has synchronised it.
/// `None` when neither can tell.
pub fn synchronised() -> Option<bool> {
    // SAFETY: a zeroed timex with modes = 0 only reads the kernel's state into it.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: adjtimex writes only into the struct we pass.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state >= 0 {
        return Some(state != libc::TIME_ERROR && timex.status & libc::STA_UNSYNC == 0);
    }
    if std::path::Path::new(TIMESYNCD_SYNCHRONISED).exists() {
        return Some(true);
    }
    None
}

/// How often `watch` looks at the clock.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Looks at the clock every few seconds, until dropped, and says in the journal when the wall
/// clock was stepped (with the size), when its synchronisation changes, and when it is far from
/// DoorFlow's time. Nothing waits on the wall clock, so a step only needs reporting.
pub async fn watch(keeper: Arc<TimeKeeper>) {
    let mut far_from_doorflow = false;
    loop {
        let raw = Now::read_raw();
        if let Some(step) = keeper.check_step(&raw) {
            tracing::warn!(
                clock_step_s = step.size.as_secs_f64(),
                "the wall clock was stepped by {:+.1} s; waiting runs on the monotonic clock, rules never use a time before DoorFlow's last Date",
                step.size.as_secs_f64()
            );
        }
        let state = synchronised();
        if keeper.set_synchronised(state) {
            match state {
                Some(false) => tracing::warn!(
                    "the wall clock is not synchronised; validity windows and shifts use DoorFlow's time where the board's is behind it"
                ),
                Some(true) => tracing::info!("the wall clock is synchronised"),
                None => {}
            }
        }
        let offset = keeper.doorflow_offset(&raw);
        let far = offset.is_some_and(|offset| offset.abs() > OFFSET_WARN);
        if far && !far_from_doorflow {
            let offset_s = offset.map_or(0.0, |o| o.as_secs_f64());
            tracing::warn!(
                clock_offset_s = offset_s,
                "the wall clock is {offset_s:+.0} s off DoorFlow's time; check time synchronisation"
            );
        }
        far_from_doorflow = far;
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_counts_within_a_boot_only() {
        let start = BootInstant { boot: 7, ns: 1_000 };
        let later = start + Duration::from_millis(5);
        assert_eq!(later.since(start), Some(Duration::from_millis(5)));
        assert_eq!(start.since(later), None, "not backwards");
        let other_boot = BootInstant {
            boot: 8,
            ns: 9_000_000,
        };
        assert_eq!(other_boot.since(start), None, "not across a reboot");
        let now = BootInstant::now();
        assert!(now.ns > 0 && now.boot == boot_id());
        assert!(BootInstant::now().since(now).is_some());
    }

    #[test]
    fn boot_ids_read_as_their_first_64_bits() {
        let id = Some(0x5f3c_2e1a_9b8d_4c7e);
        assert_eq!(parse_boot_id("5f3c2e1a-9b8d-4c7e-a6f5-0123456789ab\n"), id);
        assert_eq!(
            parse_boot_id("5f3c2e1a9b8d4c7ea6f50123456789ab"),
            id,
            "systemd's %b"
        );
        assert_eq!(parse_boot_id("garbage"), None);
        assert_eq!(parse_boot_id("5f3c2e1a9b8d4c7e"), None, "too short");
        // This machine's own: the file and the clock agree on it.
        let kernel = std::fs::read_to_string(BOOT_ID_PATH).ok();
        if let Some(kernel) = kernel.filter(|_| std::env::var_os(BOOT_ID_ENV).is_none()) {
            assert_eq!(parse_boot_id(&kernel), Some(boot_id()));
        }
    }
}
