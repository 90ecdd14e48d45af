//! The durable queue (the outbox): queued admit and event calls, their dead letters, the bounded
//! local event log used when no event sink is configured, and the queue's counters — all in one
//! SQLite database (`queue.sqlite`) in WAL mode with `synchronous=FULL`, so a commit returns only
//! after its WAL frames were fdatasync'ed: a record the caller was told is queued survives a
//! power cut.
//!
//! Calls wait in two lanes: admits (to DoorFlow) and events (to the event sink). Each lane is
//! strictly first-in first-out, and the lanes are independent, so a sink that is down does not
//! hold back admits until they expire. Keys (`seq`) grow monotonically and are shared by both
//! lanes, so key order is arrival order.
//!
//! Accounting is exact: every change to a queued record is conditional on the record still
//! being there (a record the cap dropped while it was in flight is not written back), and the
//! database counts what it accepted and what left it (delivered, dead-lettered, dropped) in the
//! same transaction as the change. Those two counters are mirrored after each commit into
//! `queue.counters`, outside the database, so a database that lost records (damaged, rolled
//! back, replaced) is noticed at the next start and the loss is reported with its size.

use super::format::{self, DiskRecord};
use super::layout::Layout;
use super::sqlite::{self, OpenProblem};
use super::{testing, Store, StoreError};
use crate::audit::AuditEvent;
use crate::clock::BootInstant;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Commits after which the WAL is copied back into the database when the audit writer is idle
/// (so a swipe's commit rarely carries a checkpoint), and after which it is copied back at
/// once whatever is waiting (so the WAL stays bounded under a constant load).
const CHECKPOINT_WHEN_IDLE: u32 = 200;
const CHECKPOINT_ANYWAY: u32 = 4_000;

/// SQLite's page cache for the queue, in KiB: the queue is read at its head, so a small cache
/// is enough and keeps the agent's memory flat however long the queue grows.
const CACHE_KIB: i64 = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, lane INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_by_lane ON outbox (lane, seq);
CREATE TABLE IF NOT EXISTS dead (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS event_log (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS unreadable (seq INTEGER PRIMARY KEY, lane INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notes (name TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// What a queued call does when it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Call {
    /// `POST /api/3/channels/{channel_id}/admit_person {"person_id"}`.
    Admit { channel_id: u64, person_id: u64 },
    /// `POST uplink.events_url` with the event in DoorFlow's shape.
    Event { event: AuditEvent },
}

impl Call {
    pub fn is_admit(&self) -> bool {
        matches!(self, Call::Admit { .. })
    }

    pub fn lane(&self) -> Lane {
        match self {
            Call::Admit { .. } => Lane::Admit,
            Call::Event { .. } => Lane::Event,
        }
    }
}

/// The two independent queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// `admit_person` calls to DoorFlow.
    Admit,
    /// Door events to `uplink.events_url`.
    Event,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Admit, Lane::Event];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Admit => "admit",
            Lane::Event => "event",
        }
    }

    fn code(self) -> i64 {
        self as i64
    }
}

/// Why a lane is holding back (the retry policy decides; stored so a hold survives a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// The server answered 408/429: nothing is sent before `until`.
    RateLimited,
    /// 5xx or a garbled answer: back off.
    ServerError,
    /// No answer (connection refused, reset, timed out): back off, but retry as soon as the
    /// server is reachable again.
    Unreachable,
    /// Credentials refused after a refresh.
    AuthRefused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedCall {
    /// Stable across retries and restarts; sent as `Idempotency-Key`.
    pub id: String,
    pub call: Call,
    pub created_at: Timestamp,
    /// `created_at` on the boot clock: the admit TTL counts elapsed time from here, unmoved
    /// by wall clock steps and across agent restarts within one boot. Absent in records
    /// written before it existed (then the wall clock is used, erring towards expiry).
    pub created_boot: Option<BootInstant>,
    pub attempts: u32,
    /// Wall-clock time before which it is not retried (for display, and for a wait carried
    /// across a reboot).
    pub next_attempt_at: Option<Timestamp>,
    /// `next_attempt_at` on the boot clock: what the lane really waits for within one boot.
    pub next_attempt_boot: Option<BootInstant>,
    pub last_error: Option<String>,
    /// Why it waits for `next_attempt_at` (persisted, so a restart waits the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

impl QueuedCall {
    /// A call never tried yet, created at `created_at` (wall clock) with no boot stamp: its age
    /// then comes from the wall clock, as for records written before boot stamps existed.
    pub fn untried(id: impl Into<String>, call: Call, created_at: Timestamp) -> QueuedCall {
        QueuedCall {
            id: id.into(),
            call,
            created_at,
            created_boot: None,
            attempts: 0,
            next_attempt_at: None,
            next_attempt_boot: None,
            last_error: None,
            hold: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub queued: QueuedCall,
    /// HTTP status when the server answered.
    pub status: Option<u16>,
    /// `expired`, `forbidden`, `gone`, `rejected`, …
    pub reason: String,
    pub detail: String,
    pub dead_at: Timestamp,
}

/// A queue entry with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub key: u64,
    pub value: T,
}

/// The last time the queue dropped records to stay within its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropNote {
    pub at: Timestamp,
    /// `admit` or `event`.
    pub lane: String,
    /// Records dropped at that moment.
    pub count: u64,
    /// Which limit, e.g. `uplink.queue_max_records (100000) reached: oldest events dropped`.
    pub reason: String,
}

/// The last time queued records were found lost (damaged or replaced database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossNote {
    pub at: Timestamp,
    pub lost: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStats {
    pub pending: u64,
    pub pending_admits: u64,
    pub pending_events: u64,
    pub pending_bytes: u64,
    pub dead: u64,
    /// Events dropped because the queue was full (since the store was created).
    pub dropped_events: u64,
    /// Admits dropped because `uplink.queue_max_admits` was reached.
    pub dropped_admits: u64,
    pub last_drop: Option<DropNote>,
    /// Acknowledged records found missing at a start (damaged or replaced database).
    pub lost_records: u64,
    pub last_loss: Option<LossNote>,
}

/// Limits from `[uplink]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Both lanes together.
    pub max_records: u64,
    pub max_bytes: u64,
    /// Admits alone; below `max_records`, so events always keep room.
    pub max_admits: u64,
}

