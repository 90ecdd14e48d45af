//! The store as it is found on real boards, through the real binary: written by 0.1.0, damaged
//! by power loss on cheap flash, created under a loose umask, or held for a moment by a CLI
//! while the agent starts. Every case checks that the agent comes up and what it reports.

const BINARY: &str = env!("CARGO_BIN_EXE_doorflow-agent");

use doorflow_agent::sim::{SimConfig, Simulator};
use doorflow_agent::testing::process::AgentProcess;
use doorflow_agent::testing::state_dir::{swipe_and_watch, StateDir};
use doorflow_agent::testing::store_fs;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A port nothing listens on: the agent runs offline and keeps its queue.
const OFFLINE: &str = "http://127.0.0.1:9";

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-0.1.0")
}

/// Starts the agent and returns its status, or panics with its journal.
fn up(state: &StateDir) -> (AgentProcess, Value) {
    let mut run = state.start(&[]);
    match run.wait_up() {
        Some(status) => (run, status),
        None => panic!("the agent did not come up:\n{}", run.log()),
    }
}

/// An agent that synced 50 people from a simulator and then stopped: a store with a snapshot
/// in its database and its last good copy.
async fn synced_state(dir: &Path) -> (Simulator, StateDir) {
    let sim = Simulator::start(SimConfig {
        people: 50,
        ..Default::default()
    })
    .await
    .unwrap();
    let state = StateDir::write(BINARY, dir, sim.base_url());
    let state = tokio::task::spawn_blocking(move || {
        let (mut run, _) = up(&state);
        let start = std::time::Instant::now();
        loop {
            let status = run.wait_up().unwrap();
            if status["snapshot"]["people"] == 50 {
                break;
            }
            assert!(start.elapsed().as_secs() < 60, "no sync");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(run.stop().success());
        state
    })
    .await
    .unwrap();
    assert!(state.store.join("snapshot.last-good").exists());
    (sim, state)
}

/// An offline agent on `state` (as left by `synced_state`): card 17 must still be granted.
fn assert_comes_up_granting(state_dir: &Path, sim_url: &str) -> (Value, String) {
    // Offline, so the decision comes from what was on disk.
    let config = std::fs::read_to_string(state_dir.join("config.toml"))
        .unwrap()
        .replace(sim_url, OFFLINE);
    std::fs::write(state_dir.join("config.toml"), config).unwrap();
    let state = StateDir::at(BINARY, state_dir);
    let (mut run, status) = up(&state);
    let events = swipe_and_watch(&state, &[17]);
    assert_eq!(
        events[0]["event_code"], 10,
        "card 17 granted from the surviving snapshot: {events:?}"
    );
    let journal = run.log();
    assert!(run.stop().success());
    (status, journal)
}

#[test]
fn a_store_written_by_0_1_0_opens_with_every_card_still_granted() {
    let dir = tempfile::tempdir().unwrap();
    store_fs::copy_tree(&fixture().join("db"), &dir.path().join("db"));
    let decisions: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("decisions.json")).unwrap()).unwrap();
    let state = StateDir::write(BINARY, dir.path(), OFFLINE);
    let (mut run, status) = up(&state);
    assert_eq!(status["snapshot"]["people"], 20, "{status}");
    assert_eq!(status["snapshot"]["credentials"], 26);
    let queue = &status["queue"];
    let queued = queue["pending"].as_u64().unwrap() + queue["dead"].as_u64().unwrap();
    assert_eq!(
        queued, 51,
        "every call 0.1.0 queued is still there (expired admits as dead letters): {queue}"
    );
    assert_eq!(queue["lost_records"], 0);

    let cards: Vec<u64> = decisions.keys().map(|k| k.parse().unwrap()).collect();
    let events = swipe_and_watch(&state, &cards);
    for (card, event) in cards.iter().zip(&events) {
        let was = &decisions[&card.to_string()];
        let now = format!(
            "{}:{}",
            if event["event_code"] == 10 {
                "granted"
            } else {
                "denied"
            },
            event["reason"].as_str().unwrap()
        );
        assert_eq!(&now, was, "card {card}: 0.1.0 decided {was}, this binary {now}");
    }
    let journal = run.log();
    assert!(run.stop().success());
    assert!(
        journal.contains("credential cache of an earlier version was imported"),
        "{journal}"
    );
    assert!(
        !state.store.join("snapshot").exists() && !state.store.join("conf").exists(),
        "sled's files are gone once imported"
    );
    assert!(state.store.join("snapshot.sqlite").is_file());
    // The import is done once: the next start opens the snapshot database alone.
    let (mut run, status) = up(&state);
    assert_eq!(status["snapshot"]["credentials"], 26);
    assert_eq!(status["store"]["problems"], serde_json::json!([]), "{status}");
    assert!(!run.log().contains("earlier version"));
    assert!(run.stop().success());
}

