//! A full disk, for real: the store on a small tmpfs filled to 0 bytes free, then freed. No
//! seam: SQLite and sled meet ENOSPC themselves. Runs as root (CI does); skipped with a message
//! otherwise.

use doorflow_agent::snapshot::SnapshotParts;
use doorflow_agent::store::{Capacity, Store};
use doorflow_agent::testing::events::front_door_swipe;
use doorflow_agent::testing::eventually;
use doorflow_agent::testing::harness::{Harness, Options};
use doorflow_agent::testing::mock_control::control;
use doorflow_agent::testing::process::AgentProcess;
use doorflow_agent::testing::store_fs::SmallFs;
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn roomy() -> Capacity {
    Capacity::from_config(&Default::default())
}

/// sled keeps its first I/O error until it is reopened; SQLite rolls a refused commit back.
/// Both must take writes again once there is room, in the same process.
#[test]
fn both_engines_write_again_once_a_full_disk_has_room() {
    let Some(fs) = SmallFs::mount(16, "both_engines_write_again_once_a_full_disk_has_room") else {
        return;
    };
    let store = Store::open(&fs.path.join("db"), 1 << 20).unwrap();
    store.save_snapshot(&SnapshotParts::synthetic(200)).unwrap();
    let events: Vec<_> = (0..5).map(|n| front_door_swipe(n, Some(n), false)).collect();
    let uplink = doorflow_agent::config::UplinkConfig {
        events_url: Some(doorflow_agent::config::ServiceUrl::parse("https://sink.example/events").unwrap()),
        ..Default::default()
    };
    doorflow_agent::audit_writer::write_group(&store, &uplink, roomy(), &events).unwrap();

    let filler = fs.fill();
    let more: Vec<_> = (0..200).map(|n| front_door_swipe(n, Some(n), true)).collect();
    let refused = doorflow_agent::audit_writer::write_group(&store, &uplink, roomy(), &more);
    assert!(refused.is_err(), "a full disk refuses the commit");
    assert!(store.health().queue_error.is_some(), "and the store says so");
    assert!(store.save_snapshot(&SnapshotParts::synthetic(3000)).is_err());
    assert_eq!(store.outbox_stats().unwrap().pending, 5, "nothing half-written");

    std::fs::remove_file(filler).unwrap();
    doorflow_agent::audit_writer::write_group(&store, &uplink, roomy(), &more).unwrap();
    assert_eq!(store.health().queue_error, None);
    let header = store.save_snapshot(&SnapshotParts::synthetic(300)).unwrap();
    assert_eq!(header.counts.people, 300);
    assert_eq!(store.load_snapshot().unwrap().unwrap().people.len(), 300);
    assert_eq!(store.outbox_stats().unwrap().pending, 5 + 400);
    drop(store);
    let reopened = Store::open(&fs.path.join("db"), 1 << 20).unwrap();
    assert_eq!(reopened.outbox_stats().unwrap().pending, 405);
    assert_eq!(reopened.outbox_stats().unwrap().lost_records, 0);
    assert_eq!(reopened.load_snapshot().unwrap().unwrap().people.len(), 300);
}