impl Capacity {
    pub fn from_config(uplink: &crate::config::UplinkConfig) -> Capacity {
        Capacity {
            max_records: uplink.queue_max_records.get(),
            max_bytes: uplink.queue_max_bytes.get(),
            max_admits: uplink.effective_queue_max_admits(),
        }
    }
}

/// What one decision (or a burst of them) makes durable, written in one transaction: the
/// queued calls (an admit and its event together) and, without an event sink, the local log.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    pub calls: &'a [QueuedCall],
    pub log: &'a [AuditEvent],
    /// Local event log entries kept (oldest dropped beyond it).
    pub log_max: u64,
    pub capacity: Capacity,
}

/// Records and bytes per lane, kept in memory (counted once at open, then updated after each
/// commit), so capacity checks and log lines cost no query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    admits: u64,
    events: u64,
    bytes: u64,
}

impl Tally {
    fn records(&self) -> u64 {
        self.admits + self.events
    }

    fn add(&mut self, lane: Lane, bytes: u64) {
        match lane {
            Lane::Admit => self.admits += 1,
            Lane::Event => self.events += 1,
        }
        self.bytes += bytes;
    }

    fn remove(&mut self, lane: Lane, bytes: u64) {
        match lane {
            Lane::Admit => self.admits = self.admits.saturating_sub(1),
            Lane::Event => self.events = self.events.saturating_sub(1),
        }
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// What the database has accepted and what has left it, ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub accepted: u64,
    pub settled: u64,
}

/// How the queue database was found at open.
#[derive(Debug, Default)]
pub(super) struct QueueOpened {
    /// Acknowledged records found missing.
    pub lost: u64,
    /// Where an unusable database was moved.
    pub moved_to: Option<PathBuf>,
}

pub(super) struct QueueDb {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    conn: Connection,
    tally: Tally,
    counters: Counters,
    mirror: CountersMirror,
    /// Commits since the WAL was last checkpointed.
    since_checkpoint: u32,
}

impl std::fmt::Debug for QueueDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueDb").field("path", &self.path).finish()
    }
}

fn entry_bytes(body: &[u8]) -> u64 {
    body.len() as u64 + 8
}

impl QueueDb {
    /// Opens the queue database, creating it when absent. A database that cannot be opened or
    /// fails its check — or was written by a newer agent — is moved aside (kept for inspection)
    /// and a fresh one created; records it held are reported as lost.
    pub(super) fn open(layout: &Layout) -> Result<(QueueDb, QueueOpened), StoreError> {
        let path = layout.queue_db();
        let mirror = CountersMirror::open(&layout.queue_counters())?;
        let remembered = mirror.read();
        match Self::open_checked(&path) {
            Ok((conn, counters, tally)) => {
                let mut opened = QueueOpened::default();
                let queue = QueueDb {
                    path: path.clone(),
                    inner: Mutex::new(Inner {
                        conn,
                        tally,
                        counters,
                        mirror,
                        since_checkpoint: 0,
                    }),
                };
                opened.lost = queue.reconcile(remembered)?;
                Ok((queue, opened))
            }
            Err(OpenProblem::Transient(problem)) => Err(StoreError::Unavailable {
                path: path.clone(),
                detail: problem,
            }),
            Err(OpenProblem::Unusable(problem)) => {
                let moved_to = layout.move_aside(&path).map_err(|e| StoreError::io(&path, e))?;
                let lost = remembered.map_or(0, |c| c.accepted.saturating_sub(c.settled));
                tracing::error!(
                    path = %path.display(),
                    moved_to = %moved_to.display(),
                    lost_records = lost,
                    "QUEUE DATABASE UNUSABLE ({problem}); moved aside for inspection and started a new, empty queue; {lost} queued records lost"
                );
                let (conn, mut counters, tally) =
                    Self::open_checked(&path).map_err(|p| StoreError::Damaged {
                        path: path.clone(),
                        detail: p.to_string(),
                    })?;
                let queue = QueueDb {
                    path: path.clone(),
                    inner: Mutex::new(Inner {
                        conn,
                        tally,
                        counters,
                        mirror,
                        since_checkpoint: 0,
                    }),
                };
                // The new database carries on the history, so later starts compare alike.
                if let Some(remembered) = remembered {
                    counters = Counters {
                        accepted: remembered.accepted,
                        settled: remembered.accepted,
                    };
                }
                queue.record_loss(
                    counters,
                    lost,
                    &format!(
                        "queue database unusable ({problem}); moved to {}",
                        moved_to.display()
                    ),
                )?;
                Ok((
                    queue,
                    QueueOpened {
                        lost,
                        moved_to: Some(moved_to),
                    },
                ))
            }
        }
    }

    /// Opens, configures, checks and counts.
    fn open_checked(path: &Path) -> Result<(Connection, Counters, Tally), OpenProblem> {
        let conn = sqlite::open(
            path,
            &sqlite::Settings {
                synchronous: testing::queue_synchronous(),
                cache_kib: CACHE_KIB,
                // Checkpoints are run by `checkpoint` (see CHECKPOINT_WHEN_IDLE), not inside a
                // commit.
                wal_autocheckpoint: 0,
                schema: SCHEMA,
                what: "queue",
            },
        )?;
        let text = OpenProblem::from;
        let counters = Counters {
            accepted: counter(&conn, "accepted").map_err(text)?,
            settled: counter(&conn, "settled").map_err(text)?,
        };
        let mut tally = Tally::default();
        {
            let mut rows = conn
                .prepare(
                    "SELECT lane, count(*), coalesce(sum(length(body) + 8), 0) FROM outbox GROUP BY lane",
                )
                .map_err(text)?;
            let mut rows = rows.query([]).map_err(text)?;
            while let Some(row) = rows.next().map_err(text)? {
                let lane: i64 = row.get(0).map_err(text)?;
                let count: i64 = row.get(1).map_err(text)?;
                let bytes: i64 = row.get(2).map_err(text)?;
                match lane {
                    0 => tally.admits = count as u64,
                    _ => tally.events += count as u64,
                }
                tally.bytes += bytes as u64;
            }
        }
        Ok((conn, counters, tally))
    }

