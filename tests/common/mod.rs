//! Helpers shared by integration tests. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod openapi;

use std::process::Command;

/// The agent binary as a `Command`. When `DOORFLOW_TEST_RUNNER` is set, its words are put in
/// front of the binary: a cross test run on a host without binfmt_misc (an aarch64 test under
/// qemu-user cannot exec an aarch64 binary by itself) sets it to the target's runner, e.g.
/// `DOORFLOW_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"`.
pub fn agent() -> Command {
    let bin = env!("CARGO_BIN_EXE_doorflow-agent");
    let runner = std::env::var("DOORFLOW_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        None => Command::new(bin),
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(bin);
            command
        }
    }
}
