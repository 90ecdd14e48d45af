//! The simulated DoorFlow account: people and credentials computed from their id on demand (so
//! 50,000 people cost nothing until asked for), plus the changes tests make on top of them.
//! The rules are listed in the module documentation of `sim`.

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Timestamp of everything that is not a person or a reservation.
pub(super) const STAMP: &str = "2024-01-01T00:00:00Z";
const SECONDS_PER_YEAR: i64 = 365 * 86_400;
/// Base people were created from this instant on (one a minute) ...
const CREATED_FROM: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z
/// ... and last updated at some point during 2025.
const UPDATED_FROM: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z

/// What a test changed about a person (or the whole record, for an added person).
#[derive(Debug, Clone)]
struct Change {
    enabled: Option<bool>,
    /// A `valid_to` set by a test (replaces the rule's).
    valid_to: Option<Timestamp>,
    updated_at: Timestamp,
    /// Set for people added after start.
    created_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct Booking {
    id: u64,
    person_id: u64,
    /// Group ids (group reservations) or channel ids (reservations).
    targets: Vec<u64>,
    start: Timestamp,
    end: Timestamp,
    created_at: Timestamp,
}

/// A credential of the dataset, described without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cred {
    /// Card value = person id.
    Card(u64),
    /// PIN 500000 + person id (every fifth person).
    Pin(u64),
    /// Second card enrolled as facility 1 + 5-digit number (office-hours staff).
    FacilityCard(u64),
}

impl Cred {
    pub(super) fn person_id(self) -> u64 {
        match self {
            Cred::Card(id) | Cred::Pin(id) | Cred::FacilityCard(id) => id,
        }
    }

    pub(super) fn value(self) -> String {
        match self {
            Cred::Card(id) => id.to_string(),
            Cred::Pin(id) => (500_000 + id).to_string(),
            Cred::FacilityCard(id) => format!("1{id:05}"),
        }
    }

    pub(super) fn to_json(self) -> Value {
        let (prefix, type_id, label, id) = match self {
            Cred::Card(id) => ("cr", 1, "Employee Card", id),
            Cred::Pin(id) => ("pn", 2, "PIN", id),
            Cred::FacilityCard(id) => ("fc", 1, "Employee Card", id),
        };
        json!({
            "id": format!("{prefix}{id:x}"), "credential_type_id": type_id, "label": label,
            "person_id": id, "value": self.value(),
        })
    }
}

#[derive(Debug)]
pub(super) struct Dataset {
    /// People 1..=base come from the rules.
    base: u64,
    /// Next id for `add_person`; people base+1..next_id were added.
    next_id: u64,
    changes: BTreeMap<u64, Change>,
    deleted: BTreeSet<u64>,
    revoked: HashSet<String>,
    /// Channels in lockdown (cards and exit buttons locked).
    pub(super) lockdowns: BTreeSet<u64>,
    group_reservations: Vec<Booking>,
    reservations: Vec<Booking>,
    next_booking_id: u64,
}

impl Dataset {
    pub(super) fn new(people: u64) -> Dataset {
        Dataset {
            base: people,
            next_id: people + 1,
            changes: BTreeMap::new(),
            deleted: BTreeSet::new(),
            revoked: HashSet::new(),
            lockdowns: BTreeSet::new(),
            group_reservations: Vec::new(),
            reservations: Vec::new(),
            next_booking_id: 1,
        }
    }

    pub(super) fn exists(&self, id: u64) -> bool {
        id >= 1 && id < self.next_id && !self.deleted.contains(&id)
    }

    pub(super) fn enabled(&self, id: u64) -> bool {
        match self.changes.get(&id).and_then(|c| c.enabled) {
            Some(enabled) => enabled,
            None => id > self.base || id % 50 != 0,
        }
    }

    fn added(&self, id: u64) -> bool {
        id > self.base
    }

    fn updated_at(&self, id: u64) -> Timestamp {
        match self.changes.get(&id) {
            Some(change) => change.updated_at,
            None => second(UPDATED_FROM + (id.wrapping_mul(2_654_435_761) % SECONDS_PER_YEAR as u64) as i64),
        }
    }