    /// Compares the database with itself and with the counters mirrored outside it; reports
    /// and records any loss. Returns how many acknowledged records are missing.
    fn reconcile(&self, remembered: Option<Counters>) -> Result<u64, StoreError> {
        let (counters, rows) = {
            let inner = self.lock();
            (inner.counters, inner.tally.records())
        };
        let expected = counters.accepted.saturating_sub(counters.settled);
        let missing_rows = expected.saturating_sub(rows);
        let forgotten = remembered.map_or(0, |r| r.accepted.saturating_sub(counters.accepted));
        let lost = missing_rows + forgotten;
        if lost == 0 {
            if remembered.is_none() && counters.accepted > 0 {
                tracing::warn!(path = %self.path.display(), "queue counters file missing or unreadable; rewritten from the database");
            }
            self.lock().write_mirror();
            return Ok(0);
        }
        let detail = format!(
            "the queue database holds {rows} records where its counters say {expected}, and it has accepted {} where {} were acknowledged",
            counters.accepted,
            remembered.map_or(counters.accepted, |r| r.accepted)
        );
        tracing::error!(
            path = %self.path.display(),
            lost_records = lost,
            "QUEUED RECORDS LOST: {detail}"
        );
        // From here on the counters agree with what is really there.
        let accepted = counters.accepted.max(remembered.map_or(0, |r| r.accepted));
        let repaired = Counters {
            accepted,
            settled: accepted - rows,
        };
        self.record_loss(repaired, lost, &detail)?;
        Ok(lost)
    }