#[test]
fn an_earlier_versions_sled_store_that_cannot_be_opened_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    store_fs::copy_tree(&fixture().join("db"), &dir.path().join("db"));
    std::fs::write(
        dir.path().join("db/conf"),
        b"\x00\xffgarbage after a power cut\x13",
    )
    .unwrap();
    let state = StateDir::write(BINARY, dir.path(), OFFLINE);
    let (mut run, status) = up(&state);
    let problems = status["store"]["problems"].to_string();
    assert!(problems.contains("moved to"), "{problems}");
    assert_eq!(status["snapshot"]["people"], 0, "no snapshot survives: {status}");
    let events = swipe_and_watch(&state, &[3]);
    assert_eq!(
        events[0]["event_code"], 20,
        "fail secure: every card denied until a sync"
    );
    assert!(run.log().contains("STORE DAMAGED"));
    assert!(run.stop().success());
    assert!(!state.store.join("snapshot").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("db/damaged")).unwrap().count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_database_that_is_not_a_database_is_moved_aside_and_the_last_good_copy_decides() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, state) = synced_state(dir.path()).await;
    std::fs::write(
        state.store.join("snapshot.sqlite"),
        b"\x00\xffgarbage after a power cut\x13",
    )
    .unwrap();
    let url = sim.base_url().to_string();
    let path = dir.path().to_path_buf();
    let (status, journal) = tokio::task::spawn_blocking(move || assert_comes_up_granting(&path, &url))
        .await
        .unwrap();
    assert!(
        journal.contains("STORE DAMAGED"),
        "the journal says so plainly:\n{journal}"
    );
    assert!(journal.contains("last good copy"), "{journal}");
    let problems = status["store"]["problems"].to_string();
    assert!(problems.contains("moved to"), "{problems}");
    assert!(problems.contains("last good copy"), "{problems}");
    let damaged: Vec<_> = std::fs::read_dir(dir.path().join("db/damaged"))
        .unwrap()
        .collect();
    assert_eq!(damaged.len(), 1, "the damaged part is kept for inspection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_database_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, state) = synced_state(dir.path()).await;
    store_fs::truncate(&state.store.join("snapshot.sqlite"), 1.0 / 3.0);
    let url = sim.base_url().to_string();
    let path = dir.path().to_path_buf();
    let (status, journal) = tokio::task::spawn_blocking(move || assert_comes_up_granting(&path, &url))
        .await
        .unwrap();
    assert_eq!(status["snapshot"]["people"], 50, "{status}");
    assert!(
        journal.contains("last good copy") || journal.contains("STORE DAMAGED"),
        "the journal says what happened:\n{journal}"
    );
}

/// Zeroed blocks in the snapshot database (flash that lost pages). Whatever they do, a start
/// after at most two failed ones comes up (the credential cache moved aside) and decides from
/// the last good copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_zeroed_snapshot_database_never_keeps_the_agent_down() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (sim, state) = synced_state(dir.path()).await;
    let db = std::fs::OpenOptions::new()
        .write(true)
        .open(state.store.join("snapshot.sqlite"))
        .unwrap();
    let len = db.metadata().unwrap().len();
    db.write_all_at(&vec![0u8; (len / 2) as usize], len / 4).unwrap();
    let offline = std::fs::read_to_string(dir.path().join("config.toml"))
        .unwrap()
        .replace(sim.base_url(), OFFLINE);
    std::fs::write(dir.path().join("config.toml"), offline).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut failed_starts = 0;
        let (mut run, status) = loop {
            let mut run = state.start(&[]);
            if let Some(status) = run.wait_up() {
                break (run, status);
            }
            failed_starts += 1;
            assert!(
                failed_starts <= 2,
                "still down after {failed_starts} starts:\n{}",
                run.log()
            );
        };
        let events = swipe_and_watch(&state, &[17]);
        assert_eq!(events[0]["event_code"], 10, "{status}");
        assert!(run.stop().success());
    })
    .await
    .unwrap();
}

/// Queues events offline, then stops the agent with SIGKILL (its WAL holds them).
fn queue_offline_events(state: &StateDir, cards: &[u64]) {
    let (mut run, _) = up(state);
    let events = swipe_and_watch(state, cards);
    assert_eq!(events.len(), cards.len());
    run.kill();
}

#[test]
fn a_lost_queue_wal_is_detected_and_the_loss_counted() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::write(BINARY, dir.path(), OFFLINE);
    queue_offline_events(&state, &[4242, 4243, 4244]);
    let wal = state.store.join("queue.sqlite-wal");
    assert!(wal.exists(), "a killed agent leaves its WAL");
    std::fs::remove_file(&wal).unwrap();
    let (mut run, status) = up(&state);
    let journal = run.log();
    assert!(run.stop().success());
    // Each denied swipe queued one event (no admit): all three are gone with the WAL.
    assert_eq!(status["queue"]["lost_records"], 3, "{}", status["queue"]);
    assert!(journal.contains("QUEUED RECORDS LOST"), "{journal}");
    let text = String::from_utf8(state.status_cli().stdout).unwrap();
    assert!(
        text.contains("\"lost_records\":3"),
        "status of the stopped agent says so too: {text}"
    );
}

