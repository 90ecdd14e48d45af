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
use crate::config::{Config, DoorConfig, WiegandReaderConfig};
use crate::credential::{mask, Presented};
use crate::door::{DoorEvent, DoorMachine, DoorMode, Effects, RepeatedReads};
use crate::hw::timer::MonotonicTimer;
use crate::hw::{monotonic_ns, DoorHardware, DoorInput, FeedbackPlayer, InputEvent};
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

/// One completed swipe, for latency measurement: when the frame started and ended and when the
/// relay was written (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwipeTiming {
    /// The frame's first edge: the card reached the reader.
    pub first_edge_ns: u64,
    pub last_edge_ns: u64,
    /// The last edge plus the silence that ended the frame (learned or `frame_gap_ms`).
    pub frame_end_ns: u64,
    /// When the completed frame reached the decision (after timer wake-up).
    pub frame_seen_ns: u64,
    pub decided_ns: u64,
    pub relay_ns: Option<u64>,
    pub granted: bool,
    /// A repeated read folded into an earlier grant.
    pub repeat: bool,
}

/// Where the frame that completed a presentation lay in time (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Copy, Default)]
struct FrameSpan {
    first_edge_ns: u64,
    last_edge_ns: u64,
    end_ns: u64,
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
    formats: wiegand::CardFormats,
    admit_via_api: bool,
    machine: DoorMachine,
    /// Reads of the credential that released the door, folded into its grant's event.
    repeats: RepeatedReads<(CredentialKind, String), AuditEvent>,
    /// The frame behind the presentation being decided.
    frame: FrameSpan,
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
    /// A Wiegand reader's LED and beeper lines, when wired.
    feedback_lines: Option<FeedbackPlayer>,
    /// The reader is Wiegand (its status is this task's to publish).
    wiegand: bool,
    rejected_frames: u64,
    last_rejected: Option<&'static str>,
    /// The door's GPIO input lines failed and are being requested again.
    inputs_failed: bool,
}

