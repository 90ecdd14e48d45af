//! The durable outbox: queued admit and event calls, their dead letters, and the bounded local
//! event log used when no event sink is configured.
//!
//! Calls wait in two lanes, one tree each: admits (to DoorFlow) and events (to the event sink).
//! Each lane is strictly first-in first-out, and the lanes are independent, so a sink that is
//! down does not hold back admits until they expire. Keys are sled ids (monotonic across
//! restarts, shared by both lanes) as big-endian bytes, so iteration order is arrival order.
//! Every mutation is flushed before it returns: a record the caller was told is queued survives
//! a power cut.

use super::{to_json, Store, StoreError};
use crate::audit::AuditEvent;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub(super) const DEAD_TREE: &str = "dead";
pub(super) const EVENT_LOG_TREE: &str = "event_log";
const DROPPED_KEY: &str = "outbox.dropped_events";

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

    fn tree_name(self) -> &'static str {
        match self {
            Lane::Admit => "outbox.admit",
            Lane::Event => "outbox.event",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Admit => "admit",
            Lane::Event => "event",
        }
    }
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_boot: Option<crate::clock::BootInstant>,
    pub attempts: u32,
    /// Wall-clock time before which it is not retried (for display, and for a wait carried
    /// across a reboot).
    pub next_attempt_at: Option<Timestamp>,
    /// `next_attempt_at` on the boot clock: what the lane really waits for within one boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_boot: Option<crate::clock::BootInstant>,
    pub last_error: Option<String>,
    /// Why it waits for `next_attempt_at` (persisted, so a restart waits the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<crate::uplink::policy::Hold>,
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

/// An outbox entry with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub key: u64,
    pub value: T,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStats {
    pub pending: u64,
    pub pending_admits: u64,
    pub pending_events: u64,
    pub pending_bytes: u64,
    pub dead: u64,
    pub dropped_events: u64,
}

/// What the outbox holds, kept in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub records: u64,
    pub bytes: u64,
}

/// Limits from `[uplink]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub max_records: u64,
    pub max_bytes: u64,
}

