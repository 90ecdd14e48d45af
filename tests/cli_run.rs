//! The real binary: `run` loads the stored snapshot and answers `status` through the admin
//! socket; SIGTERM stops it cleanly; `status` then reads the store directly.

use doorflow_agent::snapshot::*;
use doorflow_agent::store::Store;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doorflow_agent::config::{Config, GpioBackend};
use doorflow_agent::testing::config::demo_config;

fn agent_binary() -> Command {
    doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
}

/// The demo config with every path moved into `dir` (nothing listens at its API address).
fn offline_config(dir: &Path) -> Config {
    demo_config(dir, "http://127.0.0.1:18080")
}

fn write_config(dir: &Path) -> PathBuf {
    doorflow_agent::testing::config::write_config(&offline_config(dir), dir)
}

fn seed_store(dir: &Path, people: u64) {
    let store = Store::open(&dir.join("db"), 1 << 20).unwrap();
    let parts = SnapshotParts {
        synced_at: Some("2026-11-22T10:00:00Z".parse().unwrap()),
        channels: vec![Channel {
            id: 1341,
            mode: ChannelMode::Unlock { relock_at: None },
            lockdown: None,
            site_id: None,
        }],
        ..SnapshotParts::synthetic(people)
    };
    store.save_snapshot(&parts).unwrap();
}

fn status_json(config: &Path) -> Value {
    let out = agent_binary()
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json prints one JSON object")
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_serves_status_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    seed_store(dir.path(), 25);

    let mut agent = Agent(
        agent_binary()
            .args(["run", "--config"])
            .arg(&config)
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let socket = dir.path().join("admin.sock");
    wait_for("the admin socket", || socket.exists());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "admin socket must not be world-accessible");

    let live = status_json(&config);
    assert_eq!(live["agent_running"], true);
    assert_eq!(live["online"], false);
    assert_eq!(live["snapshot"]["people"], 25);
    assert_eq!(live["snapshot"]["credentials"], 25);
    assert_eq!(live["snapshot"]["synced_at"], "2026-11-22T10:00:00Z");
    assert_eq!(live["queue"]["pending"], 0);
    assert_eq!(live["queue"]["dead"], 0);
    assert_eq!(live["doors"][0]["name"], "front");
    assert_eq!(live["doors"][0]["relay"], "locked");
    assert_eq!(live["doors"][0]["contact"], "closed");
    assert_eq!(live["doors"][1]["contact"], "none");
    assert_eq!(live["doors"][1]["mode"], "unlock");

    // A second agent on the same store and socket is refused with a clear message.
    let second = agent_binary()
        .args(["run", "--config"])
        .arg(&config)
        .env("DOORFLOW_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");

    let pid = agent.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(agent.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("ready"), "{log}");
    assert!(log.contains("store flushed"), "{log}");
    assert!(!socket.exists(), "admin socket left behind");
    assert!(
        !dir.path().join("mock-gpio.sock").exists(),
        "mock control socket left behind after SIGTERM"
    );

    let stopped = status_json(&config);
    assert_eq!(stopped["agent_running"], false);
    assert_eq!(stopped["snapshot"]["people"], 25);
    assert_eq!(stopped["doors"][0]["relay"], "unknown");
    assert_eq!(stopped["doors"][1]["mode"], "unlock");
}

#[test]
fn status_of_a_fresh_install_has_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let report = status_json(&config);
    assert_eq!(report["snapshot"]["people"], 0);
    assert_eq!(report["snapshot"]["synced_at"], Value::Null);
    assert_eq!(report["online"], false);

    let text = agent_binary()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("synced never"), "{text}");
    assert!(text.contains("door front (channel 1340)"), "{text}");
}

#[test]
fn run_with_an_invalid_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[api]\nbase_url = \"https://example.com\"\n").unwrap();
    let out = agent_binary()
        .args(["run", "--config"])
        .arg(&path)
        .env("DOORFLOW_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing field `auth`"));
}

#[test]
fn a_missing_gpio_chip_fails_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = offline_config(dir.path());
    config.gpio.backend = GpioBackend::Gpiod;
    config.gpio.chip = "gpiochip99".into();
    let config = doorflow_agent::testing::config::write_config(&config, dir.path());
    let out = agent_binary()
        .args(["run", "--config"])
        .arg(&config)
        .env("DOORFLOW_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GPIO chip /dev/gpiochip99"), "{stderr}");
    assert!(
        stderr.contains("no such GPIO chip") || stderr.contains("not"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("admin.sock").exists(),
        "admin socket left behind after a failed start"
    );
}

#[test]
fn the_standalone_simulator_serves_and_requires_auth() {
    use std::io::{BufRead, Read, Write};
    let mut sim = Agent(
        doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-sim"))
            .args(["--port", "0", "--people", "3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufReader::new(sim.0.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let address = first.trim().rsplit("http://").next().unwrap().to_string();
    let get = |auth: &str| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /api/3/people HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    };
    assert!(get("").starts_with("HTTP/1.1 401"));
    // "sim-api-key:X" in base64.
    let reply = get("Authorization: Basic c2ltLWFwaS1rZXk6WA==\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"id\":3") && reply.to_ascii_lowercase().contains("x-ratelimit-remaining"));
}

#[test]
fn queue_dead_prints_a_table_and_json_on_request() {
    use doorflow_agent::store::{Call, Capacity, DeadLetter, QueuedCall};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    {
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let queued = QueuedCall {
            id: "0b7d8f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            call: Call::Admit {
                channel_id: 1340,
                person_id: 17,
            },
            created_at: "2026-11-22T10:00:00Z".parse().unwrap(),
            created_boot: None,
            attempts: 1,
            next_attempt_at: None,
            next_attempt_boot: None,
            last_error: None,
            hold: None,
        };
        let capacity = Capacity {
            max_records: 100,
            max_bytes: 1 << 20,
            max_admits: 50,
        };
        let key = store.enqueue(std::slice::from_ref(&queued), capacity).unwrap()[0];
        let dead = DeadLetter {
            queued,
            status: Some(403),
            reason: "forbidden".into(),
            detail: "HTTP 403: the token lacks the scope account.channel.admit".into(),
            dead_at: "2026-11-22T10:00:05Z".parse().unwrap(),
        };
        store.outbox_kill(key, &dead).unwrap();
        store.flush().unwrap();
    }
    let run = |args: &[&str]| {
        let out = agent_binary()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&["queue", "dead"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for column in ["KEY", "LANE", "HTTP", "REASON", "DEAD AT", "ID", "CALL", "DETAIL"] {
        assert!(lines[0].contains(column), "{table}");
    }
    for value in [
        "admit",
        "403",
        "forbidden",
        "2026-11-22T10:00:05Z",
        "0b7d8f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "admit person 17 on channel 1340",
        "lacks the scope account.channel.admit",
    ] {
        assert!(lines[1].contains(value), "`{value}` missing: {table}");
    }
    let json = run(&["queue", "dead", "--json"]);
    let line: Value = serde_json::from_str(json.trim()).expect("one JSON object per line");
    assert_eq!(line["letter"]["reason"], "forbidden");
    assert_eq!(line["letter"]["queued"]["call"]["person_id"], 17);
    assert_eq!(run(&["queue", "list"]), "nothing queued\n");
}
