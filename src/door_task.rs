//! The swipe pipeline for one door: reader edges → Wiegand frame → `access::decide` → relay →
//! audit event. The relay is written before anything is logged, stored or sent; nothing here
//! waits for the sync, the uplink or a disk flush.
//!
//! Other reader kinds (OSDP) join through a `ReaderLink`: their card frames and keys enter the
//! same decoding and decision path, their link alarms become door events, and the reader's
//! grant/deny feedback is signalled once the relay has been written.

use crate::access::{decide, DoorPolicy, Reason};
use crate::audit::{new_event_id, AuditEvent};
use crate::clock::trusted::TimeKeeper;
use crate::config::DoorConfig;
use crate::credential::{mask, CardFormat, Presented};
use crate::door::{DoorEvent, DoorMachine, DoorMode, Effects};
use crate::hw::{monotonic_ns, DoorHardware, DoorInput, InputEvent};
use crate::mutex::lock;
use crate::reader::feedback::Outcome;
use crate::reader::{FeedbackSink, ReaderAlarm, ReaderInput, ReaderLink, ReaderStatus};
use crate::snapshot::{CredentialKind, SharedSnapshot};
use crate::supervisor::Heartbeat;
use crate::wiegand::{self, Edge, EdgeKind, FrameOutcome, PinEntry, WiegandDecoder, WiegandLine};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the channel mode is re-read from the snapshot (a sync may change it, and an
/// unlock's `relock_at` may pass).
const MODE_CHECK: Duration = Duration::from_millis(500);

/// One completed swipe, for latency measurement: when the frame ended and when the relay was
/// written (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwipeTiming {
    pub last_edge_ns: u64,
    pub frame_end_ns: u64,
    /// When the completed frame reached the decision (after timer wake-up).
    pub frame_seen_ns: u64,
    pub decided_ns: u64,
    pub relay_ns: Option<u64>,
    pub granted: bool,
}

/// Live state of one door as the door task last published it, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorState {
    pub relay_released: bool,
    /// `None` when no door contact is wired.
    pub contact_open: Option<bool>,
    /// The reader's link, kept up to date by its port thread (OSDP).
    pub reader: ReaderStatus,
    /// The door's GPIO input lines failed and are being requested again.
    pub inputs_failed: bool,
}

impl DoorState {
    /// A door at start: locked, contact closed (when wired), reader not yet heard from.
    pub fn new(door: &DoorConfig) -> DoorState {
        DoorState {
            relay_released: DoorMachine::STARTS_RELEASED,
            contact_open: door.contact.as_ref().map(|_| false),
            reader: door.reader.initial_status(true),
            inputs_failed: false,
        }
    }
}

pub struct DoorTask {
    name: String,
    policy: DoorPolicy,
    formats: Vec<CardFormat>,
    admit_via_api: bool,
    frame_gap_ns: u64,
    machine: DoorMachine,
    decoder: WiegandDecoder,
    pin: PinEntry,
    hardware: DoorHardware,
    snapshot: Arc<SharedSnapshot>,
    state: Arc<Mutex<DoorState>>,
    audit: mpsc::UnboundedSender<AuditEvent>,
    timings: Option<mpsc::UnboundedSender<SwipeTiming>>,
    heartbeat: Option<Heartbeat>,
    /// Wall time for rules and event times, never below DoorFlow's last `Date`.
    clock: Arc<TimeKeeper>,
    relay_failed: bool,
    /// Inputs and feedback of a non-GPIO reader (OSDP).
    reader_inputs: Option<mpsc::Receiver<ReaderInput>>,
    feedback: Option<Box<dyn FeedbackSink>>,
    /// The door's GPIO input lines failed and are being requested again.
    inputs_failed: bool,
}

