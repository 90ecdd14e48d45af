//! The `status` report: one JSON object (the README's "status contract") built either from a
//! running agent's memory (served over the admin socket) or, when the agent is stopped, from the
//! store.

mod progress;

pub use progress::SyncProgress;

use crate::clock::trusted::{ClockStatus, TimeKeeper, ANCHOR_KEY};
use crate::clock::Now;
use crate::config::Config;
use crate::door::DoorMode;
use crate::reader::ReaderStatus;
use crate::snapshot::{Snapshot, SnapshotCounts, SnapshotParts};
use crate::store::{DropNote, Lane, LossNote, OpenReport, SnapshotHeader, Store, StoreError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    /// Whether this report came from a running agent (through its admin socket).
    pub agent_running: bool,
    /// Whether the last call to DoorFlow succeeded (and it accepts the credentials).
    pub online: bool,
    /// Whether DoorFlow accepts the agent's credentials.
    #[serde(default)]
    pub doorflow_auth: DoorflowAuth,
    pub snapshot: SnapshotStatus,
    pub sync: SyncStatus,
    pub queue: QueueStatus,
    /// Whether the wall clock can be trusted: synchronised, its offset from DoorFlow's time,
    /// the trusted-time floor, the last step seen.
    #[serde(default)]
    pub clock: ClockStatus,
    pub doors: Vec<DoorStatus>,
    /// Whether the store takes writes, and what its last opening found wrong.
    #[serde(default)]
    pub store: StoreStatus,
    /// Why the agent is not fully working, one sentence each (see `degraded_reasons`); empty
    /// when it is.
    #[serde(default)]
    pub degraded: Vec<String>,
}

/// `status.doorflow_auth`: `ok` (or not yet known), or `refused` with DoorFlow's answer (a 401
/// after a refresh, or a refused refresh: `invalid_grant`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoorflowAuth {
    /// `ok` or `refused`.
    pub state: String,
    pub error: Option<String>,
    /// Why the refresh token DoorFlow last rotated lives only in memory (it could not be
    /// written to `api.auth.refresh_token_file`): a restart would lose access.
    #[serde(default)]
    pub refresh_token_unsaved: Option<String>,
}

impl DoorflowAuth {
    pub fn new(refused: Option<String>) -> DoorflowAuth {
        DoorflowAuth {
            state: if refused.is_some() { "refused" } else { "ok" }.into(),
            error: refused,
            refresh_token_unsaved: None,
        }
    }

    pub fn is_refused(&self) -> bool {
        self.error.is_some()
    }
}

