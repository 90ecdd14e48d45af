//! The access snapshot: everything a swipe decision needs, held in memory and in the store.
//!
//! Only decision-relevant fields are kept (no names, e-mails or photos): it keeps the board's
//! memory small with 100,000 credentials and keeps personal data off the door controller.
//! People and credentials are held compactly (`index`: fixed-size slots, interned link sets
//! and values in one arena); the small lists as sorted vectors. Lookups are binary searches
//! that answer in well under a microsecond.
//!
//! The model types below (`Person`, `Credential`, ...) are what a sync produces and the store
//! converts to and from its on-disk format; a [`Snapshot`] is built from them one record at a
//! time through a [`SnapshotBuilder`].

mod index;

pub use index::{CredentialView, PersonView};

use jiff::civil::{DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: u64,
    pub enabled: bool,
    pub valid_from: Option<Timestamp>,
    pub valid_to: Option<Timestamp>,
    pub roles: Vec<u64>,
    pub groups: Vec<u64>,
}

/// What a credential type is presented as at a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Card,
    Pin,
    /// Mobile and other types that never arrive over Wiegand.
    Other,
}

impl CredentialKind {
    /// DoorFlow's credential types are account-defined; classify them by slug and label. A
    /// type with "pin" in its slug is entered on a keypad, mobile wallets never reach a
    /// Wiegand reader, and everything else is a card or fob.
    pub fn classify(slug: &str, label: &str) -> CredentialKind {
        let text = format!("{} {}", slug, label).to_ascii_lowercase();
        let words: Vec<&str> = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if words.contains(&"pin") {
            CredentialKind::Pin
        } else if ["mobile", "passflow", "wallet", "apple", "google", "hid_mobile"]
            .iter()
            .any(|w| words.contains(w))
        {
            CredentialKind::Other
        } else {
            CredentialKind::Card
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialType {
    pub id: u64,
    pub slug: String,
    pub kind: CredentialKind,
}

impl CredentialType {
    pub fn new(id: u64, slug: &str, kind: CredentialKind) -> CredentialType {
        CredentialType {
            id,
            slug: slug.into(),
            kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    pub credential_type_id: u64,
    pub person_id: u64,
    pub value: String,
    /// DoorFlow sets this only for mobile credentials; anything but `active` is refused.
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub id: u64,
    /// `None` means 24/7.
    pub shift_id: Option<u64>,
    /// Not in the public schema; used when the server sends them.
    #[serde(default)]
    pub channel_ids: Vec<u64>,
    #[serde(default)]
    pub group_ids: Vec<u64>,
}

impl Role {
    /// A role at any time (no shift) that names no channels or groups of its own.
    pub fn unrestricted(id: u64) -> Role {
        Role {
            id,
            shift_id: None,
            channel_ids: vec![],
            group_ids: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Pending,
    Active,
    Deactivated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReservation {
    pub id: u64,
    pub person_id: u64,
    pub start: Timestamp,
    pub end: Timestamp,
    pub state: ReservationState,
    pub group_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: u64,
    pub person_id: u64,
    pub start: Timestamp,
    pub end: Timestamp,
    pub channel_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ChannelMode {
    Normal,
    /// Released for everyone until `relock_at` (forever when `None`).
    Unlock {
        relock_at: Option<Timestamp>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockdown {
    /// Cards and PINs are rejected.
    pub cards: bool,
    /// The request-to-exit button is ignored.
    pub rex: bool,
}

/// What a channel asks of its door at one moment: DoorFlow's lockdown (of cards, of REX) wins
/// over unlock mode, and unlock mode lasts until `relock_at`. The one statement of these rules,
/// read by the decision (`access`) and by the door's relay mode (`door::DoorMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelState {
    /// Cards and PINs are refused.
    pub cards_locked_down: bool,
    /// The request-to-exit button is ignored (unless the door allows REX in a lockdown).
    pub rex_locked_down: bool,
    /// Held released for everyone (unlock mode, no lockdown of any kind).
    pub unlocked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: u64,
    pub mode: ChannelMode,
    pub lockdown: Option<Lockdown>,
    pub site_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub id: u64,
    pub time_zone: Option<String>,
}

/// A weekly schedule in local wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    pub id: u64,
    pub windows: Vec<ShiftWindow>,
}

/// Opens on `day` at `start_s` seconds after local midnight and closes `end_s` after midnight
/// of the same day, or of the next day when `end_s <= start_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftWindow {
    pub day: u8,
    pub start_s: u32,
    pub end_s: u32,
}

/// Seconds in a day; `24:00` as a window end.
pub const DAY_S: u32 = 86_400;

impl Shift {
    /// Whether local wall-clock time `local` falls inside the shift. Comparing wall-clock
    /// times (not UTC offsets) is what keeps "09:00–17:00" right on both sides of a DST change.
    pub fn contains(&self, local: DateTime) -> bool {
        let today = weekday_index(local.weekday());
        let yesterday = (today + 6) % 7;
        let now_s = local.hour() as u32 * 3600 + local.minute() as u32 * 60 + local.second() as u32;
        self.windows.iter().any(|w| {
            if w.start_s < w.end_s {
                w.day == today && (w.start_s..w.end_s).contains(&now_s)
            } else {
                // Runs past midnight: the evening part today, the morning part the day after.
                (w.day == today && now_s >= w.start_s) || (w.day == yesterday && now_s < w.end_s)
            }
        })
    }
}

fn weekday_index(day: Weekday) -> u8 {
    day.to_monday_zero_offset() as u8
}

/// The raw content of a snapshot, as synced and as stored: every list owned and expanded. The
/// doors never decide from this form (see [`Snapshot`]); tests build snapshots with it and the
/// store hands it out where a caller wants whole lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotParts {
    pub synced_at: Option<Timestamp>,
    pub people: Vec<Person>,
    pub credentials: Vec<Credential>,
    pub credential_types: Vec<CredentialType>,
    pub roles: Vec<Role>,
    pub groups: Vec<Group>,
    pub group_reservations: Vec<GroupReservation>,
    pub reservations: Vec<Reservation>,
    pub channels: Vec<Channel>,
    pub sites: Vec<Site>,
    pub shifts: Vec<Shift>,
}

impl SnapshotParts {
    #[cfg(any(test, feature = "testing"))]
    /// A synthetic site of `count` people for tests and benchmarks: person *n* is enabled, has
    /// role 1 (24/7) and group 100, and a card credential whose value is *n*.
    pub fn synthetic(count: u64) -> SnapshotParts {
        SnapshotParts {
            people: (1..=count)
                .map(|id| Person {
                    id,
                    enabled: true,
                    valid_from: None,
                    valid_to: None,
                    roles: vec![1],
                    groups: vec![100],
                })
                .collect(),
            credentials: (1..=count)
                .map(|id| Credential {
                    id: format!("cr{id:x}"),
                    credential_type_id: 1,
                    person_id: id,
                    value: id.to_string(),
                    status: None,
                })
                .collect(),
            credential_types: vec![CredentialType::new(1, "card", CredentialKind::Card)],
            roles: vec![Role::unrestricted(1)],
            groups: vec![Group { id: 100 }],
            ..Default::default()
        }
    }

    pub fn counts(&self) -> SnapshotCounts {
        SnapshotCounts {
            people: self.people.len() as u64,
            credentials: self.credentials.len() as u64,
            credential_types: self.credential_types.len() as u64,
            roles: self.roles.len() as u64,
            groups: self.groups.len() as u64,
            group_reservations: self.group_reservations.len() as u64,
            reservations: self.reservations.len() as u64,
            channels: self.channels.len() as u64,
            sites: self.sites.len() as u64,
            shifts: self.shifts.len() as u64,
        }
    }

    /// Every record, in [`RecordKind::ALL`] order.
    pub fn into_records(self) -> impl Iterator<Item = Record> {
        let p = self;
        p.people
            .into_iter()
            .map(Record::Person)
            .chain(p.credentials.into_iter().map(Record::Credential))
            .chain(p.credential_types.into_iter().map(Record::CredentialType))
            .chain(p.roles.into_iter().map(Record::Role))
            .chain(p.groups.into_iter().map(Record::Group))
            .chain(p.group_reservations.into_iter().map(Record::GroupReservation))
            .chain(p.reservations.into_iter().map(Record::Reservation))
            .chain(p.channels.into_iter().map(Record::Channel))
            .chain(p.sites.into_iter().map(Record::Site))
            .chain(p.shifts.into_iter().map(Record::Shift))
    }
}

/// Record counts, shown by `status` and checked when a snapshot is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCounts {
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

impl SnapshotCounts {
    /// The count of one kind.
    pub fn of(&self, kind: RecordKind) -> u64 {
        match kind {
            RecordKind::People => self.people,
            RecordKind::Credentials => self.credentials,
            RecordKind::CredentialTypes => self.credential_types,
            RecordKind::Roles => self.roles,
            RecordKind::Groups => self.groups,
            RecordKind::GroupReservations => self.group_reservations,
            RecordKind::Reservations => self.reservations,
            RecordKind::Channels => self.channels,
            RecordKind::Sites => self.sites,
            RecordKind::Shifts => self.shifts,
        }
    }

    pub fn set(&mut self, kind: RecordKind, count: u64) {
        let slot = match kind {
            RecordKind::People => &mut self.people,
            RecordKind::Credentials => &mut self.credentials,
            RecordKind::CredentialTypes => &mut self.credential_types,
            RecordKind::Roles => &mut self.roles,
            RecordKind::Groups => &mut self.groups,
            RecordKind::GroupReservations => &mut self.group_reservations,
            RecordKind::Reservations => &mut self.reservations,
            RecordKind::Channels => &mut self.channels,
            RecordKind::Sites => &mut self.sites,
            RecordKind::Shifts => &mut self.shifts,
        };
        *slot = count;
    }
}

/// The kinds of record a snapshot holds, in the order they are stored and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    People,
    Credentials,
    CredentialTypes,
    Roles,
    Groups,
    GroupReservations,
    Reservations,
    Channels,
    Sites,
    Shifts,
}

impl RecordKind {
    pub const ALL: [RecordKind; 10] = [
        RecordKind::People,
        RecordKind::Credentials,
        RecordKind::CredentialTypes,
        RecordKind::Roles,
        RecordKind::Groups,
        RecordKind::GroupReservations,
        RecordKind::Reservations,
        RecordKind::Channels,
        RecordKind::Sites,
        RecordKind::Shifts,
    ];

    /// The name used in the store and in messages (`people`, `credential_types`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::People => "people",
            RecordKind::Credentials => "credentials",
            RecordKind::CredentialTypes => "credential_types",
            RecordKind::Roles => "roles",
            RecordKind::Groups => "groups",
            RecordKind::GroupReservations => "group_reservations",
            RecordKind::Reservations => "reservations",
            RecordKind::Channels => "channels",
            RecordKind::Sites => "sites",
            RecordKind::Shifts => "shifts",
        }
    }

    pub fn from_name(name: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One record of a snapshot, of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Person(Person),
    Credential(Credential),
    CredentialType(CredentialType),
    Role(Role),
    Group(Group),
    GroupReservation(GroupReservation),
    Reservation(Reservation),
    Channel(Channel),
    Site(Site),
    Shift(Shift),
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Person(_) => RecordKind::People,
            Record::Credential(_) => RecordKind::Credentials,
            Record::CredentialType(_) => RecordKind::CredentialTypes,
            Record::Role(_) => RecordKind::Roles,
            Record::Group(_) => RecordKind::Groups,
            Record::GroupReservation(_) => RecordKind::GroupReservations,
            Record::Reservation(_) => RecordKind::Reservations,
            Record::Channel(_) => RecordKind::Channels,
            Record::Site(_) => RecordKind::Sites,
            Record::Shift(_) => RecordKind::Shifts,
        }
    }

    /// What identifies the record within its kind: its id, and for a credential its person's
    /// id and its own (a credential belongs to one person; the pair keeps a person's
    /// credentials together).
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Person(r) => RecordKey::Id(r.id),
            Record::Credential(r) => RecordKey::Credential(r.person_id, r.id.clone()),
            Record::CredentialType(r) => RecordKey::Id(r.id),
            Record::Role(r) => RecordKey::Id(r.id),
            Record::Group(r) => RecordKey::Id(r.id),
            Record::GroupReservation(r) => RecordKey::Id(r.id),
            Record::Reservation(r) => RecordKey::Id(r.id),
            Record::Channel(r) => RecordKey::Id(r.id),
            Record::Site(r) => RecordKey::Id(r.id),
            Record::Shift(r) => RecordKey::Id(r.id),
        }
    }
}

/// See [`Record::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    Id(u64),
    /// (person id, credential id).
    Credential(u64, String),
}

