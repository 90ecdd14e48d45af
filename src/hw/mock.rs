//! The mock GPIO backend: in-memory lines for x86, tests and the demo, driven through a control
//! socket that speaks JSON lines (the contract is in the README, "Mock GPIO control socket").
//! Every reply is one line with `"ok"`.
//!
//! ```text
//! {"op":"card","door":"front","format":"h10301","facility":1,"number":17}
//! {"op":"wiegand","door":0,"bits":"0101…"}
//! {"op":"pin","door":0,"digits":"500010"}
//! {"op":"input","door":0,"line":"contact"|"rex","value":true}
//! {"op":"state","door":0}
//! {"op":"watch"}                       → a stream of output changes (relay, reader LED and
//!                                        beeper) with timestamps
//! ```
//!
//! Card, Wiegand and PIN requests become real edge sequences with standard timing (50 µs pulses,
//! 2 ms apart) that the door's simulated reader (`reader`) sends in real time, stamped on the
//! monotonic clock and never ahead of it, so the same decoder path runs as on hardware. Request
//! sizes are capped before anything is generated: `bits` at 128, `digits` at `MAX_PIN_KEYS`.

pub mod reader;

use super::{
    monotonic_ns, DoorHardware, DoorInput, FeedbackLines, GpioError, InputEvent, OutputLine, RelayOutput,
    EVENT_BUFFER,
};
use crate::config::Config;
use crate::line_server::{BindError, BroadcastFeed, Handler, Limits, LineServer, Reply};
use crate::mutex::lock;
use crate::wiegand::{Bits, Key, Layout};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const MAX_REQUEST: usize = 16 * 1024;
/// Keys one `pin` request may carry (`#` added): room for a PIN longer than any accepted one,
/// so `pin_too_long` can be tried, and no more.
pub const MAX_PIN_KEYS: usize = 16;

/// One output change, as `watch` reports it: the relay, or a Wiegand reader's LED or beeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChange {
    pub door: String,
    /// `relay`, `led` or `beeper`.
    pub line: String,
    /// Logical state: the strike is released (relay), the LED green (led), the beeper sounding.
    pub released: bool,
    /// The same as `released`, named for every line.
    pub active: bool,
    /// Physical level on the pin after polarity.
    pub level: bool,
    pub timestamp_ns: u64,
}

#[derive(Debug, Default, Clone)]
struct DoorLines {
    relay_released: bool,
    contact: Option<bool>,
    rex: Option<bool>,
    /// The reader's feedback inputs; `None` when not wired.
    led: Option<bool>,
    beeper: Option<bool>,
}

/// A door's output lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Relay,
    Led,
    Beeper,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::Relay => "relay",
            Output::Led => "led",
            Output::Beeper => "beeper",
        }
    }
}

struct MockDoor {
    name: String,
    relay_active_low: bool,
    led_active_low: bool,
    beeper_active_low: bool,
    lines: Arc<Mutex<DoorLines>>,
    sender: Mutex<Option<mpsc::Sender<InputEvent>>>,
    /// The simulated reader's queue (set when the door opens).
    reader: Mutex<Option<mpsc::Sender<reader::Transmission>>>,
    /// Silence between two frames from the reader: twice the door's frame gap, ns.
    frame_silence_ns: u64,
}

/// The simulated lines of every configured door.
pub struct MockGpio {
    doors: Vec<MockDoor>,
    changes: broadcast::Sender<OutputChange>,
    /// Where the simulated readers run (the agent's tracker, so every task is accounted for).
    tasks: TaskTracker,
    /// Every card format the config knows (built-in and the site's), for `card` requests.
    formats: Vec<Layout>,
}

