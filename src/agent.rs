//! Wiring of the running agent: store, in-memory snapshot, doors, sync, uplink, admin socket,
//! and the one way it stops (a cancellation token every task watches, a tracker every task is
//! spawned on). The top of the module graph: nothing else in the crate imports it.

use crate::admin;
use crate::audit::AuditEvent;
use crate::audit_writer;
use crate::clock::trusted::TimeKeeper;
use crate::config::Config;
use crate::door_task::{DoorState, DoorTask, DoorThread};
use crate::doorflow::client::{AuthHealth, Client};
use crate::doorflow::ratelimit::RateBudget;
use crate::error_chain::chain;
use crate::hw;
use crate::metrics;
use crate::mutex::lock;
use crate::osdp;
use crate::snapshot::{SharedSnapshot, SnapshotBuilder};
use crate::status::{
    self, DoorStatus, DoorflowAuth, QueueStatus, SnapshotStatus, StatusReport, StoreStatus, SyncStatus,
};
use crate::store::{Lane, SnapshotSource, Store, StoreError};
use crate::supervisor;
use crate::sync;
use crate::uplink::policy::RetryPolicy;
use crate::uplink::{LaneDrain, UplinkStatus, Wakeups};
use jiff::Timestamp;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long `serve` waits for its tasks after the stop before aborting them.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Named with its key: the path is the config's `store.path`.
    #[error("{0} (`store.path`)")]
    Store(#[from] StoreError),
    /// The admin or mock GPIO control socket.
    #[error(transparent)]
    Socket(#[from] crate::line_server::BindError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Gpio(#[from] hw::GpioError),
    #[error(transparent)]
    Osdp(#[from] osdp::OsdpStartError),
}

/// How long a start-up waits for a process that has the store briefly (a `status` or `queue`
/// command reading it while the agent was stopped).
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything the agent's tasks share.
#[derive(Debug)]
pub struct Agent {
    pub config: Config,
    pub store: Arc<Store>,
    pub snapshot: Arc<SharedSnapshot>,
    pub doors: Vec<Arc<Mutex<DoorState>>>,
    /// Whether DoorFlow answered the last call (sync or uplink).
    pub online: Arc<AtomicBool>,
    pub sync_status: Arc<Mutex<SyncStatus>>,
    /// Bumped whenever calls are queued, so the uplink drains without polling.
    pub queue_changed: Arc<watch::Sender<u64>>,
    /// Bumped when a sync succeeds: DoorFlow answers, so a backing-off uplink retries now.
    pub reachable: Arc<watch::Sender<u64>>,
    /// The one request budget for DoorFlow, shared by sync and uplink.
    pub budget: Arc<Mutex<RateBudget>>,
    pub uplink: Arc<UplinkStatus>,
    /// Every audit event once it is durable (for the demo and live views).
    pub audit_feed: tokio::sync::broadcast::Sender<AuditEvent>,
    /// The trusted-time floor (from DoorFlow's `Date`) and the clock's health.
    pub clock: Arc<TimeKeeper>,
    /// Whether DoorFlow refuses the agent's credentials (set by the DoorFlow client).
    pub doorflow_auth: Arc<AuthHealth>,
    /// Why a client could not be set up (a secret it cannot read), for `status`.
    pub clients: Mutex<status::HealthInputs>,
    /// Door events by door and code, for metrics.
    pub door_events: metrics::DoorEventCounts,
}

impl Agent {
    /// Opens the store and loads the last good snapshot, so swipes are decided offline from the
    /// first moment. A store part that cannot be opened is moved aside and reported; a snapshot
    /// that cannot be used falls back to the last good copy, or to an empty snapshot (every card
    /// denied until the next sync), which is the fail-secure choice.
    pub fn start(config: Config) -> Result<Arc<Agent>, AgentError> {
        Agent::start_unless(config, &CancellationToken::new())
    }

    /// [`Agent::start`], giving up with `StoreError::Interrupted` if `stop` is cancelled while
    /// it waits for a store another process has.
    pub fn start_unless(config: Config, stop: &CancellationToken) -> Result<Arc<Agent>, AgentError> {
        let other_agent = || other_agent_on(&config.admin.socket);
        let wait = crate::store::LockWait {
            limit: STORE_WAIT,
            stop,
            other_agent: &other_agent,
        };
        let (store, starting) = Store::open_for_agent::<SnapshotBuilder>(
            &config.store.path,
            config.store.cache_capacity_bytes(),
            &wait,
        )?;
        if starting.source == SnapshotSource::LastGood {
            // The cursor belongs to the snapshot that was lost: the next sync is a full one.
            let _ = store.meta_remove(crate::sync::CURSOR_KEY);
        }
        let snapshot = starting
            .parts
            .finish(Some(config.shifts()), &config.sync.time_zone);
        crate::memory::release_freed_memory();
        let sync_status = store
            .meta_get(status::SYNC_STATUS_KEY)
            .ok()
            .flatten()
            .unwrap_or_default();
        let clock = Arc::new(TimeKeeper::new(
            store.meta_get(crate::clock::trusted::ANCHOR_KEY).ok().flatten(),
        ));
        let doors = config
            .doors
            .iter()
            .map(|door| Arc::new(Mutex::new(DoorState::new(door))))
            .collect();
        Ok(Arc::new(Agent {
            store: Arc::new(store),
            snapshot: Arc::new(SharedSnapshot::new(snapshot)),
            doors,
            online: Arc::new(AtomicBool::new(false)),
            sync_status: Arc::new(Mutex::new(sync_status)),
            queue_changed: Arc::new(watch::channel(0).0),
            reachable: Arc::new(watch::channel(0).0),
            budget: Arc::new(Mutex::new(RateBudget::new(
                config.api.requests_per_minute.get() as u32
            ))),
            uplink: Arc::new(UplinkStatus::default()),
            audit_feed: tokio::sync::broadcast::channel(4096).0,
            clock,
            doorflow_auth: Arc::default(),
            clients: Mutex::new(status::HealthInputs::default()),
            door_events: metrics::DoorEventCounts::default(),
            config,
        }))
    }

    /// The status report from live state.
    pub fn status(&self) -> StatusReport {
        let snapshot = self.snapshot.current();
        let counts = snapshot.counts();
        let generation = self.store.snapshot_header().ok().flatten().map(|h| h.generation);
        let now = self.clock.rules_time();
        let auth_refused = self.doorflow_auth.refused();
        let mut report = StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            agent_running: true,
            // Refused credentials are not online, whatever answered last.
            online: self.online.load(Ordering::Relaxed) && auth_refused.is_none(),
            doorflow_auth: DoorflowAuth {
                refresh_token_unsaved: self.doorflow_auth.refresh_token_unsaved(),
                ..DoorflowAuth::new(auth_refused)
            },
            snapshot: SnapshotStatus::new(generation, &counts, snapshot.synced_at()),
            sync: lock(&self.sync_status).clone(),
            queue: self.queue_status(),
            clock: self.clock.status(&crate::clock::Now::read_raw()),
            doors: self
                .config
                .doors
                .iter()
                .zip(&self.doors)
                .map(|(door, state)| {
                    let state = lock(state.as_ref()).clone();
                    DoorStatus {
                        name: door.name.clone(),
                        channel_id: door.channel_id,
                        relay: if state.relay_released {
                            "released"
                        } else {
                            "locked"
                        }
                        .into(),
                        contact: match state.contact_open {
                            None => "none",
                            Some(true) => "open",
                            Some(false) => "closed",
                        }
                        .into(),
                        mode: status::door_mode(&snapshot, door.channel_id, now).into(),
                        reader: state.reader,
                        inputs: if state.inputs_failed {
                            status::INPUTS_FAULT.into()
                        } else {
                            "ok".into()
                        },
                    }
                })
                .collect(),
            store: StoreStatus::of(&self.store),
            degraded: Vec::new(),
        };
        report.degraded = status::degraded_reasons(&report, &lock(&self.clients));
        report
    }

    /// The Prometheus text exposition of live state (`status --prometheus`, `metrics.textfile`).
    pub fn metrics(&self) -> String {
        let report = self.status();
        self.metrics_of(&report)
    }

    fn metrics_of(&self, report: &StatusReport) -> String {
        let mut lanes = metrics::lanes_from_store(&self.store);
        for (figures, lane) in lanes.iter_mut().zip(Lane::ALL) {
            let uplink = self.uplink.lane(lane);
            figures.delivered = uplink.delivered;
            figures.dead_lettered = uplink.dead_lettered;
            figures.retries = uplink.retries;
        }
        metrics::render(&metrics::Figures {
            report,
            lanes,
            door_events: self.door_events.snapshot(),
            http_429: lock(&self.budget).rate_limited_total(),
            store_errors: self.store.health().write_errors,
            now: Timestamp::now(),
        })
    }

    /// Queue depth from the store, uplink state from the running lanes.
    pub fn queue_status(&self) -> QueueStatus {
        let lane = self.uplink.summary();
        match QueueStatus::from_store(&self.store, lane.state.as_str()) {
            Ok(mut queue) => {
                queue.uplink_until = lane.until;
                if lane.last_error.is_some() {
                    queue.last_error = lane.last_error;
                }
                queue
            }
            Err(error) => QueueStatus {
                uplink: format!("unknown ({error})"),
                ..QueueStatus::default()
            },
        }
    }

    /// Wakes the uplink lanes after calls were queued or requeued.
    pub fn kick_queue(&self) {
        self.queue_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// What a sync reads and updates; `stop` ends a sync in progress before its next request.
    pub fn sync_target(&self, stop: CancellationToken) -> sync::SyncTarget {
        sync::SyncTarget {
            store: Arc::clone(&self.store),
            snapshot: Arc::clone(&self.snapshot),
            shifts: self.config.shifts(),
            time_zone: self.config.sync.time_zone.clone(),
            full_interval: jiff::SignedDuration::from_secs(self.config.sync.full_interval_s.get() as i64),
            credentials_interval: jiff::SignedDuration::from_secs(
                self.config.sync.credentials_interval_s.get() as i64,
            ),
            skip_pagination: self.config.sync.skip_pagination,
            requests_per_minute: self.config.api.requests_per_minute.get() as u32,
            retry_base: jiff::SignedDuration::from_millis(self.config.uplink.retry_base_ms.get() as i64),
            retry_cap: jiff::SignedDuration::from_secs(self.config.uplink.retry_cap_s.get() as i64),
            status: Arc::clone(&self.sync_status),
            online: Arc::clone(&self.online),
            reachable: Arc::clone(&self.reachable),
            clock: Arc::clone(&self.clock),
            stop,
        }
    }
}

impl admin::RunningAgent for Agent {
    fn status(&self) -> StatusReport {
        Agent::status(self)
    }

    fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    fn metrics(&self) -> String {
        Agent::metrics(self)
    }

    fn kick_queue(&self) {
        Agent::kick_queue(self)
    }

    fn audit_feed(&self) -> tokio::sync::broadcast::Receiver<AuditEvent> {
        self.audit_feed.subscribe()
    }
}

/// Whether another agent answers on `socket` (it then has the store this config names): a
/// description of it for the start-up's error, or `None`.
fn other_agent_on(socket: &std::path::Path) -> Option<String> {
    admin::call(socket, &admin::Request::Status)
        .ok()
        .map(|_| format!("it answers on the admin socket {}", socket.display()))
}

/// Runs the agent until `shutdown` resolves: door tasks, audit writer, admin socket. On the way
/// out every door is left in its fail state and the store is flushed. A `shutdown` while the
/// start-up still waits for the store (another process has it) ends the wait and returns `Ok`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let stop = CancellationToken::new();
    // On a blocking thread: the wait for the store must not keep this task from seeing a signal.
    let mut starting = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || Agent::start_unless(config, &stop)
    });
    let started = tokio::select! {
        started = &mut starting => started,
        () = &mut shutdown => {
            stop.cancel();
            match starting.await {
                Ok(Err(AgentError::Store(StoreError::Interrupted { path }))) => {
                    tracing::info!(path = %path.display(), "stopped before start-up: the store was never opened");
                    return Ok(());
                }
                // The store came free just then: start and stop as for any other signal.
                started => return serve(started_agent(started)?, std::future::ready(())).await,
            }
        }
    };
    serve(started_agent(started)?, shutdown).await
}

