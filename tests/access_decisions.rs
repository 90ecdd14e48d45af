//! Table-driven tests of `access::decide`: every rule of DoorFlow's model, one row each.

use doorflow_agent::access::{decide, DoorPolicy, Reason};
use doorflow_agent::credential::{CardFormat, CardRead, CardValueMapping, Presented};
use doorflow_agent::snapshot::*;
use jiff::Timestamp;

const FRONT: u64 = 1340;
const UNLOCKED: u64 = 1341;
const UNLOCK_EXPIRED: u64 = 1342;
const LOCKDOWN_AND_UNLOCKED: u64 = 1343;
const REX_LOCKDOWN_ONLY: u64 = 1344;
const MARS: u64 = 1345;

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn person(id: u64, roles: &[u64], groups: &[u64]) -> Person {
    Person {
        id,
        enabled: true,
        valid_from: None,
        valid_to: None,
        roles: roles.to_vec(),
        groups: groups.to_vec(),
    }
}

fn credential(id: &str, type_id: u64, person_id: u64, value: &str) -> Credential {
    Credential {
        id: id.into(),
        credential_type_id: type_id,
        person_id,
        value: value.into(),
        status: None,
    }
}

fn channel(id: u64, mode: ChannelMode, lockdown: Option<Lockdown>, site_id: Option<u64>) -> Channel {
    Channel {
        id,
        mode,
        lockdown,
        site_id,
    }
}

fn role(id: u64, shift_id: Option<u64>) -> Role {
    Role {
        shift_id,
        ..Role::unrestricted(id)
    }
}

