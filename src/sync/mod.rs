//! Sync: pull people, credentials, types, groups, roles, reservations, channels and sites from
//! DoorFlow into a staged snapshot in the store, then swap it in — in the store in one
//! transaction, then in memory. Any failure part way (network, status, garbage, a count that
//! does not add up, a rate limit that outlasts the retries) leaves the last good snapshot in
//! force.
//!
//! What is pulled is decided in `plan` (full, or incremental with the credentials pulled only
//! when due or changed). Each list is pulled by `lists`: pages staged as they arrive, ended by
//! the server's totals, a failed page asked again after the wait. `progress` says how far a
//! sync has got. The snapshot the doors decide from is rebuilt from the store after each
//! commit, record by record, so no sync ever holds the whole site in memory twice.
//!
//! Cadence: `sync.interval_s` from the start of one sync to the start of the next (a sync that
//! runs longer than the interval is followed by the next at the first interval boundary after
//! it ends, never back to back).

mod convert;
mod lists;
pub mod plan;

pub use lists::PAGE_ATTEMPTS;
pub use plan::{Cursor, SyncKind, CURSOR_OVERLAP};

use crate::clock::trusted::{TimeKeeper, ANCHOR_KEY};
use crate::doorflow::client::Client;
use crate::doorflow::error::{ApiError, Operation};
use crate::doorflow::models as api;
use crate::mutex::lock;
use crate::snapshot::{self, Record, RecordKind, SharedSnapshot, Snapshot, SnapshotBuilder};
use crate::status::{SyncProgress, SyncStatus, SYNC_STATUS_KEY};
use crate::store::{Merge, Staged, Store};
use jiff::{SignedDuration, Timestamp};
use lists::{Collect, ListSpec, Puller};
use plan::{CredentialsMark, CredentialsPlan};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Per-endpoint page sizes: the API's maximums.
const PEOPLE_PER_PAGE: u64 = 100;
const LIST_PER_PAGE: u64 = 500;
/// Meta key of the sync cursor.
pub const CURSOR_KEY: &str = "sync.cursor";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("storing the snapshot did not finish: {0}")]
    Task(String),
    #[error("staging the snapshot: {0}")]
    Staging(String),
    /// The list did not add up (the server's total against what arrived): nothing is swapped.
    #[error("the {list} list does not add up: {detail}")]
    Incomplete { list: &'static str, detail: String },
    /// The agent is stopping; the sync was abandoned before it changed anything.
    #[error("the agent is stopping")]
    Stopped,
}

