//! OSDP readers through the real agent binary, against a reader the project did not write:
//! LibOSDP's Python package (PyPI `libosdp`) as the PD, on a pseudo-terminal (tests/osdp/pd.py).
//! The door is the demo config's `lobby` (mock GPIO relay, OSDP reader).
//!
//! The harness installs what it needs when it is missing: python3-venv (apt) and `libosdp`
//! (pip, into target/osdp-venv).

use doorflow_agent::config::{ReaderConfig, SecretSource};
use doorflow_agent::credential::CardFormat;
use doorflow_agent::hw::mock::reader::encode_card;
use doorflow_agent::snapshot::SnapshotParts;
use doorflow_agent::store::Store;
use doorflow_agent::testing::config::{demo_config, write_config};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn agent_binary() -> Command {
    doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
}

/// The libosdp release the PD runs (pinned: the test must not change under us).
const LIBOSDP_PYPI: &str = "libosdp==3.2.9";
const WAIT: Duration = Duration::from_secs(30);
/// A key the reader holds and the agent is given (tests 2 and 3).
const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OTHER_KEY: &str = "00112233445566778899aabbccddeeff";

/// The venv's python, created on first use (one test at a time creates it).
fn python() -> PathBuf {
    static SETUP: Mutex<()> = Mutex::new(());
    let _guard = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("osdp-venv");
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import osdp"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return python;
    }
    let venv_ok = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !venv_ok {
        // Debian keeps venv in its own package.
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "python3-venv"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "python3-venv is missing and apt-get could not install it"
        );
        assert!(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .unwrap()
            .success());
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", LIBOSDP_PYPI])
        .status()
        .unwrap();
    assert!(pip.success(), "pip install {LIBOSDP_PYPI} failed");
    assert!(ready(), "the osdp module does not import after installing it");
    python
}

/// The Python reader: a child process speaking JSON lines.
struct Reader {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Value>,
    /// Every line seen so far.
    seen: Vec<Value>,
}

