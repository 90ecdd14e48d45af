//! Swipe latency on the mock backend with 100,000 cached credentials: from the card's first
//! edge, from the frame's end (last edge + the silence that ended it) and from the frame
//! reaching the decision, to the relay write.
//!
//! Four phases: the door task on the shared runtime workers waiting the fixed 30 ms frame gap
//! (how doors ran before they had their own thread), and on the doors' own thread
//! (`DoorThread`, as `agent::serve` runs them) with the learned frame end; each on an idle
//! agent, and while full syncs of 100,000 people (130,000 credentials: pages streamed into the
//! store, the snapshot rebuilt and swapped) run back to back and the uplink drains 10,000
//! queued events to the simulator on the two shared workers.
//! Run: `cargo bench --bench swipe_latency` (`SWIPES=n` per phase, default 500). Prints
//! p50/p99/max; asserts nothing.

use doorflow_agent::agent::{self, Agent};
use doorflow_agent::config::values::Seconds;
use doorflow_agent::config::Config;
use doorflow_agent::door_task::{DoorState, DoorTask, DoorThread, SwipeTiming};
use doorflow_agent::doorflow::client::Client;
use doorflow_agent::hw::mock::MockGpio;
use doorflow_agent::sim::Simulator;
use doorflow_agent::snapshot::*;
use doorflow_agent::sync;
use doorflow_agent::testing::config::wiegand_reader;
use doorflow_agent::testing::harness::{agent_with_backlog, present_and_time};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CREDENTIALS: u64 = 100_000;
/// People the background agent syncs in full, back to back.
const BACKGROUND_PEOPLE: u64 = 100_000;

fn swipes() -> usize {
    std::env::var("SWIPES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500)
}

/// Where the measured door task runs, and how its frames end.
#[derive(Clone, Copy)]
enum Placement {
    /// On the shared workers, waiting `frame_gap_ms` after every frame.
    SharedFixedGap,
    /// On the doors' own thread, with the learned frame end.
    DoorThreadLearned,
}

impl Placement {
    fn label(self) -> &'static str {
        match self {
            Placement::SharedFixedGap => "shared workers, fixed 30 ms gap",
            Placement::DoorThreadLearned => "door thread, learned frame end",
        }
    }
}

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
            data: 0,
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
    let placements = [Placement::SharedFixedGap, Placement::DoorThreadLearned];
    runtime.block_on(async {
        for placement in placements {
            measure_swipes(&config, placement, "idle").await;
        }
        let load = Background::start().await;
        for placement in placements {
            measure_swipes(&config, placement, "under load").await;
        }
        load.report();
    });
}

/// A second agent that keeps syncing 100,000 people in full and draining 10,000 queued events to a
/// simulator without a rate limit: the heaviest sync and uplink work the runtime can see.
struct Background {
    sim: Simulator,
    agent: Arc<Agent>,
    syncs: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Background {
    async fn start() -> Background {
        let (sim, agent, dir) = agent_with_backlog(BACKGROUND_PEOPLE, 10_000).await;
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

async fn measure_swipes(config: &Config, placement: Placement, label: &str) {
    let mut config = config.clone();
    wiegand_reader(&mut config.doors[0]).learn_frame_end = matches!(placement, Placement::DoorThreadLearned);
    let mock = MockGpio::new(&config, Default::default());
    let door_thread = DoorThread::start().unwrap();
    let hardware = match placement {
        Placement::SharedFixedGap => mock.open_door(0),
        Placement::DoorThreadLearned => {
            let _doors = door_thread.handle().enter();
            mock.open_door(0)
        }
    };
    let shared = Arc::new(SharedSnapshot::new(snapshot()));
    let state = Arc::new(Mutex::new(DoorState::new(&config.doors[0])));
    let (audit_tx, mut audit_rx) = tokio::sync::mpsc::unbounded_channel();
    let (timing_tx, mut timing_rx) = tokio::sync::mpsc::unbounded_channel::<SwipeTiming>();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = DoorTask::new(&config, 0, hardware, shared, state, audit_tx).with_timings(timing_tx);
    let door = match placement {
        Placement::SharedFixedGap => tokio::spawn(task.run(stop.clone())),
        Placement::DoorThreadLearned => door_thread.handle().spawn(task.run(stop.clone())),
    };
    tokio::spawn(async move { while audit_rx.recv().await.is_some() {} });

    let swipes = swipes();
    let mut timings = Vec::new();
    for i in 0..swipes {
        let number = 1 + (i as u64 * 7919) % 65_000;
        let timing = present_and_time(&mock, &mut timing_rx, number).await;
        assert!(timing.granted);
        timings.push(timing);
        // Let the relay relock so every swipe is a real relay write.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    stop.cancel();
    let _ = door.await;
    let _ = tokio::task::spawn_blocking(move || door_thread.stop()).await;
    // The first frame teaches the frame end: the learned figures are from the frames after it.
    let granted: Vec<&SwipeTiming> = timings.iter().skip(1).filter(|t| t.relay_ns.is_some()).collect();
    println!(
        "swipe latency ({label}; {}), {CREDENTIALS} cached credentials, {swipes} swipes, mock GPIO",
        placement.label()
    );
    let relay = |t: &&SwipeTiming| t.relay_ns.unwrap();
    report(
        "card start (first edge) → relay write",
        granted.iter().map(|t| relay(t) - t.first_edge_ns).collect(),
    );
    report(
        "frame end (last edge + silence) → relay write",
        granted
            .iter()
            .map(|t| relay(t).saturating_sub(t.frame_end_ns))
            .collect(),
    );
    report(
        "timer wake-up after frame end",
        granted
            .iter()
            .map(|t| t.frame_seen_ns.saturating_sub(t.frame_end_ns))
            .collect(),
    );
    report(
        "decision + relay write",
        granted.iter().map(|t| relay(t) - t.frame_seen_ns).collect(),
    );
    let silences: Vec<u64> = granted.iter().map(|t| t.frame_end_ns - t.last_edge_ns).collect();
    println!(
        "frame-end silence: {:.1} ms (frame gap {} ms; 26 bits every 2 ms: the frame itself is 50 ms)",
        silences.iter().max().copied().unwrap_or(0) as f64 / 1e6,
        wiegand_reader(&mut config.doors[0]).frame_gap_ms
    );
}
