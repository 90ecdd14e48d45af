//! Sync: pull people, credentials, types, groups, roles, reservations, channels and sites from
//! DoorFlow, build a new snapshot off to the side, store it, then swap it in. Any failure part
//! way (network, status, garbage, rate limit) leaves the last good snapshot in force.

use crate::agent::{config_shifts, lock, Agent};
use crate::doorflow::client::Client;
use crate::doorflow::error::{ApiError, Operation};
use crate::doorflow::models as api;
use crate::snapshot::{self, CredentialKind, ReservationState, Snapshot, SnapshotParts};
use crate::status::SYNC_STATUS_KEY;
use jiff::Timestamp;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Per-endpoint page sizes: the API's maximums.
const PEOPLE_PER_PAGE: u32 = 100;
const LIST_PER_PAGE: u32 = 500;

/// Pulls everything and returns the new snapshot content.
pub async fn pull(client: &Client) -> Result<SnapshotParts, ApiError> {
    let people: Vec<api::Person> = client
        .list(Operation::ListPeople, "/api/3/people", PEOPLE_PER_PAGE, &[])
        .await?;
    tracing::info!(people = people.len(), "sync: people pulled");
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
            &[],
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
}

/// One full sync: pull, store, swap. Records the outcome for `status`.
pub async fn sync_once(agent: &Arc<Agent>, client: &Client) -> Result<(), SyncError> {
    let result = async {
        let mut parts = pull(client).await?;
        parts.shifts = config_shifts(&agent.config);
        let store = Arc::clone(&agent.store);
        let to_store = parts.clone();
        let header = tokio::task::spawn_blocking(move || store.save_snapshot(&to_store))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))??;
        agent
            .snapshot
            .replace(Arc::new(Snapshot::new(parts, &agent.config.sync.time_zone)));
        tracing::info!(
            generation = header.generation,
            people = header.counts.people,
            credentials = header.counts.credentials,
            "sync complete; new snapshot in force"
        );
        Ok::<_, SyncError>(())
    }
    .await;
    let mut status = lock(&agent.sync_status).clone();
    match &result {
        Ok(()) => {
            agent.online.store(true, Ordering::Relaxed);
            agent.reachable.send_modify(|n| *n = n.wrapping_add(1));
            status.last_success = Some(Timestamp::now());
            status.last_error = None;
        }
        Err(error) => {
            if matches!(error, SyncError::Api(ApiError::Transport { .. })) {
                agent.online.store(false, Ordering::Relaxed);
            }
            tracing::warn!(%error, "sync failed; the previous snapshot stays in force");
            status.last_error = Some(error.to_string());
        }
    }
    *lock(&agent.sync_status) = status.clone();
    let _ = agent.store.meta_put(SYNC_STATUS_KEY, &status);
    result
}

/// Syncs at start and then every `sync.interval_s` until the task is dropped. A failed sync is
/// retried at the next interval; the doors keep deciding from the snapshot they have.
pub async fn run_loop(agent: Arc<Agent>, client: Arc<Client>) {
    let period = std::time::Duration::from_secs(agent.config.sync.interval_s);
    loop {
        let _ = sync_once(&agent, &client).await;
        tokio::time::sleep(period).await;
    }
}