impl Reader {
    fn start(link: &Path, key: Option<&str>) -> Reader {
        let mut command = Command::new(python());
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/osdp/pd.py"))
            .arg("--link")
            .arg(link)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(key) = key {
            command.args(["--key", key]);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
            }
        });
        let mut reader = Reader {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        reader.wait_for("the reader's pty", |v| v.get("ready").is_some());
        reader
    }

    fn send(&mut self, request: Value) {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line (from now on) that matches.
    fn wait_for(&mut self, what: &str, mut matches: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) => {
                    self.seen.push(value.clone());
                    if matches(&value) {
                        return value;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; the reader said: {:?}", self.seen),
            }
        }
    }

    fn card(&mut self, number: u64) {
        let bits = encode_card(CardFormat::H10301, 1, number).unwrap();
        self.send(json!({"op": "card", "bits": bits.to_string()}));
    }

    /// The next LED and buzzer commands.
    fn feedback(&mut self) -> (Value, Value) {
        let led = self.wait_for("an LED command", |v| v["command"].get("led").is_some());
        let buzzer = self.wait_for("a buzzer command", |v| v["command"].get("buzzer").is_some());
        (led["command"]["led"].clone(), buzzer["command"]["buzzer"].clone())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Agent {
    child: Child,
    config: PathBuf,
    dir: PathBuf,
    stderr: Receiver<String>,
    log: Vec<String>,
}

impl Agent {
    /// The agent on the demo config (state in `dir`), its store seeded with 25 people whose
    /// cards are their ids, the lobby reader on `dir/osdp-bus`, given `key_file` when set.
    fn start(dir: &Path, key_file: Option<&Path>) -> Agent {
        let mut config = demo_config(dir, "http://127.0.0.1:18080");
        let ReaderConfig::Osdp(lobby) = &mut config.doors[2].reader else {
            panic!("the demo's third door has an OSDP reader");
        };
        lobby.key_file = key_file.map(|path| SecretSource::File(path.to_path_buf()));
        let config = write_config(&config, dir);
        if !dir.join("db").exists() {
            let store = Store::open(&dir.join("db"), 1 << 20).unwrap();
            store.save_snapshot(&SnapshotParts::synthetic(25)).unwrap();
        }
        let mut child = agent_binary()
            .args(["run", "--config"])
            .arg(&config)
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .env("DOORFLOW_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let agent = Agent {
            child,
            config,
            dir: dir.to_path_buf(),
            stderr: rx,
            log: Vec::new(),
        };
        let socket = dir.join("admin.sock");
        wait_until("the admin socket", || socket.exists());
        agent
    }

    fn status(&self) -> Value {
        let out = agent_binary()
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn lobby_reader(&self) -> Value {
        self.status()["doors"][2]["reader"].clone()
    }

    fn wait_reader(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            last = self.lobby_reader();
            if matches(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for the reader to be {what}; last status: {last}");
    }

    fn relay_released(&self) -> bool {
        let mut stream = UnixStream::connect(self.dir.join("mock-gpio.sock")).unwrap();
        writeln!(stream, "{}", json!({"op": "state", "door": "lobby"})).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        let reply: Value = serde_json::from_str(&line).unwrap();
        reply["relay"]["released"].as_bool().unwrap()
    }

    /// Log lines so far.
    fn log(&mut self) -> &[String] {
        self.log.extend(self.stderr.try_iter());
        &self.log
    }

    fn wait_log(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log().iter().find(|l| matches(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} in the log: {:#?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reader holding `KEY` and an agent given `agent_key` in a key file (mode 0600).
fn keyed_reader_and_agent(dir: &Path, agent_key: &str) -> (Reader, Agent) {
    let key_file = dir.join("reader.key");
    std::fs::write(&key_file, format!("{agent_key}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let reader = Reader::start(&dir.join("osdp-bus"), Some(KEY));
    let agent = Agent::start(dir, Some(&key_file));
    (reader, agent)
}

fn online_and_secure(reader: &Value) -> bool {
    reader["state"] == "online" && reader["secure_channel"] == true
}

#[test]
fn a_factory_reader_gets_its_key_then_a_card_is_granted_with_green_and_one_beep() {
    let dir = tempfile::tempdir().unwrap();
    let mut reader = Reader::start(&dir.path().join("osdp-bus"), None);
    let mut agent = Agent::start(dir.path(), None);

    // Install mode: the secure channel comes up on SCBK-D, the agent hands over the key it
    // generated, and the channel comes up again on that key.
    let keyset = reader.wait_for("osdp_KEYSET", |v| v["command"].get("keyset").is_some());
    let key_file = dir.path().join("osdp-keys/lobby.key");
    let stored = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(keyset["command"]["keyset"].as_str().unwrap(), stored.trim());
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let status = agent.wait_reader("online and secure", online_and_secure);
    assert_eq!(status["type"], "osdp");
    assert_eq!(status["address"], 0);
    assert!(
        !dir.path().join("osdp-keys/lobby.key.pending").exists(),
        "a confirmed key is no longer pending"
    );

    // A card of person 7: relay first, then green and one beep on the reader.
    assert!(!agent.relay_released());
    reader.card(7);
    wait_until("the lobby relay to release", || agent.relay_released());
    let (led, buzzer) = reader.feedback();
    assert_eq!(led["on_color"], 2, "green: {led}");
    assert_eq!(led["temporary"], true);
    assert_eq!(buzzer["rep_count"], 1, "{buzzer}");
    wait_until("the relay to lock again", || !agent.relay_released());

    // An unknown card: red, two beeps, the relay stays locked.
    reader.card(999);
    let (led, buzzer) = reader.feedback();
    assert_eq!(led["on_color"], 1, "red: {led}");
    assert_eq!(buzzer["rep_count"], 2, "{buzzer}");
    assert!(!agent.relay_released());

    // A PIN typed on the reader goes the same way (person 7 has no PIN: denied).
    reader.send(json!({"op": "keys", "keys": "1234#"}));
    let (led, _) = reader.feedback();
    assert_eq!(led["on_color"], 1);

    agent.wait_log("the grant", |l| l.contains("lobby: granted "));
    let key = stored.trim().to_string();
    assert!(
        agent.log().iter().all(|l| !l.contains(&key)),
        "the key must never be logged"
    );
}

#[test]
fn a_reader_with_another_key_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut reader, mut agent) = keyed_reader_and_agent(dir.path(), OTHER_KEY);

    let status = agent.wait_reader("refused", |r| r["state"] == "offline");
    assert_eq!(status["reason"], "reader_key_refused", "{status}");
    assert_eq!(status["secure_channel"], false);
    let line = agent.wait_log("the refusal", |l| l.contains("OSDP reader offline"));
    assert!(line.contains("reader_key_refused"), "{line}");
    // The loss is a door event (34), journaled like every audit event.
    agent.wait_log("event 34", |l| {
        l.contains("event_code=34") && l.contains("reader_key_refused")
    });

    // A card at the refused reader opens nothing and gets no feedback.
    reader.card(7);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!agent.relay_released());
    assert!(reader.lines.try_iter().all(|v| v["command"].get("led").is_none()));
    assert!(
        reader
            .seen
            .iter()
            .all(|v| v.get("sc_active") != Some(&json!(true))),
        "no secure channel with the wrong key: {:?}",
        reader.seen
    );
}

#[test]
fn a_reader_that_goes_away_is_reported_offline_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut reader, mut agent) = keyed_reader_and_agent(dir.path(), KEY);
    agent.wait_reader("online and secure", online_and_secure);

    // Power cut at the reader.
    reader.send(json!({"op": "power", "on": false}));
    let lost_at = Instant::now();
    let status = agent.wait_reader("offline", |r| r["state"] == "offline");
    let detected = lost_at.elapsed();
    assert_eq!(status["reason"], "reader_no_answer", "{status}");
    assert!(
        detected < Duration::from_secs(10),
        "loss noticed after {detected:?}"
    );
    agent.wait_log("event 34", |l| {
        l.contains("event_code=34") && l.contains("reader_no_answer")
    });
    reader.card(7);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!agent.relay_released());

    // Power back: a fresh secure channel, online again, reported as restored (35).
    reader.send(json!({"op": "power", "on": true}));
    agent.wait_reader("back online", online_and_secure);
    agent.wait_log("event 35", |l| l.contains("event_code=35"));
    reader.card(7);
    wait_until("the relay to release", || agent.relay_released());

    // Tamper: 90 when it opens, 91 when it closes.
    reader.send(json!({"op": "tamper", "on": true}));
    agent.wait_log("event 90", |l| l.contains("event_code=90"));
    assert_eq!(agent.lobby_reader()["tamper"], true);
    reader.send(json!({"op": "tamper", "on": false}));
    agent.wait_log("event 91", |l| l.contains("event_code=91"));

    // The USB adapter pulled out: the port itself is gone, then comes back at the same path.
    drop(reader);
    let status = agent.wait_reader("offline", |r| r["state"] == "offline");
    assert_eq!(status["reason"], "reader_port_error", "{status}");
    let _reader = Reader::start(&dir.path().join("osdp-bus"), Some(KEY));
    agent.wait_reader("online again on the reopened port", online_and_secure);
}