    fn created_at(&self, id: u64) -> Timestamp {
        match self.changes.get(&id).and_then(|c| c.created_at) {
            Some(created) => created,
            None => second(CREATED_FROM + (id as i64).wrapping_mul(60).rem_euclid(SECONDS_PER_YEAR)),
        }
    }

    /// Ids of present people, ascending; with `since`, only those updated at or after it.
    pub(super) fn people(&self, since: Option<Timestamp>) -> Box<dyn Iterator<Item = u64> + '_> {
        match since {
            // Every base record was last updated in 2025: a later cursor only sees changes.
            Some(since) if since >= second(UPDATED_FROM + SECONDS_PER_YEAR) => Box::new(
                self.changes
                    .iter()
                    .filter(move |(id, change)| self.exists(**id) && change.updated_at >= since)
                    .map(|(id, _)| *id),
            ),
            Some(since) => Box::new(
                (1..self.next_id)
                    .filter(move |id| !self.deleted.contains(id) && self.updated_at(*id) >= since),
            ),
            None => Box::new((1..self.next_id).filter(|id| !self.deleted.contains(id))),
        }
    }

    pub(super) fn person(&self, id: u64) -> Value {
        let base = !self.added(id);
        let valid_to = match self.changes.get(&id).and_then(|c| c.valid_to) {
            Some(valid_to) => json!(valid_to.to_string()),
            None if base && id % 97 == 0 => json!("2020-01-01T00:00:00Z"),
            None => Value::Null,
        };
        let role = if base && id % 10 == 3 { 2 } else { 1 };
        json!({
            "id": id, "first_name": format!("Person{id}"), "last_name": "Sim",
            "email": format!("p{id}@example.com"), "enabled": self.enabled(id),
            "valid_from": null, "valid_to": valid_to, "groups": [100], "roles": [role],
            "created_at": self.created_at(id).to_string(), "updated_at": self.updated_at(id).to_string(),
        })
    }

    /// Present credentials in a stable order: the base cards, PINs and facility cards, then the
    /// cards of added people; deleted people's and revoked ones left out.
    pub(super) fn credentials(&self) -> impl Iterator<Item = Cred> + '_ {
        let base = self.base;
        let cards = (1..=base).map(Cred::Card);
        let pins = (1..=base / 5).map(|k| Cred::Pin(k * 5));
        let facility = (0..(base + 7) / 10).map(|k| Cred::FacilityCard(k * 10 + 3));
        let added = (base + 1..self.next_id).map(Cred::Card);
        cards
            .chain(pins)
            .chain(facility)
            .chain(added)
            .filter(move |cred| {
                !self.deleted.contains(&cred.person_id())
                    && (self.revoked.is_empty() || !self.revoked.contains(&cred.value()))
            })
    }

    /// Sets `enabled` (when given) and marks the person updated now. Absent people are ignored.
    pub(super) fn touch_person(&mut self, id: u64, enabled: Option<bool>) {
        if !self.exists(id) {
            return;
        }
        let change = self.changes.entry(id).or_insert(Change {
            enabled: None,
            valid_to: None,
            updated_at: now(),
            created_at: None,
        });
        change.updated_at = now();
        if enabled.is_some() {
            change.enabled = enabled;
        }
    }

    /// Sets a person's `valid_to` and marks them updated now. Absent people are ignored.
    pub(super) fn set_valid_to(&mut self, id: u64, valid_to: Timestamp) {
        self.touch_person(id, None);
        if let Some(change) = self.changes.get_mut(&id) {
            change.valid_to = Some(valid_to);
        }
    }

    /// Removes a person with their credentials and bookings (DoorFlow keeps no tombstones).
    pub(super) fn delete_person(&mut self, id: u64) {
        if self.exists(id) {
            self.deleted.insert(id);
            self.changes.remove(&id);
        }
    }

    /// A new enabled person (role 1, group 100) with a card whose value is the new id.
    pub(super) fn add_person(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let at = now();
        self.changes.insert(
            id,
            Change {
                enabled: Some(true),
                valid_to: None,
                updated_at: at,
                created_at: Some(at),
            },
        );
        id
    }

    pub(super) fn revoke_credential(&mut self, value: &str) {
        self.revoked.insert(value.to_string());
    }

    pub(super) fn add_booking(
        &mut self,
        group: bool,
        person_id: u64,
        targets: Vec<u64>,
        start: Timestamp,
        end: Timestamp,
    ) -> u64 {
        let id = self.next_booking_id;
        self.next_booking_id += 1;
        let booking = Booking {
            id,
            person_id,
            targets,
            start,
            end,
            created_at: now(),
        };
        if group {
            self.group_reservations.push(booking);
        } else {
            self.reservations.push(booking);
        }
        id
    }

    /// Group reservations of present people, updated at or after `since`.
    pub(super) fn group_reservations(&self, since: Option<Timestamp>) -> Vec<Value> {
        let now = Timestamp::now();
        self.bookings(&self.group_reservations, since)
            .map(|b| {
                let state = if now < b.start {
                    "pending"
                } else if now < b.end {
                    "active"
                } else {
                    "deactivated"
                };
                json!({
                    "id": b.id, "person_id": b.person_id, "start_time": b.start.to_string(),
                    "end_time": b.end.to_string(), "state": state, "group_ids": b.targets,
                    "created_at": b.created_at.to_string(), "updated_at": b.created_at.to_string(),
                })
            })
            .collect()
    }

    pub(super) fn reservations(&self, since: Option<Timestamp>) -> Vec<Value> {
        self.bookings(&self.reservations, since)
            .map(|b| {
                json!({
                    "id": b.id, "person_id": b.person_id, "start_time": b.start.to_string(),
                    "end_time": b.end.to_string(), "channel_ids": b.targets,
                    "created_at": b.created_at.to_string(), "updated_at": b.created_at.to_string(),
                })
            })
            .collect()
    }

    fn bookings<'a>(
        &'a self,
        list: &'a [Booking],
        since: Option<Timestamp>,
    ) -> impl Iterator<Item = &'a Booking> + 'a {
        list.iter()
            .filter(move |b| self.exists(b.person_id) && since.is_none_or(|since| b.created_at >= since))
    }
}

