//! Supervision of one OSDP reader's link, as a pure state machine over monotonic milliseconds.
//!
//! LibOSDP decides whether a reader is online at the protocol level; this adds what an access
//! controller needs on top: a reader counts as online only after a run of good exchanges with
//! the secure channel up (when required), a silent reader is declared lost within
//! `SILENCE_MS` (LibOSDP alone takes 8 probes, about 8 s), the reason it is unusable is told
//! apart (no answer, key refused, port error), and a lost reader is retried every
//! `RETRY_MS` (LibOSDP on its own waits 300 s before trying an offline reader again).

use crate::reader::{OfflineReason, ReaderAlarm};

/// A reader that was online and has not answered for this long is lost. OSDP polls every
/// 50 ms and a reader must answer within 200 ms (v2.2 §5.7), so 2 s is ten missed polls.
pub const SILENCE_MS: u64 = 2_000;
/// How often a lost or refusing reader is tried again (a fresh ID/CAP/secure channel set-up).
pub const RETRY_MS: u64 = 3_000;
/// How long after start a reader may take to come online before it is reported offline.
pub const CONNECT_GRACE_MS: u64 = 10_000;
/// How long the secure channel may be down on an otherwise answering reader (it is re-keyed
/// after a key is installed, and re-established after a glitch) before the reader counts as lost.
pub const SECURE_GRACE_MS: u64 = 2_000;

/// What the port thread knows about one reader at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSample {
    pub now_ms: u64,
    /// LibOSDP has the reader in its online state.
    pub cp_online: bool,
    /// The secure channel is up with the reader's own key (not the install-mode key).
    pub secure: bool,
    /// Command/reply exchanges with this address so far (a counter that only grows).
    pub exchanges: u64,
    /// When bytes last came back from this address.
    pub answered_at_ms: Option<u64>,
    /// Since when commands to this address have gone unanswered (`None`: the last was answered).
    pub unanswered_since_ms: Option<u64>,
    /// The serial port is not open or has failed.
    pub port_error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkPolicy {
    /// Good exchanges in a row before the reader counts as online.
    pub online_after_polls: u32,
    /// Card reads and keys are only taken over a secure channel.
    pub secure_required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Since start, not yet online and still within the grace time.
    Connecting,
    Online,
    Offline(OfflineReason),
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Online => "online",
            LinkState::Offline(_) => "offline",
        }
    }
}

/// What the port thread must do after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkUpdate {
    /// A door event to raise.
    pub alarm: Option<ReaderAlarm>,
    /// The state changed (log it, publish it in `status`).
    pub changed: bool,
    /// Start the reader's connection afresh (LibOSDP disable + enable).
    pub restart: bool,
}

#[derive(Debug, Clone)]
pub struct LinkSupervisor {
    policy: LinkPolicy,
    state: LinkState,
    started_ms: u64,
    /// Exchange count when the current usable run began.
    run_start: Option<u64>,
    /// When the reader stopped being usable (or the start, before it first was).
    down_since_ms: Option<u64>,
    last_restart_ms: Option<u64>,
    /// The connection attempt under way: since when, and whether it started from scratch (at
    /// start or by a restart). Only such an attempt says something about the key: one that
    /// began with the old session still open also sees the stale replies of a reader coming
    /// back.
    attempt_start_ms: u64,
    attempt_fresh: bool,
    /// What the last fresh attempt that failed showed: no answer, or answers but no usable link.
    verdict: Option<OfflineReason>,
    /// An offline event was raised and no "restored" event yet.
    loss_reported: bool,
}

