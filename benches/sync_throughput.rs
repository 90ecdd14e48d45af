//! Sync cost against the simulator enforcing DoorFlow's 120 requests/minute, at 10,000 and
//! 100,000 people (1.3 credentials each): a full sync page by page and with
//! `sync.skip_pagination`, against the fewest requests the API allows and the time they take at
//! 120/min; then incremental syncs with nothing changed and with one change.
//! Run: `cargo bench --bench sync_throughput` (about 13 minutes; `SYNC_BENCH_PEOPLE=10000` for
//! one size). Prints the numbers; asserts nothing.

use doorflow_agent::agent::Agent;
use doorflow_agent::doorflow::client::Client;
use doorflow_agent::doorflow::ratelimit::RateBudget;
use doorflow_agent::sim::{SimConfig, Simulator};
use doorflow_agent::sync::{sync_once, SyncTarget};
use doorflow_agent::testing::config::bench_config;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const PER_MINUTE: u32 = 120;
/// The small lists after people and credentials: types, groups, roles, group reservations,
/// reservations, channels, sites.
const SMALL_LISTS: u64 = 7;

fn main() {
    let sizes: Vec<u64> = std::env::var("SYNC_BENCH_PEOPLE")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for people in sizes {
        runtime.block_on(measure(people));
    }
}

struct Run {
    sim: Simulator,
    target: SyncTarget,
    client: Client,
    _agent: Arc<Agent>,
    _dir: tempfile::TempDir,
}

async fn start(people: u64, skip_pagination: bool) -> Run {
    let sim = Simulator::start(SimConfig {
        people,
        requests_per_window: PER_MINUTE,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = bench_config(dir.path(), sim.base_url(), u64::from(PER_MINUTE));
    config.sync.skip_pagination = skip_pagination;
    let budget = Arc::new(Mutex::new(RateBudget::new(PER_MINUTE)));
    let client = Client::new(&config.api, budget).unwrap();
    let agent = Agent::start(config).unwrap();
    let target = agent.sync_target(Default::default());
    Run {
        sim,
        target,
        client,
        _agent: agent,
        _dir: dir,
    }
}

/// One sync: its requests, its 429s and its time.
async fn timed(run: &Run) -> (u64, u64, f64) {
    let (requests, limited) = (run.sim.requests(), run.sim.rate_limited());
    let started = Instant::now();
    sync_once(&run.target, &run.client).await.unwrap();
    (
        run.sim.requests() - requests,
        run.sim.rate_limited() - limited,
        started.elapsed().as_secs_f64(),
    )
}

async fn measure(people: u64) {
    let credentials = people * 13 / 10;
    // Page by page: people 100 a page, credentials 500 a page, one request per small list.
    let fewest_paged = people.div_ceil(100) + credentials.div_ceil(500) + SMALL_LISTS;
    let at_rate = |requests: u64| requests as f64 * 60.0 / f64::from(PER_MINUTE);

    let run = start(people, false).await;
    let (requests, limited, seconds) = timed(&run).await;
    println!(
        "{people} people, full sync page by page: {requests} requests in {seconds:.1} s, {limited} × 429 \
         (fewest the API allows: {fewest_paged} requests, {:.1} s at {PER_MINUTE}/min; {:.0} % of the budget used)",
        at_rate(fewest_paged),
        100.0 * at_rate(requests) / seconds.max(0.001)
    );
    let (requests, limited, seconds) = timed(&run).await;
    println!("{people} people, incremental sync with nothing changed: {requests} requests in {seconds:.1} s, {limited} × 429");
    run.sim.update_person(people / 2, false);
    let (requests, limited, seconds) = timed(&run).await;
    println!("{people} people, incremental sync with one person changed: {requests} requests in {seconds:.1} s, {limited} × 429");
    run.sim.revoke_credential(&(people / 3).to_string());
    let (requests, limited, seconds) = timed(&run).await;
    println!(
        "{people} people, incremental sync after a card was revoked (the probe sees it, the credentials are pulled): {requests} requests in {seconds:.1} s, {limited} × 429"
    );
    drop(run);

    let run = start(people, true).await;
    let (requests, limited, seconds) = timed(&run).await;
    println!(
        "{people} people, full sync with skip_pagination: {requests} requests in {seconds:.1} s, {limited} × 429 (fewest: {} requests)",
        2 + SMALL_LISTS
    );
}
