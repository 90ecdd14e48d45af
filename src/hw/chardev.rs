//! The real backend: Linux GPIO character devices (uAPI v2) through the `gpiocdev` crate, with
//! kernel edge timestamps on CLOCK_MONOTONIC and consumer name `doorflow-agent`.
//!
//! Why `gpiocdev` (0.8) and not `gpiod` (0.3): gpiocdev exposes what a Wiegand reader needs
//! from the uAPI and gpiod does not — each edge event's sequence numbers (`seqno`,
//! `line_seqno`), the size of the kernel's event buffer, and a wait with a timeout — and it is
//! kept by the author of the kernel's uAPI v2 (regular releases, tested against gpio-sim).
//! Both are pure Rust over `libc` ioctls, so ARM cross builds still need only gcc.
//!
//! What the real kernel taught (vm/README.md has the measurements):
//! - Reader lines (D0/D1) are requested for **falling edges only**. With both edges the kernel
//!   tells rising from falling by reading the line level in its irq thread, which under load
//!   misreads or merges 50 µs pulses; a bit is its falling edge, so nothing else is needed.
//!   Each falling edge reaches the door task as a pulse starting and ending at its timestamp.
//! - The kernel buffers up to [`READER_KERNEL_BUFFER`] events per reader (16 per line by
//!   default) and, when full, drops the oldest; the sequence numbers show the gap, and the
//!   door task is told ([`DoorInput::EdgesLost`]) so the frame is rejected, never guessed.
//! - A read that fails (the chip went away, an I/O error) does not end the watcher: it reports
//!   [`DoorInput::LinesFault`], requests the lines again with backoff until they are back,
//!   and reports them working. A request that is silently dead is found by a health check
//!   while the lines are quiet.
//! - Line offsets are checked against the chip's size first, so a bad offset names its key.
//! - The relay line is requested holding the state the caller asks for (the door machine's
//!   starting state, locked), never the fail state: that is written only when the agent stops.

use super::{DoorHardware, DoorInput, GpioError, InputEvent, RelayOutput, EVENT_BUFFER};
use crate::config::{Bias, Config};
use std::time::Duration;
use tokio::sync::mpsc;

pub const CONSUMER: &str = "doorflow-agent";

/// Kernel event buffer for a reader's request: the uAPI's largest (16 × 64 lines), about 13
/// frames of 37 bits, against the default 32 (one frame) for two lines.
pub const READER_KERNEL_BUFFER: u32 = 1024;
/// How long a watcher waits for an edge before checking its lines still answer.
const HEALTH_CHECK: Duration = Duration::from_secs(1);
/// Backoff while requesting failed lines again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Chip names in config may be `gpiochip0` or `/dev/gpiochip0`.
pub fn chip_path(chip: &str) -> String {
    if chip.starts_with('/') {
        chip.to_string()
    } else {
        format!("/dev/{chip}")
    }
}

/// Every line of door `index` as (chip, offset, config key), in config order.
pub fn door_lines(config: &Config, index: usize) -> Vec<(String, u32, String)> {
    let door = &config.doors[index];
    let at = |field: &str| format!("doors[{index}].{field}");
    let mut lines = Vec::new();
    // An OSDP reader is on a serial port, not on GPIO lines (see crate::osdp).
    if let Some(wiegand) = door.reader.wiegand() {
        let chip = config.chip_for(&wiegand.chip).to_string();
        lines.push((chip.clone(), wiegand.d0, at("reader.d0")));
        lines.push((chip, wiegand.d1, at("reader.d1")));
    }
    lines.push((
        config.chip_for(&door.relay.chip).to_string(),
        door.relay.line,
        at("relay.line"),
    ));
    for (line, key) in [(&door.contact, "contact.line"), (&door.rex, "rex.line")] {
        if let Some(line) = line {
            lines.push((config.chip_for(&line.chip).to_string(), line.line, at(key)));
        }
    }
    lines
}

