//! Metrics for fleets, without a network port: the Prometheus text exposition format (version
//! 0.0.4, <https://prometheus.io/docs/instrumenting/exposition_formats/>), written to a file for
//! node_exporter's textfile collector (`metrics.textfile`, replaced atomically) and printed by
//! `status --prometheus`.
//!
//! Every name starts with `doorflow_agent_`. Counters count since the agent started (a restart
//! resets them, as Prometheus expects); gauges are read when the text is made.

use crate::audit::AuditEvent;
use crate::mutex::lock;
use crate::status::StatusReport;
use crate::store::{Lane, Store};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

/// Door events by door and DoorFlow event code, counted as the door tasks emit them.
#[derive(Debug, Default)]
pub struct DoorEventCounts {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
}

impl DoorEventCounts {
    pub fn count(&self, event: &AuditEvent) {
        *lock(&self.counts)
            .entry((event.door.clone(), event.event_code))
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<(String, u16, u64)> {
        lock(&self.counts)
            .iter()
            .map(|((door, code), n)| (door.clone(), *code, *n))
            .collect()
    }
}

/// One outbox lane's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneFigures {
    /// `admit` or `event`.
    pub lane: &'static str,
    pub pending: u64,
    /// Age of the oldest queued call, s (0 when the lane is empty).
    pub oldest_age_s: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    /// Failed attempts that will be retried.
    pub retries: u64,
}

/// Everything the text is made from.
#[derive(Debug, Clone)]
pub struct Figures<'a> {
    pub report: &'a StatusReport,
    pub lanes: Vec<LaneFigures>,
    /// (door, event code, count).
    pub door_events: Vec<(String, u16, u64)>,
    /// 429 answers from DoorFlow (sync and admits, and the sink when on DoorFlow's server).
    pub http_429: u64,
    /// Queue and snapshot writes the store failed.
    pub store_errors: u64,
    pub now: Timestamp,
}

