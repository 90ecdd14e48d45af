//! The real backend: Linux GPIO character devices through the gpiod crate (uAPI v2), with
//! kernel edge timestamps and consumer name `doorflow-agent`.
//!
//! gpiod's event read blocks, so each input request gets a small reader thread that forwards
//! events into the door's channel. Lines in one request share bias and polarity, hence one
//! request for the reader's D0/D1 and one each for contact and REX.

use super::{
    DoorHardware, DoorInput, FeedbackLines, GpioError, InputEvent, OutputLine, RelayOutput, EVENT_BUFFER,
};
use crate::config::{Bias, Config, OutputLineConfig, WiegandReaderConfig};
#[cfg(target_os = "linux")]
use gpiod::{Active, Chip, EdgeDetect, Lines, Options, Output};
use tokio::sync::mpsc;

pub const CONSUMER: &str = "doorflow-agent";

/// Chip names in config may be `gpiochip0` or `/dev/gpiochip0`.
pub fn chip_path(chip: &str) -> String {
    if chip.starts_with('/') {
        chip.to_string()
    } else {
        format!("/dev/{chip}")
    }
}

#[cfg(not(target_os = "linux"))]
pub fn open_door(_config: &Config, _index: usize) -> Result<DoorHardware, GpioError> {
    Err(GpioError::Chip {
        chip: "-".into(),
        reason: "the gpiod backend needs Linux; use gpio.backend = \"mock\"".into(),
    })
}

#[cfg(target_os = "linux")]
pub fn open_door(config: &Config, index: usize) -> Result<DoorHardware, GpioError> {
    let door = &config.doors[index];
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let at = |field: &str| format!("doors[{index}].{field}");

    // An OSDP reader is on a serial port, not on GPIO lines (see crate::osdp).
    if let Some(wiegand) = door.reader.wiegand() {
        let reader_chip = config.chip_for(&wiegand.chip);
        let reader = request_inputs(
            reader_chip,
            &[(wiegand.d0, at("reader.d0")), (wiegand.d1, at("reader.d1"))],
            false,
            wiegand.bias,
        )?;
        spawn_reader(
            reader,
            vec![DoorInput::D0, DoorInput::D1],
            tx.clone(),
            door.name.clone(),
        );
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
        let chip = config.chip_for(&line.chip);
        let lines = request_inputs(chip, &[(line.line, key.clone())], line.active_low, line.bias)?;
        let level = lines
            .get_values([false; 1])
            .map_err(|e| line_error(chip, line.line, &key, e))?;
        levels[slot] = Some(level[0]);
        spawn_reader(lines, vec![input], tx.clone(), door.name.clone());
    }

    let fail_released = door.fail_mode == crate::config::FailMode::Safe;
    let relay = request_output(config, &door.relay, &at("relay.line"), fail_released)?;
    let feedback = match door.reader.wiegand() {
        Some(wiegand) => feedback_lines(config, wiegand, &at)?,
        None => FeedbackLines::default(),
    };

    Ok(DoorHardware {
        events: rx,
        relay: Box::new(ChardevRelay { lines: relay }),
        contact_open: levels[0],
        rex_pressed: levels[1],
        feedback,
    })
}

/// Requests one output line, driven to `initial` (logical, before polarity) from the start.
#[cfg(target_os = "linux")]
fn request_output(
    config: &Config,
    output: &OutputLineConfig,
    key: &str,
    initial: bool,
) -> Result<Lines<Output>, GpioError> {
    let chip_name = config.chip_for(&output.chip);
    let chip = open_chip(chip_name)?;
    let options = Options::output([output.line])
        .consumer(CONSUMER)
        .active(if output.active_low {
            Active::Low
        } else {
            Active::High
        })
        .values([initial]);
    chip.request_lines(options)
        .map_err(|e| request_error(&chip, chip_name, output.line, key, e))
}

/// A Wiegand reader's LED and beeper inputs, each its own output request, idle (released) from
/// the start.
#[cfg(target_os = "linux")]
fn feedback_lines(
    config: &Config,
    reader: &WiegandReaderConfig,
    at: &dyn Fn(&str) -> String,
) -> Result<FeedbackLines, GpioError> {
    let line = |output: &Option<OutputLineConfig>, field: &str| -> Result<_, GpioError> {
        Ok(match output {
            Some(output) => {
                let lines = request_output(config, output, &at(field), false)?;
                Some(Box::new(ChardevRelay { lines }) as Box<dyn OutputLine>)
            }
            None => None,
        })
    };
    Ok(FeedbackLines::new(
        line(&reader.led, "reader.led.line")?,
        line(&reader.beeper, "reader.beeper.line")?,
    ))
}