/// The people, one per rule; their card number is 1000 + id.
fn snapshot() -> Snapshot {
    let mut people = vec![
        person(1, &[1], &[]),   // 24/7 role
        person(2, &[1], &[]),   // disabled
        person(3, &[1], &[]),   // valid_to edge
        person(4, &[1], &[]),   // not yet valid
        person(5, &[2], &[]),   // weekday 09–17 shift, London
        person(6, &[], &[100]), // allowed group
        person(7, &[], &[]),    // group via a group reservation
        person(8, &[], &[]),    // per-channel reservation
        person(9, &[3], &[]),   // role with an unknown shift
        person(10, &[5], &[200]),
        person(11, &[4], &[]), // role that names the channel itself
        person(12, &[], &[]),  // deactivated group reservation
        person(13, &[1], &[]), // PIN holder
        person(14, &[1], &[]), // shares a card value with 15
        person(15, &[5], &[]),
        person(16, &[1], &[]), // revoked credential
        person(17, &[6], &[]), // role linked to an allowed group
    ];
    people[1].enabled = false;
    people[2].valid_to = Some(ts("2026-06-10T10:00:00Z"));
    people[3].valid_from = Some(ts("2026-06-10T10:00:01Z"));

    let mut credentials: Vec<Credential> = (1..=17)
        .filter(|id| ![13, 15].contains(id))
        .map(|id| credential(&format!("c{id}"), 1, id, &(1000 + id).to_string()))
        .collect();
    credentials.push(credential("pin13", 2, 13, "4711"));
    credentials.push(credential("c13", 1, 13, "1013"));
    credentials.push(credential("visitor15", 4, 15, "1014")); // same value as person 14's card
    credentials.push(credential("mobile1", 3, 1, "9999"));
    credentials.push(credential("unknowntype", 77, 1, "8888"));
    credentials.iter_mut().find(|c| c.id == "c16").unwrap().status = Some("revoked".into());

    let mut roles = vec![
        role(1, None),
        role(2, Some(7)),
        role(3, Some(99)),
        role(4, None),
        role(5, None),
        role(6, None),
    ];
    roles[3].channel_ids = vec![FRONT];
    roles[5].group_ids = vec![100];

    let parts = SnapshotParts {
        synced_at: Some(ts("2026-06-10T09:00:00Z")),
        people,
        credentials,
        credential_types: vec![
            CredentialType::new(1, "employee_card", CredentialKind::Card),
            CredentialType::new(2, "pin", CredentialKind::Pin),
            CredentialType::new(3, "hid_mobile", CredentialKind::Other),
            CredentialType::new(4, "visitor_card", CredentialKind::Card),
        ],
        roles,
        groups: vec![Group { id: 100 }, Group { id: 200 }],
        group_reservations: vec![
            GroupReservation {
                id: 1,
                person_id: 7,
                start: ts("2026-06-10T08:00:00Z"),
                end: ts("2026-06-10T12:00:00Z"),
                state: ReservationState::Active,
                group_ids: vec![100],
            },
            GroupReservation {
                id: 2,
                person_id: 12,
                start: ts("2026-06-10T08:00:00Z"),
                end: ts("2026-06-10T12:00:00Z"),
                state: ReservationState::Deactivated,
                group_ids: vec![100],
            },
        ],
        reservations: vec![
            Reservation {
                id: 1,
                person_id: 8,
                start: ts("2026-06-10T09:00:00Z"),
                end: ts("2026-06-10T11:00:00Z"),
                channel_ids: vec![FRONT],
            },
            Reservation {
                id: 2,
                person_id: 8,
                start: ts("2026-06-09T09:00:00Z"),
                end: ts("2026-06-09T11:00:00Z"),
                channel_ids: vec![UNLOCK_EXPIRED],
            },
        ],
        channels: vec![
            channel(FRONT, ChannelMode::Normal, None, Some(1)),
            channel(UNLOCKED, ChannelMode::Unlock { relock_at: None }, None, Some(1)),
            channel(
                UNLOCK_EXPIRED,
                ChannelMode::Unlock {
                    relock_at: Some(ts("2026-06-10T09:59:59Z")),
                },
                None,
                Some(1),
            ),
            channel(
                LOCKDOWN_AND_UNLOCKED,
                ChannelMode::Unlock { relock_at: None },
                Some(Lockdown {
                    cards: true,
                    rex: true,
                }),
                Some(1),
            ),
            channel(
                REX_LOCKDOWN_ONLY,
                ChannelMode::Normal,
                Some(Lockdown {
                    cards: false,
                    rex: true,
                }),
                Some(1),
            ),
            channel(MARS, ChannelMode::Normal, None, Some(2)),
        ],
        sites: vec![
            Site {
                id: 1,
                time_zone: Some("Europe/London".into()),
            },
            Site {
                id: 2,
                time_zone: Some("Mars/Olympus_Mons".into()),
            },
        ],
        shifts: vec![Shift {
            id: 7,
            windows: (0..5)
                .map(|day| ShiftWindow {
                    day,
                    start_s: 9 * 3600,
                    end_s: 17 * 3600,
                })
                .collect(),
        }],
    };
    Snapshot::new(parts, "UTC")
}

fn door(channel_id: u64) -> DoorPolicy {
    DoorPolicy {
        channel_id: Some(channel_id),
        allowed_roles: vec![1, 2, 3],
        allowed_groups: vec![100],
        card_value: CardValueMapping::Number,
        facility_codes: Some(vec![12]),
    }
}

fn card(number: u64) -> Presented {
    Presented::Card(CardRead {
        format: CardFormat::H10301,
        facility: Some(12),
        number,
        bit_count: 26,
        raw: 0,
        data: 0,
    })
}

fn pin(digits: &str) -> Presented {
    Presented::Pin(digits.into())
}

/// Wednesday 2026-06-10 11:00 in London (BST).
const NOW: &str = "2026-06-10T10:00:00Z";

struct Case {
    name: &'static str,
    channel: u64,
    presented: Presented,
    at: &'static str,
    granted: bool,
    reason: Reason,
    code: u16,
}

