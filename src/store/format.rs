//! The on-disk shapes of everything the store keeps, kept apart from the in-memory model so the
//! model can change without making stored data unreadable.
//!
//! Every stored record is JSON of one of the `*V1` types below. A snapshot header carries the
//! format number (`format`); the queue database carries it as SQLite's `user_version`; the last
//! good snapshot file carries it in its first line.
//!
//! Format history:
//! - **1**: the records as doorflow-agent 0.1.0 wrote them. 0.1.0 put no format number in the
//!   snapshot header, so a header without one is format 1.
//!
//! A change to the model is absorbed by the conversions here (`to_disk` / `from_disk`). A change
//! to the bytes adds a format number, a `*V2` type where needed and a conversion from V1, so an
//! older store still opens. A store written in a newer format than [`FORMAT`] is refused with a
//! message that says so, never misread.

use super::queue::Hold;
use crate::audit::AuditEvent;
use crate::clock::BootInstant;
use crate::snapshot::*;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The newest format this binary reads and the one it writes.
pub const FORMAT: u32 = 1;

/// A model type and its on-disk shape.
pub trait DiskRecord: Sized {
    type Disk: Serialize + DeserializeOwned;
    fn to_disk(&self) -> Self::Disk;
    fn from_disk(disk: Self::Disk) -> Self;
}

/// Encodes a model value in its on-disk shape.
pub fn encode<T: DiskRecord>(value: &T) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec(&value.to_disk()).unwrap_or_default()
}

/// Decodes a stored record into the model.
pub fn decode<T: DiskRecord>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice::<T::Disk>(bytes).map(T::from_disk)
}

fn legacy_format() -> u32 {
    1
}

/// What the header of a stored snapshot says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeaderV1 {
    /// Absent in stores written by 0.1.0, which wrote format 1.
    #[serde(default = "legacy_format")]
    pub format: u32,
    pub generation: u64,
    pub synced_at: Option<Timestamp>,
    pub written_at: Timestamp,
    pub counts: CountsV1,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsV1 {
    pub people: u64,
    pub credentials: u64,
    pub credential_types: u64,
    pub roles: u64,
    pub groups: u64,
    pub group_reservations: u64,
    pub reservations: u64,
    pub channels: u64,
    pub sites: u64,
    pub shifts: u64,
}

