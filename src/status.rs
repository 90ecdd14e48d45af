//! The `status` report: one JSON object (DESIGN.md's contract) built either from a running
//! agent's memory (served over the admin socket) or, when the agent is stopped, from the store.

use crate::config::Config;
use crate::door::DoorMode;
use crate::snapshot::{Snapshot, SnapshotCounts, SnapshotParts};
use crate::store::{Lane, SnapshotHeader, Store, StoreError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    /// Whether this report came from a running agent (through its admin socket).
    pub agent_running: bool,
    /// Whether the last call to DoorFlow succeeded.
    pub online: bool,
    pub snapshot: SnapshotStatus,
    pub sync: SyncStatus,
    pub queue: QueueStatus,
    pub doors: Vec<DoorStatus>,
    /// Why the agent is not fully working, one sentence each (see `degraded_reasons`); empty
    /// when it is.
    #[serde(default)]
    pub degraded: Vec<String>,
    #[serde(default)]
    pub clock: ClockStatus,
}

/// The wall clock as the agent sees it: shifts and validity windows are judged by it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// Whether the system clock is synchronised (NTP, from the kernel or systemd-timesyncd);
    /// null when that cannot be told (e.g. inside the hardened unit without timesyncd).
    pub synchronized: Option<bool>,
    /// The clock reads earlier than the last successful sync: it went back (an RTC-less board
    /// after a power cut), and time rules may be judged wrongly.
    pub behind_last_sync: bool,
}

impl ClockStatus {
    /// Probes the system clock; `last_known` is the latest time the agent knew to be right.
    pub fn probe(now: Timestamp, last_known: Option<Timestamp>) -> ClockStatus {
        ClockStatus {
            synchronized: clock_synchronized(),
            behind_last_sync: last_known.is_some_and(|known| now < known),
        }
    }
}

/// The kernel's NTP state (`adjtimex` read-only), else systemd-timesyncd's flag file; `None`
/// when neither can say (the unit's system call filter refuses `adjtimex`).
fn clock_synchronized() -> Option<bool> {
    // SAFETY: adjtimex with `modes = 0` only reads the kernel's clock state into `timex`.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state >= 0 {
        return Some(state != libc::TIME_ERROR && timex.status & libc::STA_UNSYNC == 0);
    }
    std::path::Path::new("/run/systemd/timesync/synchronized")
        .exists()
        .then_some(true)
}

/// What `degraded_reasons` looks at besides the report.
#[derive(Debug, Clone, Default)]
pub struct HealthInputs {
    /// Why the agent has no DoorFlow client (a secret it cannot read), if so.
    pub doorflow_unavailable: Option<String>,
    /// Why the event sink has no client, if so.
    pub sink_unavailable: Option<String>,
}

/// Why the agent is degraded: it cannot talk to DoorFlow, its sync fails, it has no snapshot
/// (every card is denied), its uplink is refused or its store fails, its clock went back. Each
/// reason is a stable sentence (no ages or counts), so a change of the list is a change of
/// state worth a journal line.
pub fn degraded_reasons(report: &StatusReport, inputs: &HealthInputs) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(why) = &inputs.doorflow_unavailable {
        reasons.push(format!(
            "cannot talk to DoorFlow ({why}); deciding from the stored snapshot. Fix it and restart the agent"
        ));
    }
    if let Some(why) = &inputs.sink_unavailable {
        reasons.push(format!("no event sink client ({why}); events stay queued"));
    }
    if report.snapshot.synced_at.is_none() && report.snapshot.people == 0 {
        reasons.push("no snapshot yet: every card is denied until a sync succeeds".into());
    }
    if let Some(error) = &report.sync.last_error {
        reasons.push(format!("sync failing: {error}"));
    }
    match report.queue.uplink.as_str() {
        "auth_refused" | "store_error" => reasons.push(format!(
            "uplink {}: {}",
            report.queue.uplink,
            report.queue.last_error.as_deref().unwrap_or("no detail")
        )),
        _ => {}
    }
    if report.clock.behind_last_sync {
        reasons.push("the clock is behind the last successful sync: time rules may be judged wrongly".into());
    }
    reasons
}

