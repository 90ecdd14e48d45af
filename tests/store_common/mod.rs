//! Helpers for the store tests: a real, small filesystem to fill, and the agent binary with a
//! config whose state lives in a given directory.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the test may mount filesystems (root here and in CI).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs of a few MiB mounted on a temporary directory for one test, unmounted on drop.
pub struct SmallFs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// `None` (with a message saying why) when not running as root.
    pub fn mount(size_mib: u64, test: &str) -> Option<SmallFs> {
        if !is_root() {
            eprintln!("SKIPPED {test}: mounting a small filesystem needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount tmpfs on {}", dir.path().display());
        Some(SmallFs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Bytes still free for an unprivileged writer.
    pub fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
        unsafe {
            let mut stats: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut stats), 0);
            stats.f_bavail as u64 * stats.f_frsize as u64
        }
    }

    /// Fills the filesystem to 0 bytes free with one file; returns it (delete it to free).
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let bytes = vec![0xA5u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
        assert_eq!(self.available(), 0, "the filesystem is full");
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Copies a directory tree (a store fixture) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The agent binary running on a state directory, its journal (stderr) in a file.
pub struct AgentRun {
    pub child: std::process::Child,
    pub log: PathBuf,
}

/// Files of one agent's state directory, from a config written by `write_config`.
pub struct StateDir {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin: PathBuf,
    pub mock: PathBuf,
    pub store: PathBuf,
}

/// Writes the demo config for a server at `base_url` (a refused port runs offline) with the
/// state under `dir`.
pub fn write_config(dir: &Path, base_url: &str) -> StateDir {
    std::fs::write(dir.join("api_key"), "sim-api-key\n").unwrap();
    let text = crate::support::config_text(dir, base_url, &crate::support::Options::default());
    std::fs::write(dir.join("config.toml"), text).unwrap();
    StateDir::at(dir)
}

/// Shortens a file to `fraction` of its length, as a torn write on flash leaves it.
pub fn truncate(path: &Path, fraction: f64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len((len as f64 * fraction) as u64)
        .unwrap();
}

impl StateDir {
    /// The paths of a state directory whose config is already written.
    pub fn at(dir: &Path) -> StateDir {
        StateDir {
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
        let mut command = crate::common::agent();
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
        crate::common::agent()
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
            if let Ok(reply) =
                doorflow_agent::admin::call(&state.admin, &doorflow_agent::admin::Request::Status)
            {
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
        assert_eq!(crate::support::control(&state.mock, request)["ok"], true);
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
