//! Sync time and request count against the simulator enforcing 120 requests/minute.
//! Run: `cargo bench --bench sync_throughput` (10,000 people; `SYNC_BENCH_PEOPLE=50000` for more).
//! Prints the numbers; asserts nothing.

use doorflow_agent::agent::Agent;
use doorflow_agent::doorflow::client::Client;
use doorflow_agent::doorflow::ratelimit::RateBudget;
use doorflow_agent::sim::{SimConfig, Simulator};
use doorflow_agent::testing::config::bench_config;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn main() {
    let people: u64 = std::env::var("SYNC_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sim = Simulator::start(SimConfig { people, ..Default::default() }).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = bench_config(dir.path(), sim.base_url(), 120);
        let budget = Arc::new(Mutex::new(RateBudget::new(120)));
        let client = Client::new(&config.api, budget).unwrap();
        let agent = Agent::start(config).unwrap();
        let start = Instant::now();
        doorflow_agent::sync::sync_once(&agent.sync_target(Default::default()), &client).await.unwrap();
        let elapsed = start.elapsed().as_secs_f64();
        let requests = sim.requests();
        let allowed = 120.0 * elapsed / 60.0;
        println!(
            "sync of {people} people: {elapsed:.1} s, {requests} requests, {} × 429, {:.0} % of the 120/min budget used",
            sim.rate_limited(),
            100.0 * requests as f64 / allowed.max(1.0)
        );
    });
}