/// What a sync reads and updates, handed over by the agent (the sync never sees the agent).
#[derive(Clone)]
pub struct SyncTarget {
    pub store: Arc<Store>,
    /// The snapshot the doors decide from; replaced when a sync succeeds.
    pub snapshot: Arc<SharedSnapshot>,
    /// Shifts from the config, carried into every snapshot.
    pub shifts: Vec<snapshot::Shift>,
    /// Zone for shifts when a channel has no site zone (`sync.time_zone`).
    pub time_zone: String,
    /// How long after a full sync the next one is due (`sync.full_interval_s`).
    pub full_interval: SignedDuration,
    /// How long after a full pull of the credentials the next one is due in an incremental
    /// sync (`sync.credentials_interval_s`).
    pub credentials_interval: SignedDuration,
    /// Ask for whole lists at once (`sync.skip_pagination`), paging when refused.
    pub skip_pagination: bool,
    /// The configured request rate, for the expected finish before the sync has its own.
    pub requests_per_minute: u32,
    /// Backoff before a failed page is asked again (`uplink.retry_base_ms` doubling up to
    /// `uplink.retry_cap_s`).
    pub retry_base: SignedDuration,
    pub retry_cap: SignedDuration,
    /// The outcome of the last sync, and the one in progress, for `status`.
    pub status: Arc<Mutex<SyncStatus>>,
    /// Whether DoorFlow answered the last call.
    pub online: Arc<AtomicBool>,
    /// Bumped when a sync succeeds, so a backing-off uplink retries at once.
    pub reachable: Arc<watch::Sender<u64>>,
    /// DoorFlow's time and the trusted-time floor: the cursor, the reconcile's and the
    /// credentials' due dates and the snapshot's stamp come from DoorFlow's clock, not the
    /// board's.
    pub clock: Arc<TimeKeeper>,
    /// Cancelled when the agent stops: a sync in progress ends before its next request.
    pub stop: CancellationToken,
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOutcome {
    pub kind: SyncKind,
    /// Whether the snapshot changed (a commit and a rebuild); `false` when DoorFlow had
    /// nothing new.
    pub changed: bool,
    /// Whether the credentials were pulled in full.
    pub credentials_pulled: bool,
}

/// The lists every sync pulls besides people and credentials, in order: small ones, kept in
/// memory and compared with the snapshot (group reservations are pulled `since` the cursor in
/// an incremental sync).
fn small_lists(kind: SyncKind) -> Vec<ListSpec> {
    let since = since_query(kind);
    let spec = |kind, operation, per_page, query| ListSpec {
        kind,
        operation,
        per_page,
        query,
    };
    vec![
        spec(
            RecordKind::CredentialTypes,
            Operation::ListCredentialTypes,
            LIST_PER_PAGE,
            vec![],
        ),
        spec(RecordKind::Groups, Operation::ListGroups, 0, vec![]),
        spec(RecordKind::Roles, Operation::ListRoles, 0, vec![]),
        spec(
            RecordKind::GroupReservations,
            Operation::ListGroupReservations,
            LIST_PER_PAGE,
            since,
        ),
        spec(
            RecordKind::Reservations,
            Operation::ListReservations,
            LIST_PER_PAGE,
            vec![],
        ),
        spec(
            RecordKind::Channels,
            Operation::ListChannels,
            LIST_PER_PAGE,
            vec![],
        ),
        spec(RecordKind::Sites, Operation::ListSites, LIST_PER_PAGE, vec![]),
    ]
}

fn since_query(kind: SyncKind) -> Vec<(&'static str, String)> {
    match kind {
        SyncKind::Full => Vec::new(),
        SyncKind::Incremental { since } => vec![("since_utc", since.to_string())],
    }
}

fn people_spec(kind: SyncKind) -> ListSpec {
    ListSpec {
        kind: RecordKind::People,
        operation: Operation::ListPeople,
        per_page: PEOPLE_PER_PAGE,
        query: since_query(kind),
    }
}

fn credentials_spec() -> ListSpec {
    ListSpec {
        kind: RecordKind::Credentials,
        operation: Operation::ListCredentials,
        per_page: LIST_PER_PAGE,
        query: Vec::new(),
    }
}

/// Requests a list of `count` records is expected to take.
fn requests_for(count: u64, per_page: u64, whole: bool) -> u64 {
    if whole || per_page == 0 {
        1
    } else {
        count.div_ceil(per_page).max(1)
    }
}

/// The kind's records in the doors' snapshot, as records (for comparing a small list).
fn held(snapshot: &Snapshot, kind: RecordKind) -> Vec<Record> {
    match kind {
        RecordKind::CredentialTypes => snapshot
            .credential_types()
            .iter()
            .cloned()
            .map(Record::CredentialType)
            .collect(),
        RecordKind::Roles => snapshot.roles().iter().cloned().map(Record::Role).collect(),
        RecordKind::Groups => snapshot.groups().iter().cloned().map(Record::Group).collect(),
        RecordKind::GroupReservations => snapshot
            .group_reservations()
            .iter()
            .cloned()
            .map(Record::GroupReservation)
            .collect(),
        RecordKind::Reservations => snapshot
            .reservations()
            .iter()
            .cloned()
            .map(Record::Reservation)
            .collect(),
        RecordKind::Channels => snapshot.channels().iter().cloned().map(Record::Channel).collect(),
        RecordKind::Sites => snapshot.sites().iter().cloned().map(Record::Site).collect(),
        RecordKind::Shifts => snapshot.shifts().iter().cloned().map(Record::Shift).collect(),
        RecordKind::People | RecordKind::Credentials => Vec::new(),
    }
}

/// `records` in key order, the last of each key kept (as the store would keep it).
fn by_key(records: Vec<Record>) -> Vec<Record> {
    let mut keyed: std::collections::BTreeMap<snapshot::RecordKey, Record> =
        std::collections::BTreeMap::new();
    for record in records {
        keyed.insert(record.key(), record);
    }
    keyed.into_values().collect()
}

/// Runs `op` on the store off the async workers.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| SyncError::Task(e.to_string()))?
        .map_err(SyncError::from)
}

