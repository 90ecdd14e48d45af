//! The access decision: a pure function of (snapshot, door, what was presented, now).
//!
//! It follows DoorFlow's model: credential value → person; person enabled and inside
//! valid_from/valid_to; the person's roles and groups (plus groups from current group
//! reservations, plus per-channel reservations) against the door's allowed roles and groups;
//! each role's shift in the site's time zone; the channel's mode and lockdown on top.
//! Before any of that, a card must carry one of the door's facility codes: with `card_value =
//! "number"` the card number alone would let a card from another site with the same number in.
//! Anything uncertain (unknown type, unknown shift, unknown zone, ambiguous value) denies.

use crate::credential::{CardRead, CardValueMapping, Presented};
use crate::snapshot::{CredentialKind, ReservationState, Snapshot};
use jiff::Timestamp;
use serde::Serialize;

/// The parts of a door's configuration that decide who may pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorPolicy {
    pub channel_id: Option<u64>,
    pub allowed_roles: Vec<u64>,
    pub allowed_groups: Vec<u64>,
    pub card_value: CardValueMapping,
    /// Facility codes accepted on cards whose format carries one; `None` accepts any (only
    /// allowed by the config where `card_value` includes the facility). Raw frames carry no
    /// facility and are matched by their whole value.
    pub facility_codes: Option<Vec<u32>>,
}

impl DoorPolicy {
    /// Whether the card's facility code is one this door accepts.
    pub fn accepts_facility(&self, card: &CardRead) -> bool {
        match (&self.facility_codes, card.facility) {
            (Some(codes), Some(facility)) => codes.contains(&facility),
            _ => true,
        }
    }
}

/// Why a decision came out as it did. Each maps to a DoorFlow event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A valid credential whose person has rights here now.
    Authorised,
    /// The channel is in unlock mode: DoorFlow admits anyone.
    ChannelUnlocked,
    UnknownCredential,
    /// The card's facility code is not one this door accepts: a card of another site, whoever
    /// holds the same number here.
    WrongFacilityCode,
    /// The same value belongs to more than one person: refuse rather than guess.
    AmbiguousCredential,
    CredentialRevoked,
    PersonDisabled,
    PersonNotYetValid,
    PersonExpired,
    NoAccessRights,
    OutOfHours,
    Lockdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Authorised => "authorised",
            Reason::ChannelUnlocked => "channel_unlocked",
            Reason::UnknownCredential => "unknown_credential",
            Reason::WrongFacilityCode => "wrong_facility_code",
            Reason::AmbiguousCredential => "ambiguous_credential",
            Reason::CredentialRevoked => "credential_revoked",
            Reason::PersonDisabled => "person_disabled",
            Reason::PersonNotYetValid => "person_not_yet_valid",
            Reason::PersonExpired => "person_expired",
            Reason::NoAccessRights => "no_access_rights",
            Reason::OutOfHours => "out_of_hours",
            Reason::Lockdown => "lockdown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub granted: bool,
    pub reason: Reason,
    /// The person the credential belongs to, when known (also for most denials).
    pub person_id: Option<u64>,
    /// The credential value looked up (unmasked: mask before logging or sending).
    pub value: String,
    pub kind: CredentialKind,
}

impl Decision {
    /// DoorFlow event code: 10 card admitted, 11 PIN admitted, 16 admitted (unlocked),
    /// 20 card rejected (unknown, wrong facility code, expired, …), 21 out of hours, 22 lockdown,
    /// 24 PIN rejected.
    pub fn event_code(&self) -> u16 {
        let pin = self.kind == CredentialKind::Pin;
        match self.reason {
            Reason::Authorised if pin => 11,
            Reason::Authorised => 10,
            Reason::ChannelUnlocked => 16,
            Reason::OutOfHours => 21,
            Reason::Lockdown => 22,
            _ if pin => 24,
            _ => 20,
        }
    }
}

