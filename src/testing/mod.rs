//! Test support shared by the integration tests and the benchmarks (feature `testing`, which
//! they get through this package's dev-dependency on itself; never in the shipped binary).
//!
//! - `config`: the demo config with its state moved into a directory, built field by field
//!   (never by search-and-replace on the TOML text, which fails silently when a pattern stops
//!   matching), and written out for tests that start the real binary.
//! - `events`: the one builder of queued audit events.
//! - `harness`: a DoorFlow simulator and an agent (mock GPIO) in this process.
//! - `mock_control`: a client for the mock GPIO control socket.
//! - `notify`: a stand-in for systemd's notify socket (READY, STATUS, watchdog pings).
//! - `openapi`: a small OpenAPI 3.0 schema checker against DoorFlow's published spec.
//! - `process`: the real `doorflow-agent run` as a child process: log, mock socket, status
//!   (through the CLI or the admin socket), `/proc` figures, SIGTERM.
//! - `faketime`: a wall clock the test steps under a running process (libfaketime).

pub mod config;
pub mod events;
pub mod faketime;
pub mod harness;
pub mod mock_control;
pub mod notify;
pub mod openapi;
pub mod process;
pub mod state_dir;
pub mod store_fs;

use std::process::Command;
use std::time::Duration;

/// The agent binary (`env!("CARGO_BIN_EXE_doorflow-agent")` in a test) as a `Command`. When
/// `DOORFLOW_TEST_RUNNER` is set, its words are put in front of the binary: a cross test run on
/// a host without binfmt_misc (an aarch64 test under qemu-user cannot exec an aarch64 binary by
/// itself) sets it to the target's runner, e.g.
/// `DOORFLOW_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"`.
pub fn agent_command(binary: &str) -> Command {
    let runner = std::env::var("DOORFLOW_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        None => Command::new(binary),
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes (a generous bound, not a
/// timing assertion). Returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// `items` with later repeats removed.
pub fn first_occurrences(items: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    items.iter().copied().filter(|i| seen.insert(*i)).collect()
}