fn case(
    name: &'static str,
    channel: u64,
    presented: Presented,
    at: &'static str,
    granted: bool,
    reason: Reason,
    code: u16,
) -> Case {
    Case {
        name,
        channel,
        presented,
        at,
        granted,
        reason,
        code,
    }
}

#[test]
fn decision_table() {
    use Reason::*;
    let cases = [
        case("24/7 role opens", FRONT, card(1001), NOW, true, Authorised, 10),
        case(
            "unknown card",
            FRONT,
            card(4242),
            NOW,
            false,
            UnknownCredential,
            20,
        ),
        case(
            "disabled person",
            FRONT,
            card(1002),
            NOW,
            false,
            PersonDisabled,
            20,
        ),
        case(
            "valid_to reached exactly",
            FRONT,
            card(1003),
            NOW,
            false,
            PersonExpired,
            20,
        ),
        case(
            "one second before valid_to",
            FRONT,
            card(1003),
            "2026-06-10T09:59:59Z",
            true,
            Authorised,
            10,
        ),
        case(
            "before valid_from",
            FRONT,
            card(1004),
            NOW,
            false,
            PersonNotYetValid,
            20,
        ),
        case(
            "at valid_from exactly",
            FRONT,
            card(1004),
            "2026-06-10T10:00:01Z",
            true,
            Authorised,
            10,
        ),
        case("shift, inside", FRONT, card(1005), NOW, true, Authorised, 10),
        case(
            "shift, weekend",
            FRONT,
            card(1005),
            "2026-06-13T10:00:00Z",
            false,
            OutOfHours,
            21,
        ),
        case(
            "shift, evening local time",
            FRONT,
            card(1005),
            "2026-06-10T16:30:00Z",
            false,
            OutOfHours,
            21,
        ),
        // DST: 08:30 UTC is 08:30 GMT on Friday 27 March, 09:30 BST on Monday 30 March.
        case(
            "DST, before spring change",
            FRONT,
            card(1005),
            "2026-03-27T08:30:00Z",
            false,
            OutOfHours,
            21,
        ),
        case(
            "DST, after spring change",
            FRONT,
            card(1005),
            "2026-03-30T08:30:00Z",
            true,
            Authorised,
            10,
        ),
        // 16:30 UTC is 17:30 BST on Friday 23 October, 16:30 GMT on Monday 26 October.
        case(
            "DST, before autumn change",
            FRONT,
            card(1005),
            "2026-10-23T16:30:00Z",
            false,
            OutOfHours,
            21,
        ),
        case(
            "DST, after autumn change",
            FRONT,
            card(1005),
            "2026-10-26T16:30:00Z",
            true,
            Authorised,
            10,
        ),
        case(
            "shift in an unknown time zone",
            MARS,
            card(1005),
            NOW,
            false,
            OutOfHours,
            21,
        ),
        case("allowed group", FRONT, card(1006), NOW, true, Authorised, 10),
        case(
            "group from active group reservation",
            FRONT,
            card(1007),
            NOW,
            true,
            Authorised,
            10,
        ),
        case(
            "group reservation ended",
            FRONT,
            card(1007),
            "2026-06-10T12:00:00Z",
            false,
            NoAccessRights,
            20,
        ),
        case(
            "group reservation deactivated",
            FRONT,
            card(1012),
            NOW,
            false,
            NoAccessRights,
            20,
        ),
        case(
            "channel reservation",
            FRONT,
            card(1008),
            NOW,
            true,
            Authorised,
            10,
        ),
        case(
            "channel reservation expired",
            UNLOCK_EXPIRED,
            card(1008),
            NOW,
            false,
            NoAccessRights,
            20,
        ),
        case(
            "channel reservation not yet started",
            FRONT,
            card(1008),
            "2026-06-10T08:59:59Z",
            false,
            NoAccessRights,
            20,
        ),
        case(
            "unknown shift denies",
            FRONT,
            card(1009),
            NOW,
            false,
            OutOfHours,
            21,
        ),
        case(
            "role and group not allowed here",
            FRONT,
            card(1010),
            NOW,
            false,
            NoAccessRights,
            20,
        ),
        case(
            "role names the channel",
            FRONT,
            card(1011),
            NOW,
            true,
            Authorised,
            10,
        ),
        case(
            "role linked to an allowed group",
            FRONT,
            card(1017),
            NOW,
            true,
            Authorised,
            10,
        ),
        case("PIN opens", FRONT, pin("4711"), NOW, true, Authorised, 11),
        case(
            "unknown PIN",
            FRONT,
            pin("0000"),
            NOW,
            false,
            UnknownCredential,
            24,
        ),
        case(
            "card number typed as PIN",
            FRONT,
            pin("1001"),
            NOW,
            false,
            UnknownCredential,
            24,
        ),
        case(
            "PIN value presented as card",
            FRONT,
            card(4711),
            NOW,
            false,
            UnknownCredential,
            20,
        ),
        case(
            "same value, two people",
            FRONT,
            card(1014),
            NOW,
            false,
            AmbiguousCredential,
            20,
        ),
        case(
            "revoked credential",
            FRONT,
            card(1016),
            NOW,
            false,
            CredentialRevoked,
            20,
        ),
        case(
            "mobile credential never matches a card",
            FRONT,
            card(9999),
            NOW,
            false,
            UnknownCredential,
            20,
        ),
        case(
            "credential of unknown type",
            FRONT,
            card(8888),
            NOW,
            false,
            UnknownCredential,
            20,
        ),
        case(
            "unlock mode admits anyone",
            UNLOCKED,
            card(4242),
            NOW,
            true,
            ChannelUnlocked,
            16,
        ),
        case(
            "unlock mode admits disabled too",
            UNLOCKED,
            card(1002),
            NOW,
            true,
            ChannelUnlocked,
            16,
        ),
        case(
            "unlock mode past relock_at",
            UNLOCK_EXPIRED,
            card(4242),
            NOW,
            false,
            UnknownCredential,
            20,
        ),
        case(
            "lockdown over unlock",
            LOCKDOWN_AND_UNLOCKED,
            card(1001),
            NOW,
            false,
            Lockdown,
            22,
        ),
        case(
            "lockdown denies PIN",
            LOCKDOWN_AND_UNLOCKED,
            pin("4711"),
            NOW,
            false,
            Lockdown,
            22,
        ),
        case(
            "REX-only lockdown lets cards in",
            REX_LOCKDOWN_ONLY,
            card(1001),
            NOW,
            true,
            Authorised,
            10,
        ),
    ];
    let snapshot = snapshot();
    let mut failures = Vec::new();
    for c in &cases {
        let decision = decide(&snapshot, &door(c.channel), &c.presented, ts(c.at));
        let got = (decision.granted, decision.reason, decision.event_code());
        if got != (c.granted, c.reason, c.code) {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                c.name,
                (c.granted, c.reason, c.code),
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn door_without_channel_ignores_channel_rules() {
    let snapshot = snapshot();
    let policy = DoorPolicy {
        channel_id: None,
        allowed_roles: vec![1],
        allowed_groups: vec![],
        card_value: CardValueMapping::Number,
        facility_codes: Some(vec![12]),
    };
    let decision = decide(&snapshot, &policy, &card(1001), ts(NOW));
    assert!(decision.granted);
    // Reservations are per channel: without one they cannot grant.
    let decision = decide(&snapshot, &policy, &card(1008), ts(NOW));
    assert_eq!(decision.reason, Reason::NoAccessRights);
}

#[test]
fn card_value_mapping_is_per_door() {
    let mut parts = snapshot().to_parts();
    parts.credentials.push(credential("fac", 1, 1, "1200077"));
    let snapshot = Snapshot::new(parts, "UTC");
    let mut policy = door(FRONT);
    // Facility 12, card 77 → "12" + "00077".
    assert!(!decide(&snapshot, &policy, &card(77), ts(NOW)).granted);
    policy.card_value = CardValueMapping::FacilityNumber;
    let decision = decide(&snapshot, &policy, &card(77), ts(NOW));
    assert!(decision.granted, "{decision:?}");
    assert_eq!(decision.value, "1200077");
    assert_eq!(decision.person_id, Some(1));
}

#[test]
fn denials_still_name_the_person() {
    let decision = decide(&snapshot(), &door(FRONT), &card(1002), ts(NOW));
    assert_eq!((decision.granted, decision.person_id), (false, Some(2)));
}

#[test]
fn an_empty_snapshot_denies_everything() {
    let decision = decide(&Snapshot::empty(), &door(FRONT), &card(1001), ts(NOW));
    assert_eq!(
        (decision.granted, decision.reason),
        (false, Reason::UnknownCredential)
    );
}

fn card_at(format: CardFormat, facility: Option<u32>, number: u64) -> Presented {
    Presented::Card(CardRead {
        format,
        facility,
        number,
        bit_count: 26,
        raw: 0,
        data: 0,
    })
}

/// The kind "a card of another site": every other facility code a format can carry, with the
/// number of a person who may pass here, is denied as wrong_facility_code (event 20), names
/// nobody and is never looked up; the door's own facility code passes.
#[test]
fn only_the_doors_facility_codes_open_it() {
    let snapshot = snapshot();
    let policy = door(FRONT); // facility_codes = [12]
    for facility in 0..=255u32 {
        let decision = decide(
            &snapshot,
            &policy,
            &card_at(CardFormat::H10301, Some(facility), 1001),
            ts(NOW),
        );
        if facility == 12 {
            assert!(decision.granted, "{decision:?}");
            continue;
        }
        assert_eq!(
            (
                decision.granted,
                decision.reason,
                decision.event_code(),
                decision.person_id
            ),
            (false, Reason::WrongFacilityCode, 20, None),
            "facility {facility}"
        );
    }
    for facility in [0u32, 11, 13, 256, 4108, 65_535] {
        let decision = decide(
            &snapshot,
            &policy,
            &card_at(CardFormat::H10306, Some(facility), 1001),
            ts(NOW),
        );
        assert_eq!(
            decision.reason,
            Reason::WrongFacilityCode,
            "H10306 facility {facility}"
        );
    }
    assert_eq!(Reason::WrongFacilityCode.as_str(), "wrong_facility_code");
}

#[test]
fn facility_codes_and_the_other_rules() {
    let snapshot = snapshot();
    let foreign = card_at(CardFormat::H10301, Some(99), 1001);
    // Lockdown still wins, and still names nobody for a foreign card.
    let locked = decide(&snapshot, &door(LOCKDOWN_AND_UNLOCKED), &foreign, ts(NOW));
    assert_eq!((locked.reason, locked.person_id), (Reason::Lockdown, None));
    // Unlock mode admits anyone, as DoorFlow's does; nobody is named.
    let unlocked = decide(&snapshot, &door(UNLOCKED), &foreign, ts(NOW));
    assert_eq!((unlocked.granted, unlocked.person_id), (true, None));
    // Raw frames carry no facility: matched by their whole value only.
    let raw = decide(
        &snapshot,
        &door(FRONT),
        &card_at(CardFormat::RAW, None, 1001),
        ts(NOW),
    );
    assert!(raw.granted, "{raw:?}");
    // PINs have no facility.
    assert!(decide(&snapshot, &door(FRONT), &pin("4711"), ts(NOW)).granted);
    // No list (allowed by the config only where card_value holds the facility): any facility.
    let mut any = door(FRONT);
    any.facility_codes = None;
    assert!(decide(&snapshot, &any, &foreign, ts(NOW)).granted);
    // Several codes.
    let mut two = door(FRONT);
    two.facility_codes = Some(vec![12, 99]);
    assert!(decide(&snapshot, &two, &foreign, ts(NOW)).granted);
}
