//! The real agent binary as a child process, for tests that need a process of its own (a
//! restart, signals, a wall clock moved by libfaketime): started with extra environment, asked
//! for `status --json` through its admin socket, stopped with SIGTERM, killed on drop.

use super::agent_command;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `doorflow-agent run`; its stderr goes to `log_path`.
pub struct AgentProcess {
    binary: String,
    config: PathBuf,
    log_path: PathBuf,
    child: Child,
}

impl AgentProcess {
    /// Starts `binary run --config config` with `env` added, logging to stderr (kept in a file
    /// beside the config), and waits for its admin socket.
    pub fn start(binary: &str, config: &Path, admin_socket: &Path, env: &[(String, String)]) -> AgentProcess {
        let dir = config.parent().expect("the config is in a directory");
        let log_path = dir.join(format!("agent-{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the agent log");
        let child = agent_command(binary)
            .args(["run", "--config"])
            .arg(config)
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        let agent = AgentProcess {
            binary: binary.to_string(),
            config: config.to_path_buf(),
            log_path,
            child,
        };
        let started = wait_until(Duration::from_secs(30), || admin_socket.exists());
        assert!(
            started,
            "the agent did not open its admin socket:\n{}",
            agent.log()
        );
        agent
    }

    /// `status --json`, from the running agent through its admin socket (the status command
    /// itself runs with the test's own clock).
    pub fn status(&self) -> Value {
        let out = agent_command(&self.binary)
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .expect("run status");
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json prints one JSON object")
    }

    /// `queue dead`: the dead letters, one JSON object each.
    pub fn dead_letters(&self) -> Vec<Value> {
        let out = agent_command(&self.binary)
            .args(["queue", "dead", "--config"])
            .arg(&self.config)
            .output()
            .expect("run queue dead");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a dead letter as JSON"))
            .collect()
    }

    /// The process's peak resident memory (`VmHWM` in /proc/PID/status), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the agent's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then waits (up to 30 s) for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
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

/// Polls `condition` every 50 ms until it holds or `limit` passes (a generous bound, not a
/// timing assertion). Returns whether it held. For blocking tests; async ones use `eventually`.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}
