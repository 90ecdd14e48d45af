//! The exposure window: from the relay write of a granted swipe to its audit event being durable
//! (committed and fsynced in the queue database, the moment `watch_events` reports it). The
//! relay is driven first by design; a power cut inside this window loses the record of a door
//! that did open. Measured on the mock backend with the store in a temporary directory (the
//! machine's real disk), one door, swipes 150 ms apart; then the same while a second door task
//! floods the writer with denied swipes (a burst, group commits).
//! Run: `cargo bench --bench exposure_window`. Prints p50/p99/max; asserts nothing.

use doorflow_agent::audit::AuditEvent;
use doorflow_agent::audit_writer;
use doorflow_agent::config::values::Seconds;
use doorflow_agent::config::Config;
use doorflow_agent::door_task::{DoorState, DoorTask, SwipeTiming};
use doorflow_agent::hw::{mock::MockGpio, monotonic_ns};
use doorflow_agent::snapshot::{SharedSnapshot, Snapshot, SnapshotParts};
use doorflow_agent::store::Store;
use doorflow_agent::testing::events::denied_swipe;
use doorflow_agent::testing::harness::present_and_time;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SWIPES: usize = 300;

fn report(name: &str, mut values: Vec<u64>) {
    values.sort_unstable();
    let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize] as f64 / 1e6;
    println!(
        "{name:<52} p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  (n={})",
        at(0.5),
        at(0.99),
        *values.last().unwrap() as f64 / 1e6,
        values.len()
    );
}

async fn measure(config: &Config, flood: bool) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db"), 8 << 20).unwrap());
    let mut uplink = config.uplink.clone();
    uplink.events_url =
        Some(doorflow_agent::config::ServiceUrl::parse("https://sink.example/events").unwrap());
    let (audit_tx, audit_rx) = tokio::sync::mpsc::unbounded_channel::<AuditEvent>();
    let (feed, mut durable) = tokio::sync::broadcast::channel(1 << 16);
    let stopping = tokio_util::sync::CancellationToken::new();
    let queued = Arc::new(tokio::sync::watch::channel(0).0);
    tokio::spawn(audit_writer::run_writer(
        Arc::clone(&store),
        uplink,
        audit_rx,
        queued,
        feed,
        stopping.clone(),
    ));

    let mock = MockGpio::new(config, Default::default());
    let shared = Arc::new(SharedSnapshot::new(Snapshot::new(
        SnapshotParts::synthetic(10_000),
        "UTC",
    )));
    let state = Arc::new(Mutex::new(DoorState::new(&config.doors[0])));
    let (timing_tx, mut timing_rx) = tokio::sync::mpsc::unbounded_channel::<SwipeTiming>();
    let task =
        DoorTask::new(config, 0, mock.open_door(0), shared, state, audit_tx.clone()).with_timings(timing_tx);
    tokio::spawn(task.run(stopping.clone()));
    if flood {
        // Denied swipes from elsewhere, 2,000 a second, sharing the writer's commits.
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_micros(500));
            loop {
                ticks.tick().await;
                let mut event = denied_swipe(42);
                event.door = "flood".into();
                if audit_tx.send(event).is_err() {
                    return;
                }
            }
        });
    }

    let mut windows = Vec::new();
    for i in 0..SWIPES {
        let number = 1 + (i as u64 * 7919) % 10_000;
        let timing = present_and_time(&mock, &mut timing_rx, number).await;
        let relay_ns = timing.relay_ns.expect("granted: the relay was written");
        loop {
            let event = durable.recv().await.expect("writer running");
            if event.door == config.doors[0].name && event.credential.is_some() {
                windows.push(monotonic_ns() - relay_ns);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    windows
}

fn main() {
    let mut config = doorflow_agent::testing::config::demo();
    config.doors[0].unlock_s = Seconds::new(0.1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "exposure window: relay written → event durable (fsynced), {SWIPES} granted swipes, store on {}",
            std::env::temp_dir().display()
        );
        report("one door, swipes 150 ms apart", measure(&config, false).await);
        report(
            "same, while 2,000 other events/s are committed",
            measure(&config, true).await,
        );
    });
}