/// The agent the start-up task returned, or why there is none.
fn started_agent(
    joined: Result<Result<Arc<Agent>, AgentError>, tokio::task::JoinError>,
) -> Result<Arc<Agent>, AgentError> {
    joined.map_err(|e| AgentError::Io(std::io::Error::other(format!("start-up task: {e}"))))?
}

/// Runs an already started agent (the demo keeps a handle to watch it) until `shutdown`
/// resolves. Every task is spawned on one tracker and watches one cancellation token. On the way
/// out the door tasks are awaited first (each leaves its relay in its fail state), then the
/// other tasks stop between attempts, never inside a store write; after `STOP_DEADLINE` any
/// task still running is aborted. The store is flushed last.
pub async fn serve(agent: Arc<Agent>, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    // The doors' own thread first: should anything below fail, dropping it ends it.
    let door_thread = DoorThread::start()?;
    let admin = admin::Server::bind(&agent.config.admin.socket).await?;
    let mut aborts = vec![tasks
        .spawn(admin.serve(Arc::clone(&agent), tasks.clone(), stop.clone()))
        .abort_handle()];

    let (audit_tx, mut door_events) = tokio::sync::mpsc::unbounded_channel::<AuditEvent>();
    let (counted_tx, audit_rx) = tokio::sync::mpsc::unbounded_channel();
    // Counts each door event for metrics on its way to the audit writer; ends (and so lets the
    // writer finish) when every door task has dropped its sender.
    let counter = Arc::clone(&agent);
    tasks.spawn(async move {
        while let Some(event) = door_events.recv().await {
            counter.door_events.count(&event);
            if let Err(lost) = counted_tx.send(event) {
                lost.0.log();
            }
        }
    });
    let mut loop_names: Vec<String> = agent
        .config
        .doors
        .iter()
        .map(|d| format!("door {}", d.name))
        .collect();
    loop_names.extend(Lane::ALL.map(|lane| format!("uplink {}", lane.as_str())));
    let (liveness, mut heartbeats) =
        supervisor::Liveness::new(&loop_names, supervisor::WatchdogTiming::from_env());
    let uplink_beats = heartbeats.split_off(agent.config.doors.len());
    let started = start_doors(&agent, &tasks, &stop, audit_tx, heartbeats, &door_thread).await;
    let (door_tasks, osdp) = match started {
        Ok(started) => started,
        Err(error) => {
            // The sockets' servers remove their files as they stop.
            stop.cancel();
            tasks.close();
            let _ = tokio::task::spawn_blocking(move || door_thread.stop()).await;
            tasks.wait().await;
            return Err(error);
        }
    };
    aborts.push(
        tasks
            .spawn(supervisor::run_watchdog(liveness, stop.clone()))
            .abort_handle(),
    );
    // Watches the wall clock for steps and for loss of synchronisation (journal, `status`).
    let clock_watch = crate::clock::watch(Arc::clone(&agent.clock));
    let stopping = stop.clone();
    aborts.push(
        tasks
            .spawn(async move { stopping.run_until_cancelled(clock_watch).await })
            .abort_handle(),
    );
    let doorflow = doorflow_client(&agent);
    if let Some(client) = doorflow.clone() {
        let sync = sync::run_loop(
            agent.sync_target(stop.clone()),
            client,
            agent.config.sync.interval_s.secs(),
        );
        aborts.push(tasks.spawn(sync).abort_handle());
    }
    for drain in uplink_lanes(&agent, doorflow, uplink_beats) {
        aborts.push(tasks.spawn(drain.run(stop.clone())).abort_handle());
    }
    // Ends when every door task has dropped its sender, after writing what is left.
    let audit_writer = tasks.spawn(audit_writer::run_writer(
        Arc::clone(&agent.store),
        agent.config.uplink.clone(),
        audit_rx,
        Arc::clone(&agent.queue_changed),
        agent.audit_feed.clone(),
        stop.clone(),
    ));

    let snapshot = agent.snapshot.current();
    let counts = snapshot.counts();
    tracing::info!(
        people = counts.people,
        credentials = counts.credentials,
        synced_at = snapshot
            .synced_at()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into()),
        doors = agent.config.doors.len(),
        index_bytes = snapshot.index_bytes(),
        "ready: snapshot loaded, swipes are decided locally"
    );
    supervisor::notify_ready(&status::status_line(&agent.status(), Timestamp::now()));
    aborts.push(
        tasks
            .spawn(report_health(Arc::clone(&agent), stop.clone()))
            .abort_handle(),
    );
    if let Some(path) = agent.config.metrics.textfile.clone() {
        aborts.push(
            tasks
                .spawn(write_metrics(Arc::clone(&agent), path, stop.clone()))
                .abort_handle(),
        );
    }

    shutdown.await;
    tracing::info!("shutting down");
    supervisor::notify_stopping();
    stop.cancel();
    tasks.close();
    // Relays first: each door task writes its fail state as its last act.
    for door in door_tasks {
        let _ = door.await;
    }
    // After the doors: their last decisions may still have feedback to play.
    let _ = tokio::task::spawn_blocking(move || osdp.stop()).await;
    // The doors' own thread, and what is left on it (the mock's simulated readers).
    let _ = tokio::task::spawn_blocking(move || door_thread.stop()).await;
    let _ = audit_writer.await;
    if tokio::time::timeout(STOP_DEADLINE, tasks.wait()).await.is_err() {
        tracing::error!(
            deadline_s = STOP_DEADLINE.as_secs(),
            "tasks still running at the stop deadline; aborting them"
        );
        for task in &aborts {
            task.abort();
        }
        tasks.wait().await;
    }
    // Nothing is lost when the last checkpoint fails (a full disk): queue commits are already
    // durable, and the snapshot's write-ahead log is replayed when the store next opens.
    match agent.store.flush() {
        Ok(()) => tracing::info!("store flushed; stopped"),
        Err(error) => tracing::warn!(
            %error,
            "stopped; the snapshot's write-ahead log could not be copied back ({error}) and is replayed at the next start"
        ),
    }
    Ok(())
}