/// Takes a snapshot's records one at a time: the in-memory [`SnapshotBuilder`], or the expanded
/// [`SnapshotParts`].
pub trait SnapshotSink {
    fn record(&mut self, record: Record);
    fn synced_at(&mut self, synced_at: Option<Timestamp>);
}

impl SnapshotSink for SnapshotParts {
    fn record(&mut self, record: Record) {
        match record {
            Record::Person(r) => self.people.push(r),
            Record::Credential(r) => self.credentials.push(r),
            Record::CredentialType(r) => self.credential_types.push(r),
            Record::Role(r) => self.roles.push(r),
            Record::Group(r) => self.groups.push(r),
            Record::GroupReservation(r) => self.group_reservations.push(r),
            Record::Reservation(r) => self.reservations.push(r),
            Record::Channel(r) => self.channels.push(r),
            Record::Site(r) => self.sites.push(r),
            Record::Shift(r) => self.shifts.push(r),
        }
    }

    fn synced_at(&mut self, synced_at: Option<Timestamp>) {
        self.synced_at = synced_at;
    }
}

/// The lists a site has few of, kept as they are (sorted by id for binary search).
#[derive(Debug, Default, Clone, PartialEq)]
struct SmallLists {
    credential_types: Vec<CredentialType>,
    roles: Vec<Role>,
    groups: Vec<Group>,
    group_reservations: Vec<GroupReservation>,
    reservations: Vec<Reservation>,
    channels: Vec<Channel>,
    sites: Vec<Site>,
    shifts: Vec<Shift>,
}

