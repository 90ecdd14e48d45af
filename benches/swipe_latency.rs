//! Swipe latency on the mock backend with 100,000 cached credentials: from the frame's end
//! (last edge + frame gap) and from the frame reaching the decision, to the relay write.
//! Measured twice: on an idle agent, and while full syncs of 100,000 people (130,000
//! credentials: pages streamed into the store, the snapshot rebuilt and swapped) run back to
//! back and the uplink drains 10,000 queued events to the simulator, all on the same two
//! runtime workers.
//! Run: `cargo bench --bench swipe_latency`. Prints p50/p99/max; asserts nothing.

use doorflow_agent::agent::{self, Agent};
use doorflow_agent::config::values::Seconds;
use doorflow_agent::config::Config;
use doorflow_agent::door_task::{DoorState, DoorTask, SwipeTiming};
use doorflow_agent::doorflow::client::Client;
use doorflow_agent::hw::mock::MockGpio;
use doorflow_agent::sim::{SimConfig, Simulator};
use doorflow_agent::snapshot::*;
use doorflow_agent::sync;
use doorflow_agent::testing::config::bench_config;
use doorflow_agent::testing::harness::queue_denied_swipes;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CREDENTIALS: u64 = 100_000;
const SWIPES: usize = 1_000;
/// People the background agent syncs in full, back to back.
const BACKGROUND_PEOPLE: u64 = 100_000;

fn snapshot() -> Snapshot {
    Snapshot::new(SnapshotParts::synthetic(CREDENTIALS), "UTC")
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn report(name: &str, mut values: Vec<u64>) {
    values.sort_unstable();
    println!(
        "{name:<42} p50 {:8.1} µs  p99 {:8.1} µs  max {:8.1} µs  (n={})",
        percentile(&values, 0.5),
        percentile(&values, 0.99),
        *values.last().unwrap() as f64 / 1000.0,
        values.len()
    );
}

/// The decision alone, without the runtime: what the budget is really about.
fn decide_only() {
    use doorflow_agent::access::{decide, DoorPolicy};
    use doorflow_agent::credential::{CardFormat, CardRead, CardValueMapping, Presented};
    let snapshot = snapshot();
    let policy = DoorPolicy {
        channel_id: Some(1340),
        allowed_roles: vec![1],
        allowed_groups: vec![],
        card_value: CardValueMapping::Number,
        facility_codes: Some(vec![1]),
    };
    let now = jiff::Timestamp::now();
    let mut samples = Vec::new();
    for i in 0..200_000u64 {
        let card = Presented::Card(CardRead {
            format: CardFormat::H10301,
            facility: Some(1),
            number: 1 + (i * 7919) % CREDENTIALS,
            bit_count: 26,
            raw: 0,
        });
        let start = std::time::Instant::now();
        let decision = decide(&snapshot, &policy, &card, now);
        samples.push(start.elapsed().as_nanos() as u64);
        assert!(decision.granted);
    }
    report("access::decide alone", samples);
}

fn main() {
    decide_only();
    let mut config = doorflow_agent::testing::config::demo();
    config.doors[0].unlock_s = Seconds::new(0.1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        measure_swipes(&config, "idle").await;
        let load = Background::start().await;
        measure_swipes(&config, "under load").await;
        load.report();
    });
}

/// A second agent that keeps syncing 100,000 people in full and draining 10,000 queued events
/// to a simulator without a rate limit: the heaviest sync and uplink work the runtime can see.
struct Background {
    sim: Simulator,
    agent: Arc<Agent>,
    syncs: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Background {
    async fn start() -> Background {
        let sim = Simulator::start(SimConfig {
            people: BACKGROUND_PEOPLE,
            requests_per_window: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::start(bench_config(dir.path(), sim.base_url(), 10_000)).unwrap();
        queue_denied_swipes(&agent, 10_000);
        // The agent's own loops: doors (mock) and the uplink lanes draining the queue.
        tokio::spawn(agent::serve(Arc::clone(&agent), std::future::pending()));
        // And a sync running back to back on top.
        let syncs = Arc::new(AtomicU64::new(0));
        let client = Client::new(&agent.config.api, Arc::clone(&agent.budget)).unwrap();
        let mut target = agent.sync_target(Default::default());
        // Every sync a full one: the heaviest (all pages, a snapshot rebuilt and swapped).
        target.full_interval = jiff::SignedDuration::ZERO;
        tokio::spawn({
            let syncs = Arc::clone(&syncs);
            async move {
                loop {
                    if sync::sync_once(&target, &client).await.is_ok() {
                        syncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Background {
            sim,
            agent,
            syncs,
            _dir: dir,
        }
    }

    fn report(&self) {
        println!(
            "background during the loaded run: {} full syncs of {BACKGROUND_PEOPLE} people, {} events delivered, {} still queued",
            self.syncs.load(Ordering::Relaxed),
            self.sim.received_events().len(),
            self.agent.store.outbox_stats().unwrap().pending
        );
    }
}

async fn measure_swipes(config: &Config, label: &str) {
    let mock = MockGpio::new(config, Default::default());
    let hardware = mock.open_door(0);
    let shared = Arc::new(SharedSnapshot::new(snapshot()));
    let state = Arc::new(Mutex::new(DoorState::new(&config.doors[0])));
    let (audit_tx, mut audit_rx) = tokio::sync::mpsc::unbounded_channel();
    let (timing_tx, mut timing_rx) = tokio::sync::mpsc::unbounded_channel::<SwipeTiming>();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = DoorTask::new(&config.doors[0], hardware, shared, state, audit_tx).with_timings(timing_tx);
    let door = tokio::spawn(task.run(stop.clone()));
    tokio::spawn(async move { while audit_rx.recv().await.is_some() {} });

    let mut timings = Vec::new();
    for i in 0..SWIPES {
        let number = 1 + (i as u64 * 7919) % 65_000;
        let reply = mock
            .handle(&json!({"op": "card", "door": 0, "format": "h10301", "facility": 1, "number": number}));
        assert_eq!(reply["ok"], true);
        let timing = tokio::time::timeout(Duration::from_secs(5), timing_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(timing.granted);
        timings.push(timing);
        // Let the relay relock so every swipe is a real relay write.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    stop.cancel();
    let _ = door.await;
    let granted: Vec<&SwipeTiming> = timings.iter().filter(|t| t.relay_ns.is_some()).collect();
    println!("swipe latency ({label}), {CREDENTIALS} cached credentials, {SWIPES} swipes, mock GPIO");
    report(
        "decision + relay write",
        granted
            .iter()
            .map(|t| t.relay_ns.unwrap() - t.frame_seen_ns)
            .collect(),
    );
    report(
        "frame end (last edge + gap) → relay write",
        granted
            .iter()
            .map(|t| t.relay_ns.unwrap().saturating_sub(t.frame_end_ns))
            .collect(),
    );
    report(
        "timer wake-up after frame end",
        granted
            .iter()
            .map(|t| t.frame_seen_ns.saturating_sub(t.frame_end_ns))
            .collect(),
    );
    println!(
        "frame-end silence (configured frame gap): {} ms",
        config.doors[0]
            .reader
            .wiegand()
            .expect("the benchmark door reads Wiegand")
            .frame_gap_ms
    );
}
