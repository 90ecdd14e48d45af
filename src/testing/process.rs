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
    admin_socket: PathBuf,
}

/// A process's memory as the kernel reports it in `/proc/<pid>/status`, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kb: u64,
    /// The highest resident set size so far (`VmHWM`).
    pub hwm_kb: u64,
}

/// Resident memory of a process by where it lives (`/proc/<pid>/smaps`), KiB, largest first:
/// the executable's own pages, each shared library, `[heap]`, `[stack]`, and anonymous
/// mappings (thread stacks, malloc arenas, large allocations).
pub fn resident_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut by_name: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            name = match words.nth(4) {
                Some(path) => path.rsplit('/').next().unwrap_or(path).to_string(),
                None => "anonymous".to_string(),
            };
        } else if first == "Rss:" {
            let kb: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by_name.entry(name.clone()).or_default() += kb;
        }
    }
    let mut sorted: Vec<(String, u64)> = by_name.into_iter().filter(|(_, kb)| *kb > 0).collect();
    sorted.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    sorted
}

impl Memory {
    /// Reads `/proc/<pid>/status`; `None` once the process is gone.
    pub fn of(pid: u32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(Memory {
            rss_kb: field("VmRSS:")?,
            hwm_kb: field("VmHWM:")?,
        })
    }
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
            admin_socket: config.admin.socket.clone(),
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

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's memory now (zeros once it has exited).
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid()).unwrap_or_default()
    }

    /// `status` through the admin socket: the report's JSON object.
    pub fn status(&self) -> Value {
        let reply = mock_control::control(&self.admin_socket, serde_json::json!({"op": "status"}));
        assert_eq!(reply["ok"], true, "status through the admin socket: {reply}");
        reply["status"].clone()
    }

    /// Stops the agent with SIGTERM and waits for it (up to 30 s; then the drop kills it).
    pub fn stop(mut self) {
        let _ = terminate(&mut self.child);
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
        Memory::of(self.child.id())
            .expect("VmHWM in the agent's /proc/PID/status")
            .hwm_kb
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then waits (up to 30 s) for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        match terminate(&mut self.child) {
            Some(status) => status,
            None => panic!("the agent did not stop on SIGTERM:\n{}", self.log()),
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child` and waits up to 30 s for it to exit; `None` if it did not.
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut exited = None;
    wait_until(Duration::from_secs(30), || {
        exited = child.try_wait().ok().flatten();
        exited.is_some()
    });
    exited
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
