//! One agent's state directory (config, sockets, store), for tests that stop, kill, damage and
//! restart the real binary on it (`AgentProcess`).

use super::process::AgentProcess;
use std::io::Write;
use std::path::{Path, PathBuf};

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

    /// Starts `doorflow-agent run` with extra environment, without waiting for it
    /// (`AgentProcess::wait_up` does).
    pub fn start(&self, env: &[(&str, &str)]) -> AgentProcess {
        AgentProcess::spawn(&self.binary, &self.config, &self.admin, |command| {
            command.env("DOORFLOW_LOG", "info");
            command.envs(env.iter().copied());
        })
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