/// "3 min ago"-style age for status lines: coarse, so the line changes only when it matters.
pub fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => "<1 min ago".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// The one-line summary systemd shows as the unit's status (`systemctl status`):
/// `200 people, 260 credentials; synced 2 min ago; online; queue 0, 0 dead`, prefixed with
/// `DEGRADED (reasons):` when there are reasons.
pub fn status_line(report: &StatusReport, now: Timestamp) -> String {
    let s = &report.snapshot;
    let synced = report
        .sync
        .last_success
        .or(s.synced_at)
        .map(|t| format!("synced {}", age(now.duration_since(t).as_secs())))
        .unwrap_or_else(|| "never synced".into());
    let online = if report.online { "online" } else { "offline" };
    let q = &report.queue;
    let line = format!(
        "{} people, {} credentials; {synced}; {online}; queue {}, {} dead",
        s.people, s.credentials, q.pending, q.dead
    );
    if report.degraded.is_empty() {
        line
    } else {
        format!("DEGRADED ({}): {line}", report.degraded.join("; "))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub generation: Option<u64>,
    pub people: u64,
    pub credentials: u64,
    pub roles: u64,
    pub groups: u64,
    pub group_reservations: u64,
    pub reservations: u64,
    pub channels: u64,
    /// RFC 3339, or null before the first successful sync.
    pub synced_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    /// `full` or `incremental`: what the last successful sync was.
    #[serde(default)]
    pub last_kind: Option<String>,
    /// When the last full reconcile succeeded.
    #[serde(default)]
    pub last_full: Option<Timestamp>,
    /// How long the last sync attempt took (successful or not), ms.
    #[serde(default)]
    pub last_duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub pending: u64,
    pub pending_admits: u64,
    pub pending_events: u64,
    pub dead: u64,
    /// Events dropped because the queue was full (since the store was created).
    pub dropped_events: u64,
    pub oldest_age_s: Option<u64>,
    /// `online`, `paused` (rate limit), `backing_off`, `auth_refused`, `idle`, `disabled`,
    /// `store_error`, or `stopped` (agent not running): the lane most in need of attention.
    pub uplink: String,
    /// When that lane tries again (paused or backing off).
    pub uplink_until: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoorStatus {
    pub name: String,
    pub channel_id: Option<u64>,
    /// `locked`, `released` or `unknown` (agent stopped).
    pub relay: String,
    /// `closed`, `open`, `none` (no contact wired) or `unknown`.
    pub contact: String,
    /// `normal`, `unlock` or `lockdown`, from the channel in the snapshot.
    pub mode: String,
}

impl QueueStatus {
    /// Queue depth from the store, with the uplink state supplied by the caller.
    pub fn from_store(store: &Store, uplink: &str) -> Result<QueueStatus, StoreError> {
        let stats = store.outbox_stats()?;
        let mut oldest = None;
        let mut last_error = None;
        for lane in Lane::ALL {
            if let Some(head) = store.outbox_head(lane)? {
                oldest =
                    Some(oldest.map_or(head.value.created_at, |o: Timestamp| o.min(head.value.created_at)));
                last_error = last_error.or(head.value.last_error);
            }
        }
        Ok(QueueStatus {
            pending: stats.pending,
            pending_admits: stats.pending_admits,
            pending_events: stats.pending_events,
            dead: stats.dead,
            dropped_events: stats.dropped_events,
            oldest_age_s: oldest.map(|o| Timestamp::now().duration_since(o).as_secs().max(0) as u64),
            uplink: uplink.to_string(),
            uplink_until: None,
            last_error,
        })
    }
}

impl SnapshotStatus {
    pub fn new(generation: Option<u64>, c: &SnapshotCounts, synced_at: Option<Timestamp>) -> SnapshotStatus {
        SnapshotStatus {
            generation,
            people: c.people,
            credentials: c.credentials,
            roles: c.roles,
            groups: c.groups,
            group_reservations: c.group_reservations,
            reservations: c.reservations,
            channels: c.channels,
            synced_at,
        }
    }

    pub fn from_header(header: Option<&SnapshotHeader>) -> SnapshotStatus {
        header.map_or_else(SnapshotStatus::default, |h| {
            SnapshotStatus::new(Some(h.generation), &h.counts, h.synced_at)
        })
    }
}

/// The mode a door's channel is in, as `status` shows it (the same rule the door task drives
/// the relay by).
pub fn door_mode(snapshot: &Snapshot, channel_id: Option<u64>, now: Timestamp) -> &'static str {
    match DoorMode::from(snapshot.channel_state(channel_id, now)) {
        DoorMode::Normal => "normal",
        DoorMode::Unlock => "unlock",
        DoorMode::Lockdown { .. } => "lockdown",
    }
}

/// The report for a stopped agent, read straight from the store.
pub fn from_store(config: &Config, store: &Store) -> Result<StatusReport, StoreError> {
    let header = store.snapshot_header()?;
    let channels = SnapshotParts {
        channels: store.load_channels()?,
        ..SnapshotParts::default()
    };
    let snapshot = Snapshot::new(channels, &config.sync.time_zone);
    let sync: SyncStatus = store.meta_get(SYNC_STATUS_KEY)?.unwrap_or_default();
    let now = Timestamp::now();
    let clock = ClockStatus::probe(now, sync.last_success);
    let mut report = StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        agent_running: false,
        online: false,
        snapshot: SnapshotStatus::from_header(header.as_ref()),
        sync,
        queue: QueueStatus::from_store(store, "stopped")?,
        doors: config
            .doors
            .iter()
            .map(|door| DoorStatus {
                name: door.name.clone(),
                channel_id: door.channel_id,
                relay: "unknown".into(),
                contact: "unknown".into(),
                mode: door_mode(&snapshot, door.channel_id, now).into(),
            })
            .collect(),
        degraded: Vec::new(),
        clock,
    };
    report.degraded = degraded_reasons(&report, &HealthInputs::default());
    Ok(report)
}