#[test]
fn a_queue_database_that_is_not_a_database_is_moved_aside_and_the_loss_counted() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::write(BINARY, dir.path(), OFFLINE);
    queue_offline_events(&state, &[4242, 4243]);
    // Checkpoint the WAL into the database with a clean stop, then ruin the database.
    let (mut run, _) = up(&state);
    assert!(run.stop().success());
    let db = state.store.join("queue.sqlite");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..100].copy_from_slice(&[0x5a; 100]);
    std::fs::write(&db, bytes).unwrap();
    let (mut run, status) = up(&state);
    let journal = run.log();
    assert!(run.stop().success());
    assert_eq!(status["queue"]["lost_records"], 2, "{}", status["queue"]);
    assert!(journal.contains("QUEUE DATABASE UNUSABLE"), "{journal}");
    assert!(status["store"]["moved_aside"][0]
        .as_str()
        .unwrap()
        .contains("damaged/queue.sqlite"));
}

#[test]
fn a_truncated_queue_database_is_survived_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::write(BINARY, dir.path(), OFFLINE);
    let cards: Vec<u64> = (5000..5040).collect();
    queue_offline_events(&state, &cards);
    let (mut run, _) = up(&state);
    assert!(run.stop().success());
    store_fs::truncate(&state.store.join("queue.sqlite"), 0.5);
    let (mut run, status) = up(&state);
    assert!(run.stop().success());
    let lost = status["queue"]["lost_records"].as_u64().unwrap();
    let pending = status["queue"]["pending"].as_u64().unwrap();
    assert_eq!(
        lost + pending,
        40,
        "every record is either still queued or counted lost: {}",
        status["queue"]
    );
    assert!(lost > 0, "{}", status["queue"]);
}

#[test]
fn state_is_private_whatever_the_umask_and_a_loose_store_is_tightened() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::write(BINARY, dir.path(), OFFLINE);
    let start_with_umask_022 = |state: &StateDir| {
        AgentProcess::spawn(BINARY, &state.config, &state.admin, |command| {
            // SAFETY: umask(2) only, between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::umask(0o022);
                    Ok(())
                });
            }
        })
    };
    let mut run = start_with_umask_022(&state);
    run.wait_up().expect("comes up");
    swipe_and_watch(&state, &[4242]);
    assert!(run.stop().success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let check_private = |root: &Path| {
        let mut stack = vec![root.to_path_buf()];
        let mut files = 0;
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
        assert!(files >= 4, "the store has its files: {files}");
    };
    check_private(&state.store);

    // A store left readable by others (as 0.1.0 made it under umask 022) is tightened.
    std::fs::set_permissions(&state.store, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.store.join("queue.sqlite"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut run = start_with_umask_022(&state);
    run.wait_up().expect("comes up");
    let journal = run.log();
    assert!(run.stop().success());
    assert!(journal.contains("store was readable by other users"), "{journal}");
    check_private(&state.store);
}

/// `status` polled in a tight loop while the agent starts, again and again: the CLI must never
/// take the store from the agent, and no start may fail.
#[test]
fn status_polled_during_start_ups_never_costs_a_start() {
    const STARTS: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let state = std::sync::Arc::new(StateDir::write(BINARY, dir.path(), OFFLINE));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let (state, stop) = (std::sync::Arc::clone(&state), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let (mut from_store, mut from_agent, mut failed) = (0, 0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let output = state.status_cli();
                    let text = String::from_utf8_lossy(&output.stdout);
                    if !output.status.success() {
                        failed.push(String::from_utf8_lossy(&output.stderr).into_owned());
                    } else if text.contains("\"agent_running\":true") {
                        from_agent += 1;
                    } else {
                        from_store += 1;
                    }
                }
                (from_store, from_agent, failed)
            })
        })
        .collect();
    for start in 0..STARTS {
        let mut run = state.start(&[]);
        if run.wait_up().is_none() {
            panic!("start {start} failed:\n{}", run.log());
        }
        assert!(run.stop().success(), "start {start}: clean stop");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut totals = (0, 0);
    for poller in pollers {
        let (from_store, from_agent, failed) = poller.join().unwrap();
        assert!(failed.is_empty(), "status failed: {failed:?}");
        totals.0 += from_store;
        totals.1 += from_agent;
    }
    assert!(
        totals.0 + totals.1 >= STARTS,
        "status kept running through the start-ups: {totals:?}"
    );
    eprintln!(
        "{STARTS} starts, none failed; status answered {} times from the store, {} from the agent",
        totals.0, totals.1
    );
}
