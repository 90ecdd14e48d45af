//! The two large lists of a snapshot in a compact form: 100,000 people in 16 bytes each and
//! 130,000 credentials in 12 bytes each plus their values in one byte arena, with no allocation
//! per record.
//!
//! - People are sorted by id. What people share is stored once: their (roles, groups) lists are
//!   interned into link sets (a site has a few hundred distinct combinations, not 100,000), and
//!   the rare validity windows live in a side table.
//! - Credentials are sorted by value for binary search. The person is an index into the people
//!   (or into a small table of person ids the people list does not hold), the type and status are
//!   indices into small interned tables. Credential ids are not kept: no decision reads them
//!   (the store has them).

use super::{Credential, Person};
use jiff::Timestamp;
use std::collections::HashMap;

/// High bit of `PersonSlot::links`: the person is enabled.
const ENABLED: u32 = 1 << 31;
const NO_VALIDITY: u32 = u32::MAX;
/// A type slot that names no type (more distinct types than a slot can hold): never matches a
/// credential kind, so such a credential is denied.
const UNKNOWN_TYPE: u8 = u8::MAX;

#[derive(Debug, Clone, Copy)]
struct PersonSlot {
    id: u64,
    /// Index into `link_sets`, with `ENABLED` in the high bit.
    links: u32,
    /// Index into `validity`, or `NO_VALIDITY`.
    validity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LinkSet {
    roles: Box<[u64]>,
    groups: Box<[u64]>,
}

type Validity = (Option<Timestamp>, Option<Timestamp>);

/// One person as the decision reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonView<'a> {
    pub id: u64,
    pub enabled: bool,
    /// Inclusive.
    pub valid_from: Option<Timestamp>,
    /// Exclusive.
    pub valid_to: Option<Timestamp>,
    pub roles: &'a [u64],
    pub groups: &'a [u64],
}

impl PersonView<'_> {
    pub fn to_person(&self) -> Person {
        Person {
            id: self.id,
            enabled: self.enabled,
            valid_from: self.valid_from,
            valid_to: self.valid_to,
            roles: self.roles.to_vec(),
            groups: self.groups.to_vec(),
        }
    }

    /// Whether `person` holds exactly what this view holds.
    pub fn same_as(&self, person: &Person) -> bool {
        self.id == person.id
            && self.enabled == person.enabled
            && self.valid_from == person.valid_from
            && self.valid_to == person.valid_to
            && self.roles == person.roles.as_slice()
            && self.groups == person.groups.as_slice()
    }
}

#[derive(Debug, Default)]
pub(super) struct PeopleIndex {
    slots: Vec<PersonSlot>,
    link_sets: Vec<LinkSet>,
    validity: Vec<Validity>,
}

impl PeopleIndex {
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&id, |s| s.id).ok()
    }

    fn view(&self, slot: &PersonSlot) -> PersonView<'_> {
        let links = &self.link_sets[(slot.links & !ENABLED) as usize];
        let (valid_from, valid_to) = match slot.validity {
            NO_VALIDITY => (None, None),
            index => self.validity[index as usize],
        };
        PersonView {
            id: slot.id,
            enabled: slot.links & ENABLED != 0,
            valid_from,
            valid_to,
            roles: &links.roles,
            groups: &links.groups,
        }
    }

    pub(super) fn get(&self, id: u64) -> Option<PersonView<'_>> {
        self.position(id).map(|i| self.view(&self.slots[i]))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = PersonView<'_>> + '_ {
        self.slots.iter().map(|slot| self.view(slot))
    }

    /// Bytes held (for benchmarks): slots, link sets and validity windows.
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<PersonSlot>()
            + self.validity.capacity() * std::mem::size_of::<Validity>()
            + self
                .link_sets
                .iter()
                .map(|l| (l.roles.len() + l.groups.len()) * 8 + std::mem::size_of::<LinkSet>())
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, Copy)]
struct CredentialSlot {
    /// Offset of the value in `values`.
    value: u32,
    /// Index into the people's slots, or (from `people.len()` on) into `orphans`.
    person: u32,
    len: u16,
    /// Index into `type_ids`, or `UNKNOWN_TYPE`.
    type_slot: u8,
    /// Index into `statuses`.
    status: u8,
}

