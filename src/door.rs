//! One door's behaviour as a pure state machine over monotonic nanoseconds: relay timing, channel
//! mode, software debounce of the contact and REX inputs, and the door alarms.
//!
//! The door task feeds it grants, raw input levels and ticks at `next_deadline()`, and applies
//! the returned `Effects` (relay level, events). No clocks or I/O here, so every timing rule is
//! tested exactly.

use crate::snapshot::ChannelState;

/// How the channel wants the door driven (from the snapshot's channel mode and lockdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorMode {
    Normal,
    /// Held released for everyone.
    Unlock,
    /// Held locked; REX only works when allowed.
    Lockdown {
        rex_allowed: bool,
    },
}

impl From<ChannelState> for DoorMode {
    /// Any lockdown holds the relay locked (cards are refused by `access::decide`; REX works
    /// only if the lockdown spares it); otherwise unlock mode holds it released.
    fn from(channel: ChannelState) -> DoorMode {
        if channel.cards_locked_down || channel.rex_locked_down {
            DoorMode::Lockdown {
                rex_allowed: !channel.rex_locked_down,
            }
        } else if channel.unlocked {
            DoorMode::Unlock
        } else {
            DoorMode::Normal
        }
    }
}

/// Door events with DoorFlow codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorEvent {
    /// 13: admitted by request-to-exit.
    AdmittedByRex,
    /// 30: REX pressed (also when ignored during a lockdown).
    RexPressed,
    /// 31: door closed again after an alarm.
    DoorNormal,
    /// 32: opened without a grant or REX.
    ForcedOpen,
    /// 33: open longer than `held_open_s`.
    HeldOpen,
    /// 90 (DoorFlow's tamper range): the door's input lines failed; its reader is deaf until
    /// they are requested again.
    LinesFault,
    /// 91: the input lines answer again.
    LinesRestored,
}

impl DoorEvent {
    pub fn code(self) -> u16 {
        match self {
            DoorEvent::AdmittedByRex => 13,
            DoorEvent::RexPressed => 30,
            DoorEvent::DoorNormal => 31,
            DoorEvent::ForcedOpen => 32,
            DoorEvent::HeldOpen => 33,
            DoorEvent::LinesFault => 90,
            DoorEvent::LinesRestored => 91,
        }
    }

    /// The reason word logged and sent with the event.
    pub fn reason(self) -> &'static str {
        match self {
            DoorEvent::AdmittedByRex => "request_to_exit",
            DoorEvent::RexPressed => "rex_pressed",
            DoorEvent::DoorNormal => "door_normal",
            DoorEvent::ForcedOpen => "forced_open",
            DoorEvent::HeldOpen => "held_open",
            DoorEvent::LinesFault => "reader_fault",
            DoorEvent::LinesRestored => "reader_restored",
        }
    }
}

/// What the caller must do after a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// New relay state (`true` = released) when it changed.
    pub relay: Option<bool>,
    pub events: Vec<DoorEvent>,
}

/// Timing and policy taken from a door's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorTiming {
    pub unlock_ns: u64,
    pub held_open_ns: u64,
    pub contact_debounce_ns: u64,
    pub rex_debounce_ns: u64,
    pub rex_in_lockdown: bool,
    pub fail_released: bool,
}

/// A level that only counts once it has held for the debounce time. Done in software, not by
/// kernel debounce, which on shared chips would also swallow Wiegand pulses.
#[derive(Debug, Clone, Copy)]
struct Debounced {
    stable: bool,
    pending: Option<(bool, u64)>,
    hold_ns: u64,
}

impl Debounced {
    fn new(level: bool, hold_ns: u64) -> Self {
        Debounced {
            stable: level,
            pending: None,
            hold_ns,
        }
    }

    fn raw(&mut self, level: bool, now: u64) {
        self.pending = if level == self.stable {
            None // bounced back before it settled
        } else {
            match self.pending {
                Some((pending, since)) if pending == level => Some((pending, since)),
                _ => Some((level, now)),
            }
        };
    }