impl Store {
    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|e| self.engine(e))
    }

    /// Appends calls in one flush (group commit: many swipes at once cost one fsync). When the
    /// queue is over capacity the oldest *events* are dropped first, counted and logged; admits
    /// are never dropped for room. Returns the keys assigned.
    pub fn enqueue(&self, calls: &[QueuedCall], capacity: Capacity) -> Result<Vec<u64>, StoreError> {
        self.writable()?;
        let before = self.tally()?;
        let mut keys = Vec::with_capacity(calls.len());
        let mut batches = [sled::Batch::default(), sled::Batch::default()];
        let mut used = [false, false];
        let mut added = 0;
        // Keys in call order, so arrival order holds across lanes too.
        for call in calls {
            let key = self.db.generate_id().map_err(|e| self.engine(e))?;
            let value = to_json(call);
            added += entry_bytes(&key.to_be_bytes(), &value);
            let lane = call.call.lane() as usize;
            batches[lane].insert(&key.to_be_bytes(), value);
            used[lane] = true;
            keys.push(key);
        }
        for (lane, batch) in Lane::ALL.into_iter().zip(batches) {
            if used[lane as usize] {
                self.lane(lane)?.apply_batch(batch).map_err(|e| self.engine(e))?;
            }
        }
        self.set_tally(Tally {
            records: before.records + calls.len() as u64,
            bytes: before.bytes + added,
        });
        self.make_room(capacity)?;
        self.flush()?;
        Ok(keys)
    }

    /// Drops the oldest events until the queue fits. Admits are never dropped: they expire on
    /// their own within `uplink.admit_ttl_s`.
    fn make_room(&self, capacity: Capacity) -> Result<(), StoreError> {
        let Tally {
            mut records,
            mut bytes,
        } = self.tally()?;
        let fits = |records: u64, bytes: u64| records <= capacity.max_records && bytes <= capacity.max_bytes;
        if fits(records, bytes) {
            return Ok(());
        }
        let events = self.lane(Lane::Event)?;
        let mut dropped = 0u64;
        while !fits(records, bytes) {
            let Some((key, value)) = events.pop_min().map_err(|e| self.engine(e))? else {
                break;
            };
            records -= 1;
            bytes = bytes.saturating_sub(entry_bytes(&key, &value));
            dropped += 1;
        }
        self.set_tally(Tally { records, bytes });
        if dropped > 0 {
            let total = self.meta_get::<u64>(DROPPED_KEY)?.unwrap_or(0) + dropped;
            self.meta
                .insert(DROPPED_KEY.as_bytes(), to_json(&total))
                .map_err(|e| self.engine(e))?;
            tracing::error!(
                dropped,
                total_dropped = total,
                queue_pending = records,
                "OUTBOX FULL: oldest queued events dropped to make room"
            );
        }
        Ok(())
    }

    fn lane(&self, lane: Lane) -> Result<sled::Tree, StoreError> {
        self.tree(lane.tree_name())
    }

    /// Records and bytes in both lanes, counted once per process (sled's `len` is a full scan)
    /// and then kept up to date, so capacity checks and log lines cost nothing.
    fn tally(&self) -> Result<Tally, StoreError> {
        if let Some(tally) = *crate::mutex::lock(&self.outbox_tally) {
            return Ok(tally);
        }
        let mut tally = Tally::default();
        for lane in Lane::ALL {
            for entry in self.lane(lane)?.iter() {
                let (key, value) = entry.map_err(|e| self.engine(e))?;
                tally.records += 1;
                tally.bytes += entry_bytes(&key, &value);
            }
        }
        *crate::mutex::lock(&self.outbox_tally) = Some(tally);
        Ok(tally)
    }

    fn set_tally(&self, tally: Tally) {
        *crate::mutex::lock(&self.outbox_tally) = Some(tally);
    }

    /// Adjusts a known tally (an unknown one is counted on next use).
    fn adjust_tally(&self, records: i64, added: u64, removed: u64) {
        if let Some(tally) = crate::mutex::lock(&self.outbox_tally).as_mut() {
            tally.records = tally.records.saturating_add_signed(records);
            tally.bytes = (tally.bytes + added).saturating_sub(removed);
        }
    }

    /// Calls waiting in both lanes (cheap; for log lines).
    pub fn pending_count(&self) -> u64 {
        self.tally().map_or(0, |t| t.records)
    }

    /// The oldest queued call of a lane.
    pub fn outbox_head(&self, lane: Lane) -> Result<Option<Entry<QueuedCall>>, StoreError> {
        Ok(self.list(lane.tree_name(), 1)?.into_iter().next())
    }

    /// Up to `limit` queued calls of both lanes, oldest first.
    pub fn outbox_list(&self, limit: usize) -> Result<Vec<Entry<QueuedCall>>, StoreError> {
        let mut all = self.list(Lane::Admit.tree_name(), limit)?;
        all.extend(self.list(Lane::Event.tree_name(), limit)?);
        all.sort_unstable_by_key(|e| e.key);
        all.truncate(limit);
        Ok(all)
    }

    pub fn dead_list(&self, limit: usize) -> Result<Vec<Entry<DeadLetter>>, StoreError> {
        self.list(DEAD_TREE, limit)
    }

    fn list<T: serde::de::DeserializeOwned>(
        &self,
        tree: &str,
        limit: usize,
    ) -> Result<Vec<Entry<T>>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree(tree)?.iter() {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|e| self.engine(e))?;
            let Some(key) = decode_key(&key) else { continue };
            match serde_json::from_slice(&value) {
                Ok(value) => out.push(Entry { key, value }),
                Err(error) => tracing::error!(tree, key, %error, "unreadable outbox record skipped"),
            }
        }
        Ok(out)
    }

    /// Records a failed attempt (attempt count, next attempt time, error) durably.
    pub fn outbox_update(&self, key: u64, call: &QueuedCall) -> Result<(), StoreError> {
        self.writable()?;
        let key = key.to_be_bytes();
        let value = to_json(call);
        let added = entry_bytes(&key, &value);
        let old = self
            .lane(call.call.lane())?
            .insert(key, value)
            .map_err(|e| self.engine(e))?;
        let replaced = old.as_ref().map_or(0, |old| entry_bytes(&key, old));
        self.adjust_tally(if old.is_some() { 0 } else { 1 }, added, replaced);
        self.flush()
    }

    /// Removes a delivered call.
    pub fn outbox_remove(&self, lane: Lane, key: u64) -> Result<(), StoreError> {
        self.writable()?;
        let key = key.to_be_bytes();
        let old = self.lane(lane)?.remove(key).map_err(|e| self.engine(e))?;
        if let Some(old) = old {
            self.adjust_tally(-1, 0, entry_bytes(&key, &old));
        }
        self.flush()
    }

    /// Moves a call to the dead letters in one transaction.
    pub fn outbox_kill(&self, key: u64, dead: &DeadLetter) -> Result<(), StoreError> {
        self.writable()?;
        use sled::Transactional;
        let outbox = self.lane(dead.queued.call.lane())?;
        let dead_tree = self.tree(DEAD_TREE)?;
        let dead_key = self.db.generate_id().map_err(|e| self.engine(e))?;
        let value = to_json(dead);
        let removed = (&outbox, &dead_tree)
            .transaction(|(outbox, dead_tree)| {
                let old = outbox.remove(&key.to_be_bytes())?;
                dead_tree.insert(&dead_key.to_be_bytes(), value.clone())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(
                    old.map(|v| entry_bytes(&key.to_be_bytes(), &v)),
                )
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => self.engine(e),
                sled::transaction::TransactionError::Abort(()) => {
                    self.engine(sled::Error::Unsupported("aborted".into()))
                }
            })?;
        if let Some(removed) = removed {
            self.adjust_tally(-1, 0, removed);
        }
        self.flush()
    }

    /// Puts dead letters back at the end of the queue with a fresh attempt count. `None`
    /// retries all of them. Returns how many were requeued.
    pub fn dead_retry(&self, id: Option<&str>) -> Result<usize, StoreError> {
        self.writable()?;
        let dead_tree = self.tree(DEAD_TREE)?;
        let mut count = 0;
        for entry in self.dead_list(usize::MAX)? {
            if id.is_some_and(|id| id != entry.value.queued.id && id != entry.key.to_string()) {
                continue;
            }
            let mut queued = entry.value.queued;
            queued.attempts = 0;
            queued.next_attempt_at = None;
            queued.next_attempt_boot = None;
            queued.last_error = None;
            queued.hold = None;
            let key = self.db.generate_id().map_err(|e| self.engine(e))?.to_be_bytes();
            let value = to_json(&queued);
            self.adjust_tally(1, entry_bytes(&key, &value), 0);
            self.lane(queued.call.lane())?
                .insert(key, value)
                .map_err(|e| self.engine(e))?;
            dead_tree
                .remove(entry.key.to_be_bytes())
                .map_err(|e| self.engine(e))?;
            count += 1;
        }
        self.flush()?;
        Ok(count)
    }

    /// Deletes every dead letter; returns how many.
    pub fn dead_purge(&self) -> Result<usize, StoreError> {
        self.writable()?;
        let dead_tree = self.tree(DEAD_TREE)?;
        let count = dead_tree.len();
        dead_tree.clear().map_err(|e| self.engine(e))?;
        self.flush()?;
        Ok(count)
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let pending_admits = self.lane(Lane::Admit)?.len() as u64;
        let pending_events = self.lane(Lane::Event)?.len() as u64;
        Ok(OutboxStats {
            pending: pending_admits + pending_events,
            pending_admits,
            pending_events,
            pending_bytes: self.tally()?.bytes,
            dead: self.tree(DEAD_TREE)?.len() as u64,
            dropped_events: self.meta_get(DROPPED_KEY)?.unwrap_or(0),
        })
    }

    /// Appends to the bounded local event log (used without an event sink), dropping the
    /// oldest entries beyond `max`.
    pub fn event_log_append(&self, events: &[AuditEvent], max: u64) -> Result<(), StoreError> {
        self.writable()?;
        let log = self.tree(EVENT_LOG_TREE)?;
        for event in events {
            let key = self.db.generate_id().map_err(|e| self.engine(e))?;
            log.insert(key.to_be_bytes(), to_json(event))
                .map_err(|e| self.engine(e))?;
        }
        while log.len() as u64 > max {
            if log.pop_min().map_err(|e| self.engine(e))?.is_none() {
                break;
            }
        }
        self.flush()
    }

    pub fn event_log(&self, limit: usize) -> Result<Vec<Entry<AuditEvent>>, StoreError> {
        self.list(EVENT_LOG_TREE, limit)
    }
}