fn second(epoch: i64) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(epoch)
}

/// Now, to the millisecond (DoorFlow's precision), rounded up: a change is never stamped
/// before a cursor taken before it (at worst it shows up in one more incremental pull).
fn now() -> Timestamp {
    let exact = Timestamp::now();
    let millis = exact.as_millisecond();
    let floor = Timestamp::from_millisecond(millis).unwrap_or(exact);
    if floor < exact {
        Timestamp::from_millisecond(millis + 1).unwrap_or(exact)
    } else {
        floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_rules() {
        let data = Dataset::new(30);
        let all: Vec<Cred> = data.credentials().collect();
        // 30 cards, 6 PINs, facility cards for 3, 13, 23.
        assert_eq!(all.len(), 30 + 6 + 3);
        assert_eq!(all[29], Cred::Card(30));
        assert_eq!(all[30].value(), "500005");
        assert_eq!(all[36].value(), "100003");
        assert_eq!(all[38], Cred::FacilityCard(23));
    }

    #[test]
    fn deletions_revocations_and_additions_change_the_lists() {
        let mut data = Dataset::new(20);
        data.delete_person(5);
        data.revoke_credential("13");
        let added = data.add_person();
        assert_eq!(added, 21);
        let people: Vec<u64> = data.people(None).collect();
        assert_eq!(people.len(), 20);
        assert!(!people.contains(&5) && people.contains(&21));
        let values: Vec<String> = data.credentials().map(Cred::value).collect();
        assert!(!values.contains(&"5".to_string()) && !values.contains(&"500005".to_string()));
        assert!(!values.contains(&"13".to_string()) && values.contains(&"100013".to_string()));
        assert_eq!(values.last().map(String::as_str), Some("21"));
    }

    #[test]
    fn since_selects_changed_people_only() {
        let mut data = Dataset::new(1_000);
        let cursor = Timestamp::now();
        data.touch_person(7, Some(false));
        data.touch_person(2_000, Some(false)); // absent: ignored
        let added = data.add_person();
        let changed: Vec<u64> = data.people(Some(cursor)).collect();
        assert_eq!(changed, vec![7, added]);
        assert!(!data.enabled(7));
        // A cursor inside 2025 sees part of the base dataset.
        let mid = second(UPDATED_FROM + SECONDS_PER_YEAR / 2);
        let count = data.people(Some(mid)).count();
        assert!(count > 300 && count < 700, "{count}");
    }
}