impl DoorTask {
    pub fn new(
        config: &DoorConfig,
        hardware: DoorHardware,
        snapshot: Arc<SharedSnapshot>,
        state: Arc<Mutex<DoorState>>,
        audit: mpsc::UnboundedSender<AuditEvent>,
    ) -> DoorTask {
        // An OSDP door has no Wiegand lines; its decoder keeps the default gap and stays idle.
        let frame_gap_ns = config
            .reader
            .wiegand()
            .map_or(30_000_000, |w| w.frame_gap_ms.millis().as_nanos() as u64);
        let decoder = WiegandDecoder::new(wiegand::DecoderConfig {
            frame_gap_ns,
            ..Default::default()
        });
        DoorTask {
            name: config.name.clone(),
            policy: config.policy(),
            formats: config.reader.formats().to_vec(),
            admit_via_api: config.admit_via_api,
            frame_gap_ns,
            machine: DoorMachine::new(config.timing(), hardware.contact_open, hardware.rex_pressed),
            decoder,
            pin: PinEntry::default(),
            hardware,
            snapshot,
            state,
            audit,
            timings: None,
            heartbeat: None,
            clock: Arc::default(),
            relay_failed: false,
            reader_inputs: None,
            feedback: None,
            inputs_failed: false,
        }
    }

    /// Takes card reads, keys and alarms from a non-GPIO reader, and signals it on decisions.
    pub fn with_reader(mut self, link: ReaderLink) -> DoorTask {
        self.reader_inputs = Some(link.inputs);
        self.feedback = Some(link.feedback);
        self
    }

    #[cfg(any(test, feature = "testing"))]
    /// Reports every swipe's timing (benchmarks).
    pub fn with_timings(mut self, timings: mpsc::UnboundedSender<SwipeTiming>) -> DoorTask {
        self.timings = Some(timings);
        self
    }

    /// Reports liveness to the systemd watchdog on every pass of the loop.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> DoorTask {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Decides validity windows and shifts with the agent's trusted time (never earlier than
    /// DoorFlow's last `Date`), not the bare wall clock.
    pub fn with_clock(mut self, clock: Arc<TimeKeeper>) -> DoorTask {
        self.clock = clock;
        self
    }