impl LinkSupervisor {
    pub fn new(policy: LinkPolicy, now_ms: u64) -> LinkSupervisor {
        LinkSupervisor {
            policy,
            state: LinkState::Connecting,
            started_ms: now_ms,
            run_start: None,
            down_since_ms: Some(now_ms),
            last_restart_ms: None,
            attempt_start_ms: now_ms,
            attempt_fresh: true,
            verdict: None,
            loss_reported: false,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Card reads and keys are taken only while this is true.
    pub fn is_online(&self) -> bool {
        self.state == LinkState::Online
    }

    pub fn observe(&mut self, s: &LinkSample) -> LinkUpdate {
        let silent = s.answered_at_ms.is_none()
            || s.unanswered_since_ms
                .is_some_and(|since| s.now_ms.saturating_sub(since) >= SILENCE_MS);
        let secure_ok = s.secure || !self.policy.secure_required;
        let usable = s.cp_online && secure_ok && !s.port_error && !silent;

        let next = if usable {
            self.down_since_ms = None;
            self.verdict = None;
            let run_start = *self.run_start.get_or_insert(s.exchanges);
            let run = s.exchanges.saturating_sub(run_start);
            if run >= u64::from(self.policy.online_after_polls) {
                LinkState::Online
            } else {
                self.state
            }
        } else {
            self.run_start = None;
            let down_since = match self.down_since_ms {
                Some(since) => since,
                None => {
                    // Just lost: silent, or answering without the secure channel it needs.
                    // What follows is not a fresh attempt until the next restart.
                    self.verdict = Some(if s.cp_online && !silent {
                        OfflineReason::KeyRefused
                    } else {
                        OfflineReason::NoAnswer
                    });
                    self.attempt_start_ms = s.now_ms;
                    self.attempt_fresh = false;
                    *self.down_since_ms.insert(s.now_ms)
                }
            };
            if self.restart_due(s) {
                self.conclude_attempt(s);
            }
            let reason = if s.port_error {
                OfflineReason::PortError
            } else {
                self.verdict.unwrap_or(OfflineReason::NoAnswer)
            };
            let down_for = s.now_ms.saturating_sub(down_since);
            match self.state {
                LinkState::Connecting if s.now_ms.saturating_sub(self.started_ms) < CONNECT_GRACE_MS => {
                    LinkState::Connecting
                }
                // A secure channel being set up again on an answering reader is not a loss yet.
                LinkState::Online if s.cp_online && !s.secure && !silent && down_for < SECURE_GRACE_MS => {
                    LinkState::Online
                }
                _ => LinkState::Offline(reason),
            }
        };

        let mut update = LinkUpdate {
            restart: !usable && self.last_restart_ms == Some(s.now_ms),
            ..LinkUpdate::default()
        };
        if next != self.state {
            update.changed = true;
            update.alarm = match next {
                LinkState::Offline(reason) => {
                    self.loss_reported = true;
                    Some(ReaderAlarm::Offline(reason))
                }
                LinkState::Online if self.loss_reported => {
                    self.loss_reported = false;
                    Some(ReaderAlarm::Online)
                }
                _ => None,
            };
            self.state = next;
        }
        update
    }

    /// Ends the attempt under way as a restart begins a fresh one. A fresh attempt that got
    /// answers yet no usable link means the reader refuses the key; one with no answers means
    /// nothing is there.
    fn conclude_attempt(&mut self, s: &LinkSample) {
        if self.attempt_fresh {
            let answered = s.answered_at_ms.is_some_and(|at| at >= self.attempt_start_ms);
            self.verdict = Some(if answered {
                OfflineReason::KeyRefused
            } else {
                OfflineReason::NoAnswer
            });
        }
        self.attempt_start_ms = s.now_ms;
        self.attempt_fresh = true;
        self.last_restart_ms = Some(s.now_ms);
    }

    /// Restart a reader LibOSDP has given up on (or that it runs without the required secure
    /// channel), at most every `RETRY_MS`, and never while a set-up may still be under way.
    fn restart_due(&self, s: &LinkSample) -> bool {
        let stuck = !s.cp_online || (self.policy.secure_required && !s.secure);
        let down_for = self
            .down_since_ms
            .map_or(0, |since| s.now_ms.saturating_sub(since));
        let since_restart = self
            .last_restart_ms
            .map_or(u64::MAX, |at| s.now_ms.saturating_sub(at));
        stuck && down_for >= RETRY_MS && since_restart >= RETRY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LinkPolicy = LinkPolicy {
        online_after_polls: 5,
        secure_required: true,
    };

    /// A reader simulated at 50 ms per exchange.
    struct Bus {
        now_ms: u64,
        exchanges: u64,
        answered_at_ms: Option<u64>,
        unanswered_since_ms: Option<u64>,
    }

    impl Bus {
        fn new() -> Bus {
            Bus {
                now_ms: 1_000,
                exchanges: 0,
                answered_at_ms: None,
                unanswered_since_ms: None,
            }
        }

        /// Advances `ms`, the reader answering (or not), and samples each 50 ms step.
        fn run(
            &mut self,
            link: &mut LinkSupervisor,
            ms: u64,
            answering: bool,
            cp_online: bool,
            secure: bool,
        ) -> Vec<LinkUpdate> {
            let mut updates = Vec::new();
            for _ in 0..ms / 50 {
                self.now_ms += 50;
                // One command per step; answered at once, or not at all.
                if answering {
                    self.exchanges += 1;
                    self.answered_at_ms = Some(self.now_ms);
                    self.unanswered_since_ms = None;
                } else {
                    self.unanswered_since_ms.get_or_insert(self.now_ms);
                }
                updates.push(link.observe(&LinkSample {
                    now_ms: self.now_ms,
                    cp_online,
                    secure,
                    exchanges: self.exchanges,
                    answered_at_ms: self.answered_at_ms,
                    unanswered_since_ms: self.unanswered_since_ms,
                    port_error: false,
                }));
            }
            updates
        }
    }

    fn alarms(updates: &[LinkUpdate]) -> Vec<ReaderAlarm> {
        updates.iter().filter_map(|u| u.alarm).collect()
    }

    #[test]
    fn online_only_after_a_run_of_good_exchanges() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        let updates = bus.run(&mut link, 200, true, true, true);
        assert_eq!(link.state(), LinkState::Connecting, "4 exchanges are not enough");
        assert!(alarms(&updates).is_empty());
        let updates = bus.run(&mut link, 100, true, true, true);
        assert_eq!(link.state(), LinkState::Online);
        assert!(alarms(&updates).is_empty(), "coming up at start is no alarm");
    }

    #[test]
    fn no_online_without_the_secure_channel_when_it_is_required() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        bus.run(&mut link, 2_000, true, true, false);
        assert_eq!(link.state(), LinkState::Connecting);
        let relaxed = LinkPolicy {
            secure_required: false,
            ..POLICY
        };
        let mut link = LinkSupervisor::new(relaxed, bus.now_ms);
        bus.run(&mut link, 500, true, true, false);
        assert_eq!(link.state(), LinkState::Online);
    }

    #[test]
    fn a_reader_that_never_answers_is_reported_after_the_grace_time() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        let updates = bus.run(&mut link, CONNECT_GRACE_MS - 50, false, false, false);
        assert!(alarms(&updates).is_empty());
        let updates = bus.run(&mut link, 50, false, false, false);
        assert_eq!(alarms(&updates), [ReaderAlarm::Offline(OfflineReason::NoAnswer)]);
        assert!(updates[0].changed, "the state change is reported with the alarm");
    }