impl MockGpio {
    /// The doors of `config`; their simulated readers will be spawned on `tasks`.
    pub fn new(config: &Config, tasks: TaskTracker) -> Arc<MockGpio> {
        let (changes, _) = broadcast::channel(1024);
        let doors = config
            .doors
            .iter()
            .map(|door| {
                let wiegand = door.reader.wiegand();
                let led = wiegand.and_then(|w| w.led.as_ref());
                let beeper = wiegand.and_then(|w| w.beeper.as_ref());
                MockDoor {
                    name: door.name.clone(),
                    relay_active_low: door.relay.active_low,
                    led_active_low: led.is_some_and(|l| l.active_low),
                    beeper_active_low: beeper.is_some_and(|l| l.active_low),
                    lines: Arc::new(Mutex::new(DoorLines {
                        relay_released: false,
                        contact: door.contact.as_ref().map(|_| false),
                        rex: door.rex.as_ref().map(|_| false),
                        led: led.map(|_| false),
                        beeper: beeper.map(|_| false),
                    })),
                    sender: Mutex::new(None),
                    reader: Mutex::new(None),
                    frame_silence_ns: 2 * wiegand
                        .map_or(30_000_000, |w| w.frame_gap_ms.millis().as_nanos() as u64),
                }
            })
            .collect();
        Arc::new(MockGpio {
            doors,
            changes,
            tasks,
            formats: config.known_layouts(),
        })
    }

    /// Opens a door's lines as the agent does (the relay requested holding
    /// [`super::RELAY_REQUEST_RELEASED`]) and starts its simulated reader (call inside a tokio
    /// runtime).
    pub fn open_door(self: &Arc<Self>, index: usize) -> DoorHardware {
        self.open_door_with_relay(index, super::RELAY_REQUEST_RELEASED)
    }

    /// Opens a door's lines with the relay requested holding `relay_released`, as a kernel
    /// line request sets the output at once (tests use it to check who writes what first).
    pub fn open_door_with_relay(self: &Arc<Self>, index: usize, relay_released: bool) -> DoorHardware {
        let door = &self.doors[index];
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let (queue, queued) = mpsc::channel(reader::QUEUED_TRANSMISSIONS);
        // Ends when the door task drops its end of the events channel.
        self.tasks
            .spawn(reader::transmit(queued, tx.clone(), door.frame_silence_ns));
        *lock(&door.reader) = Some(queue);
        *lock(&door.sender) = Some(tx);
        let lines = {
            let mut lines = lock(&door.lines);
            lines.relay_released = relay_released;
            lines.clone()
        };
        let output = |line: Output| MockOutput {
            gpio: Arc::clone(self),
            index,
            line,
        };
        let wired =
            |wired: Option<bool>, line: Output| wired.map(|_| Box::new(output(line)) as Box<dyn OutputLine>);
        DoorHardware {
            events: rx,
            relay: Box::new(output(Output::Relay)),
            contact_open: lines.contact,
            rex_pressed: lines.rex,
            feedback: FeedbackLines::new(wired(lines.led, Output::Led), wired(lines.beeper, Output::Beeper)),
        }
    }

    /// Subscribes to output changes (what `watch` streams).
    pub fn watch(&self) -> broadcast::Receiver<OutputChange> {
        self.changes.subscribe()
    }

    fn find(&self, selector: &Value) -> Result<usize, String> {
        match selector {
            Value::Number(n) => n
                .as_u64()
                .map(|i| i as usize)
                .filter(|i| *i < self.doors.len())
                .ok_or_else(|| format!("no door with index {n} ({} configured)", self.doors.len())),
            Value::String(name) => self
                .doors
                .iter()
                .position(|d| &d.name == name)
                .ok_or_else(|| format!("no door named `{name}`")),
            Value::Null => Err("missing `door` (an index or a name)".into()),
            other => Err(format!("`door` must be an index or a name, not {other}")),
        }
    }

    fn send(&self, index: usize, events: Vec<InputEvent>) -> Result<(), String> {
        let sender = lock(&self.doors[index].sender).clone();
        let sender = sender.ok_or("the door is not running yet")?;
        for event in events {
            sender
                .try_send(event)
                .map_err(|e| format!("the door's input buffer refused the event: {e}"))?;
        }
        Ok(())
    }

