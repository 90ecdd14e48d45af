//! OSDP v2.2 readers (IEC 60839-11-5): the agent is the control panel (CP) of one bus per serial
//! port, with one or more readers (PDs) on it by address.
//!
//! Each port has its own thread, never a tokio worker: it refreshes LibOSDP every few ms, turns
//! card reads and key presses into `ReaderInput`s for the door tasks, plays grant/deny feedback
//! on the readers' LEDs and buzzers, supervises each link (`link`) and keeps the readers' keys
//! (`keys`). A door task never waits for it: inputs and feedback cross on channels.

pub mod cp;
/// An emulated reader for the demo (LibOSDP in the PD role on a pseudo-terminal).
#[cfg(feature = "demo")]
pub mod emulator;
pub mod keys;
pub mod link;
#[cfg(any(test, feature = "demo"))]
pub mod pty;
pub mod serial;
pub mod translate;
pub mod tty;

use crate::config::{Config, OsdpReaderConfig, ReaderConfig};
use crate::door_task::DoorState;
use crate::hw::monotonic_ns;
use crate::mutex::lock;
use crate::reader::feedback::{Outcome, ReaderFeedback};
use crate::reader::{FeedbackSink, OfflineReason, ReaderAlarm, ReaderInput, ReaderLink, ReaderStatus};
use cp::{ControlPanel, CpEvent, PdSetup};
use jiff::Timestamp;
use keys::ReaderKey;
use libosdp::OsdpCommand;
use link::{LinkPolicy, LinkSample, LinkState, LinkSupervisor};
use serial::{BusWatch, SerialChannel};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// Pause between LibOSDP refreshes. LibOSDP needs one at least every 50 ms; 5 ms keeps a card
/// read's way from the serial port to the door task short.
const REFRESH_EVERY: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum OsdpStartError {
    #[error("door {door}: {source}")]
    Key {
        door: String,
        #[source]
        source: keys::KeyError,
    },
    #[error("OSDP port {port}: {reason}")]
    Port { port: String, reason: String },
}

/// The running OSDP buses: one thread per serial port.
pub struct OsdpReaders {
    links: HashMap<usize, ReaderLink>,
    ports: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl OsdpReaders {
    /// The link for door `index` (once), to hand to its door task.
    pub fn take_link(&mut self, index: usize) -> Option<ReaderLink> {
        self.links.remove(&index)
    }

    /// Stops every port thread and waits for it; the ports are closed when this returns.
    pub fn stop(self) {
        for (stop, _) in &self.ports {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, thread) in self.ports {
            let _ = thread.join();
        }
    }
}

/// Where generated reader keys are kept: `osdp-keys` beside the store directory.
pub fn key_dir(config: &Config) -> PathBuf {
    config
        .store
        .path
        .parent()
        .unwrap_or(Path::new("/var/lib/doorflow-agent"))
        .join("osdp-keys")
}

/// Starts a CP thread for every serial port named by an OSDP reader. Fails when a reader's
/// key cannot be read or created (the agent must not run a door on a key it cannot keep). A
/// port that cannot be opened is not fatal: the reader shows as offline and the port is
/// retried, as for a USB adapter plugged in later.
pub fn start(config: &Config, doors: &[Arc<Mutex<DoorState>>]) -> Result<OsdpReaders, OsdpStartError> {
    let mut buses: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for (index, door) in config.doors.iter().enumerate() {
        if let ReaderConfig::Osdp(reader) = &door.reader {
            buses.entry(reader.port.clone()).or_default().push(index);
        }
    }
    let mut readers = OsdpReaders {
        links: HashMap::new(),
        ports: Vec::new(),
    };
    for (bus_index, (port, door_indices)) in buses.into_iter().enumerate() {
        let (feedback_tx, feedback_rx) = std_mpsc::channel();
        let mut slots = Vec::new();
        for (pd_index, &door_index) in door_indices.iter().enumerate() {
            let door = &config.doors[door_index];
            let ReaderConfig::Osdp(reader) = &door.reader else {
                continue;
            };
            let key = if reader.secure_channel {
                Some(
                    ReaderKey::load(
                        reader.key_file.as_ref(),
                        &key_dir(config),
                        &door.name,
                        reader.install_mode,
                    )
                    .map_err(|source| OsdpStartError::Key {
                        door: door.name.clone(),
                        source,
                    })?,
                )
            } else {
                tracing::warn!(door = %door.name, "OSDP reader without secure channel: card data crosses the bus in plain text");
                None
            };
            let (inputs_tx, inputs_rx) = mpsc::channel(crate::reader::INPUT_BUFFER);
            readers.links.insert(
                door_index,
                ReaderLink {
                    inputs: inputs_rx,
                    feedback: Box::new(OsdpFeedback {
                        index: pd_index,
                        requests: feedback_tx.clone(),
                    }),
                },
            );
            slots.push(ReaderSlot::new(
                door.name.clone(),
                reader,
                key,
                inputs_tx,
                Arc::clone(&doors[door_index]),
            ));
        }
        let baud = slots.first().map_or(9600, |s| s.baud);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let bus = Bus {
            port: port.clone(),
            // LibOSDP wants a non-zero channel id, unique per bus.
            channel_id: bus_index as i32 + 1,
            baud,
            slots,
            feedback: feedback_rx,
            stop: Arc::clone(&stop),
        };
        let name = format!("osdp-{}", port.file_name().unwrap_or_default().to_string_lossy());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || bus.run(ready_tx))
            .map_err(|e| OsdpStartError::Port {
                port: port.display().to_string(),
                reason: format!("cannot start its thread: {e}"),
            })?;
        let outcome = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("its thread ended during set-up".to_string()));
        if let Err(reason) = outcome {
            let _ = thread.join();
            readers.stop();
            return Err(OsdpStartError::Port {
                port: port.display().to_string(),
                reason,
            });
        }
        readers.ports.push((stop, thread));
    }
    Ok(readers)
}