impl SmallLists {
    fn sort(&mut self) {
        fn by_id<T>(list: &mut Vec<T>, id: impl Fn(&T) -> u64) {
            list.sort_by_key(&id);
            list.dedup_by_key(|r| id(r));
            list.shrink_to_fit();
        }
        by_id(&mut self.credential_types, |t| t.id);
        by_id(&mut self.roles, |r| r.id);
        by_id(&mut self.groups, |g| g.id);
        by_id(&mut self.channels, |c| c.id);
        by_id(&mut self.sites, |s| s.id);
        by_id(&mut self.shifts, |s| s.id);
        self.group_reservations.sort_by_key(|r| (r.person_id, r.id));
        self.reservations.sort_by_key(|r| (r.person_id, r.id));
    }
}

/// Builds a [`Snapshot`] from records given one at a time, so a snapshot is never held in its
/// expanded form on the way in (from the store at start, or after a sync).
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    synced_at: Option<Timestamp>,
    index: index::IndexBuilder,
    small: SmallLists,
}

impl SnapshotSink for SnapshotBuilder {
    fn record(&mut self, record: Record) {
        let small = &mut self.small;
        match record {
            Record::Person(r) => self.index.person(r),
            Record::Credential(r) => self.index.credential(r),
            Record::CredentialType(r) => small.credential_types.push(r),
            Record::Role(r) => small.roles.push(r),
            Record::Group(r) => small.groups.push(r),
            Record::GroupReservation(r) => small.group_reservations.push(r),
            Record::Reservation(r) => small.reservations.push(r),
            Record::Channel(r) => small.channels.push(r),
            Record::Site(r) => small.sites.push(r),
            Record::Shift(r) => small.shifts.push(r),
        }
    }

