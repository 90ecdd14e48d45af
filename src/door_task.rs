//! The swipe pipeline for one door: reader edges → Wiegand frame → `access::decide` → relay →
//! audit event. The relay is written before anything is logged, stored or sent; nothing here
//! waits for the sync, the uplink or a disk flush.

use crate::access::{decide, DoorPolicy};
use crate::audit::{new_event_id, AuditEvent};
use crate::config::DoorConfig;
use crate::credential::{mask, CardFormat, Presented};
use crate::door::{DoorEvent, DoorMachine, DoorMode, Effects};
use crate::hw::wiegand::{self, Edge, EdgeKind, FrameOutcome, PinEntry, WiegandDecoder, WiegandLine};
use crate::hw::{monotonic_ns, DoorHardware, DoorInput, InputEvent};
use crate::mutex::lock;
use crate::snapshot::{CredentialKind, SharedSnapshot};
use crate::supervisor::Heartbeat;
use jiff::Timestamp;
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
    relay_failed: bool,
}

impl DoorTask {
    pub fn new(
        config: &DoorConfig,
        hardware: DoorHardware,
        snapshot: Arc<SharedSnapshot>,
        state: Arc<Mutex<DoorState>>,
        audit: mpsc::UnboundedSender<AuditEvent>,
    ) -> DoorTask {
        let frame_gap_ns = config.reader.frame_gap_ms.millis().as_nanos() as u64;
        let decoder = WiegandDecoder::new(wiegand::DecoderConfig {
            frame_gap_ns,
            ..Default::default()
        });
        DoorTask {
            name: config.name.clone(),
            policy: config.policy(),
            formats: config.reader.formats.clone(),
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
            relay_failed: false,
        }
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

    /// Runs until `stop` is cancelled, then leaves the relay in the configured fail state.
    pub async fn run(mut self, stop: CancellationToken) {
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
                if let Some(outcome) = self.decoder.push(edge) {
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
        }
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
                tracing::warn!(door = %self.name, reason = error.reason(), "Wiegand frame rejected (noise)");
                return;
            }
        };
        if let Some(key) = wiegand::decode_key(&frame.bits) {
            if let Some(pin) = self.pin.push_key(key, frame.last_edge_ns) {
                match pin {
                    Ok(presented) => self.on_presented(presented, frame.last_edge_ns),
                    Err(error) => {
                        tracing::warn!(door = %self.name, reason = error.reason(), "PIN entry rejected")
                    }
                }
            }
            return;
        }
        match wiegand::decode_card(&frame.bits, &self.formats) {
            Ok(card) => self.on_presented(Presented::Card(card), frame.last_edge_ns),
            Err(error) => tracing::warn!(
                door = %self.name,
                reason = error.reason(),
                bits = frame.bits.len(),
                "card frame rejected"
            ),
        }
    }

    fn on_presented(&mut self, presented: Presented, last_edge_ns: u64) {
        let frame_seen_ns = monotonic_ns();
        let snapshot = self.snapshot.current();
        let decision = decide(&snapshot, &self.policy, &presented, Timestamp::now());
        let decided_ns = monotonic_ns();
        let mut relay_ns = None;
        if decision.granted {
            let effects = self.machine.grant(decided_ns);
            relay_ns = self.drive_relay(effects.relay);
            self.emit_door_events(&effects.events);
        }
        // Everything below happens after the relay has been driven.
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
            created_at: Timestamp::now(),
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
            self.send_audit(AuditEvent {
                id: new_event_id(),
                event_code: event.code(),
                reason: event.reason().into(),
                door: self.name.clone(),
                channel_id: self.policy.channel_id,
                person_id: None,
                credential: None,
                created_at: Timestamp::now(),
                admit: false,
            });
        }
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
                .channel_state(self.policy.channel_id, Timestamp::now()),
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

fn sleep_until_monotonic(deadline_ns: u64) -> tokio::time::Sleep {
    let wait = deadline_ns.saturating_sub(monotonic_ns());
    tokio::time::sleep(Duration::from_nanos(wait))
}