/// One sync (full or incremental, see `SyncKind::choose`): pull into a staged snapshot,
/// commit, swap. Records the outcome for `status`.
pub async fn sync_once(target: &SyncTarget, client: &Client) -> Result<SyncOutcome, SyncError> {
    // DoorFlow's time, as far as the clock keeper knows it.
    let started = target.clock.doorflow_time(&target.clock.now());
    let timer = std::time::Instant::now();
    let cursor: Option<Cursor> = target.store.meta_get(CURSOR_KEY).ok().flatten();
    let current = target.snapshot.current();
    let kind = SyncKind::choose(
        cursor,
        current.synced_at().is_some(),
        target.full_interval,
        started,
    );
    lock(&target.status).progress = Some(SyncProgress::new(kind.as_str(), started));
    let staged = match blocking({
        let store = Arc::clone(&target.store);
        move || store.stage_snapshot()
    })
    .await
    {
        Ok(staged) => staged,
        Err(error) => {
            let result = Err(error);
            record_outcome(target, kind, timer, &result);
            return result;
        }
    };
    let mut puller = Puller::new(target, client, &staged);
    // Stopping ends a sync between requests, never inside a store write (those run on
    // blocking threads, which finish what they started).
    let pulled = target
        .stop
        .run_until_cancelled(pull(&mut puller, kind, cursor, &current, started))
        .await
        .unwrap_or(Err(SyncError::Stopped));
    let result = match pulled {
        Ok(plan) => commit(target, staged, kind, started, plan).await,
        Err(error) => {
            let store = Arc::clone(&target.store);
            let _ = tokio::task::spawn_blocking(move || store.abandon_snapshot(staged)).await;
            Err(error)
        }
    };
    record_outcome(target, kind, timer, &result);
    result
}

/// What a pull found, for the commit.
struct Pull {
    merges: Vec<(RecordKind, Merge)>,
    cursor: Cursor,
    credentials_pulled: bool,
}

async fn pull(
    puller: &mut Puller<'_>,
    kind: SyncKind,
    cursor: Option<Cursor>,
    current: &Arc<Snapshot>,
    started: Timestamp,
) -> Result<Pull, SyncError> {
    let target = puller.target;
    let whole = target.skip_pagination;
    let counts = current.counts();
    let credentials_plan = match (kind, cursor) {
        (SyncKind::Incremental { .. }, Some(cursor)) => {
            CredentialsPlan::choose(cursor.credentials, target.credentials_interval, started)
        }
        _ => CredentialsPlan::Pull,
    };
    let small = small_lists(kind);
    let small_requests = small.len() as u64 + 1;
    let credential_requests = match credentials_plan {
        CredentialsPlan::Pull => requests_for(counts.credentials, LIST_PER_PAGE, whole),
        CredentialsPlan::Probe { .. } => 1,
    };
    let mut merges = Vec::new();

    // People: all of them, or those changed since the cursor laid over the snapshot.
    let people = people_spec(kind);
    let (collect, merge) = match kind {
        SyncKind::Full => (Collect::Stage, Merge::Replace),
        SyncKind::Incremental { .. } => (Collect::Changed(Arc::clone(current)), Merge::Overlay),
    };
    let pulled = puller
        .pull::<api::Person>(&people, collect, credential_requests + small_requests)
        .await?;
    check_count(&people, kind == SyncKind::Full, &pulled, puller).await?;
    let (began, newest_updated) = (pulled.began, pulled.newest_updated);
    if kind == SyncKind::Full || pulled.staged > 0 {
        merges.push((RecordKind::People, merge));
    }

    // Credentials: in full, or a one-item probe that may call for it.
    let pull_credentials = match credentials_plan {
        CredentialsPlan::Pull => true,
        CredentialsPlan::Probe { position, mark } => {
            let (total, last) = lists::probe_credentials(puller, position).await?;
            let changed = plan::credentials_changed(&mark, total, last);
            if changed {
                tracing::info!(
                    before = mark.total,
                    now = ?total,
                    "sync: the credential list changed; pulling it in full"
                );
            }
            changed
        }
    };
    let mut mark = None;
    if pull_credentials {
        let spec = credentials_spec();
        let pulled = puller
            .pull::<api::Credential>(&spec, Collect::Stage, small_requests)
            .await?;
        check_count(&spec, true, &pulled, puller).await?;
        merges.push((RecordKind::Credentials, Merge::Replace));
        mark = Some(CredentialsMark {
            at: started,
            total: pulled.total.unwrap_or(pulled.received),
            last: pulled.last,
        });
    }

    // The small lists, written only when they differ from what the doors hold.
    let mut left = small.len() as u64;
    for spec in &small {
        left -= 1;
        let pulled = match spec.kind {
            RecordKind::CredentialTypes => {
                puller
                    .pull::<api::CredentialType>(spec, Collect::Keep, left)
                    .await?
            }
            RecordKind::Groups => puller.pull::<api::Group>(spec, Collect::Keep, left).await?,
            RecordKind::Roles => puller.pull::<api::Role>(spec, Collect::Keep, left).await?,
            RecordKind::GroupReservations => {
                puller
                    .pull::<api::GroupReservation>(spec, Collect::Keep, left)
                    .await?
            }
            RecordKind::Reservations => puller.pull::<api::Reservation>(spec, Collect::Keep, left).await?,
            RecordKind::Channels => puller.pull::<api::Channel>(spec, Collect::Keep, left).await?,
            _ => puller.pull::<api::Site>(spec, Collect::Keep, left).await?,
        };
        let overlay = spec.kind == RecordKind::GroupReservations && kind != SyncKind::Full;
        let records = by_key(pulled.kept);
        if !overlay && spec.per_page > 0 {
            if let Some(total) = pulled.total.filter(|t| *t != records.len() as u64) {
                return Err(SyncError::Incomplete {
                    list: spec.kind.as_str(),
                    detail: format!("the server said {total}, {} distinct arrived", records.len()),
                });
            }
        }
        let held = by_key(held(current, spec.kind));
        let changed: Vec<Record> = if overlay {
            records.into_iter().filter(|r| !held.contains(r)).collect()
        } else if records != held || kind == SyncKind::Full {
            records
        } else {
            continue;
        };
        if changed.is_empty() && overlay {
            continue;
        }
        stage(puller, changed).await?;
        merges.push((spec.kind, if overlay { Merge::Overlay } else { Merge::Replace }));
    }

    // Shifts come from the config.
    let shifts: Vec<Record> = target.shifts.iter().cloned().map(Record::Shift).collect();
    if kind == SyncKind::Full || by_key(shifts.clone()) != by_key(held(current, RecordKind::Shifts)) {
        stage(puller, shifts).await?;
        merges.push((RecordKind::Shifts, Merge::Replace));
    }
    puller.log_progress(true);
    Ok(Pull {
        merges,
        cursor: Cursor::after(cursor, kind, began, newest_updated, started, mark),
        credentials_pulled: pull_credentials,
    })
}

