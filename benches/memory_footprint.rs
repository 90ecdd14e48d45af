//! Resident memory of the real agent (`run`, mock GPIO) with 100,000 cached people and
//! credentials. Build the binary first: `cargo build --release && cargo bench --bench memory_footprint`.
//! Prints VmRSS/VmHWM; asserts nothing.

use doorflow_agent::snapshot::*;
use doorflow_agent::store::Store;
use std::process::{Command, Stdio};
use std::time::Duration;

const COUNT: u64 = 100_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let parts = SnapshotParts {
        synced_at: Some(jiff::Timestamp::now()),
        ..SnapshotParts::synthetic(COUNT)
    };
    Store::open(&dir.path().join("db"), 8 << 20)
        .unwrap()
        .save_snapshot(&parts)
        .unwrap();
    drop(parts);
    // Nothing listens at the API address: the agent runs offline on its stored snapshot.
    let config = doorflow_agent::testing::config::demo_config(dir.path(), "http://127.0.0.1:18080");
    let config = doorflow_agent::testing::config::write_config(&config, dir.path());

    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("doorflow-agent");
    let mut child = Command::new(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("DOORFLOW_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo build --release` first)", binary.display()));
    let socket = dir.path().join("admin.sock");
    for _ in 0..600 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "agent with {COUNT} people and credentials: {} | {}",
        field("VmRSS"),
        field("VmHWM")
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
