//! Sync: pull people, credentials, types, groups, roles, reservations, channels and sites from
//! DoorFlow, build a new snapshot off to the side, store it, then swap it in. Any failure part
//! way (network, status, garbage, rate limit) leaves the last good snapshot in force.
//!
//! Two kinds of sync:
//! - *incremental* (every `sync.interval_s`): people and group reservations changed since the
//!   cursor (`since_utc`), laid over the current snapshot by id; credentials (the API has no
//!   `since` for them) and the small lists in full. A deleted person's credentials disappear
//!   from the full credential list, so they are denied at once.
//! - *full* (the first time, once `sync.full_interval_s` has passed since the last one, or
//!   whenever the doors hold no snapshot): everything,
//!   replacing the snapshot, which also drops people DoorFlow deleted (it keeps no tombstones).
//!
//! The cursor is the start of the last successful pull minus `CURSOR_OVERLAP`, so a record
//! updated while a pull ran, or stamped by a server clock a little behind ours, is fetched
//! again rather than missed.

use crate::doorflow::client::Client;
use crate::doorflow::error::{ApiError, Operation};
use crate::doorflow::models as api;
use crate::mutex::lock;
use crate::snapshot::{self, CredentialKind, ReservationState, SharedSnapshot, Snapshot, SnapshotParts};
use crate::status::{SyncStatus, SYNC_STATUS_KEY};
use crate::store::Store;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Per-endpoint page sizes: the API's maximums.
const PEOPLE_PER_PAGE: u32 = 100;
const LIST_PER_PAGE: u32 = 500;
/// Re-fetch window behind the cursor (clock skew between agent and server, in-flight edits).
const CURSOR_OVERLAP: SignedDuration = SignedDuration::from_secs(300);
/// Meta key of the sync cursor.
pub const CURSOR_KEY: &str = "sync.cursor";

/// Where incremental syncs start from, kept in the store so a restart does not force a full
/// pull of every person before the next reconcile is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// People and group reservations changed since this instant are pulled.
    pub since: Timestamp,
    /// When the last full sync started.
    pub last_full: Timestamp,
}

/// How much a sync pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Incremental { since: Timestamp },
}

impl SyncKind {
    /// Full when there is no cursor, the reconcile is due, or the doors hold no snapshot.
    pub fn choose(
        cursor: Option<Cursor>,
        have_snapshot: bool,
        full_interval: SignedDuration,
        now: Timestamp,
    ) -> SyncKind {
        match cursor {
            Some(cursor) if have_snapshot && now.duration_since(cursor.last_full) < full_interval => {
                SyncKind::Incremental { since: cursor.since }
            }
            _ => SyncKind::Full,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Incremental { .. } => "incremental",
        }
    }
}

/// Pulls what `kind` asks for. For an incremental pull, `people` and `group_reservations` hold
/// only the changed records (see `merge`).
pub async fn pull(client: &Client, kind: SyncKind) -> Result<SnapshotParts, ApiError> {
    let since: Vec<(&str, String)> = match kind {
        SyncKind::Full => Vec::new(),
        SyncKind::Incremental { since } => vec![("since_utc", since.to_string())],
    };
    let people: Vec<api::Person> = client
        .list(Operation::ListPeople, "/api/3/people", PEOPLE_PER_PAGE, &since)
        .await?;
    tracing::info!(people = people.len(), kind = kind.as_str(), "sync: people pulled");
    let credentials: Vec<api::Credential> = client
        .list(
            Operation::ListCredentials,
            "/api/3/credentials",
            LIST_PER_PAGE,
            &[],
        )
        .await?;
    tracing::info!(credentials = credentials.len(), "sync: credentials pulled");
    let types: Vec<api::CredentialType> = client
        .list(
            Operation::ListCredentialTypes,
            "/api/3/credential_types",
            LIST_PER_PAGE,
            &[],
        )
        .await?;
    let groups: Vec<api::Group> = client.get_all(Operation::ListGroups, "/api/3/groups").await?;
    let roles: Vec<api::Role> = client.get_all(Operation::ListRoles, "/api/3/roles").await?;
    let group_reservations: Vec<api::GroupReservation> = client
        .list(
            Operation::ListGroupReservations,
            "/api/3/group_reservations",
            LIST_PER_PAGE,
            &since,
        )
        .await?;
    let reservations: Vec<api::Reservation> = client
        .list(
            Operation::ListReservations,
            "/api/3/reservations",
            LIST_PER_PAGE,
            &[],
        )
        .await?;
    let channels: Vec<api::Channel> = client
        .list(Operation::ListChannels, "/api/3/channels", LIST_PER_PAGE, &[])
        .await?;
    let sites: Vec<api::Site> = client
        .list(Operation::ListSites, "/api/3/sites", LIST_PER_PAGE, &[])
        .await?;
    Ok(build_parts(
        Timestamp::now(),
        people,
        credentials,
        types,
        groups,
        roles,
        group_reservations,
        reservations,
        channels,
        sites,
    ))
}