/// One credential as the decision reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialView<'a> {
    pub value: &'a str,
    /// `None` when the snapshot holds more credential types than it can tell apart (never in
    /// practice); such a credential matches no kind and is denied.
    pub credential_type_id: Option<u64>,
    pub person_id: u64,
    /// DoorFlow sets this only for mobile credentials; anything but `active` is refused.
    pub status: Option<&'a str>,
}

impl CredentialView<'_> {
    /// A status other than `active` (mobile credentials being revoked or not yet accepted).
    pub fn revoked(&self) -> bool {
        self.status.is_some_and(|s| s != "active")
    }

    /// The model record; credential ids are not kept in memory, so `id` is empty.
    pub fn to_credential(&self) -> Credential {
        Credential {
            id: String::new(),
            credential_type_id: self.credential_type_id.unwrap_or(0),
            person_id: self.person_id,
            value: self.value.to_string(),
            status: self.status.map(str::to_string),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct CredentialIndex {
    slots: Vec<CredentialSlot>,
    values: String,
    type_ids: Vec<u64>,
    statuses: Vec<Option<Box<str>>>,
    /// Person ids of credentials whose person the people list does not hold.
    orphans: Vec<u64>,
}

impl CredentialIndex {
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    fn value(&self, slot: &CredentialSlot) -> &str {
        let start = slot.value as usize;
        &self.values[start..start + slot.len as usize]
    }

    fn view<'a>(&'a self, slot: &CredentialSlot, people: &PeopleIndex) -> CredentialView<'a> {
        let person = slot.person as usize;
        let person_id = match people.slots.get(person) {
            Some(p) => p.id,
            None => self.orphans[person - people.len()],
        };
        CredentialView {
            value: self.value(slot),
            credential_type_id: self.type_ids.get(slot.type_slot as usize).copied(),
            person_id,
            status: self.statuses[slot.status as usize].as_deref(),
        }
    }

    /// Every credential whose value is exactly `value`.
    pub(super) fn with_value<'a>(
        &'a self,
        value: &str,
        people: &'a PeopleIndex,
    ) -> impl Iterator<Item = CredentialView<'a>> + 'a {
        let start = self.slots.partition_point(|s| self.value(s) < value);
        let end = start + self.slots[start..].partition_point(|s| self.value(s) == value);
        self.slots[start..end].iter().map(move |s| self.view(s, people))
    }

    pub(super) fn iter<'a>(
        &'a self,
        people: &'a PeopleIndex,
    ) -> impl Iterator<Item = CredentialView<'a>> + 'a {
        self.slots.iter().map(move |s| self.view(s, people))
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<CredentialSlot>()
            + self.values.capacity()
            + self.type_ids.capacity() * 8
            + self.orphans.capacity() * 8
            + self
                .statuses
                .iter()
                .map(|s| s.as_ref().map_or(0, |s| s.len()) + 16)
                .sum::<usize>()
    }
}

/// A credential on its way into the index: its person is still an id.
#[derive(Debug, Clone, Copy)]
struct PendingCredential {
    value: u32,
    len: u16,
    type_slot: u8,
    status: u8,
    person_id: u64,
}

/// Collects people and credentials one at a time and builds the compact indexes.
#[derive(Debug, Default)]
pub(super) struct IndexBuilder {
    people: Vec<PersonSlot>,
    link_sets: Vec<LinkSet>,
    link_ids: HashMap<LinkSet, u32>,
    validity: Vec<Validity>,
    credentials: Vec<PendingCredential>,
    values: String,
    type_ids: Vec<u64>,
    statuses: Vec<Option<Box<str>>>,
    /// Credentials left out: a value longer than 65,535 bytes (no reader sends one).
    pub(super) dropped: u64,
}

