//! Wiring of the running agent: store, in-memory snapshot, admin socket, shutdown.

use crate::admin;
use crate::audit::AuditEvent;
use crate::config::Config;
use crate::door_task::DoorTask;
use crate::doorflow::client::{self, Client};
use crate::doorflow::ratelimit::RateBudget;
use crate::hw;
use crate::outbox;
use crate::snapshot::{SharedSnapshot, Shift, Snapshot};
use crate::status::{self, DoorStatus, QueueStatus, SnapshotStatus, StatusReport, SyncStatus};
use crate::store::{Lane, Store, StoreError};
use crate::supervisor;
use crate::sync;
use crate::uplink::policy::RetryPolicy;
use crate::uplink::{LaneDrain, UplinkStatus, Wakeups};
use jiff::Timestamp;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("admin socket {path}: {reason}")]
    AdminSocket { path: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Gpio(#[from] hw::GpioError),
}

/// Live state of one door, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorState {
    pub relay_released: bool,
    /// `None` when no door contact is wired.
    pub contact_open: Option<bool>,
    /// The door's input lines failed and are being requested again.
    pub inputs_failed: bool,
}

/// Everything the agent's tasks share.
#[derive(Debug)]
pub struct Agent {
    pub config: Config,
    pub store: Arc<Store>,
    pub snapshot: Arc<SharedSnapshot>,
    pub doors: Vec<Arc<Mutex<DoorState>>>,
    /// Whether DoorFlow answered the last call (sync or uplink).
    pub online: Arc<AtomicBool>,
    pub sync_status: Mutex<SyncStatus>,
    /// Bumped whenever calls are queued, so the uplink drains without polling.
    pub queue_changed: Arc<watch::Sender<u64>>,
    /// Bumped when a sync succeeds: DoorFlow answers, so a backing-off uplink retries now.
    pub reachable: Arc<watch::Sender<u64>>,
    /// The one request budget for DoorFlow, shared by sync and uplink.
    pub budget: Arc<Mutex<RateBudget>>,
    pub uplink: Arc<UplinkStatus>,
    /// Every audit event once it is durable (for the demo and live views).
    pub audit_feed: tokio::sync::broadcast::Sender<AuditEvent>,
}

impl Agent {
    /// Opens the store and loads the last good snapshot, so swipes are decided offline from the
    /// first moment. A snapshot that fails its checks is not used: the doors start empty (every
    /// card denied) until the next sync, which is the fail-secure choice.
    pub fn start(config: Config) -> Result<Arc<Agent>, AgentError> {
        let store = Store::open(&config.store.path, config.store.cache_capacity_mb * 1024 * 1024)?;
        let parts = match store.load_snapshot() {
            Ok(parts) => parts.unwrap_or_default(),
            Err(error @ StoreError::Corrupt { .. }) => {
                tracing::error!(%error, "stored snapshot is unusable; denying every card until the next sync");
                Default::default()
            }
            Err(error) => return Err(error.into()),
        };
        let snapshot = Snapshot::with_shifts(parts, config_shifts(&config), &config.sync.time_zone);
        release_freed_memory();
        let sync_status = store.meta_get(status::SYNC_STATUS_KEY)?.unwrap_or_default();
        let doors = config
            .doors
            .iter()
            .map(|door| {
                Arc::new(Mutex::new(DoorState {
                    relay_released: hw::RELAY_REQUEST_RELEASED,
                    contact_open: door.contact.as_ref().map(|_| false),
                    inputs_failed: false,
                }))
            })
            .collect();
        Ok(Arc::new(Agent {
            store: Arc::new(store),
            snapshot: Arc::new(SharedSnapshot::new(snapshot)),
            doors,
            online: Arc::new(AtomicBool::new(false)),
            sync_status: Mutex::new(sync_status),
            queue_changed: Arc::new(watch::channel(0).0),
            reachable: Arc::new(watch::channel(0).0),
            budget: Arc::new(Mutex::new(RateBudget::new(config.api.requests_per_minute))),
            uplink: Arc::new(UplinkStatus::default()),
            audit_feed: tokio::sync::broadcast::channel(4096).0,
            config,
        }))
    }