async fn stage(puller: &Puller<'_>, records: Vec<Record>) -> Result<(), SyncError> {
    let store = Arc::clone(&puller.target.store);
    let staged = puller.staged.clone();
    blocking(move || store.stage_records(&staged, &records)).await?;
    Ok(())
}

/// A list pulled in full must hold as many distinct records as the server said it has.
async fn check_count(
    spec: &ListSpec,
    full: bool,
    pulled: &lists::Pulled,
    puller: &Puller<'_>,
) -> Result<(), SyncError> {
    let Some(total) = pulled.total.filter(|_| full) else {
        return Ok(());
    };
    let store = Arc::clone(&puller.target.store);
    let staged = puller.staged.clone();
    let kind = spec.kind;
    let distinct = blocking(move || store.staged_count(&staged, kind)).await?;
    if distinct != total {
        return Err(SyncError::Incomplete {
            list: spec.kind.as_str(),
            detail: format!(
                "the server said {total}, {distinct} distinct arrived ({} in all)",
                pulled.received
            ),
        });
    }
    Ok(())
}

/// Commits what the pull staged (or, when nothing changed, only the cursor), then rebuilds
/// the doors' snapshot from the store.
async fn commit(
    target: &SyncTarget,
    staged: Staged,
    kind: SyncKind,
    started: Timestamp,
    pull: Pull,
) -> Result<SyncOutcome, SyncError> {
    let mut meta = vec![(CURSOR_KEY, serde_json::to_value(pull.cursor).unwrap_or_default())];
    // The trusted-time floor survives a restart with the snapshot it came with.
    if let Some(anchor) = target.clock.anchor() {
        meta.push((ANCHOR_KEY, serde_json::to_value(anchor).unwrap_or_default()));
    }
    let outcome = SyncOutcome {
        kind,
        changed: !pull.merges.is_empty(),
        credentials_pulled: pull.credentials_pulled,
    };
    let store = Arc::clone(&target.store);
    if pull.merges.is_empty() {
        blocking(move || {
            store.abandon_snapshot(staged)?;
            store.mark_synced(started, &meta)
        })
        .await?;
        target.snapshot.current().mark_synced(started);
        tracing::info!(kind = kind.as_str(), "sync complete; nothing changed");
        return Ok(outcome);
    }
    let merges = pull.merges;
    let header = blocking(move || store.commit_snapshot(staged, &merges, Some(started), &meta)).await?;
    let store = Arc::clone(&target.store);
    let (shifts, zone) = (target.shifts.clone(), target.time_zone.clone());
    let snapshot = blocking(move || {
        let mut builder = SnapshotBuilder::new();
        store.load_snapshot_into(&mut builder)?;
        Ok(builder.finish(Some(shifts), &zone))
    })
    .await?;
    let index_bytes = snapshot.index_bytes();
    target.snapshot.replace(Arc::new(snapshot));
    crate::memory::release_freed_memory();
    tracing::info!(
        kind = kind.as_str(),
        generation = header.generation,
        people = header.counts.people,
        credentials = header.counts.credentials,
        index_bytes,
        "sync complete; new snapshot in force"
    );
    Ok(outcome)
}