    fn record_loss(&self, counters: Counters, lost: u64, detail: &str) -> Result<(), StoreError> {
        let note = LossNote {
            at: Timestamp::now(),
            lost,
            detail: detail.to_string(),
        };
        self.write(|tx, _, _| {
            set_counter(tx, "accepted", counters.accepted)?;
            set_counter(tx, "settled", counters.settled)?;
            add_counter(tx, "lost_records", lost)?;
            set_note(tx, "last_loss", &note)?;
            Ok(((), counters))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Queue {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `change` in one immediate transaction and commits (an fdatasync of the WAL before
    /// it returns). `change` gets the tally and returns the new counters; the in-memory tally,
    /// counters and their mirror are updated only once the commit succeeded.
    fn write<T>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction<'_>, &mut Tally, Counters) -> rusqlite::Result<(T, Counters)>,
    ) -> Result<T, StoreError> {
        let mut inner = self.lock();
        let mut tally = inner.tally;
        let inner = &mut *inner;
        let result = (|| {
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (value, counters) = change(&tx, &mut tally, inner.counters)?;
            testing::failpoint("queue.before_commit");
            tx.commit()?;
            Ok((value, counters))
        })();
        match result {
            Ok((value, counters)) => {
                testing::failpoint("queue.after_commit");
                inner.tally = tally;
                inner.counters = counters;
                inner.write_mirror();
                inner.since_checkpoint += 1;
                if inner.since_checkpoint >= CHECKPOINT_ANYWAY {
                    inner.checkpoint();
                }
                Ok(value)
            }
            Err(error) => Err(self.error(error)),
        }
    }

    fn read<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let inner = self.lock();
        query(&inner.conn).map_err(|e| self.error(e))
    }

    /// Appends a group in one transaction: its calls, its local log entries, the trimming of
    /// the log, and whatever the limits make it drop. Returns the keys given to the calls.
    pub(super) fn commit_group(&self, group: Group<'_>) -> Result<Vec<u64>, StoreError> {
        self.write(|tx, tally, before| {
            let mut seq = counter(tx, "next_seq")?.max(1);
            let mut keys = Vec::with_capacity(group.calls.len());
            {
                let mut insert = tx.prepare_cached("INSERT INTO outbox (seq, lane, body) VALUES (?1, ?2, ?3)")?;
                for call in group.calls {
                    let body = format::encode(call);
                    let lane = call.call.lane();
                    insert.execute(params![seq as i64, lane.code(), body])?;
                    tally.add(lane, entry_bytes(&body));
                    keys.push(seq);
                    seq += 1;
                }
            }
            if !group.log.is_empty() {
                let mut insert = tx.prepare_cached("INSERT INTO event_log (seq, body) VALUES (?1, ?2)")?;
                for event in group.log {
                    insert.execute(params![seq as i64, format::encode(event)])?;
                    seq += 1;
                }
                tx.execute(
                    "DELETE FROM event_log WHERE seq <= (SELECT seq FROM event_log ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                    params![group.log_max as i64],
                )?;
            }
            set_counter(tx, "next_seq", seq)?;
            let dropped = make_room(tx, tally, group.capacity)?;
            let counters = Counters {
                accepted: before.accepted + group.calls.len() as u64,
                settled: before.settled + dropped,
            };
            set_counter(tx, "accepted", counters.accepted)?;
            set_counter(tx, "settled", counters.settled)?;
            Ok((keys, counters))
        })
    }

    /// The oldest call of a lane. A record that no longer decodes is moved to the `unreadable`
    /// table (kept for inspection), counted as lost and logged, so one bad record cannot stop
    /// its lane.
    pub(super) fn head(&self, lane: Lane) -> Result<Option<Entry<QueuedCall>>, StoreError> {
        loop {
            let row = self.read(|conn| {
                conn.prepare_cached("SELECT seq, body FROM outbox WHERE lane = ?1 ORDER BY seq LIMIT 1")?
                    .query_row(params![lane.code()], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
                    })
                    .optional()
            })?;
            let Some((key, body)) = row else {
                return Ok(None);
            };
            match format::decode::<QueuedCall>(&body) {
                Ok(value) => return Ok(Some(Entry { key, value })),
                Err(error) => self.set_aside_unreadable(lane, key, &body, &error.to_string())?,
            }
        }
    }

    fn set_aside_unreadable(&self, lane: Lane, key: u64, body: &[u8], error: &str) -> Result<(), StoreError> {
        tracing::error!(lane = lane.as_str(), key, %error, "QUEUED RECORD UNREADABLE: set aside in the `unreadable` table and counted as lost");
        let detail = format!(
            "queued {} record {key} could not be decoded: {error}",
            lane.as_str()
        );
        self.write(|tx, tally, before| {
            tx.execute(
                "INSERT OR REPLACE INTO unreadable (seq, lane, body) VALUES (?1, ?2, ?3)",
                params![key as i64, lane.code(), body],
            )?;
            let removed = tx.execute("DELETE FROM outbox WHERE seq = ?1", params![key as i64])?;
            let counters = Counters {
                settled: before.settled + removed as u64,
                ..before
            };
            if removed > 0 {
                tally.remove(lane, entry_bytes(body));
                set_counter(tx, "settled", counters.settled)?;
                add_counter(tx, "lost_records", 1)?;
                set_note(
                    tx,
                    "last_loss",
                    &LossNote {
                        at: Timestamp::now(),
                        lost: 1,
                        detail: detail.clone(),
                    },
                )?;
            }
            Ok(((), counters))
        })
    }

    pub(super) fn list(&self, limit: usize) -> Result<Vec<Entry<QueuedCall>>, StoreError> {
        self.entries("SELECT seq, body FROM outbox ORDER BY seq LIMIT ?1", limit)
    }

    pub(super) fn dead_list(&self, limit: usize) -> Result<Vec<Entry<DeadLetter>>, StoreError> {
        self.entries("SELECT seq, body FROM dead ORDER BY seq LIMIT ?1", limit)
    }

    pub(super) fn event_log(&self, limit: usize) -> Result<Vec<Entry<AuditEvent>>, StoreError> {
        self.entries("SELECT seq, body FROM event_log ORDER BY seq LIMIT ?1", limit)
    }

    fn entries<T: DiskRecord>(&self, sql: &str, limit: usize) -> Result<Vec<Entry<T>>, StoreError> {
        let rows = self.read(|conn| {
            let mut statement = conn.prepare_cached(sql)?;
            let rows = statement.query_map(params![limit.min(i64::MAX as usize) as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, body)| match format::decode::<T>(&body) {
                Ok(value) => Some(Entry { key, value }),
                Err(error) => {
                    tracing::error!(key, %error, "unreadable queue record skipped");
                    None
                }
            })
            .collect())
    }

    /// Records a failed attempt (attempt count, next attempt time, error, hold) — only if the
    /// record is still queued. Returns whether it was.
    pub(super) fn update(&self, key: u64, call: &QueuedCall) -> Result<bool, StoreError> {
        let body = format::encode(call);
        let lane = call.call.lane();
        self.write(|tx, tally, before| {
            let old: Option<i64> = tx
                .query_row(
                    "SELECT length(body) + 8 FROM outbox WHERE seq = ?1 AND lane = ?2",
                    params![key as i64, lane.code()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(old) = old else {
                return Ok((false, before));
            };
            tx.execute(
                "UPDATE outbox SET body = ?1 WHERE seq = ?2",
                params![body, key as i64],
            )?;
            tally.remove(lane, old as u64);
            tally.add(lane, entry_bytes(&body));
            Ok((true, before))
        })
    }

    /// Removes a delivered call. Returns whether it was still queued.
    pub(super) fn remove(&self, lane: Lane, key: u64) -> Result<bool, StoreError> {
        self.write(|tx, tally, before| {
            let Some(bytes) = delete_queued(tx, lane, key)? else {
                return Ok((false, before));
            };
            tally.remove(lane, bytes);
            let counters = Counters {
                settled: before.settled + 1,
                ..before
            };
            set_counter(tx, "settled", counters.settled)?;
            Ok((true, counters))
        })
    }

    /// Moves a call to the dead letters in one transaction, only if it is still queued.
    pub(super) fn kill(&self, key: u64, dead: &DeadLetter) -> Result<bool, StoreError> {
        let lane = dead.queued.call.lane();
        let body = format::encode(dead);
        self.write(|tx, tally, before| {
            let Some(bytes) = delete_queued(tx, lane, key)? else {
                return Ok((false, before));
            };
            tally.remove(lane, bytes);
            let seq = counter(tx, "next_seq")?.max(1);
            tx.execute(
                "INSERT INTO dead (seq, body) VALUES (?1, ?2)",
                params![seq as i64, body],
            )?;
            set_counter(tx, "next_seq", seq + 1)?;
            let counters = Counters {
                settled: before.settled + 1,
                ..before
            };
            set_counter(tx, "settled", counters.settled)?;
            Ok((true, counters))
        })
    }

    /// Puts dead letters back at the end of their lanes with a fresh attempt count, in one
    /// transaction. `None` retries all of them. Returns how many were requeued.
    pub(super) fn dead_retry(&self, id: Option<&str>) -> Result<usize, StoreError> {
        let letters = self.dead_list(usize::MAX)?;
        self.write(|tx, tally, before| {
            let mut seq = counter(tx, "next_seq")?.max(1);
            let mut count = 0u64;
            for entry in letters {
                if id.is_some_and(|id| id != entry.value.queued.id && id != entry.key.to_string()) {
                    continue;
                }
                let mut queued = entry.value.queued;
                queued.attempts = 0;
                queued.next_attempt_at = None;
                queued.next_attempt_boot = None;
                queued.last_error = None;
                queued.hold = None;
                let body = format::encode(&queued);
                let lane = queued.call.lane();
                if tx.execute("DELETE FROM dead WHERE seq = ?1", params![entry.key as i64])? == 0 {
                    continue;
                }
                tx.execute(
                    "INSERT INTO outbox (seq, lane, body) VALUES (?1, ?2, ?3)",
                    params![seq as i64, lane.code(), body],
                )?;
                tally.add(lane, entry_bytes(&body));
                seq += 1;
                count += 1;
            }
            set_counter(tx, "next_seq", seq)?;
            let counters = Counters {
                accepted: before.accepted + count,
                ..before
            };
            set_counter(tx, "accepted", counters.accepted)?;
            Ok((count as usize, counters))
        })
    }

    /// Deletes every dead letter; returns how many.
    pub(super) fn dead_purge(&self) -> Result<usize, StoreError> {
        self.write(|tx, _, before| Ok((tx.execute("DELETE FROM dead", [])?, before)))
    }

    pub(super) fn stats(&self) -> Result<OutboxStats, StoreError> {
        let tally = self.lock().tally;
        self.read(|conn| {
            Ok(OutboxStats {
                pending: tally.records(),
                pending_admits: tally.admits,
                pending_events: tally.events,
                pending_bytes: tally.bytes,
                dead: conn.query_row("SELECT count(*) FROM dead", [], |r| r.get::<_, i64>(0))? as u64,
                dropped_events: counter(conn, "dropped_events")?,
                dropped_admits: counter(conn, "dropped_admits")?,
                last_drop: note(conn, "last_drop")?,
                lost_records: counter(conn, "lost_records")?,
                last_loss: note(conn, "last_loss")?,
            })
        })
    }

    pub(super) fn pending(&self) -> u64 {
        self.lock().tally.records()
    }

    pub(super) fn checkpoint_if_due(&self) {
        let mut inner = self.lock();
        if inner.since_checkpoint >= CHECKPOINT_WHEN_IDLE {
            inner.checkpoint();
        }
    }

    /// Brings in the queue 0.1.0 kept in sled, with its keys, in one transaction that also
    /// marks it done (so a crash before sled's copy is dropped cannot bring it in twice).
    pub(super) fn import_legacy(&self, legacy: &LegacyQueue) -> Result<bool, StoreError> {
        self.write(|tx, tally, before| {
            if note::<bool>(tx, "legacy_imported")?.unwrap_or(false) {
                return Ok((false, before));
            }
            let mut next = counter(tx, "next_seq")?.max(1);
            let mut accepted = 0;
            for (key, lane, body) in &legacy.queued {
                tx.execute(
                    "INSERT OR IGNORE INTO outbox (seq, lane, body) VALUES (?1, ?2, ?3)",
                    params![*key as i64, lane.code(), body],
                )?;
                tally.add(*lane, entry_bytes(body));
                accepted += 1;
                next = next.max(key + 1);
            }
            for (table, rows) in [("dead", &legacy.dead), ("event_log", &legacy.event_log)] {
                for (key, body) in rows {
                    tx.execute(
                        &format!("INSERT OR IGNORE INTO {table} (seq, body) VALUES (?1, ?2)"),
                        params![*key as i64, body],
                    )?;
                    next = next.max(key + 1);
                }
            }
            set_counter(tx, "next_seq", next)?;
            add_counter(tx, "dropped_events", legacy.dropped_events)?;
            let counters = Counters {
                accepted: before.accepted + accepted,
                ..before
            };
            set_counter(tx, "accepted", counters.accepted)?;
            set_note(tx, "legacy_imported", &true)?;
            Ok((true, counters))
        })
    }
}

/// The queue 0.1.0 kept in sled's trees, as raw records (0.1.0's bytes are format 1).
#[derive(Debug, Default)]
pub(super) struct LegacyQueue {
    pub queued: Vec<(u64, Lane, Vec<u8>)>,
    pub dead: Vec<(u64, Vec<u8>)>,
    pub event_log: Vec<(u64, Vec<u8>)>,
    pub dropped_events: u64,
}

impl LegacyQueue {
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
            && self.dead.is_empty()
            && self.event_log.is_empty()
            && self.dropped_events == 0
    }
}

/// Deletes a queued record if it is there; returns its size.
fn delete_queued(tx: &rusqlite::Transaction<'_>, lane: Lane, key: u64) -> rusqlite::Result<Option<u64>> {
    let bytes: Option<i64> = tx
        .query_row(
            "DELETE FROM outbox WHERE seq = ?1 AND lane = ?2 RETURNING length(body) + 8",
            params![key as i64, lane.code()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(bytes.map(|b| b as u64))
}

/// Drops what the limits do not allow, inside the caller's transaction: the oldest admits
/// beyond `max_admits` (the oldest admit is the closest to expiring, and a late admit is
/// unsafe anyway), then the oldest events until both lanes fit `max_records` and `max_bytes`.
/// Admits alone can never fill the queue, so a new event (a forced-open alarm) always fits.
/// Returns how many records were dropped; counts them and notes why.
fn make_room(tx: &rusqlite::Transaction<'_>, tally: &mut Tally, capacity: Capacity) -> rusqlite::Result<u64> {
    let mut dropped = [0u64; 2];
    while tally.admits > capacity.max_admits && drop_oldest(tx, tally, Lane::Admit)? {
        dropped[Lane::Admit as usize] += 1;
    }
    while (tally.records() > capacity.max_records || tally.bytes > capacity.max_bytes)
        && drop_oldest(tx, tally, Lane::Event)?
    {
        dropped[Lane::Event as usize] += 1;
    }
    for lane in Lane::ALL {
        let count = dropped[lane as usize];
        if count == 0 {
            continue;
        }
        let (counter_name, reason) = match lane {
            Lane::Admit => (
                "dropped_admits",
                format!(
                    "uplink.queue_max_admits ({}) reached: oldest admits dropped",
                    capacity.max_admits
                ),
            ),
            Lane::Event => (
                "dropped_events",
                format!(
                    "uplink.queue_max_records ({}) or queue_max_bytes ({}) reached: oldest events dropped",
                    capacity.max_records, capacity.max_bytes
                ),
            ),
        };
        let total = add_counter(tx, counter_name, count)?;
        set_note(
            tx,
            "last_drop",
            &DropNote {
                at: Timestamp::now(),
                lane: lane.as_str().into(),
                count,
                reason: reason.clone(),
            },
        )?;
        tracing::error!(
            lane = lane.as_str(),
            dropped = count,
            total_dropped = total,
            queue_pending = tally.records(),
            "QUEUE FULL: {reason}"
        );
    }
    Ok(dropped[0] + dropped[1])
}

fn drop_oldest(tx: &rusqlite::Transaction<'_>, tally: &mut Tally, lane: Lane) -> rusqlite::Result<bool> {
    let bytes: Option<i64> = tx
        .query_row(
            "DELETE FROM outbox WHERE seq = (SELECT seq FROM outbox WHERE lane = ?1 ORDER BY seq LIMIT 1) RETURNING length(body) + 8",
            params![lane.code()],
            |r| r.get(0),
        )
        .optional()?;
    match bytes {
        Some(bytes) => {
            tally.remove(lane, bytes as u64);
            Ok(true)
        }
        None => Ok(false),
    }
}

fn counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row(params![name], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.unwrap_or(0) as u64)
}

fn set_counter(conn: &Connection, name: &str, value: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value")?
        .execute(params![name, value as i64])
        .map(|_| ())
}

fn add_counter(conn: &Connection, name: &str, add: u64) -> rusqlite::Result<u64> {
    let total = counter(conn, name)? + add;
    set_counter(conn, name, total)?;
    Ok(total)
}

fn note<T: serde::de::DeserializeOwned>(conn: &Connection, name: &str) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM notes WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn set_note<T: Serialize>(conn: &Connection, name: &str, value: &T) -> rusqlite::Result<()> {
    let text = serde_json::to_string(value).unwrap_or_default();
    conn.prepare_cached("INSERT INTO notes (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value")?
        .execute(params![name, text])
        .map(|_| ())
}

impl Inner {
    /// Copies the WAL back into the database (PASSIVE: the WAL file is reused, not truncated,
    /// so later commits do not change its size). A failure (a full disk) is retried later.
    fn checkpoint(&mut self) {
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
        {
            Ok(_) => self.since_checkpoint = 0,
            Err(error) => tracing::warn!(%error, "queue checkpoint failed; retried later"),
        }
    }

    fn write_mirror(&mut self) {
        if let Err(error) = self.mirror.write(self.counters) {
            tracing::warn!(%error, "cannot update the queue counters file");
        }
    }
}

/// `queue.counters`: the database's accepted/settled counters, mirrored outside it after each
/// commit (one 28-byte pwrite in place, no fsync of its own: it can lag after a power cut but
/// never runs ahead of the database, so it never reports a loss that did not happen).
#[derive(Debug)]
struct CountersMirror {
    file: std::fs::File,
}

const MIRROR_MAGIC: &[u8; 8] = b"DFQCNT01";

impl CountersMirror {
    fn open(path: &Path) -> Result<CountersMirror, StoreError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        Ok(CountersMirror { file })
    }

    fn read(&self) -> Option<Counters> {
        let mut bytes = [0u8; 28];
        self.file.read_exact_at(&mut bytes, 0).ok()?;
        let crc = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
        if &bytes[..8] != MIRROR_MAGIC || crc32fast::hash(&bytes[..24]) != crc {
            return None;
        }
        Some(Counters {
            accepted: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
            settled: u64::from_le_bytes(bytes[16..24].try_into().ok()?),
        })
    }

    fn write(&mut self, counters: Counters) -> std::io::Result<()> {
        let mut bytes = [0u8; 28];
        bytes[..8].copy_from_slice(MIRROR_MAGIC);
        bytes[8..16].copy_from_slice(&counters.accepted.to_le_bytes());
        bytes[16..24].copy_from_slice(&counters.settled.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..24]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&bytes, 0)
    }
}

impl Store {
    /// Appends calls in one commit (see [`Store::commit_group`]).
    pub fn enqueue(&self, calls: &[QueuedCall], capacity: Capacity) -> Result<Vec<u64>, StoreError> {
        self.commit_group(Group {
            calls,
            log: &[],
            log_max: 0,
            capacity,
        })
    }

    /// Makes a group durable in one transaction, fsynced before it returns: queued calls (an
    /// admit and the event of the same swipe together), local log entries, and the drops the
    /// limits require. Returns the keys assigned to the calls.
    pub fn commit_group(&self, group: Group<'_>) -> Result<Vec<u64>, StoreError> {
        let result = self.queue.commit_group(group);
        self.note_queue_write(&result);
        result
    }

    /// Copies the queue's WAL back into its database if enough commits piled up. The audit
    /// writer calls it when no event is waiting, so a swipe's commit rarely pays for it.
    pub fn checkpoint_when_idle(&self) {
        self.queue.checkpoint_if_due();
    }

    /// Calls waiting in both lanes (cheap; for log lines).
    pub fn pending_count(&self) -> u64 {
        self.queue.pending()
    }

    /// The oldest queued call of a lane.
    pub fn outbox_head(&self, lane: Lane) -> Result<Option<Entry<QueuedCall>>, StoreError> {
        self.queue.head(lane)
    }

    /// Up to `limit` queued calls of both lanes, oldest first.
    pub fn outbox_list(&self, limit: usize) -> Result<Vec<Entry<QueuedCall>>, StoreError> {
        self.queue.list(limit)
    }

    pub fn dead_list(&self, limit: usize) -> Result<Vec<Entry<DeadLetter>>, StoreError> {
        self.queue.dead_list(limit)
    }

    /// Records a failed attempt durably, unless the record has left the queue meanwhile (the
    /// cap dropped it): then nothing is written and nothing is counted twice.
    pub fn outbox_update(&self, key: u64, call: &QueuedCall) -> Result<(), StoreError> {
        let result = self.queue.update(key, call);
        self.note_queue_write(&result);
        if let Ok(false) = result {
            tracing::debug!(
                key,
                "queued call left the queue while in flight; attempt not recorded"
            );
        }
        result.map(|_| ())
    }

    /// Removes a delivered call.
    pub fn outbox_remove(&self, lane: Lane, key: u64) -> Result<(), StoreError> {
        let result = self.queue.remove(lane, key);
        self.note_queue_write(&result);
        result.map(|_| ())
    }

    /// Moves a call to the dead letters in one transaction (nothing when it already left).
    pub fn outbox_kill(&self, key: u64, dead: &DeadLetter) -> Result<(), StoreError> {
        let result = self.queue.kill(key, dead);
        self.note_queue_write(&result);
        result.map(|_| ())
    }

    /// Puts dead letters back at the end of the queue with a fresh attempt count. `None`
    /// retries all of them. Returns how many were requeued.
    pub fn dead_retry(&self, id: Option<&str>) -> Result<usize, StoreError> {
        let result = self.queue.dead_retry(id);
        self.note_queue_write(&result);
        result
    }

    /// Deletes every dead letter; returns how many.
    pub fn dead_purge(&self) -> Result<usize, StoreError> {
        let result = self.queue.dead_purge();
        self.note_queue_write(&result);
        result
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.queue.stats()
    }

    /// Appends to the bounded local event log (used without an event sink), dropping the
    /// oldest entries beyond `max`.
    pub fn event_log_append(&self, events: &[AuditEvent], max: u64) -> Result<(), StoreError> {
        self.commit_group(Group {
            calls: &[],
            log: events,
            log_max: max,
            capacity: Capacity {
                max_records: u64::MAX,
                max_bytes: u64::MAX,
                max_admits: u64::MAX,
            },
        })
        .map(|_| ())
    }

    pub fn event_log(&self, limit: usize) -> Result<Vec<Entry<AuditEvent>>, StoreError> {
        self.queue.event_log(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Capacity = Capacity {
        max_records: 1000,
        max_bytes: 1 << 20,
        max_admits: 100,
    };

    fn event(n: u64) -> QueuedCall {
        QueuedCall::untried(
            format!("ev-{n}"),
            Call::Event {
                event: AuditEvent {
                    id: n + 1,
                    event_code: 10,
                    reason: "authorised".into(),
                    door: "front".into(),
                    channel_id: Some(1340),
                    person_id: Some(n),
                    credential: Some("****17".into()),
                    created_at: Timestamp::from_second(1_800_000_000).unwrap(),
                    admit: false,
                    repeats: 0,
                    updated_at: None,
                },
            },
            Timestamp::from_second(1_800_000_000).unwrap(),
        )
    }

    fn admit(n: u64) -> QueuedCall {
        QueuedCall {
            id: format!("ad-{n}"),
            call: Call::Admit {
                channel_id: 1340,
                person_id: n,
            },
            ..event(n)
        }
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("db"), 1 << 20).unwrap()
    }

    fn ids(store: &Store) -> Vec<String> {
        store
            .outbox_list(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.value.id)
            .collect()
    }

    #[test]
    fn queue_keeps_order_across_restarts_and_keys_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let first_keys = {
            let store = open(&dir);
            store.enqueue(&[event(1), event(2)], ROOMY).unwrap()
        };
        let store = open(&dir);
        let later = store.enqueue(&[event(3)], ROOMY).unwrap();
        assert!(
            later[0] > first_keys[1],
            "keys must stay monotonic after a restart"
        );
        assert_eq!(ids(&store), ["ev-1", "ev-2", "ev-3"]);
        assert_eq!(store.outbox_head(Lane::Event).unwrap().unwrap().value.id, "ev-1");
    }

    #[test]
    fn attempts_and_backoff_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&dir);
            let key = store.enqueue(&[event(1)], ROOMY).unwrap()[0];
            let mut call = event(1);
            call.attempts = 3;
            call.next_attempt_at = Some(Timestamp::from_second(1_900_000_000).unwrap());
            call.last_error = Some("503 Service Unavailable".into());
            call.hold = Some(Hold::ServerError);
            store.outbox_update(key, &call).unwrap();
        }
        let head = open(&dir).outbox_head(Lane::Event).unwrap().unwrap().value;
        assert_eq!(head.attempts, 3);
        assert_eq!(head.next_attempt_at.unwrap().as_second(), 1_900_000_000);
        assert_eq!(head.hold, Some(Hold::ServerError));
    }

