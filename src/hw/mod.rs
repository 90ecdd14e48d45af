//! The GPIO layer: what a door's lines look like to the rest of the agent, whichever backend
//! drives them. Both backends read the same `[[doors]]` config; only `gpio.backend` differs.
//!
//! Inputs arrive as `InputEvent`s on a channel, stamped with CLOCK_MONOTONIC nanoseconds (the
//! kernel's edge timestamps on real hardware), so the Wiegand decoder works on the time the edge
//! happened, not the time a thread got round to reading it.

pub mod chardev;
pub mod mock;

use crate::config::{Config, GpioBackend};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Bound on buffered input events per door: a 37-bit frame is 74 edges, so this absorbs
/// dozens of frames while the door task is busy.
pub const EVENT_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorInput {
    /// Wiegand data 0 (a low pulse is a 0 bit).
    D0,
    /// Wiegand data 1 (a low pulse is a 1 bit).
    D1,
    Contact,
    Rex,
    /// The kernel dropped edges of this door's reader (its event sequence numbers skipped):
    /// the frame they belonged to cannot be trusted. `active` is unused.
    EdgesLost,
    /// The door's input lines failed (`active = true`: a read failed, the backend is
    /// requesting them again) or answer again (`active = false`).
    LinesFault,
}

/// A level change on one of a door's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub input: DoorInput,
    /// Logical level after polarity: for D0/D1 `true` means the line is pulled low (a bit is
    /// being sent); for the contact `true` means open; for REX `true` means pressed.
    pub active: bool,
    /// CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("GPIO chip {chip}: {reason}")]
    Chip { chip: String, reason: String },
    #[error("GPIO line {line} on {chip} ({key}) is in use by {consumer}")]
    LineBusy {
        chip: String,
        line: u32,
        key: String,
        consumer: String,
    },
    #[error("GPIO line {line} on {chip} ({key}): {reason}")]
    Line {
        chip: String,
        line: u32,
        key: String,
        reason: String,
    },
    #[error("GPIO write failed: {0}")]
    Write(String),
}

/// Drives a door's lock relay. `released = true` means the strike lets the door open; the
/// backend applies the configured polarity.
pub trait RelayOutput: Send {
    fn set_released(&mut self, released: bool) -> Result<(), GpioError>;
}

/// Everything a door task needs from the hardware.
pub struct DoorHardware {
    pub events: mpsc::Receiver<InputEvent>,
    pub relay: Box<dyn RelayOutput>,
    /// Input levels at start; `None` when the input is not wired.
    pub contact_open: Option<bool>,
    pub rex_pressed: Option<bool>,
}

/// The level a relay line is requested with: the door machine's starting state (locked), in
/// every fail mode and polarity. Never the fail state: that is for stopping only.
pub const RELAY_REQUEST_RELEASED: bool = crate::door::DoorMachine::STARTS_RELEASED;

/// The opened GPIO backend.
pub enum Backend {
    Chardev,
    Mock(Arc<mock::MockGpio>),
}

impl Backend {
    /// The backend `gpio.backend` names; the mock's simulated readers run on `tasks`.
    pub fn open(config: &Config, tasks: &tokio_util::task::TaskTracker) -> Backend {
        match config.gpio.backend {
            GpioBackend::Gpiod => Backend::Chardev,
            GpioBackend::Mock => Backend::Mock(mock::MockGpio::new(config, tasks.clone())),
        }
    }

    /// Requests a door's lines. Fails with a message naming the chip, line and config key when
    /// a chip is missing, a line is beyond the chip or held by another consumer.
    ///
    /// The relay line is requested holding the door machine's starting state
    /// ([`RELAY_REQUEST_RELEASED`]), so the door is what `status` says from the first instant;
    /// the fail state is written only when the agent stops.
    pub fn open_door(&self, config: &Config, index: usize) -> Result<DoorHardware, GpioError> {
        match self {
            Backend::Chardev => chardev::open_door(config, index, RELAY_REQUEST_RELEASED),
            Backend::Mock(mock) => Ok(mock.open_door_with_relay(index, RELAY_REQUEST_RELEASED)),
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the kernel stamps GPIO edge events with.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