/// How often the unit's status line and the degraded state are refreshed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps systemd's status line (`systemctl status`) true: refreshed after each sync and every
/// change of people, credentials, sync age, queue depth or degraded reasons. A change of the
/// degraded reasons is also written to the journal, with the reasons in the message text.
async fn report_health(agent: Arc<Agent>, stop: CancellationToken) {
    let mut last_line = String::new();
    let mut last_reasons: Vec<String> = Vec::new();
    loop {
        let source = Arc::clone(&agent);
        // Reading queue heads is a store read: off the async workers.
        let Ok(report) = tokio::task::spawn_blocking(move || source.status()).await else {
            return;
        };
        if report.degraded != last_reasons {
            if report.degraded.is_empty() {
                tracing::info!(
                    "no longer degraded: {}",
                    status::status_line(&report, Timestamp::now())
                );
            } else {
                tracing::warn!(reasons = ?report.degraded, "degraded: {}", report.degraded.join("; "));
            }
            last_reasons = report.degraded.clone();
        }
        let line = status::status_line(&report, Timestamp::now());
        if line != last_line {
            supervisor::notify_status(&line);
            last_line = line;
        }
        if stop
            .run_until_cancelled(tokio::time::sleep(HEALTH_INTERVAL))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Rewrites the metrics text file every `metrics.interval_s` until `stop`, then once more with
/// `doorflow_agent_running 0`. A write that fails is reported once, until one succeeds again.
async fn write_metrics(agent: Arc<Agent>, path: std::path::PathBuf, stop: CancellationToken) {
    let interval = agent.config.metrics.interval_s.secs();
    let mut failing = false;
    loop {
        let stopping = stop.is_cancelled();
        let (source, target) = (Arc::clone(&agent), path.clone());
        let written = tokio::task::spawn_blocking(move || {
            let mut report = source.status();
            report.agent_running = !stopping;
            metrics::write_textfile(&target, &source.metrics_of(&report))
        })
        .await;
        match written {
            Ok(Ok(())) if failing => {
                failing = false;
                tracing::info!(path = %path.display(), "metrics file written again");
            }
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::warn!(path = %path.display(), %error, "cannot write the metrics file ({error}); is its directory writable by the agent (ReadWritePaths=)?");
            }
            _ => {}
        }
        if stopping {
            return;
        }
        // Cancelled: one more pass writes the final figures.
        let _ = stop.run_until_cancelled(tokio::time::sleep(interval)).await;
    }
}

/// Why a client could not be set up, naming the config key when a secret is at fault.
fn client_problem(agent: &Agent, keys: &[&str], error: &(dyn std::error::Error + 'static)) -> String {
    crate::preflight::secrets(&agent.config)
        .into_iter()
        .find(|f| f.severity == crate::preflight::Severity::Error && keys.contains(&f.key.as_str()))
        .map(|f| format!("{}: {}", f.key, f.message))
        .unwrap_or_else(|| chain(error))
}

/// The one DoorFlow client (shared by sync and the admit lane, so a rotated refresh token is
/// used by both), unless it cannot be set up (a missing secret file, no CA trust store): then
/// the agent runs offline on its stored snapshot, degraded, and says why.
fn doorflow_client(agent: &Arc<Agent>) -> Option<Arc<Client>> {
    match Client::new(&agent.config.api, Arc::clone(&agent.budget)) {
        Ok(client) => Some(Arc::new(
            client
                .with_clock(Arc::clone(&agent.clock))
                .with_auth_health(Arc::clone(&agent.doorflow_auth))
                .with_online(Arc::clone(&agent.online)),
        )),
        Err(error) => {
            let keys = [
                "api.auth.api_key",
                "api.auth.client_secret",
                "api.auth.refresh_token_file",
            ];
            let why = client_problem(agent, &keys, &error);
            tracing::error!(error = %why, "DoorFlow client not available ({why}); running offline on the stored snapshot");
            lock(&agent.clients).doorflow_unavailable = Some(why);
            None
        }
    }
}

/// The event sink client: the DoorFlow budget when the sink is on DoorFlow's server (one
/// limit), its own budget otherwise.
fn sink_client(agent: &Arc<Agent>) -> Option<Arc<Client>> {
    let uplink = &agent.config.uplink;
    let url = uplink.events_url.as_ref()?;
    let api = &agent.config.api;
    let same_server = url.origin() == api.base_url.origin();
    let budget = if same_server {
        Arc::clone(&agent.budget)
    } else {
        Arc::new(Mutex::new(RateBudget::new(api.requests_per_minute.get() as u32)))
    };
    match Client::event_sink(api, url, uplink.events_token.as_ref(), budget) {
        Ok(client) => Some(Arc::new(client)),
        Err(error) => {
            let why = client_problem(agent, &["uplink.events_token"], &error);
            tracing::error!(error = %why, "event sink client not available ({why}); events stay queued");
            lock(&agent.clients).sink_unavailable = Some(why);
            None
        }
    }
}

/// One drain per outbox lane, ready to run.
fn uplink_lanes(
    agent: &Arc<Agent>,
    doorflow: Option<Arc<Client>>,
    heartbeats: Vec<supervisor::Heartbeat>,
) -> Vec<LaneDrain> {
    let clients = [doorflow, sink_client(agent)];
    Lane::ALL
        .into_iter()
        .zip(clients)
        .zip(heartbeats)
        .map(|((lane, client), heartbeat)| LaneDrain {
            lane,
            store: Arc::clone(&agent.store),
            client,
            policy: RetryPolicy::from_config(&agent.config.uplink),
            status: Arc::clone(&agent.uplink),
            wakeups: Wakeups {
                queued: agent.queue_changed.subscribe(),
                reachable: agent.reachable.subscribe(),
            },
            heartbeat,
            online: Arc::clone(&agent.online),
            clock: Arc::clone(&agent.clock),
        })
        .collect()
}

/// Opens every door's GPIO lines (failing start-up with a clear message if a chip or line is
/// unavailable), starts the OSDP buses, and spawns each door's task on the doors' own thread;
/// with the mock backend, its control socket too (on the shared workers).
async fn start_doors(
    agent: &Arc<Agent>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    audit: tokio::sync::mpsc::UnboundedSender<AuditEvent>,
    heartbeats: Vec<supervisor::Heartbeat>,
    door_thread: &DoorThread,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, osdp::OsdpReaders), AgentError> {
    let config = &agent.config;
    let backend = hw::Backend::open(config, tasks);
    // Bound first (a bad path fails start-up before anything runs), served once every door is
    // open, so no request finds a door that is not there yet.
    let mock_control = match &backend {
        hw::Backend::Mock(mock) => {
            let socket = hw::mock::bind_control_socket(&config.gpio.mock_socket).await?;
            Some((Arc::clone(mock), socket))
        }
        hw::Backend::Chardev => None,
    };
    let mut osdp = osdp::start(config, &agent.doors)?;
    let mut doors = Vec::new();
    for ((index, door), heartbeat) in config.doors.iter().enumerate().zip(heartbeats) {
        // Entered so that a backend's per-door tasks (the mock's simulated reader) run there too.
        let opened = {
            let _doors = door_thread.handle().enter();
            backend.open_door(config, index)
        };
        let hardware = match opened {
            Ok(hardware) => hardware,
            Err(error) => {
                osdp.stop();
                return Err(error.into());
            }
        };
        let mut task = DoorTask::new(
            config,
            index,
            hardware,
            Arc::clone(&agent.snapshot),
            Arc::clone(&agent.doors[index]),
            audit.clone(),
        )
        .with_heartbeat(heartbeat)
        .with_clock(Arc::clone(&agent.clock));
        if let Some(link) = osdp.take_link(index) {
            task = task.with_reader(link);
        }
        tracing::info!(door = %door.name, channel_id = door.channel_id, card_value = ?door.card_value, "door ready");
        doors.push(tasks.spawn_on(task.run(stop.clone()), door_thread.handle()));
    }
    if let Some((mock, listener)) = mock_control {
        tasks.spawn(mock.serve(listener, tasks.clone(), stop.clone()));
        tracing::info!(socket = %config.gpio.mock_socket.display(), "mock GPIO backend; control socket ready");
    }
    Ok((doors, osdp))
}
