//! DoorFlow's records (`doorflow::models`) as the snapshot's decision fields: names, e-mails
//! and photos are left behind here.

use crate::doorflow::models as api;
use crate::snapshot::{self, CredentialKind, Record, ReservationState};

/// A list item as a snapshot record.
pub trait ToRecord: serde::de::DeserializeOwned + Send + 'static {
    fn to_record(self) -> Record;
    /// When DoorFlow last changed it, where the API says (people): the cursor's fallback.
    fn updated_at(&self) -> Option<jiff::Timestamp> {
        None
    }
}

impl ToRecord for api::Person {
    fn updated_at(&self) -> Option<jiff::Timestamp> {
        self.updated_at
    }

    fn to_record(self) -> Record {
        Record::Person(snapshot::Person {
            id: self.id,
            enabled: self.enabled,
            valid_from: self.valid_from,
            valid_to: self.valid_to,
            roles: self.roles,
            groups: self.groups,
        })
    }
}

impl ToRecord for api::Credential {
    /// Mobile credentials have no value (they never arrive over Wiegand): kept with an empty
    /// one, which no reader presents, so the list's count still adds up.
    fn to_record(self) -> Record {
        Record::Credential(snapshot::Credential {
            value: self.value.unwrap_or_default(),
            id: self.id,
            credential_type_id: self.credential_type_id,
            person_id: self.person_id,
            status: self.status,
        })
    }
}

impl ToRecord for api::CredentialType {
    fn to_record(self) -> Record {
        Record::CredentialType(snapshot::CredentialType {
            kind: CredentialKind::classify(&self.slug, &self.label),
            id: self.id,
            slug: self.slug,
        })
    }
}

impl ToRecord for api::Role {
    fn to_record(self) -> Record {
        Record::Role(snapshot::Role {
            id: self.id,
            shift_id: self.shift_id,
            channel_ids: self.channel_ids,
            group_ids: self.group_ids,
        })
    }
}

impl ToRecord for api::Group {
    fn to_record(self) -> Record {
        Record::Group(snapshot::Group { id: self.id })
    }
}

impl ToRecord for api::GroupReservation {
    fn to_record(self) -> Record {
        Record::GroupReservation(snapshot::GroupReservation {
            id: self.id,
            person_id: self.person_id,
            start: self.start_time,
            end: self.end_time,
            state: match self.state.as_str() {
                "active" => ReservationState::Active,
                "pending" => ReservationState::Pending,
                _ => ReservationState::Deactivated, // unknown states grant nothing
            },
            group_ids: self.group_ids,
        })
    }
}

impl ToRecord for api::Reservation {
    fn to_record(self) -> Record {
        Record::Reservation(snapshot::Reservation {
            id: self.id,
            person_id: self.person_id,
            start: self.start_time,
            end: self.end_time,
            channel_ids: self.channel_ids,
        })
    }
}

impl ToRecord for api::Channel {
    fn to_record(self) -> Record {
        Record::Channel(snapshot::Channel {
            id: self.id,
            mode: match self.mode.description.as_str() {
                "unlock" => snapshot::ChannelMode::Unlock {
                    relock_at: self.mode.relock_at,
                },
                _ => snapshot::ChannelMode::Normal,
            },
            // A lockdown object without card details locks cards (deny on doubt).
            lockdown: self.lockdown.map(|l| snapshot::Lockdown {
                cards: l.card_lockdown.is_none_or(|s| s.state),
                rex: l.rex_lockdown.is_some_and(|s| s.state),
            }),
            site_id: self.site_id,
        })
    }
}

impl ToRecord for api::Site {
    fn to_record(self) -> Record {
        Record::Site(snapshot::Site {
            id: self.id,
            time_zone: self.time_zone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockdown_without_card_details_locks_cards_and_unknown_reservation_states_grant_nothing() {
        let channel: api::Channel = serde_json::from_str(
            r#"{"id":1,"name":"x","mode":{"description":"normal"},"lockdown":{"message":"m"}}"#,
        )
        .unwrap();
        let Record::Channel(channel) = channel.to_record() else {
            panic!("a channel")
        };
        assert_eq!(
            channel.lockdown,
            Some(snapshot::Lockdown {
                cards: true,
                rex: false
            })
        );
        let reservation: api::GroupReservation = serde_json::from_str(
            r#"{"id":1,"person_id":2,"start_time":"2026-01-01T00:00:00Z","end_time":"2026-01-02T00:00:00Z","state":"paused"}"#,
        )
        .unwrap();
        let Record::GroupReservation(reservation) = reservation.to_record() else {
            panic!("a group reservation")
        };
        assert_eq!(reservation.state, ReservationState::Deactivated);
    }
}
