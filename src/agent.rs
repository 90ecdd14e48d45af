//! Wiring of the running agent: store, in-memory snapshot, admin socket, shutdown.

use crate::admin;
use crate::config::Config;
use crate::snapshot::{SharedSnapshot, Shift, Snapshot};
use crate::status::{self, DoorStatus, QueueStatus, SnapshotStatus, StatusReport, SyncStatus};
use crate::store::{Store, StoreError};
use jiff::Timestamp;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("admin socket {path}: {reason}")]
    AdminSocket { path: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Live state of one door, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorState {
    pub relay_released: bool,
    /// `None` when no door contact is wired.
    pub contact_open: Option<bool>,
}

/// Everything the agent's tasks share.
#[derive(Debug)]
pub struct Agent {
    pub config: Config,
    pub store: Arc<Store>,
    pub snapshot: SharedSnapshot,
    pub doors: Vec<Mutex<DoorState>>,
    pub online: AtomicBool,
    pub sync_status: Mutex<SyncStatus>,
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
        let sync_status = store.meta_get(status::SYNC_STATUS_KEY)?.unwrap_or_default();
        let doors = config
            .doors
            .iter()
            .map(|door| {
                Mutex::new(DoorState {
                    relay_released: false,
                    contact_open: door.contact.as_ref().map(|_| false),
                })
            })
            .collect();
        Ok(Arc::new(Agent {
            store: Arc::new(store),
            snapshot: SharedSnapshot::new(snapshot),
            doors,
            online: AtomicBool::new(false),
            sync_status: Mutex::new(sync_status),
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
            snapshot: SnapshotStatus {
                generation,
                people: counts.people,
                credentials: counts.credentials,
                roles: counts.roles,
                groups: counts.groups,
                group_reservations: counts.group_reservations,
                reservations: counts.reservations,
                channels: counts.channels,
                synced_at: snapshot.synced_at(),
            },
            sync: lock(&self.sync_status).clone(),
            queue: QueueStatus {
                uplink: "idle".into(),
                ..QueueStatus::default()
            },
            doors: self
                .config
                .doors
                .iter()
                .zip(&self.doors)
                .map(|(door, state)| {
                    let state = lock(state).clone();
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
                    }
                })
                .collect(),
        }
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

/// Runs the agent until `shutdown` resolves, then flushes the store.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let agent = Agent::start(config)?;
    let admin = admin::Server::bind(&agent.config.admin.socket).await?;
    let admin_task = tokio::spawn(admin.serve(Arc::clone(&agent)));

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
    for door in &agent.config.doors {
        tracing::info!(door = %door.name, channel_id = ?door.channel_id, card_value = ?door.card_value, "door configured");
    }

    shutdown.await;
    tracing::info!("shutting down");
    admin_task.abort();
    let _ = std::fs::remove_file(&agent.config.admin.socket);
    agent.store.flush()?;
    tracing::info!("store flushed; stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
