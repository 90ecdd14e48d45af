//! Crash points: the agent binary (built with the `testing` feature) is stopped by `abort()` at
//! each write boundary of the store in turn — `DOORFLOW_FAILPOINT`, see `store::testing` — while
//! cards are swiped and a sync stores its snapshot. Random kills rarely land between two writes;
//! these land on every one. After each stop the next start must open the store, lose no
//! acknowledged record, report no loss, and deliver everything.
//!
//! Run: `cargo test --features testing --test store_crash_points`.

const BINARY: &str = env!("CARGO_BIN_EXE_doorflow-agent");

use doorflow_agent::store::testing::FAILPOINTS;
use doorflow_agent::testing::harness::unlimited_simulator;
use doorflow_agent::testing::state_dir::StateDir;
use doorflow_agent::testing::store_fs;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects the ids of events the agent reports durable, until the connection ends.
fn watch_acknowledged(state: &StateDir, acked: Arc<Mutex<HashSet<u64>>>) -> std::thread::JoinHandle<()> {
    let socket = state.admin.clone();
    std::thread::spawn(move || {
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) else {
            return;
        };
        if writeln!(stream, "{}", json!({"op": "watch_events"})).is_err() {
            return;
        }
        for line in BufReader::new(stream).lines() {
            let Ok(value) = line.map(|l| serde_json::from_str::<Value>(&l).unwrap_or_default()) else {
                return;
            };
            if let Some(id) = value["event"]["id"].as_u64() {
                acked.lock().unwrap().insert(id);
            }
        }
    })
}

/// Runs the agent with `failpoint` armed, swiping until it stops itself. Returns its journal.
fn run_until_the_failpoint(state: &StateDir, failpoint: &str, acked: &Arc<Mutex<HashSet<u64>>>) -> String {
    let mut run = state.start(&[("DOORFLOW_FAILPOINT", failpoint)]);
    let start = Instant::now();
    // The agent may stop before it is fully up (a sync point): then there is nothing to watch.
    let watcher = run
        .wait_up()
        .map(|_| watch_acknowledged(state, Arc::clone(acked)));
    let mut card = 0u64;
    loop {
        if let Some(status) = run.exit_status() {
            let journal = run.log();
            assert!(
                journal.contains(&format!(
                    "failpoint {}: aborting",
                    failpoint.split(':').next().unwrap()
                )),
                "{failpoint}: the agent stopped ({status}) but not at the failpoint:\n{journal}"
            );
            if let Some(watcher) = watcher {
                watcher.join().unwrap();
            }
            return journal;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{failpoint} was never reached:\n{}",
            run.log()
        );
        if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&state.mock) {
            card += 1;
            // Grants (admit + event) and denials (event only) in turn.
            let number = if card % 2 == 0 { 17 } else { 4000 + card };
            let request =
                json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": number});
            let _ = writeln!(stream, "{request}");
            let mut reply = String::new();
            let _ = BufReader::new(&stream).read_line(&mut reply);
        }
        std::thread::sleep(Duration::from_millis(120));
    }
}

/// Starts cleanly, waits until everything queued was delivered, checks the books.
fn restart_and_drain(state: &StateDir, failpoint: &str) -> Value {
    let mut run = state.start(&[]);
    let Some(_) = run.wait_up() else {
        panic!(
            "{failpoint}: the store did not open after the stop:\n{}",
            run.log()
        );
    };
    let start = Instant::now();
    let status = loop {
        let status = doorflow_agent::admin::call(&state.admin, &doorflow_agent::admin::Request::Status)
            .unwrap()["status"]
            .clone();
        // 50, or 51 with the person enrolled between the syncs.
        if status["queue"]["pending"] == 0 && status["snapshot"]["people"].as_u64() >= Some(50) {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{failpoint}: did not drain or sync: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(run.stop().success(), "{failpoint}: clean stop");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_boundary_survives_a_crash_without_losing_an_acknowledged_record() {
    for failpoint in FAILPOINTS.iter().filter(|f| !f.starts_with("legacy.")) {
        let sim = unlimited_simulator(50).await;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::write(BINARY, dir.path(), sim.base_url());
        // Until the stop the event sink is unreachable, so what was acknowledged is still
        // queued when the agent stops.
        let online = std::fs::read_to_string(&state.config).unwrap();
        let sink = format!("events_url = \"{}/events\"", sim.base_url());
        assert!(online.contains(&sink));
        std::fs::write(
            &state.config,
            online.replace(&sink, "events_url = \"http://127.0.0.1:9/events\""),
        )
        .unwrap();
        // A later hit of each point, so records were acknowledged before the stop: the 15th
        // queue commit; the second sync, 10 s after the first (a sync writes meta three times:
        // the cursor, the clock anchor and the sync status).
        let armed = match *failpoint {
            f if f.starts_with("queue.") => format!("{f}:15"),
            "meta.written" => format!("{failpoint}:4"),
            f => format!("{f}:2"),
        };
        // An incremental sync with nothing changed writes no snapshot: a person enrolled
        // between the two syncs makes the second one commit (and rewrite the last good copy).
        let enrol = (failpoint.starts_with("snapshot.") || failpoint.starts_with("last_good.")).then(|| {
            let sim = sim.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                sim.add_person();
            })
        });
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let (status, acked) = tokio::task::spawn_blocking({
            let acked = Arc::clone(&acked);
            move || {
                run_until_the_failpoint(&state, &armed, &acked);
                std::fs::write(&state.config, online).unwrap();
                (restart_and_drain(&state, &armed), acked)
            }
        })
        .await
        .unwrap();
        if let Some(enrol) = enrol {
            enrol.await.unwrap();
        }
        let received: HashSet<u64> = sim
            .received_events()
            .iter()
            .filter_map(|r| r.body["id"].as_u64())
            .collect();
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "{failpoint}: records were acknowledged before the stop"
        );
        let lost: Vec<_> = acked.difference(&received).collect();
        assert!(
            lost.is_empty(),
            "{failpoint}: acknowledged events never delivered: {lost:?}"
        );
        assert_eq!(status["queue"]["lost_records"], 0, "{failpoint}: {status}");
        assert_eq!(status["store"]["problems"], json!([]), "{failpoint}: {status}");
        eprintln!(
            "{failpoint}: {} acknowledged before the stop, all delivered ({} received)",
            acked.len(),
            received.len()
        );
    }
}

/// The move of 0.1.0's queue out of sled, stopped after the import committed but before sled's
/// copy was dropped: the next start must neither lose nor duplicate a record.
#[test]
fn a_crash_while_moving_the_0_1_0_queue_neither_loses_nor_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    store_fs::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-0.1.0/db"),
        &dir.path().join("db"),
    );
    let state = StateDir::write(BINARY, dir.path(), "http://127.0.0.1:9");
    let mut run = state.start(&[("DOORFLOW_FAILPOINT", "legacy.imported")]);
    assert!(run.wait_up().is_none(), "stopped at the failpoint");
    assert!(run.log().contains("failpoint legacy.imported: aborting"));
    let mut run = state.start(&[]);
    let status = run.wait_up().expect("comes up");
    assert!(run.stop().success());
    let queue = &status["queue"];
    let total = queue["pending"].as_u64().unwrap() + queue["dead"].as_u64().unwrap();
    assert_eq!(total, 51, "{queue}");
    assert_eq!(queue["lost_records"], 0);
}