    /// Runs until `stop` is cancelled, then leaves the relay in the configured fail state.
    pub async fn run(mut self, stop: CancellationToken) {
        // The door machine's starting state, written by the door itself whatever the line was
        // requested with: the fail state is only for stopping.
        self.drive_relay(Some(self.machine.relay_released()));
        self.apply_mode(monotonic_ns());
        self.publish_state();
        // The check doubles as the watchdog heartbeat, so it runs at least as often as that.
        let check_every = self
            .heartbeat
            .as_ref()
            .map_or(MODE_CHECK, |h| MODE_CHECK.min(h.period()));
        let mut mode_check = tokio::time::interval(check_every);
        mode_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sleep = self.next_deadline().map(sleep_until_monotonic);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                event = self.hardware.events.recv() => match event {
                    Some(event) => self.on_input(event),
                    None => {
                        tracing::error!(door = %self.name, "GPIO input stream ended; the reader is lost");
                        break;
                    }
                },
                input = next_reader_input(&mut self.reader_inputs) => match input {
                    Some(input) => self.on_reader_input(input),
                    None => {
                        tracing::error!(door = %self.name, "reader input stream ended; the reader is lost");
                        self.reader_inputs = None;
                    }
                },
                _ = async { if let Some(s) = sleep { s.await } else { std::future::pending().await } } => {
                    self.on_tick(monotonic_ns());
                }
                _ = mode_check.tick() => {
                    self.apply_mode(monotonic_ns());
                    if let Some(heartbeat) = &self.heartbeat {
                        heartbeat.beat();
                    }
                }
            }
            self.publish_state();
        }
        let fail_released = self.machine.fail_state();
        if let Err(error) = self.hardware.relay.set_released(fail_released) {
            tracing::error!(door = %self.name, %error, "could not leave the relay in its fail state");
        }
        lock(&self.state).relay_released = fail_released;
        tracing::info!(door = %self.name, released = fail_released, "door stopped in its fail state");
    }

    fn next_deadline(&self) -> Option<u64> {
        [
            self.decoder.deadline_ns(),
            self.machine.next_deadline(),
            self.pin.deadline_ns(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_input(&mut self, event: InputEvent) {
        let now = event.timestamp_ns;
        match event.input {
            DoorInput::D0 | DoorInput::D1 => {
                let edge = Edge {
                    line: if event.input == DoorInput::D0 {
                        WiegandLine::D0
                    } else {
                        WiegandLine::D1
                    },
                    kind: if event.active {
                        EdgeKind::Falling
                    } else {
                        EdgeKind::Rising
                    },
                    timestamp_ns: event.timestamp_ns,
                };
                // The clock read now, after the edge was stamped: a stamp ahead of it is not real.
                if let Some(outcome) = self.decoder.push(edge, monotonic_ns()) {
                    self.on_frame(outcome);
                }
            }
            DoorInput::Contact => {
                let effects = self.machine.contact_level(event.active, now);
                self.apply(effects);
            }
            DoorInput::Rex => {
                let effects = self.machine.rex_level(event.active, now);
                self.apply(effects);
            }
            DoorInput::EdgesLost => self.decoder.edges_lost(),
            DoorInput::LinesFault => self.on_inputs_fault(event.active),
        }
    }

    /// The backend lost the door's input lines (`failed`) or has them back: a door fault event
    /// and `status` say so; the backend requests the lines again by itself.
    fn on_inputs_fault(&mut self, failed: bool) {
        if failed == self.inputs_failed {
            return;
        }
        self.inputs_failed = failed;
        lock(&self.state).inputs_failed = failed;
        // The relay's line may have gone with the inputs' chip: writing its state again lets
        // the backend request it again (and drop a stale request meanwhile).
        self.drive_relay(Some(self.machine.relay_released()));
        let event = if failed {
            DoorEvent::LinesFault
        } else {
            DoorEvent::LinesRestored
        };
        self.emit_door_events(&[event]);
    }

    fn on_tick(&mut self, now: u64) {
        if let Some(outcome) = self.decoder.poll(now) {
            self.on_frame(outcome);
        }
        self.pin.poll(now);
        let effects = self.machine.tick(now);
        self.apply(effects);
    }

    fn on_frame(&mut self, outcome: FrameOutcome) {
        let frame = match outcome {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(
                    door = %self.name,
                    reason = %error.reason(),
                    discarded_edges = self.decoder.discarded_edges(),
                    "Wiegand frame rejected"
                );
                return;
            }
        };
        if let Some(key) = wiegand::decode_key(&frame.bits) {
            self.on_key(key, frame.last_edge_ns);
            return;
        }
        // Wiegand has no checksum: a frame that fits no format is taken as line noise (logged).
        self.on_card_bits(&frame.bits, frame.last_edge_ns);
    }

    fn on_key(&mut self, key: wiegand::Key, at_ns: u64) {
        if let Some(pin) = self.pin.push_key(key, at_ns) {
            match pin {
                Ok(presented) => self.on_presented(presented, at_ns),
                Err(error) => {
                    tracing::warn!(door = %self.name, reason = %error.reason(), "PIN entry rejected")
                }
            }
        }
    }

    /// Decodes a card frame with the door's formats and decides it; false when it fits none.
    fn on_card_bits(&mut self, bits: &wiegand::Bits, at_ns: u64) -> bool {
        match wiegand::decode_card(bits, &self.formats) {
            Ok(card) => {
                self.on_presented(Presented::Card(card), at_ns);
                true
            }
            Err(error) => {
                tracing::warn!(
                    door = %self.name,
                    reason = %error.reason(),
                    bits = bits.len(),
                    "card frame rejected"
                );
                false
            }
        }
    }

    fn on_reader_input(&mut self, input: ReaderInput) {
        match input {
            ReaderInput::Card { bits, at_ns } => {
                // An OSDP frame is checksummed: one that fits no format is a card the door does
                // not take, and the person at the reader is shown a denial.
                if !self.on_card_bits(&bits, at_ns) {
                    self.signal(Outcome::Denied);
                }
            }
            ReaderInput::Keys { keys, at_ns } => {
                for key in keys {
                    self.on_key(key, at_ns);
                }
            }
            ReaderInput::Alarm(alarm) => self.emit_reader_alarm(alarm),
        }
    }

    fn signal(&mut self, outcome: Outcome) {
        if let Some(feedback) = &mut self.feedback {
            feedback.signal(outcome);
        }
    }

    fn on_presented(&mut self, presented: Presented, last_edge_ns: u64) {
        let frame_seen_ns = monotonic_ns();
        let snapshot = self.snapshot.current();
        let decision = decide(&snapshot, &self.policy, &presented, self.clock.rules_time());
        let decided_ns = monotonic_ns();
        let mut relay_ns = None;
        if decision.granted {
            let effects = self.machine.grant(decided_ns);
            relay_ns = self.drive_relay(effects.relay);
            self.emit_door_events(&effects.events);
        }
        // Everything below happens after the relay has been driven.
        self.signal(if decision.granted {
            Outcome::Granted
        } else {
            Outcome::Denied
        });
        if let Some(timings) = &self.timings {
            let _ = timings.send(SwipeTiming {
                last_edge_ns,
                frame_end_ns: last_edge_ns + self.frame_gap_ns,
                frame_seen_ns,
                decided_ns,
                relay_ns,
                granted: decision.granted,
            });
        }
        if let (Reason::WrongFacilityCode, Presented::Card(card)) = (decision.reason, &presented) {
            // Facility codes are per site, not per person: naming it helps set `facility_codes`.
            tracing::warn!(
                door = %self.name,
                facility = card.facility,
                format = %card.format,
                "card from a facility code this door does not list in facility_codes"
            );
        }
        let event = AuditEvent {
            id: new_event_id(),
            event_code: decision.event_code(),
            reason: decision.reason.as_str().to_string(),
            door: self.name.clone(),
            channel_id: self.policy.channel_id,
            person_id: decision.person_id,
            // PINs are hidden entirely; cards keep two digits to tell swipes apart.
            credential: Some(match decision.kind {
                CredentialKind::Pin => mask(""),
                _ => mask(&decision.value),
            }),
            created_at: self.clock.rules_time(),
            admit: decision.granted && self.admit_via_api && decision.person_id.is_some(),
        };
        self.send_audit(event);
    }

    /// Writes the relay; returns when it was written. A failed write is logged loudly and the
    /// door keeps working on the next change.
    fn drive_relay(&mut self, relay: Option<bool>) -> Option<u64> {
        let released = relay?;
        match self.hardware.relay.set_released(released) {
            Ok(()) => {
                self.relay_failed = false;
                Some(monotonic_ns())
            }
            Err(error) => {
                if !self.relay_failed {
                    tracing::error!(door = %self.name, %error, released, "relay write failed");
                }
                self.relay_failed = true;
                None
            }
        }
    }

    fn apply(&mut self, effects: Effects) {
        self.drive_relay(effects.relay);
        self.emit_door_events(&effects.events);
    }

    fn emit_door_events(&self, events: &[DoorEvent]) {
        for event in events {
            self.send_door_event(event.code(), event.reason());
        }
    }

    /// A door event without a person or credential (alarms, REX, reader conditions).
    fn send_door_event(&self, event_code: u16, reason: &str) {
        self.send_audit(AuditEvent {
            id: new_event_id(),
            event_code,
            reason: reason.into(),
            door: self.name.clone(),
            channel_id: self.policy.channel_id,
            person_id: None,
            credential: None,
            created_at: self.clock.rules_time(),
            admit: false,
        });
    }

    fn emit_reader_alarm(&self, alarm: ReaderAlarm) {
        self.send_door_event(alarm.code(), alarm.reason());
    }

    fn send_audit(&self, event: AuditEvent) {
        if let Err(lost) = self.audit.send(event) {
            // Only at shutdown: the writer has stopped. Keep the record in the journal at least.
            lost.0.log();
        }
    }

    fn apply_mode(&mut self, now: u64) {
        let mode = DoorMode::from(
            self.snapshot
                .current()
                .channel_state(self.policy.channel_id, self.clock.rules_time()),
        );
        if mode != self.machine.mode() {
            tracing::info!(door = %self.name, ?mode, "door mode changed");
            let effects = self.machine.set_mode(mode, now);
            self.apply(effects);
        }
    }

    fn publish_state(&self) {
        let mut state = lock(&self.state);
        state.relay_released = self.machine.relay_released();
        state.contact_open = self.machine.contact_open();
    }
}

/// The next input of a door's non-GPIO reader; never resolves for a door without one.
async fn next_reader_input(inputs: &mut Option<mpsc::Receiver<ReaderInput>>) -> Option<ReaderInput> {
    match inputs {
        Some(inputs) => inputs.recv().await,
        None => std::future::pending().await,
    }
}

fn sleep_until_monotonic(deadline_ns: u64) -> tokio::time::Sleep {
    let wait = deadline_ns.saturating_sub(monotonic_ns());
    tokio::time::sleep(Duration::from_nanos(wait))
}
