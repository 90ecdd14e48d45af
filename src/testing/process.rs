//! The real `doorflow-agent run` as a child process, for tests that go through the binary:
//! started on a config file or a `Config`, with extra environment (a restart, signals, a failpoint,
//! a wall clock moved by libfaketime, a stand-in notify socket) or through a wrapper; its log
//! (stderr) in a file of its own; asked for `status --json`, its live status or its mock GPIO
//! socket; measured in `/proc`; stopped with SIGTERM or SIGKILL. Killed on drop.

use super::{agent_command, mock_control};
use crate::config::Config;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
        Some(Memory {
            rss_kb: proc_status_kb(pid, "VmRSS")?,
            hwm_kb: proc_status_kb(pid, "VmHWM")?,
        })
    }
}

/// A running `doorflow-agent run`; its stderr goes to `log_path`.
pub struct AgentProcess {
    binary: String,
    config: PathBuf,
    admin_socket: PathBuf,
    log_path: PathBuf,
    child: Child,
}

impl AgentProcess {
    /// Starts `binary run --config config` with `env` added, logging to stderr (kept in a file
    /// beside the config), and waits for its admin socket.
    pub fn start(binary: &str, config: &Path, admin_socket: &Path, env: &[(String, String)]) -> AgentProcess {
        let env = env.to_vec();
        AgentProcess::start_with(binary, config, admin_socket, move |command| {
            command.envs(env);
        })
    }

    /// As `start`; `customise` adds environment variables or a `pre_exec` hook, or replaces
    /// the command with a wrapper that execs it (logging and stdio are set after it).
    pub fn start_with(
        binary: &str,
        config: &Path,
        admin_socket: &Path,
        customise: impl FnOnce(&mut Command),
    ) -> AgentProcess {
        let agent = AgentProcess::spawn(binary, config, admin_socket, customise);
        let started = wait_until(Duration::from_secs(30), || admin_socket.exists());
        assert!(
            started,
            "the agent did not open its admin socket:\n{}",
            agent.log()
        );
        agent
    }

    /// Writes `config` to `dir/config.toml`, starts the agent on it and waits (up to 30 s)
    /// until its mock GPIO control socket answers.
    pub fn start_config(binary: &str, config: &Config, dir: &Path) -> AgentProcess {
        let path = super::config::write_config(config, dir);
        let agent = AgentProcess::spawn(binary, &path, &config.admin.socket, |_| {});
        let ready = wait_until(Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&config.gpio.mock_socket).is_ok()
        });
        assert!(
            ready,
            "the mock control socket never answered; log:\n{}",
            agent.log()
        );
        agent
    }

    /// Starts the agent without waiting for it (it may be meant to fail, or to be waited for
    /// with `wait_up`). Each start logs to a file of its own beside the config.
    pub fn spawn(
        binary: &str,
        config: &Path,
        admin_socket: &Path,
        customise: impl FnOnce(&mut Command),
    ) -> AgentProcess {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let dir = config.parent().expect("the config is in a directory");
        let log_path = dir.join(format!(
            "agent-{}-{}.log",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let log = std::fs::File::create(&log_path).expect("create the agent log");
        let mut command = agent_command(binary);
        command.args(["run", "--config"]).arg(config);
        customise(&mut command);
        let child = command
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        AgentProcess {
            binary: binary.to_string(),
            config: config.to_path_buf(),
            admin_socket: admin_socket.to_path_buf(),
            log_path,
            child,
        }
    }

    /// Waits (up to 60 s) until the agent answers `status` on its admin socket and, with the
    /// mock backend, its mock GPIO socket is up. Returns the live status, or `None` when the
    /// agent exited first.
    pub fn wait_up(&mut self) -> Option<Value> {
        let mock_socket = self.mock_socket();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if self.exit_status().is_some() {
                return None;
            }
            if let Some(status) = self.live_status() {
                if mock_socket
                    .as_ref()
                    .is_none_or(|socket| std::os::unix::net::UnixStream::connect(socket).is_ok())
                {
                    return Some(status);
                }
            }
            assert!(Instant::now() < end, "the agent did not come up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the agent has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the agent")
    }

    /// The mock GPIO control socket of the agent's config (`None` with the gpiod backend).
    fn mock_socket(&self) -> Option<PathBuf> {
        let config = Config::load(&self.config).ok()?;
        (config.gpio.backend == crate::config::GpioBackend::Mock).then_some(config.gpio.mock_socket)
    }

    /// One request to the agent's mock GPIO control socket, its reply.
    pub fn control(&self, request: Value) -> Value {
        let socket = self.mock_socket().expect("the agent runs the mock GPIO backend");
        mock_control::control(&socket, request)
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Waits (a generous bound, not a timing assertion) until `count` log lines contain every
    /// one of `needles`; panics with the log otherwise.
    pub fn wait_for_log(&self, needles: &[&str], count: usize) -> Vec<String> {
        let found = wait_until(Duration::from_secs(30), || {
            self.log_lines_with(needles).len() >= count
        });
        assert!(
            found,
            "{count} log lines with {needles:?} never appeared; log:\n{}",
            self.log()
        );
        self.log_lines_with(needles)
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

    /// The status report straight from the admin socket, `None` while it does not answer.
    pub fn live_status(&self) -> Option<Value> {
        let reply = crate::admin::call(&self.admin_socket, &crate::admin::Request::Status).ok()?;
        Some(reply["status"].clone())
    }

    /// Polls the live status until `condition` holds (panics after `limit`, or when the agent
    /// exits, with its log).
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
            if let Some(status) = self.live_status().filter(|s| condition(s)) {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident memory now and at its peak.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid()).expect("VmRSS and VmHWM in the agent's /proc/PID/status")
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

    /// `queue dead --json`: the dead letters, one JSON object each.
    pub fn dead_letters(&self) -> Vec<Value> {
        let out = agent_command(&self.binary)
            .args(["queue", "dead", "--json", "--config"])
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
        self.memory_kb("VmHWM")
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL (a crash: nothing is flushed), then waits for the exit.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the agent");
        self.child.wait().expect("wait for the agent");
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

/// A `/proc/PID/status` line's value in kB.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}