    /// Queues frames for the door's reader; refused when the door is not running or its reader
    /// already holds `QUEUED_TRANSMISSIONS` requests.
    fn transmit(&self, index: usize, frames: reader::Transmission) -> Result<(), String> {
        let queue = lock(&self.doors[index].reader).clone();
        let queue = queue.ok_or("the door is not running yet")?;
        queue.try_send(frames).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => format!(
                "the reader is busy: {} requests are still being sent",
                reader::QUEUED_TRANSMISSIONS
            ),
            mpsc::error::TrySendError::Closed(_) => "the door has stopped".to_string(),
        })
    }

    /// Handles one control request and returns its reply.
    pub fn handle(&self, request: &Value) -> Value {
        match self.try_handle(request) {
            Ok(reply) => reply,
            Err(error) => json!({"ok": false, "error": error}),
        }
    }

    fn try_handle(&self, request: &Value) -> Result<Value, String> {
        let op = request["op"].as_str().ok_or("missing `op`")?;
        match op {
            "card" => {
                let index = self.find(&request["door"])?;
                let name = request["format"].as_str().ok_or("missing `format`")?;
                let layout = self
                    .formats
                    .iter()
                    .find(|l| l.format.as_str() == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = self.formats.iter().map(|l| l.format.as_str()).collect();
                        format!("`format` must be one of {}", names.join(", "))
                    })?;
                let facility = request["facility"].as_u64().unwrap_or(0);
                let number = request["number"].as_u64().ok_or("missing `number`")?;
                let facility = u32::try_from(facility).map_err(|_| "`facility` is too large")?;
                let bits = reader::encode_with(layout, facility, number).map_err(|e| e.to_string())?;
                self.transmit(index, vec![bits])?;
                Ok(json!({"ok": true, "bits": bits.to_string()}))
            }
            "wiegand" => {
                let index = self.find(&request["door"])?;
                let text = request["bits"].as_str().ok_or("missing `bits`")?;
                let bits = Bits::from_str(text).ok_or("`bits` must be 1 to 128 characters of 0 and 1")?;
                self.transmit(index, vec![bits])?;
                Ok(json!({"ok": true, "bits": bits.len()}))
            }
            "pin" => {
                let index = self.find(&request["door"])?;
                let digits = request["digits"].as_str().ok_or("missing `digits`")?;
                let eight_bit = request["eight_bit"].as_bool().unwrap_or(false);
                // Checked on the text's length first: nothing is generated for an oversized request.
                if digits.len() >= MAX_PIN_KEYS {
                    return Err(format!(
                        "`digits` may hold at most {} keys (`#` is added)",
                        MAX_PIN_KEYS - 1
                    ));
                }
                let frames = digits
                    .chars()
                    .chain(std::iter::once('#'))
                    .map(|c| {
                        let key = Key::from_char(c).ok_or(format!("`{c}` is not a keypad key"))?;
                        Ok(reader::encode_key(key, eight_bit))
                    })
                    .collect::<Result<Vec<Bits>, String>>()?;
                self.transmit(index, frames)?;
                Ok(json!({"ok": true, "keys": digits.len() + 1}))
            }
            "input" => {
                let index = self.find(&request["door"])?;
                let value = request["value"]
                    .as_bool()
                    .ok_or("`value` must be true or false")?;
                let input = match request["line"].as_str() {
                    Some("contact") => DoorInput::Contact,
                    Some("rex") => DoorInput::Rex,
                    _ => return Err("`line` must be \"contact\" or \"rex\"".into()),
                };
                {
                    let mut lines = lock(&self.doors[index].lines);
                    let slot = match input {
                        DoorInput::Contact => &mut lines.contact,
                        _ => &mut lines.rex,
                    };
                    match slot {
                        Some(level) => *level = value,
                        None => {
                            return Err(format!(
                                "door `{}` has no {:?} input wired",
                                self.doors[index].name, input
                            ))
                        }
                    }
                }
                self.send(
                    index,
                    vec![InputEvent {
                        input,
                        active: value,
                        timestamp_ns: monotonic_ns(),
                    }],
                )?;
                Ok(json!({"ok": true}))
            }
            "state" => {
                let index = self.find(&request["door"])?;
                let door = &self.doors[index];
                let lines = lock(&door.lines).clone();
                Ok(json!({
                    "ok": true,
                    "door": door.name,
                    "relay": {"released": lines.relay_released, "level": lines.relay_released != door.relay_active_low},
                    "led": lines.led,
                    "beeper": lines.beeper,
                    "contact": lines.contact,
                    "rex": lines.rex,
                }))
            }
            other => Err(format!(
                "unknown op `{other}` (card, wiegand, pin, input, state, watch)"
            )),
        }
    }

    /// Serves the control socket (each connection a task on `tasks`) until `stop` is cancelled;
    /// open connections end then too and the socket file is removed.
    pub async fn serve(self: Arc<Self>, socket: LineServer, tasks: TaskTracker, stop: CancellationToken) {
        socket.serve(self, tasks, stop).await
    }
}