/// Feedback requests from a door task to its reader's port thread.
struct OsdpFeedback {
    index: usize,
    requests: std_mpsc::Sender<(usize, Outcome)>,
}

impl FeedbackSink for OsdpFeedback {
    fn signal(&mut self, outcome: Outcome) {
        // Only fails once the port thread has stopped (shutdown): nothing left to light.
        let _ = self.requests.send((self.index, outcome));
    }
}

/// One reader on a bus, as its port thread keeps it.
struct ReaderSlot {
    door: String,
    address: u8,
    baud: u32,
    key: Option<ReaderKey>,
    feedback: ReaderFeedback,
    link: LinkSupervisor,
    inputs: mpsc::Sender<ReaderInput>,
    state: Arc<Mutex<DoorState>>,
    status: ReaderStatus,
    /// The secure channel runs on the install-mode key SCBK-D (only while installing ours).
    on_default_key: bool,
    tamper: bool,
    power_failure: bool,
    /// Disabled for a restart; to be enabled again.
    restarting: bool,
}

impl ReaderSlot {
    fn new(
        door: String,
        config: &OsdpReaderConfig,
        key: Option<ReaderKey>,
        inputs: mpsc::Sender<ReaderInput>,
        state: Arc<Mutex<DoorState>>,
    ) -> ReaderSlot {
        let status = lock(&state).reader.clone();
        ReaderSlot {
            door,
            address: config.address(),
            baud: config.baud,
            feedback: config.feedback,
            link: LinkSupervisor::new(
                LinkPolicy {
                    online_after_polls: config.online_after_polls.get() as u32,
                    secure_required: key.is_some(),
                },
                monotonic_ns() / 1_000_000,
            ),
            key,
            inputs,
            state,
            status,
            on_default_key: false,
            tamper: false,
            power_failure: false,
            restarting: false,
        }
    }

    fn setup(&self) -> PdSetup {
        PdSetup {
            name: format!("{} (address {})", self.door, self.address),
            address: self.address,
            baud: self.baud,
            key: self.key.as_ref().map(|k| k.key.bytes()),
            enforce_secure: self.key.as_ref().is_some_and(|k| !k.install_allowed),
        }
    }

