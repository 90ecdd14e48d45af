//! Every call the agent makes, with its endpoint in DoorFlow's OpenAPI spec and the OAuth scope
//! that spec's security requirement names for it. The client builds each request's path from
//! here, so the table a 403 message quotes is the table of what is really called;
//! `tests/operations_spec.rs` reads the spec and checks every row.

/// What the agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    ListPeople,
    ListCredentials,
    ListCredentialTypes,
    ListGroups,
    ListRoles,
    ListGroupReservations,
    ListReservations,
    ListChannels,
    ListSites,
    AdmitPerson,
    RefreshToken,
    /// An event to `uplink.events_url`, which is not DoorFlow's API.
    PostEvent,
}

/// HTTP method and path template of an operation, as the spec writes them (`{id}` for a path
/// parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
}

const fn get(path: &'static str) -> Option<Endpoint> {
    Some(Endpoint { method: "get", path })
}

impl Operation {
    pub const ALL: [Operation; 12] = [
        Operation::ListPeople,
        Operation::ListCredentials,
        Operation::ListCredentialTypes,
        Operation::ListGroups,
        Operation::ListRoles,
        Operation::ListGroupReservations,
        Operation::ListReservations,
        Operation::ListChannels,
        Operation::ListSites,
        Operation::AdmitPerson,
        Operation::RefreshToken,
        Operation::PostEvent,
    ];

    /// The spec's endpoint; `None` for the event sink.
    pub const fn endpoint(self) -> Option<Endpoint> {
        match self {
            Operation::ListPeople => get("/api/3/people"),
            Operation::ListCredentials => get("/api/3/credentials"),
            Operation::ListCredentialTypes => get("/api/3/credential_types"),
            Operation::ListGroups => get("/api/3/groups"),
            Operation::ListRoles => get("/api/3/roles"),
            Operation::ListGroupReservations => get("/api/3/group_reservations"),
            Operation::ListReservations => get("/api/3/reservations"),
            Operation::ListChannels => get("/api/3/channels"),
            Operation::ListSites => get("/api/3/sites"),
            Operation::AdmitPerson => Some(Endpoint {
                method: "post",
                path: "/api/3/channels/{id}/admit_person",
            }),
            Operation::RefreshToken => Some(Endpoint {
                method: "post",
                path: "/oauth/token",
            }),
            Operation::PostEvent => None,
        }
    }

    /// The request path, with `id` in place of `{id}`. Panics for the event sink (its URL is
    /// the configured one).
    pub fn path(self, id: Option<u64>) -> String {
        let endpoint = self
            .endpoint()
            .unwrap_or_else(|| panic!("{self:?} has no DoorFlow path"));
        match id {
            Some(id) => endpoint.path.replace("{id}", &id.to_string()),
            None => endpoint.path.to_string(),
        }
    }

    /// The OAuth scope DoorFlow's spec requires for this call (its `security` entry); `None`
    /// for the token endpoint and the event sink, which need none.
    pub const fn required_scope(self) -> Option<&'static str> {
        match self {
            Operation::ListPeople | Operation::ListCredentials => Some("account.person.readonly"),
            Operation::ListCredentialTypes => Some("account.credential_type.readonly"),
            Operation::ListGroups => Some("account.group.readonly"),
            Operation::ListRoles => Some("account.role.readonly"),
            Operation::ListGroupReservations => Some("account.group_reservation.readonly"),
            Operation::ListReservations => Some("account.reservation.readonly"),
            Operation::ListChannels => Some("account.channel.readonly"),
            Operation::ListSites => Some("account.site.readonly"),
            Operation::AdmitPerson => Some("account.channel.admit.person"),
            Operation::RefreshToken | Operation::PostEvent => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_take_their_id() {
        assert_eq!(
            Operation::AdmitPerson.path(Some(1340)),
            "/api/3/channels/1340/admit_person"
        );
        assert_eq!(Operation::ListPeople.path(None), "/api/3/people");
    }
}
