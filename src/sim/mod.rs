//! A DoorFlow API simulator on a loopback port, for tests, the demo and benchmarks: the spec's
//! shapes from a generated dataset, pagination and `since_utc`, API-key and OAuth auth with
//! expiring access tokens and rotated refresh tokens, a fixed-window rate limit with X-RateLimit
//! headers, admits, an event sink, injected and random faults, and a network that can drop.
//!
//! Dataset (computed from ids on demand, so 50,000 people cost nothing until listed):
//! - people 1..=N; person *n* has card value *n*; every fifth person also a PIN 500000+*n*;
//!   people with *n* % 10 == 3 have the office-hours role (2, shift 7) and a second card enrolled
//!   as facility 1 + 5-digit number ("1" + `{n:05}`); everyone else role 1 (24/7); all in group
//!   100; every 50th person is disabled, every 97th expired (valid_to 2020).
//! - created_at during 2024, updated_at spread over 2025; `update_person`, `disable_person` and
//!   `add_person` set updated_at to now, so a `since_utc` cursor taken before them sees exactly
//!   those people. Deleted people vanish with their credentials (no tombstones, as in DoorFlow).
//!   Revoking a credential does not touch its person (credentials have no `since` filter).
//! - added people: ids N+1, N+2, ...; enabled, role 1, group 100, card value = id.
//! - channels 1340 "Front Door" and 1341 "Server Room" on site 1 (Europe/London); credential
//!   types 1 card, 2 PIN, 3 HID Mobile; group 100; roles 1 and 2; no reservations unless added.
//!
//! Recording: admits and events the server accepted (2xx) are kept with their `Idempotency-Key`
//! and arrival time. Duplicates are kept too, as the real server would process them.
//! A fault answers instead of the endpoint, so nothing is recorded — except the truncated,
//! malformed and slow answers, where the endpoint did its work first (see `faults`).

mod dataset;
mod faults;
mod gate;
mod handlers;
mod server;

pub use faults::{Chaos, Fault};

use crate::mutex::lock;
use axum::routing::{get, post};
use axum::Router;
use dataset::Dataset;
use faults::ChaosState;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub people: u64,
    pub requests_per_window: u32,
    pub window: Duration,
    pub api_key: String,
    pub token_lifetime_s: u64,
    /// Loopback port; 0 picks a free one.
    pub port: u16,
    /// When set, `POST /events` requires `Authorization: Bearer <token>` (401 otherwise).
    pub sink_token: Option<String>,
    /// Every answer, refusals included, leaves this much after its request arrived (a network's
    /// round trip, so calls overlap as they do against the real server).
    pub latency: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            people: 200,
            requests_per_window: 120,
            window: Duration::from_secs(60),
            api_key: "sim-api-key".into(),
            token_lifetime_s: 3600,
            port: 0,
            sink_token: None,
            latency: Duration::ZERO,
        }
    }
}

/// How the account's paginated lists answer. The default is the spec: `per_page` up to the
/// endpoint's maximum, `Total` and `Per-Page` headers, `skip_pagination` honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListBehaviour {
    /// Items a page holds at most, whatever `per_page` asked (an independent server capped
    /// pages at 100 when 500 were asked).
    pub page_cap: Option<usize>,
    /// Which totals headers the answers carry.
    pub totals: Totals,
    /// Added to the `Total` the headers report (a server whose count does not add up).
    pub total_offset: i64,
    /// Whether `skip_pagination=true` returns the whole list (else it is ignored and the
    /// first page comes back).
    pub honour_skip_pagination: bool,
}

impl Default for ListBehaviour {
    fn default() -> Self {
        ListBehaviour {
            page_cap: None,
            totals: Totals::Spec,
            total_offset: 0,
            honour_skip_pagination: true,
        }
    }
}

/// Totals headers on list answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Totals {
    /// `Total` and `Per-Page` (the spec).
    Spec,
    /// `X-Total-Results` and `X-Per-Page` (older documents).
    Older,
    /// None at all.
    None,
}

/// An admit or event the simulator accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub idempotency_key: Option<String>,
    /// The JSON body as sent; admits also carry `"channel_id"`.
    pub body: Value,
    pub path: String,
    pub at: Instant,
}

/// State shared by the handle, the gate and the endpoints.
struct Shared {
    inner: Mutex<Inner>,
    connections: Arc<server::Connections>,
    /// Bytes of `Fault::Huge` answers handed to connections.
    huge_sent: Arc<std::sync::atomic::AtomicU64>,
}

