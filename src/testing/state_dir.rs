//! One agent's state directory (config, sockets, store) and the real binary running on it, for
//! tests that stop, kill, damage and restart it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The agent binary running on a state directory, its journal (stderr) in a file.
pub struct AgentRun {
    pub child: std::process::Child,
    pub log: PathBuf,
}

/// Files of one agent's state directory, from a config written by `write_config`.
pub struct StateDir {
    /// The agent binary (`env!("CARGO_BIN_EXE_doorflow-agent")` in a test).
    pub binary: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin: PathBuf,
    pub mock: PathBuf,
    pub store: PathBuf,
}

impl StateDir {
    /// Writes the harness's config (the demo's, without its OSDP door) for a server at
    /// `base_url` (a refused port runs offline) with the state under `dir`.
    pub fn write(binary: &str, dir: &Path, base_url: &str) -> StateDir {
        let config = super::harness::Options::default().config(dir, base_url);
        super::config::write_config(&config, dir);
        StateDir::at(binary, dir)
    }

    /// The paths of a state directory whose config is already written.
    pub fn at(binary: &str, dir: &Path) -> StateDir {
        StateDir {
            binary: binary.to_string(),
            dir: dir.to_path_buf(),
            config: dir.join("config.toml"),
            admin: dir.join("admin.sock"),
            mock: dir.join("mock-gpio.sock"),
            store: dir.join("db"),
        }
    }

    /// Starts `doorflow-agent run` with extra environment.
    pub fn start(&self, env: &[(&str, &str)]) -> AgentRun {
        let log = self.dir.join(format!("agent-{}.log", fastrand::u32(..)));
        let mut command = super::agent_command(&self.binary);
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .env("DOORFLOW_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        AgentRun {
            child: command.spawn().expect("agent binary starts"),
            log,
        }
    }

    /// `status --json` through the binary.
    pub fn status_cli(&self) -> std::process::Output {
        super::agent_command(&self.binary)
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

impl AgentRun {
    /// Waits until the agent answers `status` on its admin socket and its mock GPIO socket is
    /// up; `None` if it exited first.
    pub fn wait_up(&mut self, state: &StateDir) -> Option<serde_json::Value> {
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            if let Ok(reply) = crate::admin::call(&state.admin, &crate::admin::Request::Status) {
                if std::os::unix::net::UnixStream::connect(&state.mock).is_ok() {
                    return Some(reply["status"].clone());
                }
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "agent did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().success()
    }

    pub fn journal(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Swipes card `number` (H10301, facility 1) at the front door and returns the event the agent
/// made durable for it (read from `watch_events`).
pub fn swipe_and_watch(state: &StateDir, numbers: &[u64]) -> Vec<serde_json::Value> {
    use std::io::{BufRead, BufReader};
    let mut watch = std::os::unix::net::UnixStream::connect(&state.admin).unwrap();
    writeln!(watch, "{}", serde_json::json!({"op": "watch_events"})).unwrap();
    watch
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut lines = BufReader::new(watch).lines();
    let _hello = lines.next();
    let mut events = Vec::new();
    for number in numbers {
        let request = serde_json::json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": number});
        assert_eq!(super::mock_control::control(&state.mock, request)["ok"], true);
        loop {
            let line = lines.next().expect("an event").expect("readable");
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            // Door events (relocked, ...) may come in between; the swipe's has a credential.
            if value["event"]["credential"].is_string() {
                events.push(value["event"].clone());
                break;
            }
        }
        // Frames closer than the frame gap would merge, as on a real reader.
        std::thread::sleep(std::time::Duration::from_millis(120));
    }
    events
}
