//! The real agent binary as a child process, for tests that must see what an operator sees:
//! exit codes, the log on stderr, the admin socket, `/proc` figures.

use crate::admin::{self, Request};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `doorflow-agent run --config CONFIG`, its stderr in `CONFIG`'s directory (`agent.log`),
/// killed when dropped.
pub struct AgentProcess {
    child: Child,
    admin_socket: PathBuf,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_doorflow-agent")`) with stderr logging;
    /// `customise` adds environment variables or a `pre_exec` hook, or replaces the command
    /// with a wrapper that execs it.
    pub fn start(
        binary: &str,
        config: &Path,
        admin_socket: &Path,
        customise: impl FnOnce(&mut Command),
    ) -> AgentProcess {
        let log = config.with_file_name("agent.log");
        let log_file = std::fs::File::create(&log).expect("create the agent's log file");
        let mut command = super::agent_command(binary);
        command.args(["run", "--config"]).arg(config);
        // May replace the command (to start it through a wrapper); stdio and logging come after.
        customise(&mut command);
        command
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        AgentProcess {
            child: command.spawn().expect("the agent binary starts"),
            admin_socket: admin_socket.to_path_buf(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `status` report through the admin socket, `None` while it does not answer.
    pub fn status(&self) -> Option<Value> {
        let reply = admin::call(&self.admin_socket, &Request::Status).ok()?;
        Some(reply["status"].clone())
    }

    /// Polls `condition` on the status report until it holds (panics after `limit`, or when the
    /// agent exits, with its log).
    pub fn wait_for_status(
        &mut self,
        what: &str,
        limit: Duration,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + limit;
        loop {
            if let Some(exit) = self.child.try_wait().expect("poll the agent") {
                panic!("the agent exited ({exit}) waiting for {what}:\n{}", self.log());
            }
            if let Some(status) = self.status().filter(|s| condition(s)) {
                return status;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `/proc/PID/status` figure in kB (`VmRSS`, `VmHWM`).
    pub fn memory_kb(&self, field: &str) -> u64 {
        proc_status_kb(self.pid(), field).unwrap_or_else(|| panic!("no {field} for the agent"))
    }

    /// Open file descriptors of the agent.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + limit;
        loop {
            if let Some(exit) = self.child.try_wait().expect("poll the agent") {
                return exit;
            }
            assert!(
                Instant::now() < end,
                "the agent did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/PID/status` line's value in kB.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}
