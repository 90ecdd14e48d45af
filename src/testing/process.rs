//! The real `doorflow-agent run` as a child process, for tests that go through the binary.
//! `RunningAgent`: started on a `Config`, its log (stderr) collected line by line, its mock GPIO
//! control socket. `AgentProcess`: started on a config file with extra environment (a restart,
//! signals, a wall clock moved by libfaketime), asked for `status --json`, stopped with SIGTERM.
//! Both are killed on drop.

use super::{agent_command, mock_control};
use crate::config::Config;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running agent. Dropping it kills the process.
pub struct RunningAgent {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    mock_socket: PathBuf,
}

impl RunningAgent {
    /// Writes `config` to `dir/config.toml` and starts `binary run` on it (log to stderr), then
    /// waits (up to 30 s) until the mock GPIO control socket answers.
    pub fn start(binary: &str, config: &Config, dir: &Path) -> RunningAgent {
        let path = super::config::write_config(config, dir);
        let mut child = agent_command(binary)
            .args(["run", "--config"])
            .arg(&path)
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let agent = RunningAgent {
            child,
            log,
            mock_socket: config.gpio.mock_socket.clone(),
        };
        let ready = agent.wait_until(Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&agent.mock_socket).is_ok()
        });
        assert!(
            ready,
            "the mock control socket never answered; log:\n{}",
            agent.log_text()
        );
        agent
    }

    /// One request to the mock GPIO control socket, its reply.
    pub fn control(&self, request: Value) -> Value {
        mock_control::control(&self.mock_socket, request)
    }

    /// Everything the agent has logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .cloned()
            .collect()
    }

    /// Waits (a generous bound, not a timing assertion) until `count` log lines contain every
    /// one of `needles`; panics with the log otherwise.
    pub fn wait_for_log(&self, needles: &[&str], count: usize) -> Vec<String> {
        let found = self.wait_until(Duration::from_secs(30), || {
            self.log_lines_with(needles).len() >= count
        });
        assert!(
            found,
            "{count} log lines with {needles:?} never appeared; log:\n{}",
            self.log_text()
        );
        self.log_lines_with(needles)
    }

    fn wait_until(&self, limit: Duration, condition: impl FnMut() -> bool) -> bool {
        wait_until(limit, condition)
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
