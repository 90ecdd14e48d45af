//! A DoorFlow simulator and an agent (mock GPIO) in this process, configured from the demo
//! config with the state in a temporary directory.

use super::config::demo_config;
use super::events::front_door_swipe;
use super::mock_control;
use crate::agent::{self, Agent, AgentError};
use crate::audit::AuditEvent;
use crate::config::values::Ranged;
use crate::config::Config;
use crate::sim::{SimConfig, Simulator};
use serde_json::Value;
use std::sync::Arc;

/// What a test changes from the demo config and the default simulator.
#[derive(Debug, Clone)]
pub struct Options {
    pub people: u64,
    /// The simulator's limit per minute.
    pub sim_limit: u32,
    /// The agent's assumed limit before headers are seen.
    pub requests_per_minute: u64,
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
            api_key: super::config::SIM_API_KEY.into(),
        }
    }
}

impl Options {
    /// The demo config for a simulator at `base_url` with state under `dir`, changed as these
    /// options say.
    pub fn config(&self, dir: &std::path::Path, base_url: &str) -> Config {
        let mut config = demo_config(dir, base_url);
        super::config::without_osdp_doors(&mut config);
        std::fs::write(dir.join("api_key"), format!("{}\n", self.api_key)).expect("API key file");
        config.api.requests_per_minute = Ranged::new(self.requests_per_minute);
        config.api.request_timeout_s = Ranged::new(self.request_timeout_s);
        config.api.connect_timeout_s = Ranged::new(1);
        config.uplink.admit_ttl_s = Ranged::new(self.admit_ttl_s);
        config.uplink.retry_base_ms = Ranged::new(self.retry_base_ms);
        config.uplink.retry_cap_s = Ranged::new(self.retry_cap_s);
        super::config::assert_valid(&config);
        config
    }
}

/// A simulator with `people` people and no practical rate limit, for tests that drive the real
/// binary against it.
pub async fn unlimited_simulator(people: u64) -> Simulator {
    Simulator::start(SimConfig {
        people,
        requests_per_window: 100_000,
        ..Default::default()
    })
    .await
    .expect("simulator starts")
}

/// A simulator for a test that is not async (one that drives the real binary): it serves on a
/// runtime of its own, returned with it, which must live as long as the simulator is used.
pub fn simulator_on_own_runtime(config: SimConfig) -> (tokio::runtime::Runtime, Simulator) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the simulator");
    let sim = runtime
        .block_on(Simulator::start(config))
        .expect("simulator starts");
    (runtime, sim)
}

/// Writes `events` to `agent`'s outbox as the audit writer does (one group, one flush) and wakes
/// the uplink.
pub fn queue(agent: &Agent, events: &[AuditEvent]) {
    let uplink = &agent.config.uplink;
    let capacity = crate::store::Capacity::from_config(uplink);
    crate::audit_writer::write_group(&agent.store, uplink, capacity, events)
        .expect("queued events are written");
    agent.kick_queue();
}

/// Queues `n` denied swipes in `agent`'s outbox.
pub fn queue_denied_swipes(agent: &Agent, n: u64) {
    let events: Vec<AuditEvent> = (0..n).map(super::events::denied_swipe).collect();
    queue(agent, &events);
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
        .expect("simulator starts");
        Harness::start_with(sim, options).await
    }

    /// An agent against an existing simulator (a fresh state directory).
    pub async fn start_with(sim: Simulator, options: Options) -> Harness {
        Harness::start_edited(sim, options, |_| {}).await
    }

    /// Like `start_with`, with the config changed by `edit` first (e.g. the store moved onto a
    /// small filesystem).
    pub async fn start_edited(sim: Simulator, options: Options, edit: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = options.config(dir.path(), sim.base_url());
        edit(&mut config);
        super::config::assert_valid(&config);
        Harness::assemble(sim, dir, config).await
    }

    /// Starts the agent and serves it.
    async fn assemble(sim: Simulator, dir: tempfile::TempDir, config: Config) -> Harness {
        let agent = Agent::start(config.clone()).unwrap_or_else(|error| panic!("agent start: {error}"));
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
    /// One agent at a time has the store (its lock), so the old agent must be gone first.
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
            serving
                .await
                .expect("the agent task")
                .expect("the agent stops cleanly");
        }
    }

    /// Queues `n` door events (as the audit writer does) and wakes the uplink. Returns their ids
    /// in queue order.
    pub fn queue_events(&self, n: usize) -> Vec<u64> {
        let events: Vec<AuditEvent> = (0..n as u64)
            .map(|i| front_door_swipe(i, Some(i), false))
            .collect();
        self.write(&events);
        events.iter().map(|e| e.id).collect()
    }

    /// Queues one granted swipe with an admit for `person_id` on channel 1340.
    pub fn queue_admit(&self, person_id: u64) -> u64 {
        let granted = front_door_swipe(person_id, Some(person_id), true);
        self.write(std::slice::from_ref(&granted));
        granted.id
    }

    pub fn write(&self, events: &[AuditEvent]) {
        queue(&self.agent, events);
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
        self.agent.store.outbox_stats().expect("outbox stats").pending
    }

    /// A request to the mock GPIO control socket (blocking: call from a blocking context).
    pub fn control(&self, request: Value) -> Value {
        mock_control::control(&self.config.gpio.mock_socket, request)
    }
}

/// A simulator with `people` people and no rate limit, and an agent against it (`bench_config`:
/// no periodic sync, the OSDP door left out) with `queued` denied swipes in its outbox. The
/// agent's loops are not started (`agent::serve` does that); the directory holds its state.
pub async fn agent_with_backlog(people: u64, queued: u64) -> (Simulator, Arc<Agent>, tempfile::TempDir) {
    let sim = Simulator::start(SimConfig {
        people,
        requests_per_window: u32::MAX,
        ..Default::default()
    })
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = super::config::bench_config(dir.path(), sim.base_url(), 10_000);
    let agent = Agent::start(config).expect("agent starts");
    queue_denied_swipes(&agent, queued);
    (sim, agent, dir)
}

/// Presents H10301 card `number` (facility 1) at door 0 of `mock` and returns the door task's
/// timing of that swipe from `timings` (panics after 5 s without one).
pub async fn present_and_time(
    mock: &crate::hw::mock::MockGpio,
    timings: &mut tokio::sync::mpsc::UnboundedReceiver<crate::door_task::SwipeTiming>,
    number: u64,
) -> crate::door_task::SwipeTiming {
    let reply = mock.handle(&serde_json::json!({
        "op": "card", "door": 0, "format": "h10301", "facility": 1, "number": number
    }));
    assert_eq!(reply["ok"], true, "the mock took the card: {reply}");
    tokio::time::timeout(std::time::Duration::from_secs(5), timings.recv())
        .await
        .expect("the door task timed the swipe within 5 s")
        .expect("the door task is running")
}