/// The running agent on a full disk: doors keep opening, `status` says `store_error`, a sync
/// keeps its old snapshot; once there is room every swipe of the full period is written and
/// delivered, status recovers and a sync stores again — all without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_heals_without_a_restart_and_loses_nothing() {
    use doorflow_agent::doorflow::client::Client;
    use doorflow_agent::sync::{sync_once, SyncError};
    let Some(fs) = SmallFs::mount(16, "a_full_disk_heals_without_a_restart_and_loses_nothing") else {
        return;
    };
    let store_path = fs.path.join("db");
    let sim = doorflow_agent::sim::Simulator::start(doorflow_agent::sim::SimConfig {
        people: 50,
        requests_per_window: 100_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let h = Harness::start_edited(sim, Options::default(), |config| {
        config.store.path = store_path.clone();
    })
    .await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    let synced_at = h.agent.snapshot.current().synced_at();

    let filler = fs.fill();
    let socket = h.config.gpio.mock_socket.clone();
    let relay_released_after_grant = tokio::task::spawn_blocking(move || {
        let card =
            |n: u64| json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": n});
        control(&socket, card(17));
        std::thread::sleep(Duration::from_millis(200));
        let state = control(&socket, json!({"op": "state", "door": "front"}));
        for n in [4242, 21] {
            std::thread::sleep(Duration::from_millis(200));
            control(&socket, card(n));
        }
        state["relay"]["released"] == true
    })
    .await
    .unwrap();
    assert!(
        relay_released_after_grant,
        "the door opened without waiting for the disk"
    );
    assert!(
        eventually(LIMIT, || h.agent.status().queue.uplink == "store_error").await,
        "status says store_error while the disk is full: {:?}",
        h.agent.status().queue
    );
    assert_eq!(h.agent.status().store.state, "store_error");
    assert!(
        h.sim.received_events().is_empty(),
        "nothing is sent before it is on disk"
    );

    let client = Client::new(&h.config.api, std::sync::Arc::clone(&h.agent.budget)).unwrap();
    let result = sync_once(&h.agent.sync_target(Default::default()), &client).await;
    assert!(matches!(result, Err(SyncError::Store(_))), "{result:?}");
    assert_eq!(
        h.agent.snapshot.current().synced_at(),
        synced_at,
        "the previous snapshot stays"
    );

    std::fs::remove_file(filler).unwrap();
    assert!(
        eventually(LIMIT, || h.sim.received_events().len() == 3).await,
        "every swipe of the full period is delivered: {} received",
        h.sim.received_events().len()
    );
    let codes: Vec<_> = h
        .sim
        .received_events()
        .iter()
        .map(|r| r.body["event_code"].clone())
        .collect();
    assert_eq!(codes, [json!(10), json!(20), json!(10)], "every swipe, in order");
    // The admit lane drains on its own schedule, beside the event lane.
    assert!(
        eventually(LIMIT, || h.sim.received_admits().len() >= 2).await,
        "both grants' admits are delivered: {} received",
        h.sim.received_admits().len()
    );
    assert_eq!(
        h.sim.received_admits().len(),
        2,
        "each grant's admit queued exactly once"
    );
    assert!(
        eventually(LIMIT, || h.agent.status().queue.uplink != "store_error").await,
        "status recovers on its own"
    );
    sync_once(&h.agent.sync_target(Default::default()), &client)
        .await
        .expect("a sync stores its snapshot again");
    assert!(h.agent.snapshot.current().synced_at() > synced_at);
    assert_eq!(h.agent.status().store.state, "ok");
}

/// The journal is the record of a door that opened while the store refuses writes. Every
/// swipe of a disk-full spell is journaled when it happens, not when the disk has room again:
/// with the first refused group being retried, later swipes waited unjournaled in the writer's
/// channel, and a SIGKILL then left no record of doors that had opened. The real binary, its
/// store on a full tmpfs, stopped while the disk is still full.
#[test]
fn every_swipe_of_a_disk_full_spell_is_journaled_at_once() {
    let Some(fs) = SmallFs::mount(16, "every_swipe_of_a_disk_full_spell_is_journaled_at_once") else {
        return;
    };
    let (_runtime, sim) = doorflow_agent::testing::harness::simulator_on_own_runtime(Default::default());
    let dir = fs.path.join("state");
    std::fs::create_dir(&dir).unwrap();
    let mut config = doorflow_agent::testing::config::demo_config(&dir, sim.base_url());
    doorflow_agent::testing::config::without_osdp_doors(&mut config);
    let mut agent = AgentProcess::start_config(env!("CARGO_BIN_EXE_doorflow-agent"), &config, &dir);
    agent.wait_for_log(&["sync complete"], 1);
    let filler = fs.fill();
    let card =
        |n: u64| json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": n});
    for number in [17, 18, 19] {
        agent.control(card(number));
        // Apart, so each is a group of its own: the first one refused and retried.
        std::thread::sleep(Duration::from_millis(400));
    }
    agent.wait_for_log(&["could not make audit events durable"], 1);
    for person in ["(person 17)", "(person 18)", "(person 19)"] {
        agent.wait_for_log(&["front: granted card ****", person], 1);
    }
    assert!(
        agent
            .log_lines_with(&["audit events are durable again"])
            .is_empty(),
        "the disk was still full when the journal had them (what a SIGKILL now would leave)"
    );
    // A stop with the disk still full is a clean stop: queue commits are durable and the
    // snapshot's write-ahead log is replayed at the next start.
    let stopped = agent.stop();
    assert!(stopped.success(), "{stopped:?}; log:\n{}", agent.log());
    assert!(
        !agent
            .log_lines_with(&["stopping with audit events the store refused"])
            .is_empty(),
        "what could not be written is named at the stop"
    );
    drop(filler);
}