struct Inner {
    config: SimConfig,
    data: Dataset,
    lists: ListBehaviour,
    /// Queued faults: the path prefix they apply to, matching requests to let through first,
    /// the fault.
    faults: VecDeque<(String, usize, Fault)>,
    chaos: Option<ChaosState>,
    fault_counts: BTreeMap<String, u64>,
    rate_limited: u64,
    /// (arrival, path, status); status 0 = connection cut without an answer.
    log: Vec<(Instant, String, u16)>,
    window_start: Instant,
    window_count: u32,
    refresh_token: String,
    access_tokens: HashMap<String, Instant>,
    issued: u64,
    next_admission_id: u64,
    admits: Vec<Received>,
    events: Vec<Received>,
}

/// Handle to a running simulator; clones share it. The server stops when the last handle goes.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    server: Arc<server::Server>,
    base_url: String,
}

impl Simulator {
    /// Starts serving on 127.0.0.1 (on the current tokio runtime).
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        let port = config.port;
        let connections = Arc::new(server::Connections::default());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                data: Dataset::new(config.people),
                lists: ListBehaviour::default(),
                config,
                faults: VecDeque::new(),
                chaos: None,
                fault_counts: BTreeMap::new(),
                rate_limited: 0,
                log: Vec::new(),
                window_start: Instant::now(),
                window_count: 0,
                refresh_token: "refresh-0".into(),
                access_tokens: HashMap::new(),
                issued: 0,
                next_admission_id: 900_000_000,
                admits: Vec::new(),
                events: Vec::new(),
            }),
            connections: Arc::clone(&connections),
            huge_sent: Arc::default(),
        });
        let server = server::Server::start(port, app(Arc::clone(&shared)), connections)?;
        let base_url = format!("http://{}", server.addr());
        Ok(Simulator {
            shared,
            server: Arc::new(server),
            base_url,
        })
    }

    /// Runs until Ctrl-C/SIGTERM for manual testing (the `doorflow-sim` binary), with the
    /// `lockdowns` channels in lockdown from the start (scripts that test a lockdown).
    pub async fn run_standalone(
        config: SimConfig,
        chaos: Option<Chaos>,
        lockdowns: &[u64],
    ) -> std::io::Result<()> {
        let api_key = config.api_key.clone();
        let sink_token = config.sink_token.is_some();
        let sim = Simulator::start(config).await?;
        let base = sim.base_url();
        let mut banner = format!(
            "DoorFlow simulator on {base}\n  API key (HTTP Basic user, password X): {api_key}\n  \
             OAuth refresh token: {}\n  event sink: {base}/events ({})\n  received admits and \
             events: {base}/_sim/received\n",
            sim.refresh_token(),
            if sink_token {
                "bearer token required"
            } else {
                "no auth"
            }
        );
        for &channel_id in lockdowns {
            sim.set_lockdown(channel_id, true);
            banner += &format!("  channel {channel_id} in lockdown (cards and exit buttons)\n");
        }
        if let Some(chaos) = &chaos {
            banner += &format!(
                "  chaos: {:.0} % of requests fail (seed {}, slow answers after {} s)\n",
                chaos.failure_rate * 100.0,
                chaos.seed,
                chaos.slow.as_secs()
            );
        }
        banner += &format!("  try: curl -u {api_key}:X '{base}/api/3/people?per_page=2'\n");
        crate::out!("{banner}");
        sim.set_chaos(chaos);
        crate::shutdown::on_signal().await;
        Ok(())
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Applies `fault` to the next request whose path starts with `path_prefix` (before chaos).
    pub fn inject(&self, path_prefix: &str, fault: Fault) {
        self.inject_after(path_prefix, 0, fault);
    }

    /// Lets `pass` requests whose path starts with `path_prefix` through, then applies `fault`
    /// to the next one (e.g. a 429 on the sixth page of a list: `pass = 5`).
    pub fn inject_after(&self, path_prefix: &str, pass: usize, fault: Fault) {
        self.lock()
            .faults
            .push_back((path_prefix.to_string(), pass, fault));
    }

    /// Changes how lists answer from now on (see [`ListBehaviour`]).
    pub fn set_lists(&self, behaviour: ListBehaviour) {
        self.lock().lists = behaviour;
    }

    /// Random faults from now on (`None` stops them); the RNG restarts from the seed.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        self.lock().chaos = chaos.map(ChaosState::new);
    }

    /// How many faults of each kind were applied, injected or chaos: "500", "502_html", "503",
    /// "504", "500_old_style", "429", "drop", "slow", "truncated", "malformed", other statuses.
    pub fn fault_counts(&self) -> BTreeMap<String, u64> {
        self.lock().fault_counts.clone()
    }

    /// `true`: the port refuses connections and every open connection (idle keep-alive ones
    /// too) is cut. `false`: the same port listens again. Works with or without a runtime in
    /// the calling thread. Panics only if the port cannot be bound again after a few tries
    /// (something else took it while offline).
    pub fn set_offline(&self, offline: bool) {
        let mut tries = 0;
        while let Err(error) = self.server.set_offline(offline) {
            tries += 1;
            assert!(
                tries < 20,
                "simulator: cannot listen on {} again: {error}",
                self.base_url
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Bytes of `Fault::Huge` answers that left the server so far (a client that stops reading
    /// stops this count, give or take the socket buffers).
    pub fn huge_bytes_sent(&self) -> u64 {
        self.shared.huge_sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests that reached the server (not counting `/_sim/...`).
    pub fn requests(&self) -> u64 {
        self.lock().log.len() as u64
    }

    /// Requests refused by the rate-limit window (not injected 429s).
    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }

    pub fn requests_to(&self, path: &str) -> u64 {
        self.lock().log.iter().filter(|(_, p, _)| p == path).count() as u64
    }

    /// Every request in arrival order: (arrival time, path, status); status 0 means the
    /// connection was cut without an answer.
    pub fn request_log(&self) -> Vec<(Instant, String, u16)> {
        self.lock().log.clone()
    }

    /// Events the sink accepted, in arrival order.
    pub fn received_events(&self) -> Vec<Received> {
        self.lock().events.clone()
    }

    /// Admits (`admit_person` and `admit`) the API accepted, in arrival order.
    pub fn received_admits(&self) -> Vec<Received> {
        self.lock().admits.clone()
    }

    /// The refresh token a client must present next.
    pub fn refresh_token(&self) -> String {
        self.lock().refresh_token.clone()
    }

    /// Expires every access token issued so far.
    pub fn expire_tokens(&self) {
        self.lock().access_tokens.clear();
    }

    /// Disables a person (updated_at = now).
    pub fn disable_person(&self, id: u64) {
        self.update_person(id, false);
    }

    /// Sets a person's `enabled` (updated_at = now). Absent people are ignored.
    pub fn update_person(&self, id: u64, enabled: bool) {
        self.lock().data.touch_person(id, Some(enabled));
    }

    /// Ends a person's access at `valid_to` (updated_at = now), as DoorFlow's dashboard would.
    pub fn set_valid_to(&self, id: u64, valid_to: jiff::Timestamp) {
        self.lock().data.set_valid_to(id, valid_to);
    }

    /// Removes a person and their credentials from every list.
    pub fn delete_person(&self, id: u64) {
        self.lock().data.delete_person(id);
    }

    /// Adds an enabled person with a card whose value is the returned id.
    pub fn add_person(&self) -> u64 {
        self.lock().data.add_person()
    }

    /// Puts a channel in lockdown (cards and exit buttons) or lifts it, as DoorFlow's
    /// dashboard would; the agent sees it at its next sync.
    pub fn set_lockdown(&self, channel_id: u64, locked: bool) {
        let lockdowns = &mut self.lock().data.lockdowns;
        if locked {
            lockdowns.insert(channel_id);
        } else {
            lockdowns.remove(&channel_id);
        }
    }

    /// Removes every credential with this value from `/api/3/credentials`.
    pub fn revoke_credential(&self, value: &str) {
        self.lock().data.revoke_credential(value);
    }

    /// Adds a group reservation (updated_at = now); its state follows the clock.
    pub fn add_group_reservation(
        &self,
        person_id: u64,
        group_ids: Vec<u64>,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    ) -> u64 {
        self.lock()
            .data
            .add_booking(true, person_id, group_ids, start, end)
    }

    /// Adds a channel reservation (updated_at = now).
    pub fn add_reservation(
        &self,
        person_id: u64,
        channel_ids: Vec<u64>,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    ) -> u64 {
        self.lock()
            .data
            .add_booking(false, person_id, channel_ids, start, end)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }
}

fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/3/people", get(handlers::people))
        .route("/api/3/credentials", get(handlers::credentials))
        .route("/api/3/credential_types", get(handlers::credential_types))
        .route("/api/3/groups", get(handlers::groups))
        .route("/api/3/roles", get(handlers::roles))
        .route("/api/3/group_reservations", get(handlers::group_reservations))
        .route("/api/3/reservations", get(handlers::reservations))
        .route("/api/3/channels", get(handlers::channels))
        .route("/api/3/sites", get(handlers::sites))
        .route("/api/3/channels/{id}/admit_person", post(handlers::admit_person))
        .route("/api/3/channels/{id}/admit", post(handlers::admit))
        .route("/oauth/token", post(handlers::token))
        .route("/events", post(handlers::event))
        .route("/_sim/received", get(handlers::received))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            gate::gate,
        ))
        .with_state(shared)
}