impl Default for DoorflowAuth {
    fn default() -> DoorflowAuth {
        DoorflowAuth::new(None)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `ok`, or `store_error` while writes fail (a full disk, an I/O error).
    pub state: String,
    /// The failing write's error.
    pub error: Option<String>,
    /// What opening found wrong and did about it (parts moved aside, records lost, a snapshot
    /// taken from the last good copy).
    pub problems: Vec<String>,
    /// Damaged parts kept for inspection.
    pub moved_aside: Vec<String>,
}

impl StoreStatus {
    pub fn of(store: &Store) -> StoreStatus {
        let health = store.health();
        let OpenReport {
            moved_aside,
            problems,
        } = store.open_report();
        let error = health.queue_error.or(health.snapshot_error);
        StoreStatus {
            state: if error.is_some() { "store_error" } else { "ok" }.into(),
            error,
            problems,
            moved_aside,
        }
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
    /// The sync running now (null when none): which list, how far, the expected finish.
    #[serde(default)]
    pub progress: Option<SyncProgress>,
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
    /// Admits dropped because `uplink.queue_max_admits` was reached.
    #[serde(default)]
    pub dropped_admits: u64,
    /// The last drop: when, which lane, how many and which limit.
    #[serde(default)]
    pub last_drop: Option<DropNote>,
    /// Acknowledged records found missing when the store was opened (damage).
    #[serde(default)]
    pub lost_records: u64,
    #[serde(default)]
    pub last_loss: Option<LossNote>,
    /// Age of the oldest queued call, s, on the monotonic (boot) clock: a wall clock step does
    /// not change it.
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
    /// The door's reader and, for OSDP, its link (`online`, `offline`, …).
    pub reader: ReaderStatus,
    /// The door's GPIO input lines (reader, contact, REX): `ok`, a fault while they are being
    /// requested again after a failed read (the journal has the error), or `unknown`.
    #[serde(default = "unknown")]
    pub inputs: String,
}

fn unknown() -> String {
    "unknown".into()
}

/// `inputs` for a door whose GPIO input lines failed.
pub const INPUTS_FAULT: &str = "fault: input lines failed; requesting them again (the journal has the error)";

impl QueueStatus {
    /// Queue depth from the store, with the uplink state supplied by the caller (`store_error`
    /// instead while the queue refuses writes).
    pub fn from_store(store: &Store, uplink: &str) -> Result<QueueStatus, StoreError> {
        let stats = store.outbox_stats()?;
        let now = Now::read_raw();
        let mut oldest: Option<u64> = None;
        let mut last_error = None;
        for lane in Lane::ALL {
            if let Some(head) = store.outbox_head(lane)? {
                // Unknown (queued in another boot, by a clock now set back): shown as 0.
                let age = crate::uplink::policy::age(&head.value, &now).map_or(0, |a| a.as_secs());
                oldest = Some(oldest.map_or(age, |o| o.max(age)));
                last_error = last_error.or(head.value.last_error);
            }
        }
        let store_error = store.health().queue_error;
        Ok(QueueStatus {
            pending: stats.pending,
            pending_admits: stats.pending_admits,
            pending_events: stats.pending_events,
            dead: stats.dead,
            dropped_events: stats.dropped_events,
            dropped_admits: stats.dropped_admits,
            last_drop: stats.last_drop,
            lost_records: stats.lost_records,
            last_loss: stats.last_loss,
            oldest_age_s: oldest,
            uplink: if store_error.is_some() {
                "store_error"
            } else {
                uplink
            }
            .to_string(),
            uplink_until: None,
            last_error: store_error.or(last_error),
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
    let clock = TimeKeeper::new(store.meta_get(ANCHOR_KEY)?);
    clock.set_synchronised(crate::clock::synchronised());
    let now = clock.rules_time();
    let mut report = StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        agent_running: false,
        online: false,
        doorflow_auth: DoorflowAuth::default(),
        snapshot: SnapshotStatus::from_header(header.as_ref()),
        sync,
        queue: QueueStatus::from_store(store, "stopped")?,
        clock: clock.status(&Now::read_raw()),
        doors: config
            .doors
            .iter()
            .map(|door| DoorStatus {
                name: door.name.clone(),
                channel_id: door.channel_id,
                relay: "unknown".into(),
                contact: "unknown".into(),
                mode: door_mode(&snapshot, door.channel_id, now).into(),
                reader: door.reader.initial_status(false),
                inputs: unknown(),
            })
            .collect(),
        store: StoreStatus::of(store),
        degraded: Vec::new(),
    };
    report.degraded = degraded_reasons(&report, &HealthInputs::default());
    Ok(report)
}

/// What `degraded_reasons` looks at besides the report.
#[derive(Debug, Clone, Default)]
pub struct HealthInputs {
    /// Why the agent has no DoorFlow client (a secret it cannot read), if so.
    pub doorflow_unavailable: Option<String>,
    /// Why the event sink has no client, if so.
    pub sink_unavailable: Option<String>,
}

/// Why the agent is degraded: it cannot talk to DoorFlow, DoorFlow refuses its credentials, its
/// sync fails, it has no snapshot (every card is denied), its uplink is refused, its store refuses writes, its clock is behind
/// DoorFlow's time. Each reason is a stable sentence (no ages or counts), so a change of the
/// list is a change of state worth a journal line.
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
    if let Some(error) = &report.store.error {
        reasons.push(format!("the store refuses writes: {error}"));
    }
    if let Some(error) = &report.doorflow_auth.error {
        reasons.push(format!(
            "DoorFlow auth refused ({error}): no sync and no admits until the credentials are replaced; queued calls are kept"
        ));
    }
    if let Some(why) = &report.doorflow_auth.refresh_token_unsaved {
        reasons.push(why.clone());
    }
    if report.queue.uplink == "auth_refused" {
        reasons.push(format!(
            "uplink auth_refused: {}",
            report.queue.last_error.as_deref().unwrap_or("no detail")
        ));
    }
    for door in &report.doors {
        if door.inputs == "fault" {
            reasons.push(format!(
                "{}: its GPIO input lines failed and are being requested again (the journal has the error)",
                door.name
            ));
        }
        if door.reader.state == "offline" {
            let why = door.reader.reason.as_deref().unwrap_or("no detail");
            reasons.push(format!(
                "{}: reader offline ({why}): no card is read there",
                door.name
            ));
        }
        if door.reader.tamper == Some(true) {
            reasons.push(format!("{}: reader tamper", door.name));
        }
    }
    if report.clock.behind_floor {
        reasons.push(
            "the wall clock is behind DoorFlow's last known time: time rules use DoorFlow's instead".into(),
        );
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
/// `200 people, 260 credentials; synced 2 min ago; online; queue 0, 0 dead`, followed by the sync
/// in progress if there is one (`; full sync: people 1200/100000, …`) and prefixed with
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
    let mut line = format!(
        "{} people, {} credentials; {synced}; {online}; queue {}, {} dead",
        s.people, s.credentials, q.pending, q.dead
    );
    if let Some(progress) = &report.sync.progress {
        line.push_str(&format!("; {}", progress.summary()));
    }
    if report.degraded.is_empty() {
        line
    } else {
        format!("DEGRADED ({}): {line}", report.degraded.join("; "))
    }
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
    if let Some(error) = &report.doorflow_auth.error {
        out.push_str(&format!(
            "DoorFlow auth refused: {error} (doors decide from the snapshot; queued calls are kept)\n"
        ));
    }
    if let Some(progress) = &report.sync.progress {
        out.push_str(&format!("sync in progress: {}\n", progress.summary()));
    }
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
        q.pending,
        q.pending_admits,
        q.pending_events,
        q.dead,
        q.dropped_events + q.dropped_admits,
        q.uplink
    ));
    if let Some(drop) = &q.last_drop {
        out.push_str(&format!(
            "last drop: {} {}s at {}: {}\n",
            drop.count, drop.lane, drop.at, drop.reason
        ));
    }
    if q.lost_records > 0 {
        let detail = q
            .last_loss
            .as_ref()
            .map(|l| format!(" (last: {})", l.detail))
            .unwrap_or_default();
        out.push_str(&format!(
            "LOST: {} acknowledged queued records{detail}\n",
            q.lost_records
        ));
    }
    let store = &report.store;
    if let Some(error) = &store.error {
        out.push_str(&format!("STORE ERROR: {error}\n"));
    }
    for problem in &store.problems {
        out.push_str(&format!("store at start: {problem}\n"));
    }
    if let Some(error) = &q.last_error {
        out.push_str(&format!("last uplink error: {error}\n"));
    }
    let c = &report.clock;
    let synchronised = match c.synchronised {
        Some(true) => "synchronised",
        Some(false) => "NOT synchronised",
        None => "synchronisation unknown",
    };
    let offset = c
        .doorflow_offset_s
        .map(|o| format!(", {o:+.1} s from DoorFlow"))
        .unwrap_or_default();
    let behind = if c.behind_floor {
        " (behind DoorFlow's last time: rules use that instead)"
    } else {
        ""
    };
    let step = match (c.last_step_s, c.last_step_at) {
        (Some(size), Some(at)) => format!("; stepped {size:+.1} s at {at}"),
        _ => String::new(),
    };
    out.push_str(&format!("clock: {synchronised}{offset}{behind}{step}\n"));
    for door in &report.doors {
        let channel = door
            .channel_id
            .map(|c| format!(" (channel {c})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "door {}{channel}: relay {}, contact {}, mode {}, reader {}{}\n",
            door.name,
            door.relay,
            door.contact,
            door.mode,
            door.reader.describe(),
            match door.inputs.as_str() {
                "ok" | "unknown" => String::new(),
                fault => format!(", inputs {fault}"),
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with_door(inputs: &str, reader_state: &str, tamper: Option<bool>) -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            agent_running: true,
            online: true,
            doorflow_auth: Default::default(),
            snapshot: SnapshotStatus {
                people: 1,
                ..Default::default()
            },
            sync: SyncStatus::default(),
            queue: QueueStatus::default(),
            clock: ClockStatus::default(),
            doors: vec![DoorStatus {
                name: "front".into(),
                channel_id: None,
                relay: "locked".into(),
                inputs: inputs.into(),
                contact: "closed".into(),
                mode: "normal".into(),
                reader: crate::reader::ReaderStatus {
                    kind: "osdp".into(),
                    state: reader_state.into(),
                    reason: Some("reader_no_answer".into()),
                    port: None,
                    address: None,
                    secure_channel: None,
                    tamper,
                    since: None,
                    frame_end_us: None,
                    rejected_frames: None,
                    last_rejected: None,
                },
            }],
            store: StoreStatus::default(),
            degraded: Vec::new(),
        }
    }

    /// Issue 16 items 6 and 8: `systemctl status` shows a sync in progress, and refused
    /// DoorFlow credentials as a degraded reason.
    #[test]
    fn the_status_line_shows_a_sync_in_progress_and_refused_credentials() {
        let mut report = report_with_door("ok", "online", Some(false));
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut progress = SyncProgress::new("full", now);
        progress.list = "people".into();
        progress.fetched = 1_200;
        progress.total = Some(100_000);
        report.sync.progress = Some(progress);
        let line = status_line(&report, now);
        assert!(line.contains("people 1200/100000"), "{line}");
        report.doorflow_auth = DoorflowAuth::new(Some("RefreshToken: HTTP 400 invalid_grant".into()));
        report.degraded = degraded_reasons(&report, &HealthInputs::default());
        let line = status_line(&report, now);
        assert!(line.starts_with("DEGRADED (DoorFlow auth refused"), "{line}");
        assert!(line.contains("invalid_grant"), "{line}");
    }

    #[test]
    fn a_door_that_cannot_read_cards_degrades_the_agent() {
        let healthy = report_with_door("ok", "online", Some(false));
        assert!(degraded_reasons(&healthy, &HealthInputs::default()).is_empty());
        for (report, needle) in [
            (
                report_with_door("fault", "online", None),
                "front: its GPIO input lines failed",
            ),
            (
                report_with_door("ok", "offline", None),
                "front: reader offline (reader_no_answer)",
            ),
            (
                report_with_door("ok", "online", Some(true)),
                "front: reader tamper",
            ),
        ] {
            let reasons = degraded_reasons(&report, &HealthInputs::default());
            assert!(
                reasons.iter().any(|r| r.contains(needle)),
                "{reasons:?} lacks {needle}"
            );
        }
    }
}