    fn synced_at(&mut self, synced_at: Option<Timestamp>) {
        self.synced_at = synced_at;
    }
}

impl SnapshotBuilder {
    pub fn new() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// The snapshot, with `shifts` (from the config) instead of any stored ones when given, and
    /// `default_time_zone` for doors whose channel has no site time zone.
    pub fn finish(mut self, shifts: Option<Vec<Shift>>, default_time_zone: &str) -> Snapshot {
        if let Some(shifts) = shifts {
            self.small.shifts = shifts;
        }
        self.small.sort();
        let dropped_credentials = self.index.dropped;
        let (people, credentials) = self.index.finish();
        let site_time_zones = self
            .small
            .sites
            .iter()
            .filter_map(|site| {
                let name = site.time_zone.as_deref()?;
                Some((site.id, TimeZone::get(name).ok()))
            })
            .collect();
        Snapshot {
            synced_at: Mutex::new(self.synced_at),
            people,
            credentials,
            small: self.small,
            dropped_credentials,
            default_time_zone: TimeZone::get(default_time_zone).ok(),
            site_time_zones,
        }
    }
}

/// An immutable, indexed snapshot: what the doors decide from. Built once per sync (see
/// [`SnapshotBuilder`]), then shared behind an `Arc`. People and credentials are held compactly
/// (see `index`): at 100,000 people and 130,000 credentials about 4 MB.
#[derive(Debug)]
pub struct Snapshot {
    /// When DoorFlow last confirmed this snapshot: set when it is built, moved on by a sync that
    /// found nothing changed.
    synced_at: Mutex<Option<Timestamp>>,
    people: index::PeopleIndex,
    credentials: index::CredentialIndex,
    small: SmallLists,
    dropped_credentials: u64,
    default_time_zone: Option<TimeZone>,
    /// Resolved once per snapshot so a swipe never parses a zone name.
    site_time_zones: HashMap<u64, Option<TimeZone>>,
}