    /// The status report from live state.
    pub fn status(&self) -> StatusReport {
        let snapshot = self.snapshot.current();
        let counts = snapshot.counts();
        let generation = self.store.snapshot_header().ok().flatten().map(|h| h.generation);
        let now = Timestamp::now();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            agent_running: true,
            online: self.online.load(Ordering::Relaxed),
            snapshot: SnapshotStatus::new(generation, &counts, snapshot.synced_at()),
            sync: lock(&self.sync_status).clone(),
            queue: self.queue_status(),
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
                        reader: if state.inputs_failed {
                            status::READER_FAULT.into()
                        } else {
                            "ok".into()
                        },
                    }
                })
                .collect(),
        }
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
}

/// Returns memory freed after a large load (JSON temporaries) to the OS, so the resident size
/// reflects what the agent keeps rather than the peak of loading.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the state is plain
/// data and the doors must keep working.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shifts as configured (validated by `Config::parse`, so conversion cannot fail here).
pub fn config_shifts(config: &Config) -> Vec<Shift> {
    config
        .shifts
        .iter()
        .filter_map(|s| Shift::from_config(s).ok())
        .collect()
}

/// Runs the agent until `shutdown` resolves: door tasks, audit writer, admin socket. On the way
/// out every door is left in its fail state and the store is flushed.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    serve(Agent::start(config)?, shutdown).await
}

