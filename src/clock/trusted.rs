//! The trusted-time floor and the clock's health.
//!
//! Every answer from DoorFlow carries a `Date` header (RFC 9110 §6.6.1): a time known to be
//! right, to the second. The keeper remembers the latest one with the boot-clock reading at
//! which it arrived (the *anchor*), so at any later moment of the same boot it knows the
//! earliest the time can be: the anchor's date plus the boot-clock time since (the *floor*). From
//! an earlier boot only the date itself is known to have passed. Rules (validity windows, shifts,
//! event times) never use a wall time earlier than the floor; the sync cursor and the full
//! reconcile's due date use DoorFlow's time. A wall clock that moves against the boot clock by
//! more than `STEP_MIN` between two checks has been stepped: the step and its size are kept for
//! `status` and logged. Pure: every reading comes in as a `Now`.

use super::{BootInstant, Now};
use crate::mutex::lock;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// A wall clock moving this much against the boot clock between two checks was stepped (NTP
/// slews at most 0.5 ms/s, far below this).
pub const STEP_MIN: SignedDuration = SignedDuration::from_secs(1);
/// Meta key of the persisted anchor.
pub const ANCHOR_KEY: &str = "clock.anchor";
/// A wall clock this far from DoorFlow's is reported as wrong.
pub const OFFSET_WARN: SignedDuration = SignedDuration::from_secs(30);

/// DoorFlow's `Date` and when (on the boot clock) it arrived. Persisted, so a restart keeps the
/// floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub doorflow: Timestamp,
    pub at: BootInstant,
}

impl Anchor {
    /// The earliest the time can be at `boot`: the date plus the time since it arrived (this
    /// boot), or the date itself (another boot).
    fn floor_at(self, boot: BootInstant) -> Timestamp {
        match boot.since(self.at) {
            Some(elapsed) => self.doorflow + elapsed,
            None => self.doorflow,
        }
    }
}

/// A step of the wall clock that was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How far the wall clock moved against the boot clock (negative: set back).
    pub size: SignedDuration,
    /// The wall time just after the step.
    pub seen_at: Timestamp,
}

/// The clock's health for `status` (`clock` in the JSON report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// The kernel's (or systemd-timesyncd's) view; null when neither can tell.
    pub synchronised: Option<bool>,
    /// Wall clock minus DoorFlow's time (from its `Date` header), s; null before an answer in
    /// this boot.
    pub doorflow_offset_s: Option<f64>,
    /// The earliest the time can be (DoorFlow's last `Date` plus the time since).
    pub trusted_floor: Option<Timestamp>,
    /// The wall clock is behind the floor, so rules use the floor instead.
    pub behind_floor: bool,
    /// The last step of the wall clock seen since the agent started, s (negative: set back).
    pub last_step_s: Option<f64>,
    pub last_step_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct State {
    anchor: Option<Anchor>,
    /// Wall minus boot clock at the last check, ns.
    offset_ns: Option<i128>,
    last_step: Option<Step>,
    synchronised: Option<bool>,
}

/// The trusted-time floor and the clock's health, shared by the door tasks (rules), the client
/// (which feeds it DoorFlow's dates), sync, the uplink and `status`.
#[derive(Debug, Default)]
pub struct TimeKeeper {
    state: Mutex<State>,
}

impl TimeKeeper {
    /// A keeper that starts from a persisted anchor (or none).
    pub fn new(anchor: Option<Anchor>) -> TimeKeeper {
        TimeKeeper {
            state: Mutex::new(State {
                anchor,
                ..State::default()
            }),
        }
    }

    /// The anchor, for persisting.
    pub fn anchor(&self) -> Option<Anchor> {
        lock(&self.state).anchor
    }

    /// DoorFlow said it was `date` in an answer that arrived at `at`. The floor only moves
    /// forward: an older date (a `Date` rounded down, a slower answer) leaves it.
    pub fn observe_doorflow_date(&self, date: Timestamp, at: BootInstant) {
        let mut state = lock(&self.state);
        let later = state
            .anchor
            .is_none_or(|anchor| date > anchor.floor_at(at) || !anchor.at.same_boot(at));
        if later {
            state.anchor = Some(Anchor { doorflow: date, at });
        }
    }

