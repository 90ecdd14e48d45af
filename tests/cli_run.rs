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
    assert_in_the_contract(&live);
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
    // Through the running agent too: an id that is no dead letter is an error.
    let (code, _, stderr) = cli(&config, &["queue", "retry-dead", "nosuch"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("`nosuch`"), "{stderr}");

    // A second agent on the same store and socket is refused at once with a clear message:
    // the holder is an agent (its admin socket answers), so waiting for it is pointless.
    let second = agent_binary()
        .args(["run", "--config"])
        .arg(&config)
        .env("DOORFLOW_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another agent"), "{stderr}");
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert!(!stderr.contains("`status` or `queue` command"), "{stderr}");

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
    assert_in_the_contract(&stopped);
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
            attempts: 1,
            ..QueuedCall::untried(
                "0b7d8f2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
                Call::Admit {
                    channel_id: 1340,
                    person_id: 17,
                },
                "2026-11-22T10:00:00Z".parse().unwrap(),
            )
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

/// An admit call for person `n`, queued at a fixed time.
fn queued_admit(n: u64) -> doorflow_agent::store::QueuedCall {
    doorflow_agent::store::QueuedCall::untried(
        format!("call-{n}"),
        doorflow_agent::store::Call::Admit {
            channel_id: 1340,
            person_id: n,
        },
        "2026-11-22T10:00:00Z".parse().unwrap(),
    )
}