/// Decides one presentation at one door. Pure: no clock, no I/O, no allocation beyond the
/// returned value string.
pub fn decide(snapshot: &Snapshot, door: &DoorPolicy, presented: &Presented, now: Timestamp) -> Decision {
    let (kind, value) = match presented {
        Presented::Card(card) => (CredentialKind::Card, door.card_value.value_of(card)),
        Presented::Pin(pin) => (CredentialKind::Pin, pin.clone()),
    };
    // A card of another site is nobody here: it is never looked up, so no person is named.
    let identified = match presented {
        Presented::Card(card) if !door.accepts_facility(card) => Err(Reason::WrongFacilityCode),
        _ => identify(snapshot, kind, &value),
    };
    let person_id = identified.as_ref().ok().copied();
    let verdict = |granted: bool, reason: Reason| Decision {
        granted,
        reason,
        person_id,
        value: value.clone(),
        kind,
    };

    // Lockdown wins over everything, unlock mode included.
    let channel = snapshot.channel_state(door.channel_id, now);
    if channel.cards_locked_down {
        return verdict(false, Reason::Lockdown);
    }
    if channel.unlocked {
        return verdict(true, Reason::ChannelUnlocked);
    }

    let person_id = match identified {
        Ok(id) => id,
        Err(reason) => return verdict(false, reason),
    };
    let Some(person) = snapshot.person(person_id) else {
        return verdict(false, Reason::UnknownCredential);
    };
    if !person.enabled {
        return verdict(false, Reason::PersonDisabled);
    }
    // valid_from is inclusive, valid_to exclusive: at valid_to the access has ended.
    if person.valid_from.is_some_and(|from| now < from) {
        return verdict(false, Reason::PersonNotYetValid);
    }
    if person.valid_to.is_some_and(|to| now >= to) {
        return verdict(false, Reason::PersonExpired);
    }

    let allowed_group = |group: &u64| door.allowed_groups.contains(group);
    let reserved_groups = snapshot
        .group_reservations_of(person_id)
        .iter()
        .filter(|r| r.state != ReservationState::Deactivated && r.start <= now && now < r.end)
        .flat_map(|r| r.group_ids.iter());
    if person.groups.iter().chain(reserved_groups).any(allowed_group) {
        return verdict(true, Reason::Authorised);
    }
    if let Some(channel_id) = door.channel_id {
        let reserved = snapshot
            .reservations_of(person_id)
            .iter()
            .any(|r| r.start <= now && now < r.end && r.channel_ids.contains(&channel_id));
        if reserved {
            return verdict(true, Reason::Authorised);
        }
    }

    let mut outside_shift = false;
    for role in person.roles.iter().filter_map(|id| snapshot.role(*id)) {
        let opens_this_door = door.allowed_roles.contains(&role.id)
            || door.channel_id.is_some_and(|c| role.channel_ids.contains(&c))
            || role.group_ids.iter().any(allowed_group);
        if !opens_this_door {
            continue;
        }
        if role_in_shift(snapshot, door, role.shift_id, now) {
            return verdict(true, Reason::Authorised);
        }
        outside_shift = true;
    }
    let reason = if outside_shift {
        Reason::OutOfHours
    } else {
        Reason::NoAccessRights
    };
    verdict(false, reason)
}

/// Finds the one person a value of this kind belongs to.
fn identify(snapshot: &Snapshot, kind: CredentialKind, value: &str) -> Result<u64, Reason> {
    let mut person = None;
    let mut revoked = false;
    for credential in snapshot.credentials_with_value(value) {
        // A credential of an unknown type is not trusted to be a card or a PIN.
        let type_kind = credential
            .credential_type_id
            .and_then(|id| snapshot.credential_type(id))
            .map(|t| t.kind);
        if type_kind != Some(kind) {
            continue;
        }
        if credential.revoked() {
            revoked = true;
            continue;
        }
        match person {
            None => person = Some(credential.person_id),
            Some(id) if id == credential.person_id => {}
            Some(_) => return Err(Reason::AmbiguousCredential),
        }
    }
    match person {
        Some(id) => Ok(id),
        None if revoked => Err(Reason::CredentialRevoked),
        None => Err(Reason::UnknownCredential),
    }
}

fn role_in_shift(snapshot: &Snapshot, door: &DoorPolicy, shift_id: Option<u64>, now: Timestamp) -> bool {
    let Some(shift_id) = shift_id else {
        return true; // no shift: 24/7
    };
    let (Some(shift), Some(zone)) = (snapshot.shift(shift_id), snapshot.time_zone_for(door.channel_id))
    else {
        return false; // unknown shift or zone: doubt denies
    };
    shift.contains(now.to_zoned(zone.clone()).datetime())
}
