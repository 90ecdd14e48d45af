//! DoorFlow API v3 shapes (doorflow-openapi.yaml). Required fields are required, nullable ones
//! are `Option` with a default, and unknown fields are ignored: the server may add fields.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Person {
    pub id: u64,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub enabled: bool,
    #[serde(default)]
    pub valid_from: Option<Timestamp>,
    #[serde(default)]
    pub valid_to: Option<Timestamp>,
    #[serde(default)]
    pub groups: Vec<u64>,
    #[serde(default)]
    pub roles: Vec<u64>,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Credential {
    /// A string hashid, not a number.
    pub id: String,
    pub credential_type_id: u64,
    pub person_id: u64,
    #[serde(default)]
    pub label: Option<String>,
    /// Absent for mobile credentials.
    #[serde(default)]
    pub value: Option<String>,
    /// Mobile credentials only: invited, active, revoking, revoked.
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CredentialType {
    pub id: u64,
    pub label: String,
    pub slug: String,
    #[serde(default)]
    pub code: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Group {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Role {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub shift_id: Option<u64>,
    /// Not in the public spec; honoured when a server sends them.
    #[serde(default)]
    pub channel_ids: Vec<u64>,
    #[serde(default)]
    pub group_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GroupReservation {
    pub id: u64,
    pub person_id: u64,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    /// pending, active or deactivated; anything else is treated as deactivated (deny on doubt).
    pub state: String,
    #[serde(default)]
    pub group_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reservation {
    pub id: u64,
    pub person_id: u64,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    #[serde(default)]
    pub channel_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelMode {
    /// normal or unlock.
    pub description: String,
    #[serde(default)]
    pub relock_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LockdownState {
    #[serde(default)]
    pub state: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Lockdown {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub card_lockdown: Option<LockdownState>,
    #[serde(default)]
    pub rex_lockdown: Option<LockdownState>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Channel {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub status: Option<String>,
    pub mode: ChannelMode,
    #[serde(default)]
    pub lockdown: Option<Lockdown>,
    #[serde(default)]
    pub site_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Site {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdmissionRequest {
    #[serde(alias = "admission_request_id")]
    pub id: serde_json::Value,
    pub status: String,
}

/// `POST /oauth/token` answer.
#[derive(Clone, PartialEq, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Present when DoorFlow rotates the refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("rotated", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdmitPersonBody {
    pub person_id: u64,
}

/// An event as the agent posts it to its sink, in DoorFlow's event shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventOut {
    /// The queued call's stable id (also sent as `Idempotency-Key`).
    pub id: String,
    pub event_code: u16,
    pub channel_id: Option<u64>,
    pub channel_name: String,
    pub person_id: Option<u64>,
    /// Masked.
    pub credentials_number: Option<String>,
    pub reason: String,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_deserialise_and_unknown_fields_are_ignored() {
        let person: Person = serde_json::from_str(
            r#"{"id":12345,"first_name":"John","last_name":"Doe","enabled":true,"valid_from":null,
                "valid_to":"2024-01-15T17:00:00.000Z","groups":[1,3,5],"roles":[2,4],
                "card_number":"1234","custom_1":null,"updated_at":"2024-01-15T14:30:00Z"}"#,
        )
        .unwrap();
        assert_eq!(person.roles, [2, 4]);
        assert_eq!(person.valid_to.unwrap().as_second(), 1_705_338_000);

        let credential: Credential = serde_json::from_str(
            r#"{"id":"abc123xyz","credential_type_id":5,"label":"Card Number","person_id":12345,"value":"1234567890"}"#,
        )
        .unwrap();
        assert_eq!(credential.value.as_deref(), Some("1234567890"));

        let channel: Channel = serde_json::from_str(
            r#"{"id":1340,"name":"Front Door","mac_address":"00:11:22:33:44:55","status":"online","unit":1,
                "sync":{"status":"ok","last_sync_completed_at":null},
                "mode":{"description":"unlock","relock_at":"2024-01-15T17:00:00+01:00"},
                "lockdown":{"message":"x","card_lockdown":{"state":true},"rex_lockdown":{"state":false}},"site_id":25}"#,
        )
        .unwrap();
        assert_eq!(channel.mode.description, "unlock");
        assert!(channel.lockdown.unwrap().card_lockdown.unwrap().state);
    }

    #[test]
    fn token_debug_hides_tokens() {
        let token: TokenResponse = serde_json::from_str(
            r#"{"access_token":"secret-a","refresh_token":"secret-r","expires_in":3600}"#,
        )
        .unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