#[cfg(target_os = "linux")]
fn open_chip(chip: &str) -> Result<Chip, GpioError> {
    Chip::new(chip_path(chip)).map_err(|e| GpioError::Chip {
        chip: chip_path(chip),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => {
                "no such GPIO chip (check gpio.chip and `gpiodetect`)".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (the service user needs the `gpio` group)".to_string()
            }
            _ => e.to_string(),
        },
    })
}

#[cfg(target_os = "linux")]
fn request_inputs(
    chip_name: &str,
    lines: &[(u32, String)],
    active_low: bool,
    bias: Bias,
) -> Result<Lines<gpiod::Input>, GpioError> {
    let chip = open_chip(chip_name)?;
    let offsets: Vec<u32> = lines.iter().map(|(line, _)| *line).collect();
    let options = Options::input(offsets)
        .consumer(CONSUMER)
        .edge(EdgeDetect::Both)
        .active(if active_low { Active::Low } else { Active::High });
    // Leaving the bias unset keeps whatever the board (device tree) configured.
    let options = match bias {
        Bias::AsIs => options,
        Bias::PullUp => options.bias(gpiod::Bias::PullUp),
        Bias::PullDown => options.bias(gpiod::Bias::PullDown),
        Bias::Disabled => options.bias(gpiod::Bias::Disable),
    };
    chip.request_lines(options).map_err(|e| {
        // Name the line that is actually busy when several were requested together.
        let (line, key) = lines
            .iter()
            .find(|(line, _)| chip.line_info(*line).is_ok_and(|i| i.used))
            .unwrap_or(&lines[0]);
        request_error(&chip, chip_name, *line, key, e)
    })
}

#[cfg(target_os = "linux")]
fn request_error(chip: &Chip, chip_name: &str, line: u32, key: &str, error: std::io::Error) -> GpioError {
    if error.raw_os_error() == Some(libc::EBUSY) {
        let consumer = chip
            .line_info(line)
            .map(|info| format!("`{}`", info.consumer))
            .unwrap_or_else(|_| "another consumer".to_string());
        return GpioError::LineBusy {
            chip: chip_path(chip_name),
            line,
            key: key.to_string(),
            consumer,
        };
    }
    line_error(chip_name, line, key, error)
}

fn line_error(chip: &str, line: u32, key: &str, error: std::io::Error) -> GpioError {
    GpioError::Line {
        chip: chip_path(chip),
        line,
        key: key.to_string(),
        reason: error.to_string(),
    }
}

/// Forwards kernel edge events to the door task. Reader lines are requested active-high, so a
/// falling edge is the start of a Wiegand pulse; inputs are requested with their configured
/// polarity, so a rising edge means "became active".
#[cfg(target_os = "linux")]
fn spawn_reader(
    mut lines: Lines<gpiod::Input>,
    inputs: Vec<DoorInput>,
    tx: mpsc::Sender<InputEvent>,
    door: String,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("gpio-{door}"))
        .spawn(move || loop {
            match lines.read_event() {
                Ok(event) => {
                    let Some(&input) = inputs.get(event.line as usize) else {
                        continue;
                    };
                    let rising = event.edge == gpiod::Edge::Rising;
                    let active = match input {
                        DoorInput::D0 | DoorInput::D1 => !rising,
                        DoorInput::Contact | DoorInput::Rex => rising,
                    };
                    let timestamp_ns = event.time.as_nanos() as u64;
                    if tx
                        .blocking_send(InputEvent {
                            input,
                            active,
                            timestamp_ns,
                        })
                        .is_err()
                    {
                        return; // the door task has stopped
                    }
                }
                Err(error) => {
                    tracing::error!(%door, %error, "GPIO event read failed; input lost, stopping its reader");
                    return;
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start a GPIO reader thread");
    }
}

#[cfg(target_os = "linux")]
struct ChardevRelay {
    lines: Lines<Output>,
}

#[cfg(target_os = "linux")]
impl RelayOutput for ChardevRelay {
    fn set_released(&mut self, released: bool) -> Result<(), GpioError> {
        self.lines
            .set_values([released])
            .map_err(|e| GpioError::Write(e.to_string()))
    }
}

/// The same one-line output request drives a reader's LED or beeper.
#[cfg(target_os = "linux")]
impl OutputLine for ChardevRelay {
    fn set_active(&mut self, active: bool) -> Result<(), GpioError> {
        self.set_released(active)
    }
}