impl Snapshot {
    /// Indexes `parts`. `default_time_zone` applies to doors whose channel has no site time zone.
    pub fn new(parts: SnapshotParts, default_time_zone: &str) -> Snapshot {
        Snapshot::from_parts(parts, None, default_time_zone)
    }

    /// Replaces the shifts (they come from config, since the v3 API does not publish them).
    pub fn with_shifts(parts: SnapshotParts, shifts: Vec<Shift>, default_time_zone: &str) -> Snapshot {
        Snapshot::from_parts(parts, Some(shifts), default_time_zone)
    }

    fn from_parts(parts: SnapshotParts, shifts: Option<Vec<Shift>>, default_time_zone: &str) -> Snapshot {
        let mut builder = SnapshotBuilder::new();
        builder.synced_at(parts.synced_at);
        for record in parts.into_records() {
            builder.record(record);
        }
        builder.finish(shifts, default_time_zone)
    }

    pub fn empty() -> Snapshot {
        Snapshot::new(SnapshotParts::default(), "UTC")
    }

    /// The expanded form of every list (credential ids are not kept in memory: empty).
    pub fn to_parts(&self) -> SnapshotParts {
        let s = &self.small;
        SnapshotParts {
            synced_at: self.synced_at(),
            people: self.people().map(|p| p.to_person()).collect(),
            credentials: self.credentials().map(|c| c.to_credential()).collect(),
            credential_types: s.credential_types.clone(),
            roles: s.roles.clone(),
            groups: s.groups.clone(),
            group_reservations: s.group_reservations.clone(),
            reservations: s.reservations.clone(),
            channels: s.channels.clone(),
            sites: s.sites.clone(),
            shifts: s.shifts.clone(),
        }
    }

    pub fn counts(&self) -> SnapshotCounts {
        let s = &self.small;
        SnapshotCounts {
            people: self.people.len() as u64,
            credentials: self.credentials.len() as u64,
            credential_types: s.credential_types.len() as u64,
            roles: s.roles.len() as u64,
            groups: s.groups.len() as u64,
            group_reservations: s.group_reservations.len() as u64,
            reservations: s.reservations.len() as u64,
            channels: s.channels.len() as u64,
            sites: s.sites.len() as u64,
            shifts: s.shifts.len() as u64,
        }
    }

    /// Credentials left out while building (values longer than 65,535 bytes): denied.
    pub fn dropped_credentials(&self) -> u64 {
        self.dropped_credentials
    }

    /// Bytes the people and credential indexes hold (benchmarks report it).
    pub fn index_bytes(&self) -> usize {
        self.people.heap_bytes() + self.credentials.heap_bytes()
    }

    pub fn synced_at(&self) -> Option<Timestamp> {
        *crate::mutex::lock(&self.synced_at)
    }

    /// DoorFlow confirmed the snapshot at `at` (a sync that found nothing to change).
    pub fn mark_synced(&self, at: Timestamp) {
        *crate::mutex::lock(&self.synced_at) = Some(at);
    }

