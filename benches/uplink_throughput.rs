//! Outbox and uplink throughput. Run: `cargo bench --bench uplink_throughput`.
//! Prints; asserts nothing.
//!
//! 1. Durable enqueue (each commit fsynced before it returns): one event per commit; groups of
//!    32; and 20,000 events arriving at once through the audit writer, which groups whatever
//!    arrived during the previous commit.
//! 2. Drain against a simulator enforcing 120 requests/minute: requests sent, 429s received,
//!    share of the allowed rate used (`UPLINK_BENCH_SECONDS`, default 150).
//! 3. Time to drain 10,000 queued events against a server without a rate limit.

use doorflow_agent::agent::{self, Agent};
use doorflow_agent::audit::AuditEvent;
use doorflow_agent::audit_writer;
use doorflow_agent::config::ServiceUrl;
use doorflow_agent::sim::{SimConfig, Simulator};
use doorflow_agent::store::{Capacity, Store};
use doorflow_agent::testing::config::bench_config;
use doorflow_agent::testing::events::denied_swipe;
use doorflow_agent::testing::harness::{agent_with_backlog, queue_denied_swipes};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn enqueue_rate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), 8 << 20).unwrap();
    let uplink = doorflow_agent::config::UplinkConfig {
        events_url: Some(ServiceUrl::parse("https://sink.example/events").unwrap()),
        ..Default::default()
    };
    let capacity = Capacity::from_config(&uplink);
    let n = 2_000;
    let start = Instant::now();
    for i in 0..n {
        audit_writer::write_group(&store, &uplink, capacity, &[denied_swipe(i)]).unwrap();
    }
    let single = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let groups = 200;
    for g in 0..groups {
        let batch: Vec<AuditEvent> = (0..32).map(|i| denied_swipe(g * 32 + i)).collect();
        audit_writer::write_group(&store, &uplink, capacity, &batch).unwrap();
    }
    let grouped = (groups * 32) as f64 / start.elapsed().as_secs_f64();
    println!("durable enqueue, one fsync per event:        {single:8.0} events/s ({n} events)");
    println!("durable enqueue, groups of 32 (one fsync):   {grouped:8.0} events/s");
}

/// A burst through the audit writer: every event counts once it is reported durable.
async fn writer_burst() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db"), 8 << 20).unwrap());
    let uplink = doorflow_agent::config::UplinkConfig {
        events_url: Some(doorflow_agent::config::ServiceUrl::parse("https://sink.example/events").unwrap()),
        ..Default::default()
    };
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    let (feed, mut durable) = tokio::sync::broadcast::channel(1 << 16);
    let queued = Arc::new(tokio::sync::watch::channel(0).0);
    tokio::spawn(audit_writer::run_writer(
        store,
        uplink,
        received,
        queued,
        feed,
        Default::default(),
    ));
    let n = 20_000u64;
    let start = Instant::now();
    for i in 0..n {
        events.send(denied_swipe(i)).unwrap();
    }
    let mut done = 0;
    while done < n {
        match durable.recv().await {
            Ok(_) => done += 1,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => done += missed,
            Err(_) => break,
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("durable enqueue, 20,000 at once via the writer: {rate:8.0} events/s (groups of up to 512)");
}

async fn drain_at_limit(seconds: u64) {
    let sim = Simulator::start(SimConfig {
        people: 50,
        requests_per_window: 120,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(bench_config(dir.path(), sim.base_url(), 120)).unwrap();
    queue_denied_swipes(&agent, 2_000);
    let start = Instant::now();
    tokio::spawn(agent::serve(Arc::clone(&agent), std::future::pending()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let requests = sim.requests();
    let allowed = 120.0 * elapsed / 60.0;
    println!(
        "drain against 120/min for {elapsed:.0} s: {requests} requests (first sync included), {} events delivered, {} × 429, {:.0} % of the allowed rate used",
        sim.received_events().len(),
        sim.rate_limited(),
        100.0 * requests as f64 / allowed
    );
}

async fn drain_ten_thousand() {
    let (sim, agent, _dir) = agent_with_backlog(50, 10_000).await;
    let start = Instant::now();
    tokio::spawn(agent::serve(Arc::clone(&agent), std::future::pending()));
    while agent.store.outbox_stats().unwrap().pending > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "drain of 10,000 queued events, no server limit: {elapsed:.1} s ({:.0} events/s, {} received); at 120/min the same queue takes {:.0} min",
        10_000.0 / elapsed,
        sim.received_events().len(),
        10_000.0 / 120.0
    );
}

fn main() {
    let seconds: u64 = std::env::var("UPLINK_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    enqueue_rate();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        writer_burst().await;
        drain_ten_thousand().await;
        drain_at_limit(seconds).await;
    });
}