    /// The earliest the time can be at `now`; `None` before DoorFlow ever answered.
    pub fn floor(&self, now: &Now) -> Option<Timestamp> {
        lock(&self.state).anchor.map(|anchor| anchor.floor_at(now.boot))
    }

    /// The clocks with the wall time raised to the floor: what rules and schedules use.
    pub fn trusted(&self, raw: Now) -> Now {
        Now {
            wall: self.floor(&raw).map_or(raw.wall, |floor| raw.wall.max(floor)),
            ..raw
        }
    }

    /// The clocks now, the wall time never earlier than the floor.
    pub fn now(&self) -> Now {
        self.trusted(Now::read_raw())
    }

    /// The wall time for a rule (a validity window, a shift), never earlier than the floor.
    pub fn rules_time(&self) -> Timestamp {
        self.now().wall
    }

    /// DoorFlow's time at `now`: the floor when DoorFlow answered in this boot (its clock, not
    /// the board's), otherwise the trusted wall time.
    pub fn doorflow_time(&self, now: &Now) -> Timestamp {
        let anchor = lock(&self.state).anchor;
        match anchor {
            Some(anchor) if anchor.at.same_boot(now.boot) => anchor.floor_at(now.boot),
            _ => self.trusted(*now).wall,
        }
    }

    /// Compares the raw wall clock with the boot clock since the last check: a move of more
    /// than `STEP_MIN` is a step, kept for `status` and returned.
    pub fn check_step(&self, raw: &Now) -> Option<Step> {
        let offset = raw.wall.as_nanosecond() - raw.boot.ns as i128;
        let mut state = lock(&self.state);
        let previous = state.offset_ns.replace(offset)?;
        let moved =
            SignedDuration::from_nanos((offset - previous).clamp(i64::MIN as i128, i64::MAX as i128) as i64);
        if moved.abs() <= STEP_MIN {
            return None;
        }
        let step = Step {
            size: moved,
            seen_at: raw.wall,
        };
        state.last_step = Some(step);
        Some(step)
    }

    /// Records whether the clock is synchronised; returns whether that changed.
    pub fn set_synchronised(&self, synchronised: Option<bool>) -> bool {
        let mut state = lock(&self.state);
        let changed = state.synchronised != synchronised;
        state.synchronised = synchronised;
        changed
    }

    /// Raw wall clock minus DoorFlow's time, when DoorFlow answered in this boot.
    pub fn doorflow_offset(&self, raw: &Now) -> Option<SignedDuration> {
        let anchor = lock(&self.state).anchor?;
        anchor
            .at
            .same_boot(raw.boot)
            .then(|| raw.wall.duration_since(anchor.floor_at(raw.boot)))
    }