impl IndexBuilder {
    pub(super) fn person(&mut self, person: Person) {
        let set = LinkSet {
            roles: person.roles.into_boxed_slice(),
            groups: person.groups.into_boxed_slice(),
        };
        let links = match self.link_ids.get(&set) {
            Some(index) => *index,
            None => {
                let index = self.link_sets.len() as u32;
                self.link_sets.push(set.clone());
                self.link_ids.insert(set, index);
                index
            }
        };
        let validity = if person.valid_from.is_none() && person.valid_to.is_none() {
            NO_VALIDITY
        } else {
            self.validity.push((person.valid_from, person.valid_to));
            (self.validity.len() - 1) as u32
        };
        self.people.push(PersonSlot {
            id: person.id,
            links: links | if person.enabled { ENABLED } else { 0 },
            validity,
        });
    }

    pub(super) fn credential(&mut self, credential: Credential) {
        let Ok(len) = u16::try_from(credential.value.len()) else {
            self.dropped += 1;
            return;
        };
        let type_slot = match self
            .type_ids
            .iter()
            .position(|t| *t == credential.credential_type_id)
        {
            Some(slot) => slot as u8,
            None if self.type_ids.len() < UNKNOWN_TYPE as usize => {
                self.type_ids.push(credential.credential_type_id);
                (self.type_ids.len() - 1) as u8
            }
            None => UNKNOWN_TYPE,
        };
        let status = credential.status.map(String::into_boxed_str);
        let status = match self.statuses.iter().position(|s| *s == status) {
            Some(slot) => slot,
            None if self.statuses.len() < u8::MAX as usize => {
                self.statuses.push(status);
                self.statuses.len() - 1
            }
            // More distinct statuses than a slot holds: file it as a non-active one (denied).
            None => self
                .statuses
                .iter()
                .position(|s| s.as_deref().is_some_and(|s| s != "active"))
                .unwrap_or_else(|| {
                    self.statuses.push(Some("unknown".into()));
                    self.statuses.len() - 1
                }),
        };
        let value = self.values.len() as u32;
        self.values.push_str(&credential.value);
        self.credentials.push(PendingCredential {
            value,
            len,
            type_slot,
            status: status as u8,
            person_id: credential.person_id,
        });
    }