    pub fn person(&self, id: u64) -> Option<PersonView<'_>> {
        self.people.get(id)
    }

    /// Every person, by id.
    pub fn people(&self) -> impl Iterator<Item = PersonView<'_>> + '_ {
        self.people.iter()
    }

    /// Every credential whose value is exactly `value` (normally one).
    pub fn credentials_with_value<'a>(
        &'a self,
        value: &str,
    ) -> impl Iterator<Item = CredentialView<'a>> + 'a {
        self.credentials.with_value(value, &self.people)
    }

    /// Every credential, by value.
    pub fn credentials(&self) -> impl Iterator<Item = CredentialView<'_>> + '_ {
        self.credentials.iter(&self.people)
    }

    pub fn credential_type(&self, id: u64) -> Option<&CredentialType> {
        find_by(&self.small.credential_types, id, |t| t.id)
    }

    pub fn credential_types(&self) -> &[CredentialType] {
        &self.small.credential_types
    }

    pub fn role(&self, id: u64) -> Option<&Role> {
        find_by(&self.small.roles, id, |r| r.id)
    }

    pub fn roles(&self) -> &[Role] {
        &self.small.roles
    }

    pub fn groups(&self) -> &[Group] {
        &self.small.groups
    }

    pub fn channel(&self, id: u64) -> Option<&Channel> {
        find_by(&self.small.channels, id, |c| c.id)
    }

    pub fn channels(&self) -> &[Channel] {
        &self.small.channels
    }

    pub fn sites(&self) -> &[Site] {
        &self.small.sites
    }

    pub fn reservations(&self) -> &[Reservation] {
        &self.small.reservations
    }

    pub fn group_reservations(&self) -> &[GroupReservation] {
        &self.small.group_reservations
    }

    pub fn shifts(&self) -> &[Shift] {
        &self.small.shifts
    }

    /// The state of the channel `channel_id` at wall-clock `now`; a door with no channel, or a
    /// channel the snapshot does not know, is in the normal state.
    pub fn channel_state(&self, channel_id: Option<u64>, now: Timestamp) -> ChannelState {
        let Some(channel) = channel_id.and_then(|id| self.channel(id)) else {
            return ChannelState::default();
        };
        let lockdown = channel.lockdown.unwrap_or(Lockdown {
            cards: false,
            rex: false,
        });
        let unlock_mode = match channel.mode {
            ChannelMode::Unlock { relock_at } => relock_at.is_none_or(|relock| now < relock),
            ChannelMode::Normal => false,
        };
        ChannelState {
            cards_locked_down: lockdown.cards,
            rex_locked_down: lockdown.rex,
            unlocked: unlock_mode && !lockdown.cards && !lockdown.rex,
        }
    }

    pub fn shift(&self, id: u64) -> Option<&Shift> {
        find_by(&self.small.shifts, id, |s| s.id)
    }

    pub fn group_reservations_of(&self, person_id: u64) -> &[GroupReservation] {
        range_by(&self.small.group_reservations, person_id, |r| r.person_id)
    }

    pub fn reservations_of(&self, person_id: u64) -> &[Reservation] {
        range_by(&self.small.reservations, person_id, |r| r.person_id)
    }

    /// The time zone shifts are evaluated in at a door: its channel's site zone, else the
    /// configured default. `None` when the zone name is unknown, which callers treat as doubt.
    pub fn time_zone_for(&self, channel_id: Option<u64>) -> Option<&TimeZone> {
        let site_id = channel_id.and_then(|id| self.channel(id)).and_then(|c| c.site_id);
        match site_id.and_then(|id| self.site_time_zones.get(&id)) {
            Some(site_zone) => site_zone.as_ref(),
            None => self.default_time_zone.as_ref(),
        }
    }
}

fn find_by<T>(items: &[T], id: u64, key: impl Fn(&T) -> u64) -> Option<&T> {
    items.binary_search_by_key(&id, key).ok().map(|i| &items[i])
}

fn range_by<T>(items: &[T], id: u64, key: impl Fn(&T) -> u64) -> &[T] {
    let start = items.partition_point(|item| key(item) < id);
    let end = start + items[start..].partition_point(|item| key(item) == id);
    &items[start..end]
}

/// The snapshot the doors decide from. Readers take an `Arc` and keep a whole, consistent
/// snapshot for as long as they hold it; a sync swaps in a new one in a single store.
#[derive(Debug)]
pub struct SharedSnapshot {
    current: RwLock<Arc<Snapshot>>,
}