impl Handler for MockGpio {
    async fn handle(&self, line: &[u8]) -> Reply {
        match serde_json::from_slice::<Value>(line) {
            Ok(request) if request["op"] == "watch" => Reply::Watch {
                first: json!({"ok": true, "watching": true}),
                feed: Box::new(BroadcastFeed {
                    receiver: self.watch(),
                    line: |change: Result<OutputChange, u64>| match change {
                        Ok(change) => json!({"ok": true, "change": change}),
                        Err(missed) => {
                            json!({"ok": false, "error": format!("watcher too slow: {missed} changes missed")})
                        }
                    },
                }),
            },
            Ok(request) => Reply::Line(self.handle(&request)),
            Err(error) => Reply::Line(json!({"ok": false, "error": format!("not JSON: {error}")})),
        }
    }
}

/// The control socket's bounds: requests are small (the longest is a Wiegand bit string), and a
/// test or an integrator's script holds a few connections.
pub const LIMITS: Limits = Limits {
    max_line: MAX_REQUEST,
    max_connections: 32,
    idle_timeout: std::time::Duration::from_secs(30),
    write_timeout: std::time::Duration::from_secs(10),
};

/// Binds the control socket (mode 0660), replacing a stale file.
pub async fn bind_control_socket(path: &Path) -> Result<LineServer, BindError> {
    LineServer::bind("mock GPIO control socket (`gpio.mock_socket`)", path, LIMITS).await
}

/// One of a door's simulated output lines: writes set it and are published to watchers.
struct MockOutput {
    gpio: Arc<MockGpio>,
    index: usize,
    line: Output,
}

impl MockOutput {
    fn set(&self, active: bool) {
        let door = &self.gpio.doors[self.index];
        let (previous, active_low) = {
            let mut lines = lock(&door.lines);
            match self.line {
                Output::Relay => (
                    Some(std::mem::replace(&mut lines.relay_released, active)),
                    door.relay_active_low,
                ),
                Output::Led => (lines.led.replace(active), door.led_active_low),
                Output::Beeper => (lines.beeper.replace(active), door.beeper_active_low),
            }
        };
        if previous == Some(active) {
            return; // the line did not change: nothing to report
        }
        // Nobody watching is fine: a send error only means no subscribers.
        let _ = self.gpio.changes.send(OutputChange {
            door: door.name.clone(),
            line: self.line.name().into(),
            released: active,
            active,
            level: active != active_low,
            timestamp_ns: monotonic_ns(),
        });
    }
}

impl RelayOutput for MockOutput {
    fn set_released(&mut self, released: bool) -> Result<(), GpioError> {
        self.set(released);
        Ok(())
    }
}

impl OutputLine for MockOutput {
    fn set_active(&mut self, active: bool) -> Result<(), GpioError> {
        self.set(active);
        Ok(())
    }
}