/// Records the outcome for `status` (and in the store, for a stopped agent's `status`).
fn record_outcome(
    target: &SyncTarget,
    kind: SyncKind,
    timer: std::time::Instant,
    result: &Result<SyncOutcome, SyncError>,
) {
    let mut status = lock(&target.status).clone();
    status.progress = None;
    status.last_duration_ms = Some(timer.elapsed().as_millis() as u64);
    match result {
        Ok(_) => {
            target.online.store(true, Ordering::Relaxed);
            target.reachable.send_modify(|n| *n = n.wrapping_add(1));
            status.last_success = Some(target.clock.rules_time());
            status.last_error = None;
            status.last_kind = Some(kind.as_str().to_string());
            if kind == SyncKind::Full {
                status.last_full = status.last_success;
            }
        }
        Err(SyncError::Stopped) => {
            *lock(&target.status) = status;
            return;
        }
        Err(error) => {
            if matches!(error, SyncError::Api(ApiError::Transport { .. })) {
                target.online.store(false, Ordering::Relaxed);
            }
            let why = crate::error_chain::chain(error);
            tracing::warn!(error = %why, "sync failed ({why}); the previous snapshot stays in force");
            status.last_error = Some(why);
        }
    }
    *lock(&target.status) = status.clone();
    let _ = target.store.meta_put(SYNC_STATUS_KEY, &status);
}

/// Syncs at start and then every `period`, start to start, until `target.stop` is cancelled.
/// A sync that overruns its period is followed by the next at the first period boundary after
/// it ends. A failed sync is retried at the next boundary; the doors keep deciding from the
/// snapshot they have.
pub async fn run_loop(target: SyncTarget, client: Arc<Client>, period: std::time::Duration) {
    let period = period.max(std::time::Duration::from_millis(1));
    let mut next = tokio::time::Instant::now();
    loop {
        if target
            .stop
            .run_until_cancelled(tokio::time::sleep_until(next))
            .await
            .is_none()
        {
            return;
        }
        let started = tokio::time::Instant::now();
        let _ = sync_once(&target, &client).await;
        next = next_start(started, period, tokio::time::Instant::now());
    }
}

/// The first of `started + k × period` (k ≥ 1) that is not before `now`.
fn next_start(
    started: tokio::time::Instant,
    period: std::time::Duration,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    let mut next = started + period;
    if next < now {
        let behind = now - next;
        let periods = behind.as_nanos().div_ceil(period.as_nanos());
        next += period * periods.min(u32::MAX as u128) as u32;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_compare_by_key_whatever_their_order() {
        let role = |id| {
            Record::Role(snapshot::Role {
                id,
                shift_id: None,
                channel_ids: vec![],
                group_ids: vec![],
            })
        };
        assert_eq!(by_key(vec![role(2), role(1)]), by_key(vec![role(1), role(2)]));
        assert_eq!(by_key(vec![role(1), role(1)]).len(), 1);
    }

    #[test]
    fn the_next_sync_starts_an_interval_after_the_last_start_or_at_the_first_boundary_after_an_overrun() {
        let start = tokio::time::Instant::now();
        let s = std::time::Duration::from_secs;
        assert_eq!(next_start(start, s(60), start + s(5)), start + s(60));
        assert_eq!(next_start(start, s(60), start + s(60)), start + s(60));
        assert_eq!(next_start(start, s(60), start + s(61)), start + s(120));
        assert_eq!(next_start(start, s(60), start + s(130)), start + s(180));
    }

    #[test]
    fn requests_expected_for_a_list() {
        assert_eq!(requests_for(130_000, 500, false), 260);
        assert_eq!(requests_for(0, 500, false), 1);
        assert_eq!(requests_for(130_000, 500, true), 1);
        assert_eq!(requests_for(3, 0, false), 1);
    }
}