/// Runs an already started agent (the demo keeps a handle to watch it).
pub async fn serve(agent: Arc<Agent>, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let admin = admin::Server::bind(&agent.config.admin.socket).await?;
    let admin_task = tokio::spawn(admin.serve(Arc::clone(&agent)));

    let (stop_doors, doors_stopping) = tokio::sync::watch::channel(false);
    let (audit_tx, audit_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut loop_names: Vec<String> = agent
        .config
        .doors
        .iter()
        .map(|d| format!("door {}", d.name))
        .collect();
    loop_names.extend(Lane::ALL.map(|lane| format!("uplink {}", lane.as_str())));
    let (liveness, mut heartbeats) = supervisor::Liveness::new(&loop_names);
    let uplink_beats = heartbeats.split_off(agent.config.doors.len());
    let door_tasks = match start_doors(&agent, audit_tx, doors_stopping, heartbeats) {
        Ok(tasks) => tasks,
        Err(error) => {
            admin_task.abort();
            let _ = std::fs::remove_file(&agent.config.admin.socket);
            return Err(error);
        }
    };
    let watchdog = tokio::spawn(supervisor::run_watchdog(liveness));
    let doorflow = doorflow_client(&agent);
    let sync_task = doorflow
        .clone()
        .map(|client| tokio::spawn(sync::run_loop(Arc::clone(&agent), client)));
    let uplink_tasks = start_uplink(&agent, doorflow, uplink_beats);
    let audit_task = tokio::spawn(outbox::run_writer(
        Arc::clone(&agent.store),
        agent.config.uplink.clone(),
        audit_rx,
        Arc::clone(&agent.queue_changed),
        agent.audit_feed.clone(),
        stop_doors.subscribe(),
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
        "ready: snapshot loaded, swipes are decided locally"
    );
    supervisor::notify_ready(&format!(
        "{} people, {} credentials",
        counts.people, counts.credentials
    ));

    shutdown.await;
    tracing::info!("shutting down");
    supervisor::notify_stopping();
    // An uplink request cut off here is sent again after the restart (at-least-once). Each
    // task is awaited after its abort, so none holds the store when this returns.
    let background = [watchdog].into_iter().chain(sync_task).chain(uplink_tasks);
    for task in background {
        task.abort();
        let _ = task.await;
    }
    let _ = stop_doors.send(true);
    for task in door_tasks {
        let _ = task.await;
    }
    // The door tasks held the only senders: the writer drains what is left and ends.
    let _ = audit_task.await;
    admin_task.abort();
    let _ = admin_task.await;
    let _ = std::fs::remove_file(&agent.config.admin.socket);
    agent.store.flush()?;
    tracing::info!("store flushed; stopped");
    Ok(())
}

/// The one DoorFlow client (shared by sync and the admit lane, so a rotated refresh token is
/// used by both), unless it cannot be set up (a missing secret file): then the agent runs
/// offline on its stored snapshot and says why.
fn doorflow_client(agent: &Arc<Agent>) -> Option<Arc<Client>> {
    match Client::new(&agent.config.api, Arc::clone(&agent.budget)) {
        Ok(client) => Some(Arc::new(client)),
        Err(error) => {
            tracing::error!(%error, "DoorFlow client not available; running offline on the stored snapshot");
            None
        }
    }
}

/// The event sink client: the DoorFlow budget when the sink is on DoorFlow's server (one
/// limit), its own budget otherwise.
fn sink_client(agent: &Arc<Agent>) -> Option<Arc<Client>> {
    let uplink = &agent.config.uplink;
    let url = uplink.events_url.as_deref()?;
    let api = &agent.config.api;
    let same_server = client::origin(url) == client::origin(&api.base_url);
    let budget = if same_server {
        Arc::clone(&agent.budget)
    } else {
        Arc::new(Mutex::new(RateBudget::new(api.requests_per_minute)))
    };
    match Client::event_sink(api, url, uplink.events_token.as_ref(), budget) {
        Ok(client) => Some(Arc::new(client)),
        Err(error) => {
            tracing::error!(%error, "event sink client not available; events stay queued");
            None
        }
    }
}

/// Starts one drain task per outbox lane.
fn start_uplink(
    agent: &Arc<Agent>,
    doorflow: Option<Arc<Client>>,
    heartbeats: Vec<supervisor::Heartbeat>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let clients = [doorflow, sink_client(agent)];
    Lane::ALL
        .into_iter()
        .zip(clients)
        .zip(heartbeats)
        .map(|((lane, client), heartbeat)| {
            let drain = LaneDrain {
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
            };
            tokio::spawn(drain.run())
        })
        .collect()
}

/// Opens every door's GPIO lines (failing start-up with a clear message if a chip or line is
/// unavailable) and spawns its task.
fn start_doors(
    agent: &Arc<Agent>,
    audit: tokio::sync::mpsc::UnboundedSender<AuditEvent>,
    stopping: tokio::sync::watch::Receiver<bool>,
    heartbeats: Vec<supervisor::Heartbeat>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, AgentError> {
    let config = &agent.config;
    let backend = hw::Backend::open(config);
    if let hw::Backend::Mock(mock) = &backend {
        let listener = hw::mock::bind_control_socket(&config.gpio.mock_socket).map_err(|e| {
            AgentError::Gpio(hw::GpioError::Chip {
                chip: config.gpio.mock_socket.display().to_string(),
                reason: format!("mock control socket: {e}"),
            })
        })?;
        tokio::spawn(Arc::clone(mock).serve(listener));
        tracing::info!(socket = %config.gpio.mock_socket.display(), "mock GPIO backend; control socket ready");
    }
    let mut tasks = Vec::new();
    for ((index, door), heartbeat) in config.doors.iter().enumerate().zip(heartbeats) {
        let hardware = backend.open_door(config, index)?;
        let task = DoorTask::new(
            door,
            hardware,
            Arc::clone(&agent.snapshot),
            Arc::clone(&agent.doors[index]),
            audit.clone(),
        )
        .with_heartbeat(heartbeat);
        tracing::info!(door = %door.name, channel_id = door.channel_id, card_value = ?door.card_value, "door ready");
        tasks.push(tokio::spawn(task.run(stopping.clone())));
    }
    Ok(tasks)
}

/// Installs the SIGTERM/SIGINT handlers now (so a signal during start-up is not fatal) and
/// returns a future that resolves on either. Call inside the runtime, before starting.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "cannot listen for signals; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