    #[test]
    fn an_answering_reader_that_refuses_the_key_is_told_apart() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        // Answers (ID, CAP, challenge) but LibOSDP never gets it online.
        let updates = bus.run(&mut link, CONNECT_GRACE_MS + 100, true, false, false);
        assert_eq!(
            alarms(&updates),
            [ReaderAlarm::Offline(OfflineReason::KeyRefused)]
        );
    }

    #[test]
    fn silence_is_a_loss_within_two_seconds_and_recovery_is_reported() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        bus.run(&mut link, 500, true, true, true);
        assert!(link.is_online());
        // LibOSDP still says online (it is probing), but nothing answers: lost two seconds
        // after the first unanswered poll.
        let updates = bus.run(&mut link, SILENCE_MS, false, true, true);
        assert!(alarms(&updates).is_empty());
        let updates = bus.run(&mut link, 50, false, true, true);
        assert_eq!(alarms(&updates), [ReaderAlarm::Offline(OfflineReason::NoAnswer)]);
        assert!(!link.is_online());
        // Back: a run of good exchanges restores it, with a "restored" alarm.
        let updates = bus.run(&mut link, 500, true, true, true);
        assert_eq!(alarms(&updates), [ReaderAlarm::Online]);
    }

    #[test]
    fn a_pause_of_the_port_thread_itself_is_not_the_readers_silence() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        bus.run(&mut link, 500, true, true, true);
        // Nothing was sent for 3 s (the thread was not scheduled). The first poll after it has
        // just been written and its answer is not in yet: that is no silence.
        bus.now_ms += 3_000;
        let update = link.observe(&LinkSample {
            now_ms: bus.now_ms,
            cp_online: true,
            secure: true,
            exchanges: bus.exchanges,
            answered_at_ms: bus.answered_at_ms,
            unanswered_since_ms: Some(bus.now_ms),
            port_error: false,
        });
        assert_eq!(update.alarm, None);
        assert!(link.is_online());
        let updates = bus.run(&mut link, 50, true, true, true);
        assert!(alarms(&updates).is_empty());
    }

    #[test]
    fn a_brief_secure_channel_restart_is_not_a_loss() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        bus.run(&mut link, 500, true, true, true);
        let updates = bus.run(&mut link, SECURE_GRACE_MS - 100, true, true, false);
        assert!(alarms(&updates).is_empty());
        assert!(link.is_online());
        let updates = bus.run(&mut link, 200, true, true, false);
        assert_eq!(
            alarms(&updates),
            [ReaderAlarm::Offline(OfflineReason::KeyRefused)]
        );
    }

    #[test]
    fn a_lost_reader_is_retried_every_retry_interval() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        bus.run(&mut link, 500, true, true, true);
        let updates = bus.run(&mut link, 10_000, false, false, false);
        let restarts = updates.iter().filter(|u| u.restart).count();
        assert_eq!(restarts, 10_000 / RETRY_MS as usize);
        // Online readers are never restarted.
        let updates = bus.run(&mut link, 10_000, true, true, true);
        assert!(updates.iter().all(|u| !u.restart));
    }

    #[test]
    fn a_reader_coming_back_into_a_stale_session_is_not_taken_for_a_key_refusal() {
        let mut bus = Bus::new();
        let mut link = LinkSupervisor::new(POLICY, bus.now_ms);
        bus.run(&mut link, 500, true, true, true);
        // Powered off: LibOSDP keeps probing the old session, then gives up.
        let mut updates = bus.run(&mut link, 2_500, false, true, true);
        // Powered on: it answers the stale probes with errors; LibOSDP drops the session.
        updates.extend(bus.run(&mut link, 300, true, true, false));
        updates.extend(bus.run(&mut link, 2_000, false, false, false));
        // The restart sets the reader up afresh.
        updates.extend(bus.run(&mut link, 2_000, true, true, true));
        assert_eq!(
            alarms(&updates),
            [ReaderAlarm::Offline(OfflineReason::NoAnswer), ReaderAlarm::Online]
        );
    }

    #[test]
    fn a_port_error_is_its_own_reason() {
        let mut link = LinkSupervisor::new(POLICY, 0);
        let update = link.observe(&LinkSample {
            now_ms: CONNECT_GRACE_MS,
            cp_online: false,
            secure: false,
            exchanges: 0,
            answered_at_ms: None,
            unanswered_since_ms: None,
            port_error: true,
        });
        assert_eq!(update.alarm, Some(ReaderAlarm::Offline(OfflineReason::PortError)));
    }
}