/// A metric family being written: `# HELP`, `# TYPE`, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
                .collect();
            let _ = write!(self.out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let name = format!("doorflow_agent_{name}");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn flag(value: bool) -> u8 {
    u8::from(value)
}

/// A per-lane family: name, type, help, and the figure it shows.
type LaneMetric = (&'static str, &'static str, &'static str, fn(&LaneFigures) -> u64);

/// The text exposition of `figures`.
pub fn render(figures: &Figures) -> String {
    let r = figures.report;
    let mut out = String::new();
    family(&mut out, "info", "gauge", "The agent's version (always 1).")
        .sample(&[("version", &r.version)], 1);
    family(
        &mut out,
        "running",
        "gauge",
        "1 when these figures come from a running agent.",
    )
    .sample(&[], flag(r.agent_running));
    family(
        &mut out,
        "online",
        "gauge",
        "1 when DoorFlow answered the last call.",
    )
    .sample(&[], flag(r.online));
    family(
        &mut out,
        "degraded",
        "gauge",
        "1 when status lists degraded reasons.",
    )
    .sample(&[], flag(!r.degraded.is_empty()));
    family(
        &mut out,
        "degraded_reasons",
        "gauge",
        "How many degraded reasons status lists.",
    )
    .sample(&[], r.degraded.len());
    family(
        &mut out,
        "snapshot_people",
        "gauge",
        "People in the snapshot in force.",
    )
    .sample(&[], r.snapshot.people);
    family(
        &mut out,
        "snapshot_credentials",
        "gauge",
        "Credentials in the snapshot in force.",
    )
    .sample(&[], r.snapshot.credentials);

    let mut events = family(
        &mut out,
        "door_events_total",
        "counter",
        "Door events (decisions, exit buttons, alarms) by door and DoorFlow event code.",
    );
    for (door, code, count) in &figures.door_events {
        events.sample(&[("door", door), ("event_code", &code.to_string())], count);
    }

    if let Some(last) = r.sync.last_success {
        family(
            &mut out,
            "sync_last_success_timestamp_seconds",
            "gauge",
            "When the last sync succeeded (Unix time).",
        )
        .sample(&[], last.as_second());
        family(
            &mut out,
            "sync_age_seconds",
            "gauge",
            "Seconds since the last successful sync.",
        )
        .sample(&[], figures.now.duration_since(last).as_secs().max(0));
    }
    if let Some(ms) = r.sync.last_duration_ms {
        family(
            &mut out,
            "sync_duration_seconds",
            "gauge",
            "How long the last sync attempt took.",
        )
        .sample(&[], ms as f64 / 1000.0);
    }
    family(
        &mut out,
        "sync_failing",
        "gauge",
        "1 when the last sync attempt failed.",
    )
    .sample(&[], flag(r.sync.last_error.is_some()));

    let lanes = &figures.lanes;
    let per_lane: [LaneMetric; 5] = [
        (
            "queue_pending",
            "gauge",
            "Calls waiting in the outbox, by lane.",
            |l| l.pending,
        ),
        (
            "queue_oldest_age_seconds",
            "gauge",
            "Age of the oldest queued call, by lane (0 when empty).",
            |l| l.oldest_age_s,
        ),
        (
            "uplink_delivered_total",
            "counter",
            "Calls delivered, by lane.",
            |l| l.delivered,
        ),
        (
            "uplink_dead_lettered_total",
            "counter",
            "Calls moved to the dead letters, by lane.",
            |l| l.dead_lettered,
        ),
        (
            "uplink_retries_total",
            "counter",
            "Failed attempts that will be retried (429, 5xx, network, refused credentials), by lane.",
            |l| l.retries,
        ),
    ];
    for (name, kind, help, value) in per_lane {
        let mut family = family(&mut out, name, kind, help);
        for lane in lanes {
            family.sample(&[("lane", lane.lane)], value(lane));
        }
    }
    family(
        &mut out,
        "dead_letters",
        "gauge",
        "Calls in the dead letters (refused or expired).",
    )
    .sample(&[], r.queue.dead);
    family(
        &mut out,
        "dropped_events_total",
        "counter",
        "Events dropped because the outbox was full (since the store was created).",
    )
    .sample(&[], r.queue.dropped_events);
    family(
        &mut out,
        "http_429_total",
        "counter",
        "429 Too Many Requests answers from DoorFlow.",
    )
    .sample(&[], figures.http_429);
    family(
        &mut out,
        "store_errors_total",
        "counter",
        "Queue and snapshot writes the store failed.",
    )
    .sample(&[], figures.store_errors);

    if let Some(synchronised) = r.clock.synchronised {
        family(
            &mut out,
            "clock_synchronized",
            "gauge",
            "1 when the system clock is NTP-synchronised.",
        )
        .sample(&[], flag(synchronised));
    }
    if let Some(offset) = r.clock.doorflow_offset_s {
        family(
            &mut out,
            "clock_doorflow_offset_seconds",
            "gauge",
            "Wall clock minus DoorFlow's time (from its Date header).",
        )
        .sample(&[], offset);
    }
    family(
        &mut out,
        "clock_behind_trusted_floor",
        "gauge",
        "1 when the wall clock is behind DoorFlow's last known time (rules use that time).",
    )
    .sample(&[], flag(r.clock.behind_floor));

    let mut relays = family(
        &mut out,
        "door_relay_released",
        "gauge",
        "1 while a door's strike is released (agent running).",
    );
    for door in r.doors.iter().filter(|d| d.relay != "unknown") {
        relays.sample(&[("door", &door.name)], flag(door.relay == "released"));
    }
    out
}

/// Each lane's depth and oldest age (on the boot clock, as `status` counts it) from the store;
/// the counters are the running agent's.
pub fn lanes_from_store(store: &Store) -> Vec<LaneFigures> {
    let stats = store.outbox_stats().unwrap_or_default();
    let now = crate::clock::Now::read_raw();
    Lane::ALL
        .into_iter()
        .map(|lane| LaneFigures {
            lane: lane.as_str(),
            pending: match lane {
                Lane::Admit => stats.pending_admits,
                Lane::Event => stats.pending_events,
            },
            oldest_age_s: store
                .outbox_head(lane)
                .ok()
                .flatten()
                .and_then(|e| crate::uplink::policy::age(&e.value, &now))
                .map_or(0, |age| age.as_secs()),
            ..LaneFigures::default()
        })
        .collect()
}

/// The figures of a stopped agent, from its store (`status --prometheus` with no agent
/// running): depths, dead letters, the last sync; no counters.
pub fn from_store(report: &StatusReport, store: &Store) -> String {
    render(&Figures {
        report,
        lanes: lanes_from_store(store),
        door_events: Vec::new(),
        http_429: 0,
        store_errors: store.health().write_errors,
        now: Timestamp::now(),
    })
}

/// Replaces `path` with `text` atomically: a temporary file in the same directory (a name the
/// collector ignores, without `.prom`), mode 0644 whatever the umask (node_exporter runs as
/// another user), then a rename.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{DoorStatus, QueueStatus, SnapshotStatus, SyncStatus};

    fn report() -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            agent_running: true,
            online: true,
            doorflow_auth: Default::default(),
            snapshot: SnapshotStatus {
                people: 200,
                credentials: 260,
                ..Default::default()
            },
            sync: SyncStatus {
                last_success: Some(Timestamp::from_second(1_000).unwrap()),
                last_duration_ms: Some(1_500),
                ..Default::default()
            },
            queue: QueueStatus {
                dead: 2,
                ..Default::default()
            },
            doors: vec![DoorStatus {
                name: "fr\"ont".into(),
                channel_id: None,
                relay: "released".into(),
                inputs: "ok".into(),
                contact: "closed".into(),
                mode: "normal".into(),
                reader: crate::reader::ReaderStatus::wiegand(),
            }],
            degraded: vec![],
            clock: Default::default(),
            store: Default::default(),
        }
    }

    #[test]
    fn the_exposition_has_every_family_once_with_help_and_type() {
        let report = report();
        let text = render(&Figures {
            report: &report,
            lanes: vec![
                LaneFigures {
                    lane: "admit",
                    pending: 3,
                    oldest_age_s: 40,
                    retries: 5,
                    ..Default::default()
                },
                LaneFigures {
                    lane: "event",
                    ..Default::default()
                },
            ],
            door_events: vec![("front".into(), 10, 7), ("front".into(), 21, 1)],
            http_429: 4,
            store_errors: 0,
            now: Timestamp::from_second(1_060).unwrap(),
        });
        for line in [
            "doorflow_agent_door_events_total{door=\"front\",event_code=\"10\"} 7",
            "doorflow_agent_door_events_total{door=\"front\",event_code=\"21\"} 1",
            "doorflow_agent_queue_pending{lane=\"admit\"} 3",
            "doorflow_agent_queue_oldest_age_seconds{lane=\"admit\"} 40",
            "doorflow_agent_queue_pending{lane=\"event\"} 0",
            "doorflow_agent_uplink_retries_total{lane=\"admit\"} 5",
            "doorflow_agent_dead_letters 2",
            "doorflow_agent_sync_age_seconds 60",
            "doorflow_agent_sync_duration_seconds 1.5",
            "doorflow_agent_http_429_total 4",
            "doorflow_agent_store_errors_total 0",
            "doorflow_agent_clock_behind_trusted_floor 0",
            "doorflow_agent_door_relay_released{door=\"fr\\\"ont\"} 1",
            "# TYPE doorflow_agent_door_events_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let all = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), all, "a family is declared twice");
        // Every sample belongs to a declared family.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "undeclared {name}");
        }
    }

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doorflow_agent.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left"
        );
        let missing = dir.path().join("gone").join("x.prom");
        assert!(write_textfile(&missing, "a 1\n").is_err());
    }
}