    /// The new stable level if one settled by `now`.
    fn settle(&mut self, now: u64) -> Option<bool> {
        let (level, since) = self.pending?;
        if now.saturating_sub(since) >= self.hold_ns {
            self.stable = level;
            self.pending = None;
            return Some(level);
        }
        None
    }

    fn deadline(&self) -> Option<u64> {
        self.pending.map(|(_, since)| since + self.hold_ns)
    }
}

#[derive(Debug, Clone)]
pub struct DoorMachine {
    timing: DoorTiming,
    mode: DoorMode,
    released_until: Option<u64>,
    relay_released: bool,
    contact: Option<Debounced>,
    rex: Option<Debounced>,
    /// When the current opening started, and whether it was authorised.
    opened_at: Option<u64>,
    held_reported: bool,
    in_alarm: bool,
}

impl DoorMachine {
    /// The relay state a door starts in (locked) until a grant, REX or the channel's mode says
    /// otherwise; backends request the relay line holding it.
    pub const STARTS_RELEASED: bool = false;

    /// `contact_open` / `rex_pressed`: the inputs' levels at start, `None` when not wired.
    pub fn new(timing: DoorTiming, contact_open: Option<bool>, rex_pressed: Option<bool>) -> Self {
        DoorMachine {
            timing,
            mode: DoorMode::Normal,
            released_until: None,
            relay_released: Self::STARTS_RELEASED,
            contact: contact_open.map(|open| Debounced::new(open, timing.contact_debounce_ns)),
            rex: rex_pressed.map(|pressed| Debounced::new(pressed, timing.rex_debounce_ns)),
            // A door already open at start is not an alarm: we did not see it being forced.
            opened_at: None,
            held_reported: false,
            in_alarm: false,
        }
    }

    pub fn relay_released(&self) -> bool {
        self.relay_released
    }

    pub fn contact_open(&self) -> Option<bool> {
        self.contact.map(|c| c.stable)
    }

    pub fn mode(&self) -> DoorMode {
        self.mode
    }

    /// A granted swipe: release for the unlock time, extending a release already running.
    pub fn grant(&mut self, now: u64) -> Effects {
        self.release_for_unlock_time(now);
        self.step(now)
    }

    fn release_for_unlock_time(&mut self, now: u64) {
        let until = now.saturating_add(self.timing.unlock_ns);
        self.released_until = Some(self.released_until.map_or(until, |u| u.max(until)));
    }

    pub fn set_mode(&mut self, mode: DoorMode, now: u64) -> Effects {
        self.mode = mode;
        if matches!(mode, DoorMode::Lockdown { .. }) {
            self.released_until = None; // a lockdown ends any running release at once
        }
        self.step(now)
    }

    /// A raw level change on the contact (`true` = open) or REX (`true` = pressed) input.
    pub fn contact_level(&mut self, open: bool, now: u64) -> Effects {
        if let Some(contact) = &mut self.contact {
            contact.raw(open, now);
        }
        self.step(now)
    }

    pub fn rex_level(&mut self, pressed: bool, now: u64) -> Effects {
        if let Some(rex) = &mut self.rex {
            rex.raw(pressed, now);
        }
        self.step(now)
    }

    pub fn tick(&mut self, now: u64) -> Effects {
        self.step(now)
    }