    fn send(&self, input: ReaderInput) {
        if let Err(error) = self.inputs.try_send(input) {
            tracing::error!(door = %self.door, %error, "reader input dropped: the door task is not keeping up or has stopped");
        }
    }

    fn publish(&mut self, secure: bool) {
        let state = self.link.state();
        let mut status = self.status.clone();
        if status.state != state.as_str() {
            status.since = Some(Timestamp::now());
        }
        status.state = state.as_str().to_string();
        status.reason = match state {
            LinkState::Offline(reason) => Some(reason.as_str().to_string()),
            _ => None,
        };
        // LibOSDP may still hold a session it is probing; only an online link counts as secure.
        status.secure_channel = Some(secure && state == LinkState::Online);
        status.tamper = Some(self.tamper);
        if status != self.status {
            lock(&self.state).reader = status.clone();
            self.status = status;
        }
    }
}

/// One serial port and the readers on it; runs on its own thread.
struct Bus {
    port: PathBuf,
    channel_id: i32,
    baud: u32,
    slots: Vec<ReaderSlot>,
    feedback: std_mpsc::Receiver<(usize, Outcome)>,
    stop: Arc<AtomicBool>,
}

impl Bus {
    fn run(mut self, ready: std_mpsc::Sender<Result<(), String>>) {
        let watch = BusWatch::new();
        let channel = SerialChannel::new(self.channel_id, self.port.clone(), self.baud, watch.clone());
        let setups: Vec<PdSetup> = self.slots.iter().map(ReaderSlot::setup).collect();
        let mut cp = match ControlPanel::new(Box::new(channel), &setups) {
            Ok(cp) => {
                let _ = ready.send(Ok(()));
                cp
            }
            Err(error) => {
                let _ = ready.send(Err(error.to_string()));
                return;
            }
        };
        for slot in &self.slots {
            tracing::info!(door = %slot.door, port = %self.port.display(), address = slot.address, baud = slot.baud,
                secure_channel = slot.key.is_some(),
                install_mode = slot.key.as_ref().is_some_and(|k| k.install_allowed),
                "OSDP reader configured");
        }
        while !self.stop.load(Ordering::Relaxed) {
            cp.refresh();
            for (index, event) in cp.take_events() {
                if let Some(slot) = self.slots.get_mut(index) {
                    on_event(slot, &mut cp, index, event);
                }
            }
            while let Ok((index, outcome)) = self.feedback.try_recv() {
                if let Some(slot) = self.slots.get(index) {
                    play_feedback(slot, &mut cp, index, outcome);
                }
            }
            self.supervise(&mut cp, &watch);
            std::thread::sleep(REFRESH_EVERY);
        }
        drop(cp); // tears the CP down and closes the port
        tracing::info!(port = %self.port.display(), "OSDP bus stopped");
    }

    fn supervise(&mut self, cp: &mut ControlPanel, watch: &Arc<Mutex<BusWatch>>) {
        let now_ms = monotonic_ns() / 1_000_000;
        let port_error = lock(watch).port_error().map(str::to_string);
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.restarting && cp.enable(index) {
                slot.restarting = false;
            }
            let activity = lock(watch).activity(slot.address);
            let secure = cp.is_secure(index) && !slot.on_default_key;
            let update = slot.link.observe(&LinkSample {
                now_ms,
                cp_online: cp.is_online(index),
                secure,
                exchanges: activity.exchanges,
                answered_at_ms: activity.answered_at_ms,
                unanswered_since_ms: activity.unanswered_since_ms,
                port_error: port_error.is_some(),
            });
            if update.restart && !slot.restarting {
                cp.disable(index);
                slot.restarting = true;
            }
            if update.changed {
                log_state(slot, &self.port, port_error.as_deref());
            }
            if let Some(alarm) = update.alarm {
                slot.send(ReaderInput::Alarm(alarm));
            }
            slot.publish(secure);
        }
    }
}