/// Runs the CLI on `config`: (exit code, stdout, stderr).
fn cli(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = agent_binary()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn queue_list_says_how_many_it_showed_of_how_many_are_queued() {
    use doorflow_agent::store::Capacity;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    {
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let calls: Vec<_> = (1..=30).map(queued_admit).collect();
        let capacity = Capacity {
            max_records: 100,
            max_bytes: 1 << 20,
            max_admits: 50,
        };
        store.enqueue(&calls, capacity).unwrap();
        store.flush().unwrap();
    }
    let (code, stdout, stderr) = cli(&config, &["queue", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 31, "a header and 30 rows: {stdout}");
    assert_eq!(stderr.trim(), "30 queued");

    let (code, stdout, stderr) = cli(&config, &["queue", "list", "--limit", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("call-1"), "the oldest first: {stdout}");
    assert_eq!(stderr.trim(), "showing 1 of 30 queued");

    let (code, stdout, stderr) = cli(&config, &["queue", "list", "--limit", "0"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("nothing queued"), "30 are queued: {stdout}");
    assert_eq!(stderr.trim(), "showing 0 of 30 queued");

    let (_, stdout, stderr) = cli(&config, &["queue", "list", "--limit", "2", "--json"]);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert_eq!(stderr.trim(), "showing 2 of 30 queued");

    let (code, stdout, stderr) = cli(&config, &["queue", "dead"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "no dead letters\n");
    assert_eq!(stderr.trim(), "0 dead");
}

#[test]
fn retry_dead_of_an_id_that_is_no_dead_letter_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (code, stdout, stderr) = cli(&config, &["queue", "retry-dead", "nosuch"]);
    assert_eq!(code, Some(1), "stdout {stdout} stderr {stderr}");
    assert!(
        stderr.contains("`nosuch`") && stderr.contains("no dead letter"),
        "{stderr}"
    );
    assert!(!stdout.contains("requeued"), "{stdout}");
    // Retrying all of none did what was asked.
    let (code, stdout, stderr) = cli(&config, &["queue", "retry-dead", "--all"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "0 requeued\n");
}

#[test]
fn retry_dead_explains_its_id_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (code, _, stderr) = cli(&config, &["queue", "retry-dead"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--all"), "the usage names both forms: {stderr}");
    let (code, help, _) = cli(&config, &["queue", "retry-dead", "--help"]);
    assert_eq!(code, Some(0));
    // Long help puts an option's text on the line below it.
    let lines: Vec<&str> = help.lines().collect();
    let all = lines
        .iter()
        .position(|line| line.trim_start().starts_with("--all"))
        .map(|at| lines[at..=at + 1].join(" "))
        .unwrap_or_default();
    assert!(all.contains("every dead letter"), "--all has help text: {help}");
    assert!(help.contains("KEY column"), "{help}");
    let (_, help, _) = cli(&config, &["queue", "list", "--help"]);
    assert!(help.contains("--limit <N>") && help.contains("at most"), "{help}");
}

/// Stops `child` with SIGTERM and waits for it (30 s at most).
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A start-up waiting for a store that a process other than an agent holds (here the test, as
/// a `status` command would) names the likely holders and stops cleanly on SIGTERM meanwhile.
#[test]
fn sigterm_while_waiting_for_the_store_stops_the_start_up_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let held = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = Agent(
        agent_binary()
            .args(["run", "--config"])
            .arg(&config)
            .env("DOORFLOW_LOG_TARGET", "stderr")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the warning about the held store", || {
        read_log().contains("waiting up to")
    });
    let warning = read_log();
    assert!(warning.contains("`status` or `queue` command"), "{warning}");
    // Held all along (the store is never free to take): the old start-up ignored the signal and
    // failed once its wait ran out.
    let exit = terminate(&mut agent.0);
    drop(held);
    let log = read_log();
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(log.contains("stopped before start-up"), "{log}");
    assert!(!dir.path().join("admin.sock").exists(), "{log}");
}

/// Runs the CLI with stdout a pipe whose reader has already gone (as after `| head -1`):
/// (exit status, stderr).
fn into_closed_pipe(config: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let out = agent_binary()
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_printing_command_ends_quietly_on_a_closed_stdout() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    seed_store(dir.path(), 3);
    {
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let capacity = doorflow_agent::store::Capacity {
            max_records: 100,
            max_bytes: 1 << 20,
            max_admits: 50,
        };
        let keys = store
            .enqueue(&[queued_admit(1), queued_admit(2)], capacity)
            .unwrap();
        let dead = doorflow_agent::store::DeadLetter {
            queued: queued_admit(1),
            status: Some(403),
            reason: "forbidden".into(),
            detail: "test".into(),
            dead_at: "2026-11-22T10:00:05Z".parse().unwrap(),
        };
        store.outbox_kill(keys[0], &dead).unwrap();
        store.flush().unwrap();
    }
    // Each has something to print (a dead letter to list, `0 purged` at the least).
    for args in [
        &["check-config"][..],
        &["status"],
        &["status", "--json"],
        &["status", "--prometheus"],
        &["queue", "list"],
        &["queue", "list", "--json"],
        &["queue", "dead"],
        &["queue", "dead", "--json"],
        &["queue", "retry-dead", "--all"],
        &["queue", "purge-dead"],
    ] {
        let (status, stderr) = into_closed_pipe(&config, args);
        // As `cat` ends on a closed pipe: SIGPIPE, and no panic message.
        assert_eq!(
            status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {status:?} {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

/// `demo` with `$TMPDIR` at `tmp`, stdout piped: the child and its state directory, once the
/// agent is up in it (after the "ready" line).
fn demo_until_ready(
    tmp: &Path,
) -> (
    Agent,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    PathBuf,
) {
    use std::io::BufRead;
    let mut child = Agent(
        agent_binary()
            .arg("demo")
            .env("TMPDIR", tmp)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut state = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some((_, dir)) = line.split_once("state in ") {
            state = Some(PathBuf::from(dir.trim()));
        }
        if line.contains("ready:") {
            break;
        }
    }
    let state = state.expect("the demo names its state directory");
    assert!(state.starts_with(tmp), "{}", state.display());
    (child, lines, state)
}

/// What is left under `tmp`.
fn leftovers(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn the_demo_state_is_private_and_removed_on_sigterm_sigint_and_sighup() {
    for signal in ["-TERM", "-INT", "-HUP"] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut demo, lines, state) = demo_until_ready(tmp.path());
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{signal}: the state holds an API key");
        assert!(state.join("api_key").exists() && state.join("admin.sock").exists());
        assert!(Command::new("kill")
            .args([signal, &demo.0.id().to_string()])
            .status()
            .unwrap()
            .success());
        // The rest of its output, to the end.
        let _ = lines.count();
        let status = demo.0.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{signal}: {status:?}");
        assert_eq!(leftovers(tmp.path()), Vec::<PathBuf>::new(), "{signal}");
    }
}

#[test]
fn the_demo_state_is_removed_when_stdout_closes() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let (mut demo, lines, state) = demo_until_ready(tmp.path());
    assert!(state.exists());
    // As `demo | head`: the reader goes; the demo's next line finds the pipe closed.
    drop(lines);
    let status = demo.0.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
    assert_eq!(leftovers(tmp.path()), Vec::<PathBuf>::new());
}

#[test]
fn the_demo_refuses_a_config_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (code, stdout, stderr) = cli(&config, &["demo"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stderr.contains("takes no --config"), "{stderr}");
    assert!(stdout.is_empty(), "the demo did not start: {stdout}");
    let (_, help, _) = cli(&config, &["demo", "--help"]);
    assert!(help.contains("--config is refused"), "{help}");
}

/// The README's status contract table: each field path (`doors[].reader.type`; a `.name` after
/// a comma replaces the last part of the path before it) and the text of its row.
fn status_contract() -> Vec<(String, String)> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("### The `status` contract")
        .expect("the contract section");
    let table = &readme[start..];
    let table = &table[..table.find("For example").expect("the example after the table")];
    let mut fields = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split(" | ").next().unwrap();
        let mut last = String::new();
        for name in first.split('`').skip(1).step_by(2) {
            let path = match name.strip_prefix('.') {
                Some(part) => match last.rsplit_once('.') {
                    Some((parent, _)) => format!("{parent}.{part}"),
                    None => part.to_string(),
                },
                None => name.to_string(),
            };
            fields.push((path.clone(), row.to_string()));
            last = path;
        }
    }
    fields
}

/// Every field path of a JSON value (`doors[].reader.type`), with its value.
fn field_paths<'a>(prefix: &str, value: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.push((path.clone(), child));
                field_paths(&path, child, out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for item in items {
                field_paths(&format!("{prefix}[]"), item, out);
            }
        }
        _ => {}
    }
}

/// Every field of a real `status --json` is in the README's contract table, and the values of
/// its enumerations (relay, contact, uplink, reader state) are among those the table lists.
fn assert_in_the_contract(report: &Value) {
    let contract = status_contract();
    // Objects whose fields the table describes in words, in the object's own row.
    let described_inline = ["queue.last_drop.", "queue.last_loss."];
    let mut fields = Vec::new();
    field_paths("", report, &mut fields);
    for (path, value) in fields {
        if described_inline.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        // A group (`clock`, `doors`) is in the table through its fields.
        let group = [format!("{path}."), format!("{path}[].")];
        let in_group = |field: &str| group.iter().any(|g| field.starts_with(g.as_str()));
        let Some(row) = contract
            .iter()
            .find(|(field, _)| *field == path)
            .map(|(_, row)| row)
        else {
            let listed =
                (value.is_object() || value.is_array()) && contract.iter().any(|(field, _)| in_group(field));
            assert!(listed, "`{path}` is not in the README's status contract table");
            continue;
        };
        let enumerated = [
            "doors[].relay",
            "doors[].contact",
            "doors[].mode",
            "doors[].reader.type",
            "doors[].reader.state",
            "queue.uplink",
            "store.state",
            "doorflow_auth.state",
        ];
        if let (true, Some(text)) = (enumerated.contains(&path.as_str()), value.as_str()) {
            assert!(
                row.contains(&format!("`{text}`")),
                "`{path}` is `{text}`, which its row does not list: {row}"
            );
        }
    }
}