/// Checks every configured line offset against its chip's number of lines, for chips that are
/// present (`check-config` on the board). Returns the first problem as (key, message) and the
/// chips that could not be opened (not checked).
pub fn check_offsets(config: &Config) -> (Option<(String, String)>, Vec<String>) {
    let mut absent = Vec::new();
    for index in 0..config.doors.len() {
        for (chip, line, key) in door_lines(config, index) {
            match chip_lines(&chip) {
                Ok(count) if line >= count => {
                    return (Some((key, offset_message(&chip, line, count))), absent)
                }
                Ok(_) => {}
                Err(_) => {
                    let path = chip_path(&chip);
                    if !absent.contains(&path) {
                        absent.push(path);
                    }
                }
            }
        }
    }
    (None, absent)
}

fn offset_message(chip: &str, line: u32, count: u32) -> String {
    format!(
        "GPIO line {line} does not exist on {}, which has {count} lines (0 to {})",
        chip_path(chip),
        count.saturating_sub(1)
    )
}

#[cfg(not(target_os = "linux"))]
fn chip_lines(_chip: &str) -> Result<u32, GpioError> {
    Err(GpioError::Chip {
        chip: "-".into(),
        reason: "the gpiod backend needs Linux; use gpio.backend = \"mock\"".into(),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn open_door(_config: &Config, _index: usize, _relay_released: bool) -> Result<DoorHardware, GpioError> {
    Err(GpioError::Chip {
        chip: "-".into(),
        reason: "the gpiod backend needs Linux; use gpio.backend = \"mock\"".into(),
    })
}

#[cfg(target_os = "linux")]
use linux::chip_lines;
#[cfg(target_os = "linux")]
pub use linux::open_door;

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use gpiocdev::line::{EdgeDetection, EdgeKind, Value};
    use gpiocdev::{Chip, Request};

    pub(super) fn chip_lines(chip: &str) -> Result<u32, GpioError> {
        open_chip(chip)?
            .info()
            .map(|info| info.num_lines)
            .map_err(|e| chip_error(chip, &e.to_string()))
    }

    /// Requests door `index`'s lines: reader and inputs (each with a watcher thread) and the
    /// relay, holding `relay_released` from the moment it is requested.
    pub fn open_door(config: &Config, index: usize, relay_released: bool) -> Result<DoorHardware, GpioError> {
        let door = &config.doors[index];
        for (chip, line, key) in door_lines(config, index) {
            let count = chip_lines(&chip)?;
            if line >= count {
                return Err(GpioError::Line {
                    chip: chip_path(&chip),
                    line,
                    key,
                    reason: offset_message(&chip, line, count),
                });
            }
        }
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let at = |field: &str| format!("doors[{index}].{field}");

        let mut watchers = Vec::new();
        if let Some(wiegand) = door.reader.wiegand() {
            let reader = InputSpec {
                door: door.name.clone(),
                chip: config.chip_for(&wiegand.chip).to_string(),
                lines: vec![
                    (wiegand.d0, at("reader.d0"), DoorInput::D0),
                    (wiegand.d1, at("reader.d1"), DoorInput::D1),
                ],
                active_low: false,
                bias: wiegand.bias,
                edges: EdgeDetection::FallingEdge,
                kernel_buffer: Some(READER_KERNEL_BUFFER),
            };
            watchers.push((reader.request()?, reader));
        }

        let mut levels = [None, None];
        for (slot, (input, line_config, key)) in [
            (DoorInput::Contact, &door.contact, at("contact.line")),
            (DoorInput::Rex, &door.rex, at("rex.line")),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(line) = line_config else { continue };
            let spec = InputSpec {
                door: door.name.clone(),
                chip: config.chip_for(&line.chip).to_string(),
                lines: vec![(line.line, key.clone(), input)],
                active_low: line.active_low,
                bias: line.bias,
                edges: EdgeDetection::BothEdges,
                kernel_buffer: None,
            };
            let request = spec.request()?;
            let level = request
                .value(line.line)
                .map_err(|e| line_error(&spec.chip, line.line, &key, &e))?;
            levels[slot] = Some(level == Value::Active);
            watchers.push((request, spec));
        }

        let relay = RelaySpec {
            chip: config.chip_for(&door.relay.chip).to_string(),
            line: door.relay.line,
            key: at("relay.line"),
            active_low: door.relay.active_low,
        };
        let relay = ChardevRelay {
            request: Some(relay.request(relay_released)?),
            spec: relay,
        };

        for (request, spec) in watchers {
            spawn_watcher(request, spec, tx.clone());
        }
        Ok(DoorHardware {
            events: rx,
            relay: Box::new(relay),
            contact_open: levels[0],
            rex_pressed: levels[1],
        })
    }

    fn open_chip(chip: &str) -> Result<Chip, GpioError> {
        let path = chip_path(chip);
        if let Err(error) = std::fs::metadata(&path) {
            return Err(chip_error(
                chip,
                &match error.kind() {
                    std::io::ErrorKind::NotFound => {
                        "no such GPIO chip (check gpio.chip and `gpiodetect`)".to_string()
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied (the service user needs the `gpio` group)".to_string()
                    }
                    _ => error.to_string(),
                },
            ));
        }
        Chip::from_path(&path).map_err(|e| chip_error(chip, &e.to_string()))
    }

    fn chip_error(chip: &str, reason: &str) -> GpioError {
        GpioError::Chip {
            chip: chip_path(chip),
            reason: reason.to_string(),
        }
    }

    /// The settings of one input request, kept so the lines can be requested again.
    struct InputSpec {
        door: String,
        chip: String,
        /// Offset, config key and what the line is, in request order.
        lines: Vec<(u32, String, DoorInput)>,
        active_low: bool,
        bias: Bias,
        edges: EdgeDetection,
        kernel_buffer: Option<u32>,
    }

    impl InputSpec {
        fn request(&self) -> Result<Request, GpioError> {
            let offsets: Vec<u32> = self.lines.iter().map(|(line, _, _)| *line).collect();
            let mut builder = Request::builder();
            builder
                .on_chip(chip_path(&self.chip))
                .with_consumer(CONSUMER)
                .with_lines(&offsets)
                .as_input()
                .with_edge_detection(self.edges);
            if self.active_low {
                builder.as_active_low();
            }
            // Leaving the bias unset keeps whatever the board (device tree) configured.
            match self.bias {
                Bias::AsIs => {}
                Bias::PullUp => {
                    builder.with_bias(gpiocdev::line::Bias::PullUp);
                }
                Bias::PullDown => {
                    builder.with_bias(gpiocdev::line::Bias::PullDown);
                }
                Bias::Disabled => {
                    builder.with_bias(gpiocdev::line::Bias::Disabled);
                }
            }
            if let Some(size) = self.kernel_buffer {
                builder.with_kernel_event_buffer_size(size);
            }
            builder.request().map_err(|e| {
                let offsets: Vec<(u32, &str)> = self
                    .lines
                    .iter()
                    .map(|(line, key, _)| (*line, key.as_str()))
                    .collect();
                request_error(&self.chip, &offsets, &e)
            })
        }

        fn input(&self, offset: u32) -> Option<DoorInput> {
            self.lines
                .iter()
                .find(|(line, _, _)| *line == offset)
                .map(|(_, _, input)| *input)
        }

        fn keys(&self) -> String {
            let keys: Vec<&str> = self.lines.iter().map(|(_, key, _)| key.as_str()).collect();
            keys.join(", ")
        }
    }

    /// Why a request failed, naming the line at fault: one held by another consumer (our own
    /// request failed, so any line in use is someone else's), else the first line.
    fn request_error(chip_name: &str, lines: &[(u32, &str)], error: &gpiocdev::Error) -> GpioError {
        let chip = open_chip(chip_name).ok();
        let busy = chip.as_ref().and_then(|chip| {
            lines.iter().find_map(|(line, key)| {
                let info = chip.line_info(*line).ok()?;
                info.used.then_some((*line, *key, info.consumer))
            })
        });
        if let Some((line, key, consumer)) = busy {
            return GpioError::LineBusy {
                chip: chip_path(chip_name),
                line,
                key: key.to_string(),
                consumer: format!("`{consumer}`"),
            };
        }
        let (line, key) = lines[0];
        line_error(chip_name, line, key, error)
    }

    fn line_error(chip: &str, line: u32, key: &str, error: &gpiocdev::Error) -> GpioError {
        GpioError::Line {
            chip: chip_path(chip),
            line,
            key: key.to_string(),
            reason: error.to_string(),
        }
    }

    /// What a watcher saw on its request.
    enum Watch {
        Event(gpiocdev::line::EdgeEvent),
        Quiet,
        Failed(String),
    }

    /// Waits up to `timeout` for the request to become readable; a signal counts as quiet.
    fn wait(request: &Request, timeout: Duration) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd {
            fd: request.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, alive for the duration of the call.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            -1 => {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
            0 => Ok(false),
            _ => Ok(true),
        }
    }

    fn next(request: &Request, probe_line: u32) -> Watch {
        match wait(request, HEALTH_CHECK) {
            Ok(true) => match request.read_edge_event() {
                Ok(event) => Watch::Event(event),
                Err(error) => Watch::Failed(error.to_string()),
            },
            // Quiet: make sure the request still answers (a chip that went away may leave a
            // request that never wakes), so a dead reader is found within a second.
            Ok(false) => match request.value(probe_line) {
                Ok(_) => Watch::Quiet,
                Err(error) => Watch::Failed(error.to_string()),
            },
            Err(error) => Watch::Failed(error.to_string()),
        }
    }

    /// Forwards kernel edge events to the door task; on failure reports the fault, requests
    /// the lines again with backoff and reports them back. Ends when the door task has gone.
    fn spawn_watcher(request: Request, spec: InputSpec, tx: mpsc::Sender<InputEvent>) {
        let name = format!("gpio-{}", spec.door);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || watch(request, spec, tx));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a GPIO watcher thread");
        }
    }

    fn watch(mut request: Request, spec: InputSpec, tx: mpsc::Sender<InputEvent>) {
        let send = |input: DoorInput, active: bool, timestamp_ns: u64| {
            tx.blocking_send(InputEvent {
                input,
                active,
                timestamp_ns,
            })
            .is_ok()
        };
        let mut expected_seqno: Option<u32> = None;
        loop {
            match next(&request, spec.lines[0].0) {
                Watch::Event(event) => {
                    if expected_seqno.is_some_and(|seqno| event.seqno != seqno) {
                        tracing::warn!(
                            door = %spec.door,
                            lines = %spec.keys(),
                            lost = event.seqno.wrapping_sub(expected_seqno.unwrap_or(0)),
                            "the kernel dropped GPIO edges (its event buffer overflowed)"
                        );
                        if !send(DoorInput::EdgesLost, true, event.timestamp_ns) {
                            return;
                        }
                    }
                    expected_seqno = Some(event.seqno.wrapping_add(1));
                    let Some(input) = spec.input(event.offset) else {
                        continue;
                    };
                    let rising = event.kind == EdgeKind::Rising;
                    let delivered = match input {
                        // A bit is its falling edge (only those are requested): a pulse that
                        // starts and ends at the edge's timestamp.
                        DoorInput::D0 | DoorInput::D1 => {
                            send(input, true, event.timestamp_ns) && send(input, false, event.timestamp_ns)
                        }
                        _ => send(input, rising, event.timestamp_ns),
                    };
                    if !delivered {
                        return; // the door task has stopped
                    }
                }
                Watch::Quiet => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Watch::Failed(error) => {
                    tracing::error!(door = %spec.door, lines = %spec.keys(), %error, "GPIO lines failed; requesting them again");
                    if !send(DoorInput::LinesFault, true, super::super::monotonic_ns()) {
                        return;
                    }
                    drop(request);
                    let Some(again) = request_again(&spec, &tx) else {
                        return;
                    };
                    request = again;
                    expected_seqno = None;
                    tracing::warn!(door = %spec.door, lines = %spec.keys(), "GPIO lines requested again; the door hears its inputs");
                    if !send(DoorInput::LinesFault, false, super::super::monotonic_ns()) {
                        return;
                    }
                }
            }
        }
    }

    /// Requests the lines until it works (backoff from 100 ms to 5 s); `None` once the door
    /// task has gone.
    fn request_again(spec: &InputSpec, tx: &mpsc::Sender<InputEvent>) -> Option<Request> {
        let mut delay = RETRY_FIRST;
        let mut attempts = 0u32;
        loop {
            std::thread::sleep(delay);
            if tx.is_closed() {
                return None;
            }
            match spec.request() {
                Ok(request) => return Some(request),
                Err(error) => {
                    attempts += 1;
                    if attempts == 1 || attempts % 20 == 0 {
                        tracing::warn!(door = %spec.door, %error, attempts, "GPIO lines still unavailable");
                    }
                }
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// What a relay line is requested with, kept so it can be requested again.
    struct RelaySpec {
        chip: String,
        line: u32,
        key: String,
        active_low: bool,
    }

    impl RelaySpec {
        /// The line as an output holding `released` from the moment it is granted.
        fn request(&self, released: bool) -> Result<Request, GpioError> {
            let mut builder = Request::builder();
            builder
                .on_chip(chip_path(&self.chip))
                .with_consumer(CONSUMER)
                .with_line(self.line)
                .as_output(Value::from(released));
            if self.active_low {
                builder.as_active_low();
            }
            builder
                .request()
                .map_err(|e| request_error(&self.chip, &[(self.line, self.key.as_str())], &e))
        }
    }

    /// The relay's request. A write that fails drops it (a chip that went away keeps no
    /// stale request, and can come back under its old name) and the next write requests the
    /// line again, holding the level being written.
    struct ChardevRelay {
        request: Option<Request>,
        spec: RelaySpec,
    }

    impl RelayOutput for ChardevRelay {
        fn set_released(&mut self, released: bool) -> Result<(), GpioError> {
            if let Some(request) = &self.request {
                match request.set_value(self.spec.line, Value::from(released)) {
                    Ok(()) => return Ok(()),
                    Err(error) => {
                        self.request = None;
                        tracing::warn!(key = %self.spec.key, %error, "relay write failed; requesting the line again");
                    }
                }
            }
            let request = self
                .spec
                .request(released)
                .map_err(|e| GpioError::Write(e.to_string()))?;
            self.request = Some(request);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(chip: &str) -> Config {
        let text = include_str!("../../config/demo.toml").replace(
            "backend = \"mock\"",
            &format!("backend = \"gpiod\"\nchip = \"{chip}\""),
        );
        Config::parse(&text, "demo.toml").unwrap()
    }

    #[test]
    fn every_line_of_a_door_is_named_by_its_key() {
        let lines = door_lines(&config("gpiochip9"), 0);
        let keys: Vec<&str> = lines.iter().map(|(_, _, key)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "doors[0].reader.d0",
                "doors[0].reader.d1",
                "doors[0].relay.line",
                "doors[0].contact.line",
                "doors[0].rex.line"
            ]
        );
        assert_eq!(
            lines[1],
            ("gpiochip9".to_string(), 1, "doors[0].reader.d1".to_string())
        );
    }

    #[test]
    fn chips_that_are_not_present_are_reported_unchecked() {
        let (problem, unchecked) = check_offsets(&config("/nonexistent/gpiochip-door"));
        assert_eq!(problem, None);
        assert_eq!(unchecked, ["/nonexistent/gpiochip-door"]);
    }

    #[test]
    fn an_offset_beyond_the_chip_says_how_many_lines_it_has() {
        assert_eq!(
            offset_message("gpiochip2", 40, 32),
            "GPIO line 40 does not exist on /dev/gpiochip2, which has 32 lines (0 to 31)"
        );
    }
}
