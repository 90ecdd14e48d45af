//! Logging: journald when running as a service and the journal socket accepts us, readable
//! stderr otherwise (a terminal, CI, tests, the demo). `DOORFLOW_LOG_TARGET=journald|stderr`
//! overrides the choice. The filter comes from `DOORFLOW_LOG` (same syntax as `RUST_LOG`),
//! default `info`.
//!
//! Card numbers and PINs are never logged in full: callers pass `credential::mask(value)`.

use std::path::Path;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const LOG_ENV: &str = "DOORFLOW_LOG";
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Stderr,
}

/// Installs the global subscriber. Returns where logs go. Safe to call more than once (later
/// calls keep the first subscriber).
pub fn init() -> Sink {
    init_with_default("info")
}

/// As `init`, with another filter when `DOORFLOW_LOG` is unset (the demo keeps its timeline
/// readable with `warn`).
pub fn init_with_default(default_filter: &str) -> Sink {
    let filter = || EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_filter));
    if wants_journald() {
        if let Ok(journald) = tracing_journald::layer() {
            // Fields keep their own names, upcased (DOOR, EVENT_CODE, REASON, ...), instead of
            // tracing-journald's default `F_` prefix: the runbook filters on them, e.g.
            // `journalctl -u doorflow-agent EVENT_CODE=32`. No field of ours is named like a
            // journald field (MESSAGE, PRIORITY, CODE_*, SYSLOG_*, ERRNO); keep it that way.
            let journald = journald
                .with_syslog_identifier("doorflow-agent".to_string())
                .with_field_prefix(None);
            if tracing_subscriber::registry()
                .with(journald.with_filter(filter()))
                .try_init()
                .is_ok()
            {
                return Sink::Journald;
            }
        }
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = tracing_subscriber::registry()
        .with(stderr.with_filter(filter()))
        .try_init();
    Sink::Stderr
}

fn wants_journald() -> bool {
    match std::env::var("DOORFLOW_LOG_TARGET").as_deref() {
        Ok("stderr") => return false,
        Ok("journald") => return true,
        _ => {}
    }
    // systemd sets these for a service; the native protocol is preferred over the stderr
    // stream for its structured fields.
    let under_systemd =
        std::env::var_os("INVOCATION_ID").is_some() || std::env::var_os("JOURNAL_STREAM").is_some();
    under_systemd && Path::new(JOURNAL_SOCKET).exists()
}
