//! `[gpio]`: which backend drives the lines, the default chip, and line bias.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpioBackend {
    /// Linux GPIO character device (uAPI v2) through the gpiod crate.
    #[default]
    Gpiod,
    /// In-memory lines driven through a JSON-lines control socket, for x86 and tests.
    Mock,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    #[serde(default)]
    pub backend: GpioBackend,
    /// Default chip for every line, e.g. `gpiochip0` or `/dev/gpiochip0`.
    #[serde(default = "default_chip")]
    pub chip: String,
    /// Control socket of the mock backend.
    #[serde(default = "default_mock_socket")]
    pub mock_socket: PathBuf,
}

fn default_chip() -> String {
    "gpiochip0".to_string()
}

fn default_mock_socket() -> PathBuf {
    PathBuf::from("/run/doorflow-agent/mock-gpio.sock")
}

impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            backend: GpioBackend::default(),
            chip: default_chip(),
            mock_socket: default_mock_socket(),
        }
    }
}

impl GpioConfig {
    pub(super) fn validate(&self, report: &mut impl FnMut(String, String)) {
        if self.chip.trim().is_empty() {
            report(
                "gpio.chip".into(),
                "must name a GPIO chip, e.g. \"gpiochip0\"".into(),
            );
        }
        if self.backend == GpioBackend::Mock {
            if let Some(message) = super::admin::socket_path_problem(&self.mock_socket) {
                report("gpio.mock_socket".into(), message);
            }
        }
    }
}

/// A line's pull resistor as requested from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    /// Keep whatever the board (device tree) configured.
    #[default]
    AsIs,
    PullUp,
    PullDown,
    Disabled,
}

/// `gpiochip0` and `/dev/gpiochip0` name the same chip.
pub(super) fn normalise_chip(chip: &str) -> String {
    chip.trim_start_matches("/dev/").to_string()
}