impl DoorTask {
    /// The task for door `index` of `config`.
    pub fn new(
        config: &Config,
        index: usize,
        mut hardware: DoorHardware,
        snapshot: Arc<SharedSnapshot>,
        state: Arc<Mutex<DoorState>>,
        audit: mpsc::UnboundedSender<AuditEvent>,
    ) -> DoorTask {
        let formats = config.card_formats_for(&config.doors[index]);
        let config = &config.doors[index];
        // An OSDP door has no Wiegand lines; its decoder keeps the defaults and stays idle.
        let wiegand = config.reader.wiegand();
        let decoder = wiegand.map_or_else(Default::default, WiegandReaderConfig::decoder);
        let feedback_lines = FeedbackPlayer::new(
            &config.name,
            std::mem::take(&mut hardware.feedback),
            wiegand.map(|w| w.feedback).unwrap_or_default(),
        );
        let timing = config.timing();
        DoorTask {
            name: config.name.clone(),
            policy: config.policy(),
            formats,
            admit_via_api: config.admit_via_api,
            machine: DoorMachine::new(timing, hardware.contact_open, hardware.rex_pressed),
            repeats: RepeatedReads::new(&timing),
            frame: FrameSpan::default(),
            decoder: WiegandDecoder::new(decoder),
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
            feedback_lines,
            wiegand: wiegand.is_some(),
            rejected_frames: 0,
            last_rejected: None,
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
        // Created here, on the runtime that runs the door: its wake-ups come from this thread.
        let mut timer = MonotonicTimer::new();
        loop {
            let deadline = self.next_deadline();
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
                _ = async {
                    match deadline {
                        Some(deadline) => timer.sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {
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
        if let Some(lines) = &mut self.feedback_lines {
            lines.idle();
        }
        if let Some(record) = self.repeats.finish() {
            self.send_update(record);
        }
        tracing::info!(door = %self.name, released = fail_released, "door stopped in its fail state");
    }

    fn next_deadline(&self) -> Option<u64> {
        [
            self.decoder.deadline_ns(),
            self.machine.next_deadline(),
            self.pin.deadline_ns(),
            self.repeats.deadline_ns(),
            self.feedback_lines.as_ref().and_then(FeedbackPlayer::deadline_ns),
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
                let (frame_end_ns, splits) = (self.decoder.frame_end_ns(), self.decoder.splits());
                // The clock read now, after the edge was stamped: a stamp ahead of it is not real.
                if let Some(outcome) = self.decoder.push(edge, monotonic_ns()) {
                    self.on_frame(outcome, frame_end_ns);
                }
                if self.decoder.splits() > splits {
                    tracing::warn!(
                        door = %self.name,
                        frame_end_ms = self.decoder.frame_end_ns() as f64 / 1e6,
                        "the reader paused inside a frame for longer than its learned frame end; \
                         waiting longer from now on"
                    );
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
        let frame_end_ns = self.decoder.frame_end_ns();
        if let Some(outcome) = self.decoder.poll(now) {
            self.on_frame(outcome, frame_end_ns);
        }
        self.pin.poll(now);
        let effects = self.machine.tick(now);
        self.apply(effects);
        if let Some(record) = self.repeats.poll(now) {
            self.send_update(record);
        }
        if let Some(lines) = &mut self.feedback_lines {
            lines.poll(now);
        }
    }

    /// A completed frame; `frame_end_ns`: the silence that ended it.
    fn on_frame(&mut self, outcome: FrameOutcome, frame_end_ns: u64) {
        let frame = match outcome {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(
                    door = %self.name,
                    reason = %error.reason(),
                    discarded_edges = self.decoder.discarded_edges(),
                    "Wiegand frame rejected"
                );
                self.rejected(error.reason());
                return;
            }
        };
        self.frame = FrameSpan {
            first_edge_ns: frame.first_edge_ns,
            last_edge_ns: frame.last_edge_ns,
            end_ns: frame.last_edge_ns + frame_end_ns,
        };
        if let Some(key) = wiegand::decode_key(&frame.bits) {
            self.on_key(key, frame.last_edge_ns);
            return;
        }
        // Wiegand has no checksum: a frame that fits no format is taken as line noise (logged).
        if let Err(reason) = self.on_card_bits(&frame.bits) {
            self.rejected(reason);
        }
    }

    fn on_key(&mut self, key: wiegand::Key, at_ns: u64) {
        if let Some(pin) = self.pin.push_key(key, at_ns) {
            match pin {
                Ok(presented) => self.on_presented(presented),
                Err(error) => {
                    tracing::warn!(door = %self.name, reason = %error.reason(), "PIN entry rejected")
                }
            }
        }
    }

    /// Decodes a card frame with the door's formats and decides it; why not when it fits none.
    fn on_card_bits(&mut self, bits: &wiegand::Bits) -> Result<(), &'static str> {
        match wiegand::decode_card(bits, &self.formats) {
            Ok(card) => {
                self.on_presented(Presented::Card(card));
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    door = %self.name,
                    reason = %error.reason(),
                    bits = bits.len(),
                    "card frame rejected: {error}"
                );
                Err(error.reason())
            }
        }
    }

    /// Counts a Wiegand frame refused (for `status`).
    fn rejected(&mut self, reason: &'static str) {
        self.rejected_frames += 1;
        self.last_rejected = Some(reason);
    }

    fn on_reader_input(&mut self, input: ReaderInput) {
        if let ReaderInput::Card { at_ns, .. } | ReaderInput::Keys { at_ns, .. } = &input {
            self.frame = FrameSpan {
                first_edge_ns: *at_ns,
                last_edge_ns: *at_ns,
                end_ns: *at_ns,
            };
        }
        match input {
            ReaderInput::Card { bits, .. } => {
                // An OSDP frame is checksummed: one that fits no format is a card the door does
                // not take, and the person at the reader is shown a denial.
                if self.on_card_bits(&bits).is_err() {
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
        if let Some(lines) = &mut self.feedback_lines {
            lines.signal(outcome, monotonic_ns());
        }
    }

    fn on_presented(&mut self, presented: Presented) {
        let frame_seen_ns = monotonic_ns();
        let snapshot = self.snapshot.current();
        let rules_now = self.clock.rules_time();
        let decision = decide(&snapshot, &self.policy, &presented, rules_now);
        let decided_ns = monotonic_ns();
        let credential = (decision.kind, decision.value.clone());
        let released = self.machine.relay_released();
        // A repeat is counted on the grant's event (in memory: sent when the reads stop).
        let repeat = decision.granted
            && match self.repeats.repeat(&credential, decided_ns, released) {
                Some(record) => {
                    record.repeats += 1;
                    record.updated_at = Some(rules_now);
                    true
                }
                None => false,
            };
        let mut relay_ns = None;
        if decision.granted {
            let effects = self.machine.grant(decided_ns);
            relay_ns = self.drive_relay(effects.relay);
            self.emit_door_events(&effects.events);
        }
        // Everything below happens after the relay has been driven.
        self.report_timing(frame_seen_ns, decided_ns, relay_ns, decision.granted, repeat);
        if repeat {
            // No new event, no admit, and the grant's feedback is left to play out.
            return;
        }
        self.signal(if decision.granted {
            Outcome::Granted
        } else {
            Outcome::Denied
        });
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
            repeats: 0,
            updated_at: None,
        };
        if decision.granted {
            let record = AuditEvent {
                admit: false,
                ..event.clone()
            };
            if let Some(ended) = self.repeats.start(credential, decided_ns, record) {
                self.send_update(ended);
            }
        }
        self.send_audit(event);
    }

    /// The event of a grant whose credential kept being read, sent again with the count (only
    /// when there were repeats).
    fn send_update(&self, record: AuditEvent) {
        if record.repeats > 0 {
            self.send_audit(record);
        }
    }

    fn report_timing(
        &self,
        frame_seen_ns: u64,
        decided_ns: u64,
        relay_ns: Option<u64>,
        granted: bool,
        repeat: bool,
    ) {
        if let Some(timings) = &self.timings {
            let _ = timings.send(SwipeTiming {
                first_edge_ns: self.frame.first_edge_ns,
                last_edge_ns: self.frame.last_edge_ns,
                frame_end_ns: self.frame.end_ns,
                frame_seen_ns,
                decided_ns,
                relay_ns,
                granted,
                repeat,
            });
        }
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
            repeats: 0,
            updated_at: None,
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
        if self.wiegand {
            let reader = &mut state.reader;
            reader.frame_end_us = Some(self.decoder.frame_end_ns() / 1_000);
            reader.rejected_frames = Some(self.rejected_frames);
            if reader.last_rejected.as_deref() != self.last_rejected {
                reader.last_rejected = self.last_rejected.map(String::from);
            }
        }
    }
}

/// The door path's own thread: one current-thread tokio runtime that runs every door task (and,
/// with the mock backend, the doors' simulated readers), so sync decoding and uplink work on the
/// agent's shared workers never hold up a frame's end or a relay write. `agent::serve` starts it
/// before the doors and stops it after they have stopped; the tasks on it are spawned through
/// the agent's `TaskTracker` and watch its `CancellationToken` like every other task.
pub struct DoorThread {
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DoorThread {
    pub fn start() -> std::io::Result<DoorThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("doors".into()).spawn(move || {
            match raise_priority() {
                Ok(()) => tracing::info!(
                    priority = DOOR_THREAD_PRIORITY,
                    "door tasks run on their own thread at real-time priority (SCHED_FIFO)"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    "door tasks run on their own thread at normal priority: real-time priority \
                     was refused (give the service LimitRTPRIO=10 or CAP_SYS_NICE); on a busy \
                     board a frame's end may be noticed late"
                ),
            }
            runtime.block_on(async {
                let _ = stopped.await;
            });
            // Dropping the runtime drops what is still on it (the doors have stopped by then).
        })?;
        Ok(DoorThread {
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where door tasks are spawned (`TaskTracker::spawn_on`); enter it to start a backend's
    /// per-door tasks there.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Ends the thread and waits for it (blocking: call from `spawn_blocking` in async code).
    /// Tasks still on it are dropped.
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for DoorThread {
    /// A thread not stopped explicitly ends on its own (not waited for).
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// The doors thread's SCHED_FIFO priority: above every ordinary thread (the sync's decoding, the
/// uplink, other processes), so a frame's end is noticed when it comes; low among real-time
/// ones, so kernel threads that run at real-time priority keep theirs. The thread sleeps between
/// edges and spends microseconds per decision; the kernel's real-time throttling still leaves
/// the rest of the system 5 % of each second should it ever spin.
pub const DOOR_THREAD_PRIORITY: i32 = 10;

/// Asks for `DOOR_THREAD_PRIORITY` under SCHED_FIFO for the calling thread.
fn raise_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: DOOR_THREAD_PRIORITY,
        };
        // SAFETY: pthread_self() is the calling thread; `param` is a valid sched_param.
        let refused = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        if refused != 0 {
            return Err(std::io::Error::from_raw_os_error(refused));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Err(std::io::ErrorKind::Unsupported.into())
}

/// The next input of a door's non-GPIO reader; never resolves for a door without one.
async fn next_reader_input(inputs: &mut Option<mpsc::Receiver<ReaderInput>>) -> Option<ReaderInput> {
    match inputs {
        Some(inputs) => inputs.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::task::TaskTracker;

    /// Tasks spawned through the tracker onto the door thread run there; stopping the thread
    /// drops what is left on it, and the tracker sees those tasks end.
    #[test]
    fn door_tasks_run_on_the_door_thread_and_end_with_it() {
        let doors = DoorThread::start().unwrap();
        let tracker = TaskTracker::new();
        let (names, name) = std::sync::mpsc::channel();
        tracker.spawn_on(
            async move {
                let _ = names.send(std::thread::current().name().map(String::from));
            },
            doors.handle(),
        );
        let ran_on = name.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(ran_on.as_deref(), Some("doors"));
        tracker.spawn_on(std::future::pending::<()>(), doors.handle());
        tracker.close();
        doors.stop();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), tracker.wait())
                .await
                .expect("the dropped task counts as ended");
        });
    }
}