/// Turns API records into the snapshot's decision fields.
#[allow(clippy::too_many_arguments)]
pub fn build_parts(
    synced_at: Timestamp,
    people: Vec<api::Person>,
    credentials: Vec<api::Credential>,
    types: Vec<api::CredentialType>,
    groups: Vec<api::Group>,
    roles: Vec<api::Role>,
    group_reservations: Vec<api::GroupReservation>,
    reservations: Vec<api::Reservation>,
    channels: Vec<api::Channel>,
    sites: Vec<api::Site>,
) -> SnapshotParts {
    SnapshotParts {
        synced_at: Some(synced_at),
        people: people
            .into_iter()
            .map(|p| snapshot::Person {
                id: p.id,
                enabled: p.enabled,
                valid_from: p.valid_from,
                valid_to: p.valid_to,
                roles: p.roles,
                groups: p.groups,
            })
            .collect(),
        // Mobile credentials have no value and never arrive over Wiegand.
        credentials: credentials
            .into_iter()
            .filter_map(|c| {
                Some(snapshot::Credential {
                    value: c.value.filter(|v| !v.is_empty())?,
                    id: c.id,
                    credential_type_id: c.credential_type_id,
                    person_id: c.person_id,
                    status: c.status,
                })
            })
            .collect(),
        credential_types: types
            .into_iter()
            .map(|t| snapshot::CredentialType {
                kind: CredentialKind::classify(&t.slug, &t.label),
                id: t.id,
                slug: t.slug,
            })
            .collect(),
        roles: roles
            .into_iter()
            .map(|r| snapshot::Role {
                id: r.id,
                shift_id: r.shift_id,
                channel_ids: r.channel_ids,
                group_ids: r.group_ids,
            })
            .collect(),
        groups: groups.into_iter().map(|g| snapshot::Group { id: g.id }).collect(),
        group_reservations: group_reservations
            .into_iter()
            .map(|r| snapshot::GroupReservation {
                id: r.id,
                person_id: r.person_id,
                start: r.start_time,
                end: r.end_time,
                state: match r.state.as_str() {
                    "active" => ReservationState::Active,
                    "pending" => ReservationState::Pending,
                    _ => ReservationState::Deactivated, // unknown states grant nothing
                },
                group_ids: r.group_ids,
            })
            .collect(),
        reservations: reservations
            .into_iter()
            .map(|r| snapshot::Reservation {
                id: r.id,
                person_id: r.person_id,
                start: r.start_time,
                end: r.end_time,
                channel_ids: r.channel_ids,
            })
            .collect(),
        channels: channels
            .into_iter()
            .map(|c| snapshot::Channel {
                id: c.id,
                mode: match c.mode.description.as_str() {
                    "unlock" => snapshot::ChannelMode::Unlock {
                        relock_at: c.mode.relock_at,
                    },
                    _ => snapshot::ChannelMode::Normal,
                },
                // A lockdown object without card details locks cards (deny on doubt).
                lockdown: c.lockdown.map(|l| snapshot::Lockdown {
                    cards: l.card_lockdown.is_none_or(|s| s.state),
                    rex: l.rex_lockdown.is_some_and(|s| s.state),
                }),
                site_id: c.site_id,
            })
            .collect(),
        sites: sites
            .into_iter()
            .map(|s| snapshot::Site {
                id: s.id,
                time_zone: s.time_zone,
            })
            .collect(),
        shifts: Vec::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("storing the snapshot did not finish: {0}")]
    Task(String),
    /// The agent is stopping; the sync was abandoned before it changed anything.
    #[error("the agent is stopping")]
    Stopped,
}

/// Lays changed people and group reservations over the previous snapshot's (by id); every
/// other list in `delta` is a full pull and replaces the previous one.
pub fn merge(previous: &SnapshotParts, mut delta: SnapshotParts) -> SnapshotParts {
    fn overlay<T: Clone>(old: &[T], new: Vec<T>, id: impl Fn(&T) -> u64) -> Vec<T> {
        let changed: std::collections::HashSet<u64> = new.iter().map(&id).collect();
        let mut merged: Vec<T> = old
            .iter()
            .filter(|r| !changed.contains(&id(r)))
            .cloned()
            .collect();
        merged.extend(new);
        merged
    }
    delta.people = overlay(&previous.people, delta.people, |p| p.id);
    delta.group_reservations = overlay(&previous.group_reservations, delta.group_reservations, |r| r.id);
    delta
}

/// One sync (full or incremental, see `SyncKind::choose`): pull, store, swap. Records the
/// outcome for `status`.
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
    /// The outcome of the last sync, for `status`.
    pub status: Arc<Mutex<SyncStatus>>,
    /// Whether DoorFlow answered the last call.
    pub online: Arc<AtomicBool>,
    /// Bumped when a sync succeeds, so a backing-off uplink retries at once.
    pub reachable: Arc<watch::Sender<u64>>,
    /// Cancelled when the agent stops: a sync in progress ends before its next request.
    pub stop: CancellationToken,
}