    /// For `status`.
    pub fn status(&self, raw: &Now) -> ClockStatus {
        let floor = self.floor(raw);
        let offset = self.doorflow_offset(raw);
        let state = lock(&self.state);
        ClockStatus {
            synchronised: state.synchronised,
            doorflow_offset_s: offset.map(|o| (o.as_secs_f64() * 10.0).round() / 10.0),
            trusted_floor: floor,
            behind_floor: floor.is_some_and(|floor| raw.wall < floor),
            last_step_s: state.last_step.map(|s| s.size.as_secs_f64()),
            last_step_at: state.last_step.map(|s| s.seen_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// A clock of the test's choosing: wall `wall_s`, boot clock `boot_s` in boot 1.
    fn at(wall_s: i64, boot_s: u64, mono: Instant) -> Now {
        Now {
            wall: t(wall_s),
            boot: BootInstant {
                boot: 1,
                ns: boot_s * 1_000_000_000,
            },
            mono,
        }
    }

    const DAY: i64 = 1_800_000_000;

    #[test]
    fn the_floor_follows_doorflow_and_the_boot_clock_not_the_wall() {
        let mono = Instant::now();
        let keeper = TimeKeeper::new(None);
        assert_eq!(keeper.floor(&at(DAY, 100, mono)), None);
        keeper.observe_doorflow_date(t(DAY), at(DAY, 100, mono).boot);
        // The wall clock set back an hour: the floor still counts on.
        let later = at(DAY - 3600 + 10, 110, mono);
        assert_eq!(keeper.floor(&later), Some(t(DAY + 10)));
        assert_eq!(keeper.trusted(later).wall, t(DAY + 10), "rules never go below it");
        assert_eq!(keeper.doorflow_time(&later), t(DAY + 10));
        // A wall clock ahead is kept (the floor is a lower bound only).
        let ahead = at(DAY + 7200, 110, mono);
        assert_eq!(keeper.trusted(ahead).wall, t(DAY + 7200));
        assert_eq!(
            keeper.doorflow_time(&ahead),
            t(DAY + 10),
            "DoorFlow's time, not ours"
        );
        // An older date does not pull the floor back.
        keeper.observe_doorflow_date(t(DAY + 5), at(DAY, 120, mono).boot);
        assert_eq!(keeper.floor(&at(DAY, 120, mono)), Some(t(DAY + 20)));
        keeper.observe_doorflow_date(t(DAY + 30), at(DAY, 120, mono).boot);
        assert_eq!(keeper.floor(&at(DAY, 121, mono)), Some(t(DAY + 31)));
    }

    #[test]
    fn after_a_reboot_the_date_itself_is_the_floor() {
        let mono = Instant::now();
        let keeper = TimeKeeper::new(Some(Anchor {
            doorflow: t(DAY),
            at: BootInstant { boot: 9, ns: 5 },
        }));
        // A board without an RTC boots in 1970: rules use the last time known right.
        let booted = at(0, 12, mono);
        assert_eq!(keeper.floor(&booted), Some(t(DAY)));
        assert_eq!(keeper.trusted(booted).wall, t(DAY));
        assert_eq!(
            keeper.doorflow_time(&booted),
            t(DAY),
            "no answer yet in this boot"
        );
        assert_eq!(
            TimeKeeper::new(None).doorflow_time(&booted),
            t(0),
            "nothing known: the wall"
        );
        assert_eq!(
            keeper.doorflow_offset(&booted),
            None,
            "no DoorFlow answer in this boot"
        );
        assert!(keeper.status(&booted).behind_floor);
        // The first answer of this boot anchors it, even though the date is the same.
        keeper.observe_doorflow_date(t(DAY + 600), booted.boot);
        assert_eq!(keeper.floor(&at(0, 22, mono)), Some(t(DAY + 610)));
    }

    #[test]
    fn steps_are_seen_with_their_size() {
        let mono = Instant::now();
        let keeper = TimeKeeper::new(None);
        assert_eq!(keeper.check_step(&at(DAY, 100, mono)), None, "first reading");
        assert_eq!(keeper.check_step(&at(DAY + 5, 105, mono)), None, "clocks agree");
        let back = keeper.check_step(&at(DAY + 10 - 3600, 110, mono)).unwrap();
        assert_eq!(back.size, SignedDuration::from_secs(-3600));
        assert_eq!(back.seen_at, t(DAY + 10 - 3600));
        let forward = keeper
            .check_step(&at(DAY + 15 + 2 * 86_400 - 3600, 115, mono))
            .unwrap();
        assert_eq!(forward.size, SignedDuration::from_secs(2 * 86_400));
        let status = keeper.status(&at(DAY, 116, mono));
        assert_eq!(status.last_step_s, Some(2.0 * 86_400.0));
        // Slewing (under a second) is not a step.
        assert_eq!(
            keeper.check_step(&at(DAY + 20 + 2 * 86_400 - 3600, 120, mono)),
            None
        );
    }

    #[test]
    fn the_offset_from_doorflow_is_reported() {
        let mono = Instant::now();
        let keeper = TimeKeeper::new(None);
        keeper.observe_doorflow_date(t(DAY), at(DAY, 100, mono).boot);
        let raw = at(DAY + 40 + 5, 105, mono); // 40 s fast
        let status = keeper.status(&raw);
        assert_eq!(status.doorflow_offset_s, Some(40.0));
        assert!(!status.behind_floor);
        assert!(keeper.set_synchronised(Some(false)));
        assert!(!keeper.set_synchronised(Some(false)));
        assert_eq!(keeper.status(&raw).synchronised, Some(false));
    }
}