fn decode_key(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Capacity = Capacity {
        max_records: 1000,
        max_bytes: 1 << 20,
    };

    fn event(n: u64) -> QueuedCall {
        QueuedCall {
            id: format!("ev-{n}"),
            call: Call::Event {
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
                },
            },
            created_at: Timestamp::from_second(1_800_000_000).unwrap(),
            created_boot: None,
            attempts: 0,
            next_attempt_at: None,
            next_attempt_boot: None,
            last_error: None,
            hold: None,
        }
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
            store.outbox_update(key, &call).unwrap();
        }
        let head = open(&dir).outbox_head(Lane::Event).unwrap().unwrap().value;
        assert_eq!(head.attempts, 3);
        assert_eq!(head.next_attempt_at.unwrap().as_second(), 1_900_000_000);
    }

    #[test]
    fn full_queue_drops_oldest_events_never_admits() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let tight = Capacity {
            max_records: 3,
            max_bytes: 1 << 20,
        };
        store.enqueue(&[admit(1), event(2), event(3)], tight).unwrap();
        store.enqueue(&[event(4), admit(5)], tight).unwrap();
        assert_eq!(ids(&store), ["ad-1", "ev-4", "ad-5"]);
        assert_eq!(store.outbox_stats().unwrap().dropped_events, 2);
    }

    #[test]
    fn byte_cap_is_enforced_and_tracked_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let one = serde_json::to_vec(&event(1)).unwrap().len() as u64 + 8;
        let cap = Capacity {
            max_records: 1000,
            max_bytes: one * 5,
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
}