pub async fn sync_once(target: &SyncTarget, client: &Client) -> Result<(), SyncError> {
    let started = Timestamp::now();
    let cursor: Option<Cursor> = target.store.meta_get(CURSOR_KEY).ok().flatten();
    let current = target.snapshot.current();
    let full_interval = target.full_interval;
    let kind = SyncKind::choose(cursor, current.synced_at().is_some(), full_interval, started);
    let result = async {
        // Stopping ends a sync between requests, never inside the store write below.
        let pulled = target
            .stop
            .run_until_cancelled(pull(client, kind))
            .await
            .ok_or(SyncError::Stopped)??;
        let mut parts = match kind {
            SyncKind::Full => pulled,
            SyncKind::Incremental { .. } => merge(&current.to_parts(), pulled),
        };
        parts.shifts = target.shifts.clone();
        let store = Arc::clone(&target.store);
        let to_store = parts.clone();
        let header = tokio::task::spawn_blocking(move || store.save_snapshot(&to_store))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))??;
        target
            .snapshot
            .replace(Arc::new(Snapshot::new(parts, &target.time_zone)));
        let next = Cursor {
            since: started - CURSOR_OVERLAP,
            last_full: match (kind, cursor) {
                (SyncKind::Incremental { .. }, Some(cursor)) => cursor.last_full,
                _ => started,
            },
        };
        target.store.meta_put(CURSOR_KEY, &next)?;
        tracing::info!(
            kind = kind.as_str(),
            generation = header.generation,
            people = header.counts.people,
            credentials = header.counts.credentials,
            "sync complete; new snapshot in force"
        );
        Ok::<_, SyncError>(())
    }
    .await;
    let mut status = lock(&target.status).clone();
    match &result {
        Ok(()) => {
            target.online.store(true, Ordering::Relaxed);
            target.reachable.send_modify(|n| *n = n.wrapping_add(1));
            status.last_success = Some(Timestamp::now());
            status.last_error = None;
            status.last_kind = Some(kind.as_str().to_string());
            if kind == SyncKind::Full {
                status.last_full = status.last_success;
            }
        }
        Err(error) => {
            if matches!(error, SyncError::Stopped) {
                return result;
            }
            if matches!(error, SyncError::Api(ApiError::Transport { .. })) {
                target.online.store(false, Ordering::Relaxed);
            }
            tracing::warn!(%error, "sync failed; the previous snapshot stays in force");
            status.last_error = Some(error.to_string());
        }
    }
    *lock(&target.status) = status.clone();
    let _ = target.store.meta_put(SYNC_STATUS_KEY, &status);
    result
}

/// Syncs at start and then every `period` until `target.stop` is cancelled. A failed sync is
/// retried at the next interval; the doors keep deciding from the snapshot they have.
pub async fn run_loop(target: SyncTarget, client: Arc<Client>, period: std::time::Duration) {
    while !target.stop.is_cancelled() {
        let _ = sync_once(&target, &client).await;
        if target
            .stop
            .run_until_cancelled(tokio::time::sleep(period))
            .await
            .is_none()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn full_sync_when_there_is_no_cursor_no_snapshot_or_the_reconcile_is_due() {
        let hour = SignedDuration::from_secs(3600);
        let cursor = Cursor {
            since: t(9_000),
            last_full: t(8_000),
        };
        assert_eq!(SyncKind::choose(None, true, hour, t(10_000)), SyncKind::Full);
        assert_eq!(
            SyncKind::choose(Some(cursor), false, hour, t(10_000)),
            SyncKind::Full
        );
        assert_eq!(
            SyncKind::choose(Some(cursor), true, hour, t(10_000)),
            SyncKind::Incremental { since: t(9_000) }
        );
        assert_eq!(
            SyncKind::choose(Some(cursor), true, hour, t(8_000 + 3600)),
            SyncKind::Full
        );
    }

    #[test]
    fn an_incremental_pull_overlays_changed_people_and_replaces_the_full_lists() {
        let previous = SnapshotParts::synthetic(5);
        let mut delta = SnapshotParts::synthetic(0);
        let mut changed = previous.people[1].clone();
        changed.enabled = false;
        let mut added = previous.people[0].clone();
        added.id = 99;
        delta.people = vec![changed, added];
        // Credentials are a full pull: person 3's card is gone (deleted person or revoked).
        delta.credentials = previous
            .credentials
            .iter()
            .filter(|c| c.person_id != 3)
            .cloned()
            .collect();
        let merged = merge(&previous, delta);
        let mut ids: Vec<u64> = merged.people.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4, 5, 99], "untouched people stay, new ones join");
        assert!(!merged.people.iter().find(|p| p.id == 2).unwrap().enabled);
        assert_eq!(merged.credentials.len(), 4);
        assert!(merged.credentials.iter().all(|c| c.person_id != 3));
    }
}
