//! The audit writer: takes audit events from the door tasks, journals them, and makes them
//! durable — as queued calls in the store's outbox (events to the sink, admits to DoorFlow)
//! and, with no event sink configured, in the bounded local event log.
//!
//! It commits in groups: whatever has arrived while the previous commit ran is written in one
//! transaction with one fsync, so a burst of swipes costs one fsync, and the door tasks never
//! wait for the disk. Everything one decision produces (its admit, its event, its log entry) is
//! in the same transaction: a crash keeps all of it or none.

use crate::audit::AuditEvent;
use crate::config::UplinkConfig;
use crate::store::{Call, Capacity, Group, QueuedCall, Store, StoreError};
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Most events written per commit; bounds the latency of one group.
const MAX_GROUP: usize = 512;

/// A fresh random id in UUID v4 text form, sent as `Idempotency-Key`.
pub fn new_call_id() -> String {
    let bits = fastrand::u128(..);
    // Version 4, variant 10xx.
    let bits = (bits & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The outbox records one audit event becomes.
pub fn calls_for(event: &AuditEvent, uplink: &UplinkConfig, now: Timestamp) -> Vec<QueuedCall> {
    let queued = |call: Call| QueuedCall {
        id: new_call_id(),
        call,
        created_at: now,
        created_boot: Some(crate::clock::BootInstant::now()),
        attempts: 0,
        next_attempt_at: None,
        next_attempt_boot: None,
        last_error: None,
        hold: None,
    };
    let mut calls = Vec::new();
    if let (true, Some(channel_id), Some(person_id)) = (event.admit, event.channel_id, event.person_id) {
        calls.push(queued(Call::Admit {
            channel_id,
            person_id,
        }));
    }
    if uplink.events_url.is_some() {
        calls.push(queued(Call::Event { event: event.clone() }));
    }
    calls
}

/// How long to wait between attempts when the store refuses writes (disk full, I/O error).
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs until every sender is gone, then returns after writing what is left. `queued` is
/// bumped after each group so the uplink can start sending at once.
///
/// Every event is journaled the moment it arrives, before it is written: the journal is the
/// record of a door that opened while the store refuses writes. A group the store refuses is
/// kept and written again until it succeeds, and events arriving meanwhile are journaled at
/// once and wait in memory behind it (a disk-full spell must not hold their journal lines back
/// too, or a crash during it would leave no record at all). Once `stopping` is cancelled, what
/// still cannot be written is given up (it is in the journal) so the agent can stop.
pub async fn run_writer(
    store: Arc<Store>,
    uplink: UplinkConfig,
    events: mpsc::UnboundedReceiver<AuditEvent>,
    queued: Arc<watch::Sender<u64>>,
    feed: broadcast::Sender<AuditEvent>,
    stopping: CancellationToken,
) {
    let capacity = Capacity::from_config(&uplink);
    let mut inbox = Inbox {
        events,
        waiting: Vec::new(),
        closed: false,
    };
    while inbox.next_group().await {
        let group = inbox.take_group();
        let pending = PendingGroup::new(group, &uplink, Timestamp::now());
        let Some(written) =
            write_until_durable(&store, &uplink, capacity, pending, &stopping, &mut inbox).await
        else {
            if stopping.is_cancelled() && !inbox.waiting.is_empty() {
                tracing::error!(
                    events = inbox.waiting.len(),
                    "stopping with audit events the store refused; they are in the journal only"
                );
                inbox.waiting.clear();
            }
            continue;
        };
        queued.send_modify(|n| *n = n.wrapping_add(1));
        for event in written.events {
            // Nobody listening is fine.
            let _ = feed.send(event);
        }
        if inbox.waiting.is_empty() && inbox.events.is_empty() {
            let store = Arc::clone(&store);
            let _ = tokio::task::spawn_blocking(move || store.checkpoint_when_idle()).await;
        }
    }
}

/// The door tasks' events as the writer receives them: journaled on arrival, then waiting in
/// memory until a commit takes them.
struct Inbox {
    events: mpsc::UnboundedReceiver<AuditEvent>,
    /// Journaled, not yet written (in arrival order).
    waiting: Vec<AuditEvent>,
    /// Every sender is gone.
    closed: bool,
}

impl Inbox {
    /// Waits until there is something to write; `false` when every sender is gone and nothing
    /// is left.
    async fn next_group(&mut self) -> bool {
        if self.waiting.is_empty() && !self.closed {
            self.receive().await;
        }
        !self.waiting.is_empty()
    }

    /// Receives what has arrived (waiting for at least one event) and journals it.
    async fn receive(&mut self) {
        let mut arrived = Vec::new();
        if self.events.recv_many(&mut arrived, MAX_GROUP).await == 0 {
            self.closed = true;
            return;
        }
        for event in &arrived {
            event.log();
        }
        self.waiting.append(&mut arrived);
    }

    /// The next group to commit: at most `MAX_GROUP` of the waiting events, oldest first.
    fn take_group(&mut self) -> Vec<AuditEvent> {
        let rest = self.waiting.split_off(self.waiting.len().min(MAX_GROUP));
        std::mem::replace(&mut self.waiting, rest)
    }

    /// Journals (and keeps) what arrives until `deadline`.
    async fn receive_until(&mut self, deadline: tokio::time::Instant) {
        while !self.closed {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = self.receive() => {}
            }
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Writes `pending`, retrying with backoff while the store refuses; what arrives meanwhile is
/// journaled and kept in `inbox`. `None` when it was given up at shutdown.
async fn write_until_durable(
    store: &Arc<Store>,
    uplink: &UplinkConfig,
    capacity: Capacity,
    mut pending: PendingGroup,
    stopping: &CancellationToken,
    inbox: &mut Inbox,
) -> Option<PendingGroup> {
    let mut delay = RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        let (store, uplink) = (Arc::clone(store), uplink.clone());
        // The commit's fsync blocks; keep it off the async workers the doors run on.
        let attempt = tokio::task::spawn_blocking(move || {
            let result = pending.write(&store, &uplink, capacity);
            (pending, result)
        })
        .await;
        let error = match attempt {
            Ok((written, Ok(()))) => {
                if failures > 0 {
                    tracing::warn!(
                        events = written.events.len(),
                        failures,
                        "audit events are durable again"
                    );
                }
                return Some(written);
            }
            Ok((unwritten, Err(error))) => {
                pending = unwritten;
                error.to_string()
            }
            Err(join) => {
                tracing::error!(error = %join, "audit writer task failed; these events are in the journal only");
                return None;
            }
        };
        failures += 1;
        if stopping.is_cancelled() {
            tracing::error!(events = pending.events.len(), %error, "stopping with audit events the store refused; they are in the journal only");
            return None;
        }
        if failures == 1 || failures % 20 == 0 {
            tracing::error!(events = pending.events.len(), failures, %error, "could not make audit events durable; keeping them in memory and retrying");
        }
        inbox.receive_until(tokio::time::Instant::now() + delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One group of audit events on its way to disk, with the queued calls they become (built
/// once, so a retry after a refused commit queues the same calls with the same ids).
#[derive(Debug)]
pub struct PendingGroup {
    pub events: Vec<AuditEvent>,
    calls: Vec<QueuedCall>,
    /// Without an event sink the events go to the local log.
    log_locally: bool,
}

impl PendingGroup {
    pub fn new(events: Vec<AuditEvent>, uplink: &UplinkConfig, now: Timestamp) -> PendingGroup {
        let calls = events.iter().flat_map(|e| calls_for(e, uplink, now)).collect();
        PendingGroup {
            events,
            calls,
            log_locally: uplink.events_url.is_none(),
        }
    }

    /// Writes the group in one transaction (fsynced before it returns): the queued calls and,
    /// without a sink, the local log entries. A refused commit leaves nothing behind, so the
    /// same group can be written again.
    pub fn write(&self, store: &Store, uplink: &UplinkConfig, capacity: Capacity) -> Result<(), StoreError> {
        let log: &[AuditEvent] = if self.log_locally { &self.events } else { &[] };
        if self.calls.is_empty() && log.is_empty() {
            return Ok(());
        }
        store
            .commit_group(Group {
                calls: &self.calls,
                log,
                log_max: uplink.local_event_log_max.get(),
                capacity,
            })
            .map(|_| ())
    }
}

/// Writes one group at once (tests, benchmarks and tools that queue events directly).
pub fn write_group(
    store: &Store,
    uplink: &UplinkConfig,
    capacity: Capacity,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    PendingGroup::new(events.to_vec(), uplink, Timestamp::now()).write(store, uplink, capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(admit: bool) -> AuditEvent {
        AuditEvent {
            id: 7,
            event_code: 10,
            reason: "authorised".into(),
            door: "front".into(),
            channel_id: Some(1340),
            person_id: Some(17),
            credential: Some("****17".into()),
            created_at: Timestamp::now(),
            admit,
            repeats: 0,
            updated_at: None,
        }
    }

    #[test]
    fn ids_are_uuid_v4_and_distinct() {
        let a = new_call_id();
        let b = new_call_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn a_granted_admit_becomes_an_admit_and_an_event() {
        let uplink = UplinkConfig {
            events_url: Some(crate::config::ServiceUrl::parse("https://sink.example").unwrap()),
            ..Default::default()
        };
        let calls = calls_for(&event(true), &uplink, Timestamp::now());
        assert!(matches!(
            calls[0].call,
            Call::Admit {
                channel_id: 1340,
                person_id: 17
            }
        ));
        assert!(matches!(calls[1].call, Call::Event { .. }));
        assert_ne!(calls[0].id, calls[1].id);
        assert_eq!(calls_for(&event(false), &uplink, Timestamp::now()).len(), 1);
    }

    #[test]
    fn without_a_sink_events_go_to_the_local_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let uplink = UplinkConfig::default();
        let capacity = Capacity::from_config(&uplink);
        write_group(&store, &uplink, capacity, &[event(false), event(true)]).unwrap();
        let stats = store.outbox_stats().unwrap();
        assert_eq!(stats.pending, 1, "only the admit is queued");
        assert_eq!(store.event_log(10).unwrap().len(), 2);
    }
}