    #[test]
    fn full_queue_drops_oldest_events_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let tight = Capacity {
            max_records: 3,
            max_bytes: 1 << 20,
            max_admits: 2,
        };
        store.enqueue(&[admit(1), event(2), event(3)], tight).unwrap();
        store.enqueue(&[event(4), admit(5)], tight).unwrap();
        assert_eq!(ids(&store), ["ad-1", "ev-4", "ad-5"]);
        let stats = store.outbox_stats().unwrap();
        assert_eq!((stats.dropped_events, stats.dropped_admits), (2, 0));
        let note = stats.last_drop.unwrap();
        assert_eq!((note.lane.as_str(), note.count), ("event", 2));
        assert!(note.reason.contains("queue_max_records (3)"), "{}", note.reason);
    }

    #[test]
    fn admits_alone_cannot_fill_the_queue_and_events_still_fit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let capacity = Capacity {
            max_records: 10,
            max_bytes: 1 << 20,
            max_admits: 4,
        };
        let admits: Vec<_> = (0..20).map(admit).collect();
        store.enqueue(&admits, capacity).unwrap();
        let alarm = event(99);
        store.enqueue(std::slice::from_ref(&alarm), capacity).unwrap();
        let stats = store.outbox_stats().unwrap();
        assert_eq!((stats.pending_admits, stats.pending_events), (4, 1));
        assert_eq!((stats.dropped_admits, stats.dropped_events), (16, 0));
        assert_eq!(ids(&store), ["ad-16", "ad-17", "ad-18", "ad-19", "ev-99"]);
        assert!(stats.last_drop.unwrap().reason.contains("queue_max_admits (4)"));
    }

    /// The cap drops the record a lane is sending; the lane's verdict must neither write it
    /// back nor count it again.
    #[test]
    fn a_record_dropped_in_flight_is_not_revived_or_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let capacity = Capacity {
            max_records: 5,
            max_bytes: 1 << 20,
            max_admits: 2,
        };
        let first: Vec<_> = (0..5).map(event).collect();
        store.enqueue(&first, capacity).unwrap();
        let in_flight = store.outbox_head(Lane::Event).unwrap().unwrap();
        let more: Vec<_> = (5..11).map(event).collect();
        store.enqueue(&more, capacity).unwrap();
        let mut retried = in_flight.value.clone();
        retried.attempts = 1;
        store.outbox_update(in_flight.key, &retried).unwrap();
        let dead = DeadLetter {
            queued: in_flight.value.clone(),
            status: Some(422),
            reason: "rejected".into(),
            detail: "test".into(),
            dead_at: Timestamp::now(),
        };
        store.outbox_kill(in_flight.key, &dead).unwrap();
        store.outbox_remove(Lane::Event, in_flight.key).unwrap();
        let stats = store.outbox_stats().unwrap();
        assert_eq!(stats.pending, 5);
        assert_eq!(stats.dropped_events, 6, "exactly the six dropped");
        assert_eq!(stats.dead, 0, "nothing revived into the dead letters");
        assert!(!ids(&store).contains(&in_flight.value.id));
    }

    #[test]
    fn byte_cap_is_enforced_and_tracked_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let one = format::encode(&event(1)).len() as u64 + 8;
        let cap = Capacity {
            max_records: 1000,
            max_bytes: one * 5,
            max_admits: 10,
        };
        for n in 0..20 {
            store.enqueue(&[event(n)], cap).unwrap();
        }
        let stats = store.outbox_stats().unwrap();
        assert!(stats.pending <= 5 && stats.pending >= 4, "{stats:?}");
        assert!(stats.pending_bytes <= cap.max_bytes);
        let head = store.outbox_head(Lane::Event).unwrap().unwrap();
        store.outbox_remove(Lane::Event, head.key).unwrap();
        let after = store.outbox_stats().unwrap();
        assert_eq!(after.pending, stats.pending - 1);
        assert!(after.pending_bytes < stats.pending_bytes);
        // A fresh count from disk agrees with the incremental one.
        drop(store);
        let reopened = open(&dir).outbox_stats().unwrap();
        assert_eq!(reopened.pending_bytes, after.pending_bytes);
        assert_eq!(reopened.lost_records, 0);
    }

    #[test]
    fn dead_letters_can_be_listed_retried_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let keys = store.enqueue(&[admit(1), event(2), event(3)], ROOMY).unwrap();
        for (key, reason) in [(keys[0], "expired"), (keys[1], "forbidden")] {
            let queued = store
                .outbox_list(10)
                .unwrap()
                .into_iter()
                .find(|e| e.key == key)
                .unwrap()
                .value;
            let dead = DeadLetter {
                queued,
                status: None,
                reason: reason.into(),
                detail: "test".into(),
                dead_at: Timestamp::from_second(1_800_000_100).unwrap(),
            };
            store.outbox_kill(key, &dead).unwrap();
        }
        assert_eq!(ids(&store), ["ev-3"]);
        let dead = store.dead_list(10).unwrap();
        assert_eq!(
            dead.iter().map(|d| d.value.reason.as_str()).collect::<Vec<_>>(),
            ["expired", "forbidden"]
        );

        assert_eq!(store.dead_retry(Some("ev-2")).unwrap(), 1);
        assert_eq!(ids(&store), ["ev-3", "ev-2"]);
        assert_eq!(store.dead_retry(Some("nope")).unwrap(), 0);
        assert_eq!(store.dead_purge().unwrap(), 1);
        let stats = store.outbox_stats().unwrap();
        assert_eq!((stats.pending, stats.dead), (2, 0));
        drop(store);
        assert_eq!(
            open(&dir).outbox_stats().unwrap().lost_records,
            0,
            "counters agree after all that"
        );
    }

    #[test]
    fn local_event_log_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let events: Vec<AuditEvent> = (0..10)
            .map(|n| match event(n).call {
                Call::Event { event } => event,
                Call::Admit { .. } => unreachable!(),
            })
            .collect();
        store.event_log_append(&events, 4).unwrap();
        let kept: Vec<_> = store
            .event_log(100)
            .unwrap()
            .into_iter()
            .map(|e| e.value.person_id)
            .collect();
        assert_eq!(kept, [Some(6), Some(7), Some(8), Some(9)]);
    }

    #[test]
    fn an_undecodable_head_is_set_aside_and_counted_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let keys = store.enqueue(&[event(1), event(2)], ROOMY).unwrap();
        store
            .queue
            .read(|conn| {
                conn.execute(
                    "UPDATE outbox SET body = x'7b6e6f' WHERE seq = ?1",
                    params![keys[0] as i64],
                )
            })
            .unwrap();
        assert_eq!(store.outbox_head(Lane::Event).unwrap().unwrap().value.id, "ev-2");
        let stats = store.outbox_stats().unwrap();
        assert_eq!((stats.pending, stats.lost_records), (1, 1));
    }

    #[test]
    fn a_queue_written_in_a_newer_format_is_set_aside_with_a_message_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&dir);
            store.enqueue(&[event(1), event(2)], ROOMY).unwrap();
            store
                .queue
                .read(|conn| conn.pragma_update(None, "user_version", format::FORMAT + 1))
                .unwrap();
        }
        let store = open(&dir);
        let report = store.open_report();
        assert_eq!(report.moved_aside.len(), 1, "{report:?}");
        assert!(
            report.moved_aside[0].contains("damaged/queue.sqlite"),
            "{report:?}"
        );
        let note = store.outbox_stats().unwrap().last_loss.unwrap();
        assert!(note.detail.contains("newer doorflow-agent"), "{}", note.detail);
        assert_eq!(store.outbox_stats().unwrap().pending, 0);
    }

    #[test]
    fn records_missing_from_the_database_are_detected_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&dir);
            let events: Vec<_> = (0..10).map(event).collect();
            store.enqueue(&events, ROOMY).unwrap();
            // Rows vanish behind the counters' back (as zeroed pages would make them).
            store
                .queue
                .read(|conn| conn.execute("DELETE FROM outbox WHERE seq % 3 = 0", []))
                .unwrap();
        }
        let stats = open(&dir).outbox_stats().unwrap();
        assert_eq!(stats.lost_records, 3);
        assert!(stats
            .last_loss
            .unwrap()
            .detail
            .contains("holds 7 records where its counters say 10"));
        assert_eq!(
            open(&dir).outbox_stats().unwrap().lost_records,
            3,
            "reported once"
        );
    }
}