/// Meta key under which the last sync outcome is kept, so a stopped agent can report it.
pub const SYNC_STATUS_KEY: &str = "sync.status";

/// Human-readable rendering for `status` without `--json`.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let running = if report.agent_running {
        "running"
    } else {
        "stopped"
    };
    let online = if report.online { "online" } else { "offline" };
    out.push_str(&format!(
        "doorflow-agent {} — {running}, {online}\n",
        report.version
    ));
    for reason in &report.degraded {
        out.push_str(&format!("DEGRADED: {reason}\n"));
    }
    let s = &report.snapshot;
    let synced = s
        .synced_at
        .map(|t| t.to_string())
        .unwrap_or_else(|| "never".to_string());
    out.push_str(&format!(
        "snapshot: {} people, {} credentials, {} roles, {} groups, {} channels; synced {synced}\n",
        s.people, s.credentials, s.roles, s.groups, s.channels
    ));
    if let Some(error) = &report.sync.last_error {
        out.push_str(&format!("last sync error: {error}\n"));
    }
    let q = &report.queue;
    let oldest = q
        .oldest_age_s
        .map(|a| format!(", oldest {a}s"))
        .unwrap_or_default();
    let until = q.uplink_until.map(|t| format!(" until {t}")).unwrap_or_default();
    out.push_str(&format!(
        "queue: {} pending ({} admits, {} events), {} dead, {} dropped{oldest}; uplink {}{until}\n",
        q.pending, q.pending_admits, q.pending_events, q.dead, q.dropped_events, q.uplink
    ));
    if let Some(error) = &q.last_error {
        out.push_str(&format!("last uplink error: {error}\n"));
    }
    for door in &report.doors {
        let channel = door
            .channel_id
            .map(|c| format!(" (channel {c})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "door {}{channel}: relay {}, contact {}, mode {}\n",
            door.name, door.relay, door.contact, door.mode
        ));
    }
    out
}
