//! Memory of the real agent (`doorflow-agent run`, mock GPIO), as the kernel counts it
//! (`/proc/<pid>/status`: VmHWM, the peak, and VmRSS, what is resident now), at 10,000 and
//! 100,000 people (1.3 credentials each: 130,000 at 100,000):
//!
//! - **online**: a first full sync from the simulator (VmHWM during it, VmRSS once it settled),
//!   then incremental syncs every `sync.interval_s` (10 s) while one person changes before each
//!   (VmRSS after each: growth shows as a rising series);
//! - **offline**: a restart on the stored snapshot with DoorFlow unreachable.
//!
//! Run: `cargo bench --bench memory_footprint`. Environment: `MEMORY_BENCH_PEOPLE` (default
//! `10000,100000`), `MEMORY_BENCH_SYNCS` (incremental syncs per size, default 100: about 17
//! minutes per size), `MEMORY_BENCH_RATE` (the simulator's limit per minute; default none, the
//! fastest and so the hardest case for the peak). Prints the figures; asserts nothing.

use doorflow_agent::config::values::Ranged;
use doorflow_agent::sim::{SimConfig, Simulator};
use doorflow_agent::testing::config::{demo_config, without_osdp_doors};
use doorflow_agent::testing::process::{resident_by_mapping, AgentProcess, Memory};
use serde_json::Value;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_doorflow-agent");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn main() {
    let sizes: Vec<u64> = std::env::var("MEMORY_BENCH_PEOPLE")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let syncs: u64 = env_or("MEMORY_BENCH_SYNCS", 100);
    let rate: u32 = env_or("MEMORY_BENCH_RATE", u32::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for people in sizes {
        measure(&runtime, people, syncs, rate);
    }
}

/// Waits until `status` (through the admin socket) satisfies `done`; panics after `limit`.
fn wait_status(agent: &AgentProcess, limit: Duration, mut done: impl FnMut(&Value) -> bool) -> Value {
    let end = Instant::now() + limit;
    loop {
        let status = agent.status();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < end,
            "status never got there: {status}\nlog:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn measure(runtime: &tokio::runtime::Runtime, people: u64, syncs: u64, rate: u32) {
    let sim = runtime
        .block_on(Simulator::start(SimConfig {
            people,
            requests_per_window: rate,
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), sim.base_url());
    without_osdp_doors(&mut config);
    config.api.requests_per_minute = Ranged::new(u64::from(rate.min(10_000)));
    config.sync.interval_s = Ranged::new(10);
    config.sync.full_interval_s = Ranged::new(86_400);

    let started = Instant::now();
    let mut agent = AgentProcess::start_config(BINARY, &config, dir.path());
    let status = wait_status(&agent, Duration::from_secs(3600), |s| {
        s["sync"]["last_kind"] == "full"
    });
    let full_s = started.elapsed().as_secs_f64();
    let after_full = agent.memory();
    std::thread::sleep(Duration::from_secs(5));
    let settled = agent.memory();
    println!(
        "{people} people online: first full sync ({} credentials) in {full_s:.0} s; VmHWM {} (goal at 100,000: 64 MB); VmRSS {} right after, {} 5 s later",
        status["snapshot"]["credentials"],
        mb(after_full.hwm_kb),
        mb(after_full.rss_kb),
        mb(settled.rss_kb),
    );

    let mut series = Vec::new();
    let mut last = status["sync"]["last_success"].clone();
    for i in 0..syncs {
        // One real change per sync, so each incremental sync has something to apply.
        sim.update_person(1 + (i * 7919) % people, i % 2 == 1);
        let status = wait_status(&agent, Duration::from_secs(600), |s| {
            s["sync"]["last_success"] != last
        });
        last = status["sync"]["last_success"].clone();
        series.push(agent.memory());
    }
    if let (Some(first), Some(final_)) = (series.first(), series.last()) {
        let peak = series.iter().map(|m| m.rss_kb).max().unwrap_or(0);
        let tenth = |k: usize| mb(series[(series.len() - 1) * k / 10].rss_kb);
        println!(
            "{people} people online: {} incremental syncs: VmRSS after the first {}, after the last {} (max {}; every tenth: {}); VmHWM {} (goal: no growth; steady ≤ {})",
            series.len(),
            mb(first.rss_kb),
            mb(final_.rss_kb),
            mb(peak),
            (0..=10).map(tenth).collect::<Vec<_>>().join(", "),
            mb(final_.hwm_kb),
            if people >= 100_000 { "32 MB" } else { "16 MB at 10,000" },
        );
    }
    agent.stop();

    // Offline: the same store, DoorFlow unreachable (nothing listens on port 9).
    config.api.base_url = doorflow_agent::config::ServiceUrl::parse("http://127.0.0.1:9").unwrap();
    let mut agent = AgentProcess::start_config(BINARY, &config, dir.path());
    std::thread::sleep(Duration::from_secs(5));
    let offline: Memory = agent.memory();
    println!(
        "{people} people offline: VmRSS {} 5 s after start, VmHWM {}",
        mb(offline.rss_kb),
        mb(offline.hwm_kb)
    );
    let index = agent
        .log_lines_with(&["ready:"])
        .first()
        .and_then(|line| line.split("index_bytes=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let places: Vec<String> = resident_by_mapping(agent.pid())
        .into_iter()
        .take(6)
        .map(|(name, kb)| format!("{name} {}", mb(kb)))
        .collect();
    println!(
        "{people} people offline, where it is: {} (of which the snapshot's people and credential index: {})",
        places.join(", "),
        mb(index / 1024)
    );
    agent.stop();
}