    /// Sorts and packs. A person id given twice keeps its last record.
    pub(super) fn finish(mut self) -> (PeopleIndex, CredentialIndex) {
        // Stable: of two records with one id, the later one stays last and wins the dedup.
        self.people.sort_by_key(|p| p.id);
        let mut people: Vec<PersonSlot> = Vec::with_capacity(self.people.len());
        for slot in self.people.drain(..) {
            match people.last_mut() {
                Some(last) if last.id == slot.id => *last = slot,
                _ => people.push(slot),
            }
        }
        drop(self.people);
        drop(self.link_ids);
        let values = std::mem::take(&mut self.values);
        let value_of = |c: &PendingCredential| &values[c.value as usize..c.value as usize + c.len as usize];
        self.credentials.sort_by(|a, b| {
            value_of(a)
                .cmp(value_of(b))
                .then(a.person_id.cmp(&b.person_id))
                .then(a.type_slot.cmp(&b.type_slot))
        });
        let mut orphans: Vec<u64> = Vec::new();
        let mut orphan_index: HashMap<u64, u32> = HashMap::new();
        let slots: Vec<CredentialSlot> = self
            .credentials
            .iter()
            .map(|c| {
                let person = match people.binary_search_by_key(&c.person_id, |p| p.id) {
                    Ok(index) => index as u32,
                    Err(_) => *orphan_index.entry(c.person_id).or_insert_with(|| {
                        orphans.push(c.person_id);
                        (people.len() + orphans.len() - 1) as u32
                    }),
                };
                CredentialSlot {
                    value: c.value,
                    person,
                    len: c.len,
                    type_slot: c.type_slot,
                    status: c.status,
                }
            })
            .collect();
        drop(self.credentials);
        let mut values = values;
        values.shrink_to_fit();
        people.shrink_to_fit();
        self.validity.shrink_to_fit();
        self.link_sets.shrink_to_fit();
        orphans.shrink_to_fit();
        (
            PeopleIndex {
                slots: people,
                link_sets: self.link_sets,
                validity: self.validity,
            },
            CredentialIndex {
                slots,
                values,
                type_ids: self.type_ids,
                statuses: self.statuses,
                orphans,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: u64, roles: &[u64], valid_to: Option<i64>) -> Person {
        Person {
            id,
            enabled: id % 2 == 0,
            valid_from: None,
            valid_to: valid_to.map(|s| Timestamp::from_second(s).unwrap()),
            roles: roles.to_vec(),
            groups: vec![100],
        }
    }

    fn credential(value: &str, person_id: u64, type_id: u64, status: Option<&str>) -> Credential {
        Credential {
            id: format!("c-{value}"),
            credential_type_id: type_id,
            person_id,
            value: value.into(),
            status: status.map(str::to_string),
        }
    }

    #[test]
    fn records_come_back_as_they_went_in_with_shared_link_sets() {
        let mut builder = IndexBuilder::default();
        for id in [5, 3, 9, 1] {
            builder.person(person(id, &[1], (id == 9).then_some(1_900_000_000)));
        }
        builder.person(person(7, &[1, 2], None));
        builder.credential(credential("300", 3, 1, None));
        builder.credential(credential("100", 1, 1, None));
        builder.credential(credential("100", 42, 2, Some("revoked")));
        builder.credential(credential("500", 5, 1, Some("active")));
        let (people, credentials) = builder.finish();
        assert_eq!(
            people.link_sets.len(),
            2,
            "five people, two distinct (roles, groups)"
        );
        let ids: Vec<u64> = people.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 3, 5, 7, 9]);
        let nine = people.get(9).unwrap();
        assert_eq!(nine.to_person(), person(9, &[1], Some(1_900_000_000)));
        assert!(people.get(7).unwrap().same_as(&person(7, &[1, 2], None)));
        assert!(!people.get(7).unwrap().same_as(&person(7, &[1], None)));
        assert!(people.get(2).is_none());

        let found: Vec<(u64, Option<u64>, bool)> = credentials
            .with_value("100", &people)
            .map(|c| (c.person_id, c.credential_type_id, c.revoked()))
            .collect();
        assert_eq!(
            found,
            [(1, Some(1), false), (42, Some(2), true)],
            "person 42 is not in the people list"
        );
        assert_eq!(credentials.with_value("10", &people).count(), 0);
        assert_eq!(credentials.with_value("1000", &people).count(), 0);
        let five = credentials.with_value("500", &people).next().unwrap();
        assert_eq!((five.status, five.revoked()), (Some("active"), false));
        let values: Vec<&str> = credentials.iter(&people).map(|c| c.value).collect();
        assert_eq!(values, ["100", "100", "300", "500"]);
    }

    #[test]
    fn a_person_given_twice_keeps_the_last_record() {
        let mut builder = IndexBuilder::default();
        builder.person(person(4, &[1], None));
        builder.person(person(4, &[2], None));
        let (people, _) = builder.finish();
        assert_eq!(people.len(), 1);
        assert_eq!(people.get(4).unwrap().roles, [2]);
    }

    #[test]
    fn records_are_small() {
        assert_eq!(std::mem::size_of::<PersonSlot>(), 16);
        assert_eq!(std::mem::size_of::<CredentialSlot>(), 12);
    }
}
