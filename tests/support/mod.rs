//! Shared harness for the uplink tests: a DoorFlow simulator and an agent (mock GPIO) in this
//! process, configured from `config/demo.toml` with the state in a temporary directory.
#![allow(dead_code)]

use doorflow_agent::agent::{self, Agent, AgentError};
use doorflow_agent::audit::{new_event_id, AuditEvent};
use doorflow_agent::config::Config;
use doorflow_agent::sim::{SimConfig, Simulator};
use doorflow_agent::store::{Capacity, StoreError};
use jiff::Timestamp;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Options {
    pub people: u64,
    /// The simulator's limit per minute.
    pub sim_limit: u32,
    /// The agent's assumed limit before headers are seen.
    pub requests_per_minute: u32,
    pub request_timeout_s: u64,
    pub retry_base_ms: u64,
    pub retry_cap_s: u64,
    pub admit_ttl_s: u64,
    /// The API key the agent presents (the simulator accepts `sim-api-key`).
    pub api_key: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            people: 50,
            sim_limit: 100_000,
            requests_per_minute: 10_000,
            request_timeout_s: 2,
            retry_base_ms: 100,
            retry_cap_s: 2,
            admit_ttl_s: 120,
            api_key: "sim-api-key".into(),
        }
    }
}

/// The agent's config text for a simulator at `base_url`, state under `dir`.
pub fn config_text(dir: &Path, base_url: &str, options: &Options) -> String {
    let dir = dir.display().to_string();
    include_str!("../../config/demo.toml")
        .replace("/tmp/doorflow-agent-demo", &dir)
        .replace("http://127.0.0.1:18080", base_url)
        .replace(
            "requests_per_minute = 120",
            &format!(
                "requests_per_minute = {}\nrequest_timeout_s = {}\nconnect_timeout_s = 1",
                options.requests_per_minute, options.request_timeout_s
            ),
        )
        .replace(
            "admit_ttl_s = 120",
            &format!(
                "admit_ttl_s = {}\nretry_base_ms = {}\nretry_cap_s = {}",
                options.admit_ttl_s, options.retry_base_ms, options.retry_cap_s
            ),
        )
}

pub struct Harness {
    pub sim: Simulator,
    pub agent: Arc<Agent>,
    pub dir: tempfile::TempDir,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<Result<(), AgentError>>>,
}

impl Harness {
    pub async fn start(options: Options) -> Harness {
        let sim = Simulator::start(SimConfig {
            people: options.people,
            requests_per_window: options.sim_limit,
            ..Default::default()
        })
        .await
        .unwrap();
        Harness::start_with(sim, options).await
    }

    /// An agent against an existing simulator (a fresh state directory).
    pub async fn start_with(sim: Simulator, options: Options) -> Harness {
        Harness::start_edited(sim, options, |text| text).await
    }

    /// Like `start_with`, with the config text changed by `edit` first (e.g. the store moved
    /// onto a small filesystem).
    pub async fn start_edited(
        sim: Simulator,
        options: Options,
        edit: impl FnOnce(String) -> String,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api_key"), format!("{}\n", options.api_key)).unwrap();
        let text = edit(config_text(dir.path(), sim.base_url(), &options));
        let config = Config::parse(&text, "test.toml").unwrap();
        Harness::assemble(sim, dir, config).await
    }

    /// Starts the agent and serves it. A store write a stopped uplink started on the blocking
    /// pool may still hold the store for a moment after an in-process stop (a real restart is
    /// a new process and never sees this), so a locked store is retried briefly.
    async fn assemble(sim: Simulator, dir: tempfile::TempDir, config: Config) -> Harness {
        let mut tries = 0;
        let agent = loop {
            match Agent::start(config.clone()) {
                Ok(agent) => break agent,
                Err(AgentError::Store(StoreError::Locked { .. })) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("agent start: {error}"),
            }
        };
        let mut harness = Harness {
            sim,
            agent,
            dir,
            config,
            stop: None,
            serving: None,
        };
        harness.serve();
        harness
    }

    fn serve(&mut self) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.serving = Some(tokio::spawn(agent::serve(Arc::clone(&self.agent), async {
            let _ = stopped.await;
        })));
    }

    /// Stops the agent (the SIGTERM path) and starts a new one on the same store and config.
    /// sled allows one open handle per store, so the old agent must be gone first.
    pub async fn restart(mut self) -> Harness {
        self.shutdown().await;
        let Harness {
            sim,
            agent,
            dir,
            config,
            ..
        } = self;
        let weak = Arc::downgrade(&agent);
        drop(agent);
        assert!(
            weak.upgrade().is_none(),
            "something still holds the stopped agent"
        );
        Harness::assemble(sim, dir, config).await
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.unwrap().unwrap();
        }
    }

    /// Queues `n` door events (as the audit writer does) and wakes the uplink. Returns their ids
    /// in queue order.
    pub fn queue_events(&self, n: usize) -> Vec<u64> {
        let events: Vec<AuditEvent> = (0..n).map(|i| event(i as u64, false)).collect();
        self.write(&events);
        events.iter().map(|e| e.id).collect()
    }

    /// Queues one granted swipe with an admit for `person_id` on channel 1340.
    pub fn queue_admit(&self, person_id: u64) -> u64 {
        let mut granted = event(person_id, true);
        granted.person_id = Some(person_id);
        self.write(std::slice::from_ref(&granted));
        granted.id
    }

    pub fn write(&self, events: &[AuditEvent]) {
        let uplink = &self.config.uplink;
        let capacity = Capacity::from_config(uplink);
        doorflow_agent::audit_writer::write_group(&self.agent.store, uplink, capacity, events).unwrap();
        self.agent.kick_queue();
    }

    /// Event ids the simulator received, in arrival order (duplicates kept).
    pub fn received_event_ids(&self) -> Vec<u64> {
        self.sim
            .received_events()
            .iter()
            .filter_map(|r| r.body["id"].as_u64())
            .collect()
    }

    pub fn pending(&self) -> u64 {
        self.agent.store.outbox_stats().unwrap().pending
    }

    /// A request to the mock GPIO control socket (blocking: call from a blocking context).
    pub fn control(&self, request: Value) -> Value {
        control(&self.config.gpio.mock_socket, request)
    }
}

pub fn event(n: u64, admit: bool) -> AuditEvent {
    AuditEvent {
        id: new_event_id(),
        event_code: 10,
        reason: "authorised".into(),
        door: "front".into(),
        channel_id: Some(1340),
        person_id: Some(n),
        credential: Some("****17".into()),
        created_at: Timestamp::now(),
        admit,
    }
}

pub fn control(socket: &Path, request: Value) -> Value {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    writeln!(stream, "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// Polls `condition` every 20 ms until it holds or `limit` passes (a generous bound, not a
/// timing assertion). Returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// `items` with later repeats removed.
pub fn first_occurrences(items: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    items.iter().copied().filter(|i| seen.insert(*i)).collect()
}