    /// When `tick` must be called next, if anything is pending.
    pub fn next_deadline(&self) -> Option<u64> {
        let held = match (self.opened_at, self.held_reported, self.mode) {
            (_, _, DoorMode::Unlock) | (_, true, _) | (None, _, _) => None,
            (Some(opened), false, _) => Some(opened + self.timing.held_open_ns),
        };
        [
            self.released_until,
            held,
            self.contact.and_then(|c| c.deadline()),
            self.rex.and_then(|r| r.deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The relay level to leave behind when the agent stops (the configured fail state).
    pub fn fail_state(&self) -> bool {
        self.timing.fail_released
    }

    fn step(&mut self, now: u64) -> Effects {
        let mut events = Vec::new();
        if let Some(true) = self.rex.as_mut().and_then(|r| r.settle(now)) {
            let rex_allowed = match self.mode {
                DoorMode::Lockdown { rex_allowed } => rex_allowed || self.timing.rex_in_lockdown,
                _ => true,
            };
            events.push(DoorEvent::RexPressed);
            if rex_allowed {
                events.push(DoorEvent::AdmittedByRex);
                self.release_for_unlock_time(now);
            }
        }
        if self.released_until.is_some_and(|until| now >= until) {
            self.released_until = None;
        }
        let relay = match self.mode {
            DoorMode::Unlock => true,
            DoorMode::Lockdown { .. } => self.released_until.is_some(), // only a REX release
            DoorMode::Normal => self.released_until.is_some(),
        };
        // The relay changes before the contact is judged, so an opening in the same instant
        // as a grant counts as authorised.
        let relay_changed = relay != self.relay_released;
        self.relay_released = relay;

        if let Some(open) = self.contact.as_mut().and_then(|c| c.settle(now)) {
            if open {
                self.opened_at = Some(now);
                self.held_reported = false;
                if !self.relay_released {
                    events.push(DoorEvent::ForcedOpen);
                    self.in_alarm = true;
                }
            } else {
                self.opened_at = None;
                if self.in_alarm {
                    events.push(DoorEvent::DoorNormal);
                    self.in_alarm = false;
                }
            }
        }
        if let Some(opened) = self.opened_at {
            // Held-open does not apply while the channel holds the door released.
            if !self.held_reported
                && self.mode != DoorMode::Unlock
                && now >= opened + self.timing.held_open_ns
            {
                self.held_reported = true;
                self.in_alarm = true;
                events.push(DoorEvent::HeldOpen);
            }
        }
        Effects {
            relay: relay_changed.then_some(relay),
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn machine() -> DoorMachine {
        DoorMachine::new(
            DoorTiming {
                unlock_ns: 5 * S,
                held_open_ns: 30 * S,
                contact_debounce_ns: 20 * MS,
                rex_debounce_ns: 20 * MS,
                rex_in_lockdown: false,
                fail_released: false,
            },
            Some(false),
            Some(false),
        )
    }

    /// Runs ticks at every deadline up to `until`, collecting effects.
    fn run_until(door: &mut DoorMachine, until: u64) -> Vec<Effects> {
        let mut out = Vec::new();
        while let Some(deadline) = door.next_deadline().filter(|d| *d <= until) {
            out.push(door.tick(deadline));
        }
        out
    }

    fn events(effects: &[Effects]) -> Vec<DoorEvent> {
        effects.iter().flat_map(|e| e.events.clone()).collect()
    }

    #[test]
    fn grant_pulses_the_relay_for_the_unlock_time() {
        let mut door = machine();
        assert_eq!(door.grant(S).relay, Some(true));
        assert_eq!(door.next_deadline(), Some(6 * S));
        assert_eq!(door.tick(6 * S - 1).relay, None);
        assert_eq!(door.tick(6 * S).relay, Some(false));
        assert_eq!(door.next_deadline(), None);
    }

    #[test]
    fn a_new_grant_while_released_extends_it() {
        let mut door = machine();
        door.grant(S);
        assert_eq!(door.grant(4 * S).relay, None, "already released: no relay write");
        assert_eq!(door.tick(6 * S).relay, None);
        assert_eq!(door.tick(9 * S).relay, Some(false));
    }

    #[test]
    fn unlock_mode_holds_released_and_lockdown_holds_locked() {
        let mut door = machine();
        assert_eq!(door.set_mode(DoorMode::Unlock, S).relay, Some(true));
        assert!(run_until(&mut door, 100 * S).iter().all(|e| e.relay.is_none()));
        assert_eq!(
            door.set_mode(DoorMode::Lockdown { rex_allowed: false }, 101 * S)
                .relay,
            Some(false)
        );
        door.grant(102 * S); // decide() denies in lockdown; even so nothing may stay open
        door.set_mode(DoorMode::Lockdown { rex_allowed: false }, 102 * S);
        assert!(!door.relay_released());
    }

    #[test]
    fn lockdown_cuts_a_running_release() {
        let mut door = machine();
        door.grant(S);
        let effects = door.set_mode(DoorMode::Lockdown { rex_allowed: false }, 2 * S);
        assert_eq!(effects.relay, Some(false));
    }

    #[test]
    fn rex_releases_after_debounce_and_reports_30_and_13() {
        let mut door = machine();
        assert_eq!(door.rex_level(true, S), Effects::default());
        let effects = run_until(&mut door, S + 20 * MS);
        assert_eq!(effects[0].relay, Some(true));
        assert_eq!(
            events(&effects),
            [DoorEvent::RexPressed, DoorEvent::AdmittedByRex]
        );
        assert_eq!(door.next_deadline(), Some(S + 20 * MS + 5 * S));
    }

    #[test]
    fn rex_bounce_shorter_than_debounce_is_ignored() {
        let mut door = machine();
        door.rex_level(true, S);
        door.rex_level(false, S + 5 * MS);
        assert!(run_until(&mut door, 2 * S).is_empty());
        assert!(!door.relay_released());
    }

    #[test]
    fn rex_in_lockdown_is_ignored_unless_allowed() {
        let mut door = machine();
        door.set_mode(DoorMode::Lockdown { rex_allowed: false }, 0);
        door.rex_level(true, S);
        let effects = run_until(&mut door, 2 * S);
        assert_eq!(events(&effects), [DoorEvent::RexPressed]);
        assert!(!door.relay_released());

        let mut door = machine();
        door.set_mode(DoorMode::Lockdown { rex_allowed: true }, 0);
        door.rex_level(true, S);
        let effects = run_until(&mut door, 2 * S);
        assert_eq!(
            events(&effects),
            [DoorEvent::RexPressed, DoorEvent::AdmittedByRex]
        );
        assert!(door.relay_released());
    }

    #[test]
    fn opening_without_grant_is_forced_and_closing_reports_normal() {
        let mut door = machine();
        door.contact_level(true, S);
        let effects = run_until(&mut door, 2 * S);
        assert_eq!(events(&effects), [DoorEvent::ForcedOpen]);
        assert_eq!(door.contact_open(), Some(true));
        door.contact_level(false, 3 * S);
        let effects = run_until(&mut door, 4 * S);
        assert_eq!(events(&effects), [DoorEvent::DoorNormal]);
    }

    #[test]
    fn opening_during_a_grant_is_fine_until_held_too_long() {
        let mut door = machine();
        door.grant(S);
        door.contact_level(true, 2 * S);
        let effects = run_until(&mut door, 31 * S);
        assert!(events(&effects).is_empty(), "{effects:?}");
        let effects = run_until(&mut door, 32 * S + 20 * MS);
        assert_eq!(events(&effects), [DoorEvent::HeldOpen]);
        assert!(
            run_until(&mut door, 100 * S).is_empty(),
            "held-open is reported once"
        );
        door.contact_level(false, 101 * S);
        assert_eq!(events(&run_until(&mut door, 102 * S)), [DoorEvent::DoorNormal]);
    }

    #[test]
    fn normal_passage_raises_nothing() {
        let mut door = machine();
        door.grant(S);
        door.contact_level(true, 2 * S);
        door.contact_level(false, 4 * S);
        assert!(events(&run_until(&mut door, 60 * S)).is_empty());
    }

    #[test]
    fn contact_bounce_is_not_an_opening() {
        let mut door = machine();
        door.contact_level(true, S);
        door.contact_level(false, S + MS);
        door.contact_level(true, S + 2 * MS);
        door.contact_level(false, S + 3 * MS);
        assert!(events(&run_until(&mut door, 2 * S)).is_empty());
        assert_eq!(door.contact_open(), Some(false));
    }

    #[test]
    fn unlock_mode_opening_is_neither_forced_nor_held() {
        let mut door = machine();
        door.set_mode(DoorMode::Unlock, 0);
        door.contact_level(true, S);
        assert!(events(&run_until(&mut door, 600 * S)).is_empty());
    }

    #[test]
    fn unwired_inputs_are_ignored() {
        let mut door = DoorMachine::new(machine().timing, None, None);
        assert_eq!(door.contact_level(true, S), Effects::default());
        assert_eq!(door.rex_level(true, S), Effects::default());
        assert_eq!(door.next_deadline(), None);
        assert_eq!(door.contact_open(), None);
    }
}