fn log_state(slot: &ReaderSlot, port: &Path, port_error: Option<&str>) {
    let port = port.display();
    match slot.link.state() {
        LinkState::Online => tracing::info!(door = %slot.door, %port, address = slot.address,
            secure_channel = slot.key.is_some(), "OSDP reader online"),
        LinkState::Connecting => {}
        LinkState::Offline(reason) => {
            let hint = match reason {
                OfflineReason::NoAnswer => "nothing answers at this address: check the reader's power, the RS-485 A/B wiring and termination, its address and baud rate".to_string(),
                OfflineReason::KeyRefused => "the reader answers but refuses the secure channel key: a replaced reader or one reset to factory state; put it in install mode or give the agent its key".to_string(),
                OfflineReason::PortError => format!("serial port: {}", port_error.unwrap_or("not usable")),
            };
            tracing::error!(door = %slot.door, %port, address = slot.address, reason = reason.as_str(), "OSDP reader offline: {hint}");
        }
    }
}

fn on_event(slot: &mut ReaderSlot, cp: &mut ControlPanel, index: usize, event: CpEvent) {
    let at_ns = monotonic_ns();
    match event {
        CpEvent::Card(card) => {
            if !slot.link.is_online() {
                tracing::warn!(door = %slot.door, "card read from a reader that is not online (or not secure) ignored");
                return;
            }
            match translate::card_bits(card.nr_bits, &card.data) {
                Ok(bits) => slot.send(ReaderInput::Card { bits, at_ns }),
                Err(error) => {
                    tracing::warn!(door = %slot.door, reason = error.reason(), bits = card.nr_bits, "OSDP card read refused");
                    play_feedback(slot, cp, index, Outcome::Denied);
                }
            }
        }
        CpEvent::Keys(data) => {
            if !slot.link.is_online() {
                tracing::warn!(door = %slot.door, "key presses from a reader that is not online (or not secure) ignored");
                return;
            }
            let keys = translate::keypad_keys(&data);
            if !keys.is_empty() {
                slot.send(ReaderInput::Keys { keys, at_ns });
            }
        }
        CpEvent::LocalStatus {
            tamper,
            power_failure,
        } => {
            if tamper != slot.tamper {
                slot.tamper = tamper;
                slot.send(ReaderInput::Alarm(if tamper {
                    ReaderAlarm::Tamper
                } else {
                    ReaderAlarm::TamperCleared
                }));
            }
            if power_failure != slot.power_failure {
                slot.power_failure = power_failure;
                if power_failure {
                    tracing::warn!(door = %slot.door, "OSDP reader reports a power failure");
                } else {
                    tracing::info!(door = %slot.door, "OSDP reader power restored");
                }
            }
        }
        CpEvent::SecureChannel { active, default_key } => {
            slot.on_default_key = active && default_key;
            if slot.on_default_key {
                tracing::warn!(door = %slot.door, "secure channel up on the install-mode key (SCBK-D); handing the reader its own key");
            }
            if active && !default_key {
                if let Some(key) = slot.key.as_mut().filter(|k| k.install_allowed) {
                    match key.confirm_installed() {
                        Ok(()) => tracing::info!(door = %slot.door, key_file = %key.path.display(),
                            "OSDP reader holds its own key now; the install-mode key is refused for it from here on"),
                        Err(error) => tracing::error!(door = %slot.door, %error,
                            "OSDP reader holds its key, but that could not be recorded; the install-mode key stays allowed after a restart"),
                    }
                    cp.set_enforce_secure(index, true);
                }
            }
        }
    }
}

/// Sends a pattern's LED and buzzer commands; silently skipped while the reader is not online
/// (the decision and the relay never depend on it).
fn play_feedback(slot: &ReaderSlot, cp: &mut ControlPanel, index: usize, outcome: Outcome) {
    if !slot.link.is_online() {
        return;
    }
    let pattern = slot.feedback.pattern(outcome);
    let commands = [
        translate::led_command(pattern).map(OsdpCommand::Led),
        translate::buzzer_command(pattern).map(OsdpCommand::Buzzer),
    ];
    for command in commands.into_iter().flatten() {
        if !cp.send(index, command) {
            tracing::warn!(door = %slot.door, ?outcome, "reader feedback not sent (reader busy or offline)");
        }
    }
}