impl SharedSnapshot {
    pub fn new(snapshot: Snapshot) -> SharedSnapshot {
        SharedSnapshot {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        // A poisoned lock still guards a whole Arc; keep serving it rather than stop the doors.
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, snapshot: Arc<Snapshot>) {
        match self.current.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_state_lockdown_wins_over_unlock_mode() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let channel = |mode, lockdown| Channel {
            id: 1,
            mode,
            lockdown,
            site_id: None,
        };
        let unlock = |relock: Option<&str>| ChannelMode::Unlock {
            relock_at: relock.map(|t| t.parse().unwrap()),
        };
        let state = |channel: Channel| {
            let snapshot = Snapshot::new(
                SnapshotParts {
                    channels: vec![channel],
                    ..Default::default()
                },
                "UTC",
            );
            snapshot.channel_state(Some(1), now)
        };
        let lockdown = |cards, rex| Some(Lockdown { cards, rex });
        let cases = [
            (channel(ChannelMode::Normal, None), (false, false, false)),
            (channel(unlock(None), None), (false, false, true)),
            (
                channel(unlock(Some("2026-11-30T13:00:00Z")), None),
                (false, false, true),
            ),
            // relock_at is exclusive: at that instant the channel is back to normal.
            (
                channel(unlock(Some("2026-11-30T12:00:00Z")), None),
                (false, false, false),
            ),
            (channel(unlock(None), lockdown(true, false)), (true, false, false)),
            // A lockdown of REX alone also ends unlock mode: the door is not held open.
            (channel(unlock(None), lockdown(false, true)), (false, true, false)),
            (
                channel(ChannelMode::Normal, lockdown(true, true)),
                (true, true, false),
            ),
        ];
        for (channel, (cards, rex, unlocked)) in cases {
            let described = format!("{channel:?}");
            assert_eq!(
                state(channel),
                ChannelState {
                    cards_locked_down: cards,
                    rex_locked_down: rex,
                    unlocked
                },
                "{described}"
            );
        }
        let empty = Snapshot::new(SnapshotParts::default(), "UTC");
        assert_eq!(empty.channel_state(Some(1), now), ChannelState::default());
        assert_eq!(empty.channel_state(None, now), ChannelState::default());
    }

    #[test]
    fn credential_kind_from_slug_and_label() {
        assert_eq!(CredentialKind::classify("pin", "PIN"), CredentialKind::Pin);
        assert_eq!(
            CredentialKind::classify("employee_pin", "Door PIN"),
            CredentialKind::Pin
        );
        assert_eq!(
            CredentialKind::classify("employee_card", "Employee Card"),
            CredentialKind::Card
        );
        assert_eq!(
            CredentialKind::classify("spinner_fob", "Spinner fob"),
            CredentialKind::Card
        );
        assert_eq!(
            CredentialKind::classify("hid_mobile", "HID Mobile Access"),
            CredentialKind::Other
        );
    }

    #[test]
    fn lookups_after_sorting() {
        let parts = SnapshotParts {
            credentials: ["300", "100", "200", "100"]
                .iter()
                .enumerate()
                .map(|(i, v)| Credential {
                    id: format!("c{i}"),
                    credential_type_id: 1,
                    person_id: i as u64,
                    value: v.to_string(),
                    status: None,
                })
                .collect(),
            people: (0..5)
                .rev()
                .map(|id| Person {
                    id,
                    enabled: true,
                    valid_from: None,
                    valid_to: None,
                    roles: vec![],
                    groups: vec![],
                })
                .collect(),
            ..Default::default()
        };
        let snapshot = Snapshot::new(parts, "UTC");
        let ids: Vec<u64> = snapshot
            .credentials_with_value("100")
            .map(|c| c.person_id)
            .collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(snapshot.credentials_with_value("150").count(), 0);
        assert_eq!(snapshot.person(3).map(|p| p.id), Some(3));
        assert!(snapshot.person(9).is_none());
    }

    #[test]
    fn unknown_site_zone_is_doubt_not_default() {
        let parts = SnapshotParts {
            channels: vec![
                Channel {
                    id: 1,
                    mode: ChannelMode::Normal,
                    lockdown: None,
                    site_id: Some(7),
                },
                Channel {
                    id: 2,
                    mode: ChannelMode::Normal,
                    lockdown: None,
                    site_id: Some(8),
                },
            ],
            sites: vec![
                Site {
                    id: 7,
                    time_zone: Some("Mars/Olympus_Mons".into()),
                },
                Site {
                    id: 8,
                    time_zone: Some("Europe/London".into()),
                },
            ],
            ..Default::default()
        };
        let snapshot = Snapshot::new(parts, "America/New_York");
        assert!(snapshot.time_zone_for(Some(1)).is_none());
        assert_eq!(
            snapshot.time_zone_for(Some(2)).and_then(|z| z.iana_name()),
            Some("Europe/London")
        );
        assert_eq!(
            snapshot.time_zone_for(None).and_then(|z| z.iana_name()),
            Some("America/New_York")
        );
        assert_eq!(
            snapshot.time_zone_for(Some(99)).and_then(|z| z.iana_name()),
            Some("America/New_York")
        );
    }
}