impl DiskRecord for SnapshotCounts {
    type Disk = CountsV1;
    fn to_disk(&self) -> CountsV1 {
        let c = self;
        CountsV1 {
            people: c.people,
            credentials: c.credentials,
            credential_types: c.credential_types,
            roles: c.roles,
            groups: c.groups,
            group_reservations: c.group_reservations,
            reservations: c.reservations,
            channels: c.channels,
            sites: c.sites,
            shifts: c.shifts,
        }
    }
    fn from_disk(c: CountsV1) -> Self {
        SnapshotCounts {
            people: c.people,
            credentials: c.credentials,
            credential_types: c.credential_types,
            roles: c.roles,
            groups: c.groups,
            group_reservations: c.group_reservations,
            reservations: c.reservations,
            channels: c.channels,
            sites: c.sites,
            shifts: c.shifts,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersonV1 {
    pub id: u64,
    pub enabled: bool,
    pub valid_from: Option<Timestamp>,
    pub valid_to: Option<Timestamp>,
    pub roles: Vec<u64>,
    pub groups: Vec<u64>,
}

impl DiskRecord for Person {
    type Disk = PersonV1;
    fn to_disk(&self) -> PersonV1 {
        PersonV1 {
            id: self.id,
            enabled: self.enabled,
            valid_from: self.valid_from,
            valid_to: self.valid_to,
            roles: self.roles.clone(),
            groups: self.groups.clone(),
        }
    }
    fn from_disk(d: PersonV1) -> Self {
        Person {
            id: d.id,
            enabled: d.enabled,
            valid_from: d.valid_from,
            valid_to: d.valid_to,
            roles: d.roles,
            groups: d.groups,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKindV1 {
    Card,
    Pin,
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialTypeV1 {
    pub id: u64,
    pub slug: String,
    pub kind: CredentialKindV1,
}

impl DiskRecord for CredentialType {
    type Disk = CredentialTypeV1;
    fn to_disk(&self) -> CredentialTypeV1 {
        CredentialTypeV1 {
            id: self.id,
            slug: self.slug.clone(),
            kind: match self.kind {
                CredentialKind::Card => CredentialKindV1::Card,
                CredentialKind::Pin => CredentialKindV1::Pin,
                CredentialKind::Other => CredentialKindV1::Other,
            },
        }
    }
    fn from_disk(d: CredentialTypeV1) -> Self {
        CredentialType {
            id: d.id,
            slug: d.slug,
            kind: match d.kind {
                CredentialKindV1::Card => CredentialKind::Card,
                CredentialKindV1::Pin => CredentialKind::Pin,
                CredentialKindV1::Other => CredentialKind::Other,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialV1 {
    pub id: String,
    pub credential_type_id: u64,
    pub person_id: u64,
    pub value: String,
    pub status: Option<String>,
}

impl DiskRecord for Credential {
    type Disk = CredentialV1;
    fn to_disk(&self) -> CredentialV1 {
        CredentialV1 {
            id: self.id.clone(),
            credential_type_id: self.credential_type_id,
            person_id: self.person_id,
            value: self.value.clone(),
            status: self.status.clone(),
        }
    }
    fn from_disk(d: CredentialV1) -> Self {
        Credential {
            id: d.id,
            credential_type_id: d.credential_type_id,
            person_id: d.person_id,
            value: d.value,
            status: d.status,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleV1 {
    pub id: u64,
    pub shift_id: Option<u64>,
    #[serde(default)]
    pub channel_ids: Vec<u64>,
    #[serde(default)]
    pub group_ids: Vec<u64>,
}

impl DiskRecord for Role {
    type Disk = RoleV1;
    fn to_disk(&self) -> RoleV1 {
        RoleV1 {
            id: self.id,
            shift_id: self.shift_id,
            channel_ids: self.channel_ids.clone(),
            group_ids: self.group_ids.clone(),
        }
    }
    fn from_disk(d: RoleV1) -> Self {
        Role {
            id: d.id,
            shift_id: d.shift_id,
            channel_ids: d.channel_ids,
            group_ids: d.group_ids,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupV1 {
    pub id: u64,
}

impl DiskRecord for Group {
    type Disk = GroupV1;
    fn to_disk(&self) -> GroupV1 {
        GroupV1 { id: self.id }
    }
    fn from_disk(d: GroupV1) -> Self {
        Group { id: d.id }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStateV1 {
    Pending,
    Active,
    Deactivated,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReservationV1 {
    pub id: u64,
    pub person_id: u64,
    pub start: Timestamp,
    pub end: Timestamp,
    pub state: ReservationStateV1,
    pub group_ids: Vec<u64>,
}

impl DiskRecord for GroupReservation {
    type Disk = GroupReservationV1;
    fn to_disk(&self) -> GroupReservationV1 {
        GroupReservationV1 {
            id: self.id,
            person_id: self.person_id,
            start: self.start,
            end: self.end,
            state: match self.state {
                ReservationState::Pending => ReservationStateV1::Pending,
                ReservationState::Active => ReservationStateV1::Active,
                ReservationState::Deactivated => ReservationStateV1::Deactivated,
            },
            group_ids: self.group_ids.clone(),
        }
    }
    fn from_disk(d: GroupReservationV1) -> Self {
        GroupReservation {
            id: d.id,
            person_id: d.person_id,
            start: d.start,
            end: d.end,
            state: match d.state {
                ReservationStateV1::Pending => ReservationState::Pending,
                ReservationStateV1::Active => ReservationState::Active,
                ReservationStateV1::Deactivated => ReservationState::Deactivated,
            },
            group_ids: d.group_ids,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReservationV1 {
    pub id: u64,
    pub person_id: u64,
    pub start: Timestamp,
    pub end: Timestamp,
    pub channel_ids: Vec<u64>,
}

impl DiskRecord for Reservation {
    type Disk = ReservationV1;
    fn to_disk(&self) -> ReservationV1 {
        ReservationV1 {
            id: self.id,
            person_id: self.person_id,
            start: self.start,
            end: self.end,
            channel_ids: self.channel_ids.clone(),
        }
    }
    fn from_disk(d: ReservationV1) -> Self {
        Reservation {
            id: d.id,
            person_id: d.person_id,
            start: d.start,
            end: d.end,
            channel_ids: d.channel_ids,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ChannelModeV1 {
    Normal,
    Unlock { relock_at: Option<Timestamp> },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LockdownV1 {
    pub cards: bool,
    pub rex: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelV1 {
    pub id: u64,
    pub mode: ChannelModeV1,
    pub lockdown: Option<LockdownV1>,
    pub site_id: Option<u64>,
}

impl DiskRecord for Channel {
    type Disk = ChannelV1;
    fn to_disk(&self) -> ChannelV1 {
        ChannelV1 {
            id: self.id,
            mode: match &self.mode {
                ChannelMode::Normal => ChannelModeV1::Normal,
                ChannelMode::Unlock { relock_at } => ChannelModeV1::Unlock {
                    relock_at: *relock_at,
                },
            },
            lockdown: self.lockdown.map(|l| LockdownV1 {
                cards: l.cards,
                rex: l.rex,
            }),
            site_id: self.site_id,
        }
    }
    fn from_disk(d: ChannelV1) -> Self {
        Channel {
            id: d.id,
            mode: match d.mode {
                ChannelModeV1::Normal => ChannelMode::Normal,
                ChannelModeV1::Unlock { relock_at } => ChannelMode::Unlock { relock_at },
            },
            lockdown: d.lockdown.map(|l| Lockdown {
                cards: l.cards,
                rex: l.rex,
            }),
            site_id: d.site_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteV1 {
    pub id: u64,
    pub time_zone: Option<String>,
}

impl DiskRecord for Site {
    type Disk = SiteV1;
    fn to_disk(&self) -> SiteV1 {
        SiteV1 {
            id: self.id,
            time_zone: self.time_zone.clone(),
        }
    }
    fn from_disk(d: SiteV1) -> Self {
        Site {
            id: d.id,
            time_zone: d.time_zone,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ShiftWindowV1 {
    pub day: u8,
    pub start_s: u32,
    pub end_s: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShiftV1 {
    pub id: u64,
    pub windows: Vec<ShiftWindowV1>,
}

impl DiskRecord for Shift {
    type Disk = ShiftV1;
    fn to_disk(&self) -> ShiftV1 {
        ShiftV1 {
            id: self.id,
            windows: self
                .windows
                .iter()
                .map(|w| ShiftWindowV1 {
                    day: w.day,
                    start_s: w.start_s,
                    end_s: w.end_s,
                })
                .collect(),
        }
    }
    fn from_disk(d: ShiftV1) -> Self {
        Shift {
            id: d.id,
            windows: d
                .windows
                .into_iter()
                .map(|w| ShiftWindow {
                    day: w.day,
                    start_s: w.start_s,
                    end_s: w.end_s,
                })
                .collect(),
        }
    }
}

/// Encodes a snapshot record in its on-disk shape.
pub fn encode_record(record: &Record) -> Vec<u8> {
    match record {
        Record::Person(r) => encode(r),
        Record::Credential(r) => encode(r),
        Record::CredentialType(r) => encode(r),
        Record::Role(r) => encode(r),
        Record::Group(r) => encode(r),
        Record::GroupReservation(r) => encode(r),
        Record::Reservation(r) => encode(r),
        Record::Channel(r) => encode(r),
        Record::Site(r) => encode(r),
        Record::Shift(r) => encode(r),
    }
}

/// Decodes a stored snapshot record of `kind`.
pub fn decode_record(kind: RecordKind, bytes: &[u8]) -> Result<Record, serde_json::Error> {
    Ok(match kind {
        RecordKind::People => Record::Person(decode(bytes)?),
        RecordKind::Credentials => Record::Credential(decode(bytes)?),
        RecordKind::CredentialTypes => Record::CredentialType(decode(bytes)?),
        RecordKind::Roles => Record::Role(decode(bytes)?),
        RecordKind::Groups => Record::Group(decode(bytes)?),
        RecordKind::GroupReservations => Record::GroupReservation(decode(bytes)?),
        RecordKind::Reservations => Record::Reservation(decode(bytes)?),
        RecordKind::Channels => Record::Channel(decode(bytes)?),
        RecordKind::Sites => Record::Site(decode(bytes)?),
        RecordKind::Shifts => Record::Shift(decode(bytes)?),
    })
}

/// A record's key as stored: its id as 8 big-endian bytes (so keys sort by id); a credential's
/// is its person's id so, then its own id.
pub fn encode_key(key: &RecordKey) -> Vec<u8> {
    match key {
        RecordKey::Id(id) => id.to_be_bytes().to_vec(),
        RecordKey::Credential(person_id, id) => {
            let mut bytes = person_id.to_be_bytes().to_vec();
            bytes.extend_from_slice(id.as_bytes());
            bytes
        }
    }
}

/// Where a snapshot's records are read from (the snapshot database, the last good file), kind
/// by kind in [`RecordKind::ALL`] order.
pub trait RecordSource {
    /// The next record of `kind` as (a name for messages, its bytes); `None` after its last.
    fn next(&mut self, kind: RecordKind) -> Result<Option<(String, Vec<u8>)>, super::StoreError>;
}

/// What reading a snapshot found.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Records found per kind, readable or not (compared with the header's counts).
    pub found: SnapshotCounts,
    /// `kind/key: error` of each record left out.
    pub unreadable: Vec<String>,
}

/// Reads every record in [`RecordKind::ALL`] order into `sink`. A record that does not decode
/// is left out and named in `unreadable`: an unreadable person or credential denies only that
/// person's (or that credential's) swipes, never the whole site.
pub fn read_records(
    source: &mut dyn RecordSource,
    sink: &mut dyn SnapshotSink,
) -> Result<ReadReport, super::StoreError> {
    let mut report = ReadReport::default();
    for kind in RecordKind::ALL {
        let mut found = 0;
        while let Some((name, bytes)) = source.next(kind)? {
            found += 1;
            match decode_record(kind, &bytes) {
                Ok(record) => sink.record(record),
                Err(error) => report.unreadable.push(format!("{name}: {error}")),
            }
        }
        report.found.set(kind, found);
    }
    Ok(report)
}

/// A door event as queued and as kept in the local event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEventV1 {
    pub id: u64,
    pub event_code: u16,
    pub reason: String,
    pub door: String,
    pub channel_id: Option<u64>,
    pub person_id: Option<u64>,
    pub credential: Option<String>,
    pub created_at: Timestamp,
    pub admit: bool,
    /// Absent when 0 and `None`: records without them are what 0.1.0 wrote, and 0.1.0 reads
    /// records with them (it ignores fields it does not know).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DiskRecord for AuditEvent {
    type Disk = AuditEventV1;
    fn to_disk(&self) -> AuditEventV1 {
        AuditEventV1 {
            id: self.id,
            event_code: self.event_code,
            reason: self.reason.clone(),
            door: self.door.clone(),
            channel_id: self.channel_id,
            person_id: self.person_id,
            credential: self.credential.clone(),
            created_at: self.created_at,
            admit: self.admit,
            repeats: self.repeats,
            updated_at: self.updated_at,
        }
    }
    fn from_disk(d: AuditEventV1) -> Self {
        AuditEvent {
            id: d.id,
            event_code: d.event_code,
            reason: d.reason,
            door: d.door,
            channel_id: d.channel_id,
            person_id: d.person_id,
            credential: d.credential,
            created_at: d.created_at,
            admit: d.admit,
            repeats: d.repeats,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallV1 {
    Admit { channel_id: u64, person_id: u64 },
    Event { event: AuditEventV1 },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldV1 {
    RateLimited,
    ServerError,
    Unreachable,
    AuthRefused,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedCallV1 {
    pub id: String,
    pub call: CallV1,
    pub created_at: Timestamp,
    /// Added within format 1 (absent in older records: the wall clock decides then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_boot: Option<BootInstantV1>,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_boot: Option<BootInstantV1>,
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldV1>,
}

impl DiskRecord for super::QueuedCall {
    type Disk = QueuedCallV1;
    fn to_disk(&self) -> QueuedCallV1 {
        QueuedCallV1 {
            id: self.id.clone(),
            call: match &self.call {
                super::Call::Admit {
                    channel_id,
                    person_id,
                } => CallV1::Admit {
                    channel_id: *channel_id,
                    person_id: *person_id,
                },
                super::Call::Event { event } => CallV1::Event {
                    event: event.to_disk(),
                },
            },
            created_at: self.created_at,
            created_boot: self.created_boot.map(BootInstantV1::from),
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            next_attempt_boot: self.next_attempt_boot.map(BootInstantV1::from),
            last_error: self.last_error.clone(),
            hold: self.hold.map(|hold| match hold {
                Hold::RateLimited => HoldV1::RateLimited,
                Hold::ServerError => HoldV1::ServerError,
                Hold::Unreachable => HoldV1::Unreachable,
                Hold::AuthRefused => HoldV1::AuthRefused,
            }),
        }
    }
    fn from_disk(d: QueuedCallV1) -> Self {
        super::QueuedCall {
            id: d.id,
            call: match d.call {
                CallV1::Admit {
                    channel_id,
                    person_id,
                } => super::Call::Admit {
                    channel_id,
                    person_id,
                },
                CallV1::Event { event } => super::Call::Event {
                    event: AuditEvent::from_disk(event),
                },
            },
            created_at: d.created_at,
            created_boot: d.created_boot.map(Into::into),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            next_attempt_boot: d.next_attempt_boot.map(Into::into),
            last_error: d.last_error,
            hold: d.hold.map(|hold| match hold {
                HoldV1::RateLimited => Hold::RateLimited,
                HoldV1::ServerError => Hold::ServerError,
                HoldV1::Unreachable => Hold::Unreachable,
                HoldV1::AuthRefused => Hold::AuthRefused,
            }),
        }
    }
}

/// A point on the boot clock: the first 64 bits of the kernel's boot_id and ns since boot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BootInstantV1 {
    pub boot: u64,
    pub ns: u64,
}

impl From<BootInstant> for BootInstantV1 {
    fn from(at: BootInstant) -> Self {
        BootInstantV1 {
            boot: at.boot,
            ns: at.ns,
        }
    }
}

impl From<BootInstantV1> for BootInstant {
    fn from(at: BootInstantV1) -> Self {
        BootInstant {
            boot: at.boot,
            ns: at.ns,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterV1 {
    pub queued: QueuedCallV1,
    pub status: Option<u16>,
    pub reason: String,
    pub detail: String,
    pub dead_at: Timestamp,
}

impl DiskRecord for super::DeadLetter {
    type Disk = DeadLetterV1;
    fn to_disk(&self) -> DeadLetterV1 {
        DeadLetterV1 {
            queued: self.queued.to_disk(),
            status: self.status,
            reason: self.reason.clone(),
            detail: self.detail.clone(),
            dead_at: self.dead_at,
        }
    }
    fn from_disk(d: DeadLetterV1) -> Self {
        super::DeadLetter {
            queued: super::QueuedCall::from_disk(d.queued),
            status: d.status,
            reason: d.reason,
            detail: d.detail,
            dead_at: d.dead_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes exactly as doorflow-agent 0.1.0 wrote them (serde of its model types).
    #[test]
    fn records_written_by_0_1_0_decode() {
        let header: SnapshotHeaderV1 = serde_json::from_str(
            r#"{"generation":7,"synced_at":null,"written_at":"2026-11-30T05:00:00Z","counts":{"people":1,"credentials":1,"credential_types":1,"roles":1,"groups":0,"group_reservations":0,"reservations":0,"channels":1,"sites":0,"shifts":0}}"#,
        )
        .unwrap();
        assert_eq!(header.format, 1);
        let person: Person = decode(
            br#"{"id":17,"enabled":true,"valid_from":null,"valid_to":null,"roles":[1],"groups":[100]}"#,
        )
        .unwrap();
        assert_eq!(person.roles, [1]);
        let channel: Channel = decode(
            br#"{"id":1340,"mode":{"mode":"unlock","relock_at":null},"lockdown":{"cards":true,"rex":false},"site_id":null}"#,
        )
        .unwrap();
        assert_eq!(channel.mode, ChannelMode::Unlock { relock_at: None });
        let call: super::super::QueuedCall = decode(
            br#"{"id":"a","call":{"kind":"admit","channel_id":1340,"person_id":17},"created_at":"2026-11-30T05:00:00Z","attempts":2,"next_attempt_at":null,"last_error":"503","hold":"server_error"}"#,
        )
        .unwrap();
        assert_eq!(call.hold, Some(Hold::ServerError));
    }

    #[test]
    fn keys_sort_by_id_and_keep_a_persons_credentials_together() {
        let key = |k: RecordKey| encode_key(&k);
        assert!(key(RecordKey::Id(2)) < key(RecordKey::Id(10)));
        assert!(key(RecordKey::Id(255)) < key(RecordKey::Id(256)));
        let a = key(RecordKey::Credential(7, "zz".into()));
        let b = key(RecordKey::Credential(8, "aa".into()));
        assert!(a < b);
        assert_eq!(
            key(RecordKey::Credential(7, "x".into())),
            [0, 0, 0, 0, 0, 0, 0, 7, b'x']
        );
    }

    #[test]
    fn every_record_round_trips() {
        for record in SnapshotParts::synthetic(2).into_records() {
            assert_eq!(
                decode_record(record.kind(), &encode_record(&record)).unwrap(),
                record
            );
        }
        let parts = SnapshotParts::synthetic(3);
        for person in &parts.people {
            assert_eq!(&decode::<Person>(&encode(person)).unwrap(), person);
        }
        for credential in &parts.credentials {
            assert_eq!(&decode::<Credential>(&encode(credential)).unwrap(), credential);
        }
        let channel = Channel {
            id: 1,
            mode: ChannelMode::Unlock {
                relock_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
            },
            lockdown: Some(Lockdown {
                cards: true,
                rex: true,
            }),
            site_id: Some(4),
        };
        assert_eq!(decode::<Channel>(&encode(&channel)).unwrap(), channel);
    }
}
