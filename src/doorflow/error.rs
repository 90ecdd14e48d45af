//! One error type for every DoorFlow call, and its classification per the retry table (README,
//! "Retry table").
//! Bodies come in several styles; all parse, and nothing unknown crashes anything.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

pub use super::operation::Operation;

/// A parsed error body, whichever of DoorFlow's styles it used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// `error` (current style) or `type` (older style).
    pub code: Option<String>,
    /// `error_description`, `message`, `description` or `reason`.
    pub message: Option<String>,
    /// `reason`: admit_person's 403 body (`{error, reason}`) says why DoorFlow will not admit
    /// this person, which is about the person's access, not the agent's scope.
    pub reason: Option<String>,
    /// `errors: {field: [..]}` (values may also be a plain string), or the older `param`.
    pub fields: BTreeMap<String, Vec<String>>,
    /// Body `retry_in` seconds (429 from sync endpoints).
    pub retry_in: Option<u64>,
    /// A short excerpt when the body was not JSON.
    pub excerpt: Option<String>,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            return ErrorBody {
                excerpt: (!text.is_empty()).then(|| text.chars().take(120).collect()),
                ..Default::default()
            };
        };
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        let mut fields = BTreeMap::new();
        if let Some(errors) = value.get("errors").and_then(Value::as_object) {
            for (field, messages) in errors {
                let messages = match messages {
                    Value::Array(items) => items
                        .iter()
                        .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                        .collect(),
                    Value::String(s) => vec![s.clone()],
                    other => vec![other.to_string()],
                };
                fields.insert(field.clone(), messages);
            }
        }
        if let Some(param) = text("param") {
            fields
                .entry(param)
                .or_insert_with(|| text("message").into_iter().collect());
        }
        ErrorBody {
            code: text("error").or_else(|| text("type")),
            message: text("error_description")
                .or_else(|| text("message"))
                .or_else(|| text("description"))
                .or_else(|| text("reason")),
            reason: text("reason"),
            fields,
            retry_in: value.get("retry_in").and_then(Value::as_u64),
            excerpt: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Timeout,
    Connect,
    Tls,
    Other,
}

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    Status {
        operation: Operation,
        status: u16,
        body: ErrorBody,
        /// When the server said to come back (monotonic): `Retry-After` on any status, and
        /// for 408/429 also `X-RateLimit-Reset` or the body's `retry_in`.
        retry_at: Option<Instant>,
    },
    Transport {
        operation: Operation,
        kind: TransportKind,
        detail: String,
    },
    /// A 2xx whose body did not match the expected shape (truncated, malformed).
    Decode { operation: Operation, detail: String },
    /// An answer longer than the agent reads for this call, refused without reading the rest.
    TooLarge {
        operation: Operation,
        /// The most bytes this answer may have.
        limit: u64,
        /// `Content-Length`, when the server declared one.
        declared: Option<u64>,
    },
    /// A redirect the client did not follow: it left the origin (scheme, host or port, which
    /// includes https to http) or did not keep the method and body (only 307 and 308 do).
    Redirect {
        operation: Operation,
        status: u16,
        location: Option<String>,
    },
}

/// What the caller does next (the README's retry table, in one place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryClass {
    Done,
    RefreshAuth,
    DeadLetter { reason: &'static str },
    RateLimited { retry_at: Option<Instant> },
    Backoff,
}

/// Classifies an HTTP status.
pub fn classify_status(status: u16, retry_at: Option<Instant>) -> RetryClass {
    match status {
        200..=299 => RetryClass::Done,
        401 => RetryClass::RefreshAuth,
        403 => RetryClass::DeadLetter { reason: "forbidden" },
        404 | 410 => RetryClass::DeadLetter { reason: "gone" },
        408 | 429 => RetryClass::RateLimited { retry_at },
        500..=599 => RetryClass::Backoff,
        // 400, 402, 405, 406, 418, 422 and any other client error: not retryable unchanged.
        _ => RetryClass::DeadLetter { reason: "rejected" },
    }
}

impl ApiError {
    pub fn class(&self) -> RetryClass {
        match self {
            // A refused token call says nothing about the call that needed the token: hold it
            // (`auth_refused`), never dead-letter it.
            _ if self.is_auth_refused() => RetryClass::RefreshAuth,
            ApiError::Status { status, retry_at, .. } => classify_status(*status, *retry_at),
            // A garbled or oversized 2xx is treated like a server fault: retry later, keep what
            // we have. A redirect that is not followed is a configuration fault, retried until
            // the URL is fixed, so nothing queued is lost meanwhile.
            ApiError::Transport { .. }
            | ApiError::Decode { .. }
            | ApiError::TooLarge { .. }
            | ApiError::Redirect { .. } => RetryClass::Backoff,
        }
    }

    /// Whether DoorFlow refused the agent's credentials: a 401, or the token call (`POST
    /// /oauth/token`) answered with a client error other than 408/429 (`invalid_grant` comes
    /// as 400; RFC 6749 §5.2).
    pub fn is_auth_refused(&self) -> bool {
        match self {
            ApiError::Status { status: 401, .. } => true,
            ApiError::Status {
                operation: Operation::RefreshToken,
                status,
                ..
            } => (400..500).contains(status) && !matches!(status, 408 | 429),
            _ => false,
        }
    }

    /// When the server said to come back, if it did.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            ApiError::Status { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } | ApiError::Redirect { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Status {
                operation,
                status,
                body,
                retry_at,
            } => {
                write!(f, "{operation:?}: HTTP {status}")?;
                if let Some(code) = &body.code {
                    write!(f, " {code}")?;
                }
                if let Some(message) = &body.message {
                    write!(f, ": {message}")?;
                }
                match status {
                    401 => write!(f, " (the access token or API key was refused)")?,
                    403 => match forbidden_cause(*operation, body) {
                        Forbidden::Person => write!(
                            f,
                            " (DoorFlow will not admit this person here: the cause is the person's access rights, not the agent's permissions)"
                        )?,
                        Forbidden::Scope(scope) => write!(
                            f,
                            " (this needs the `{scope}` scope; grant it to the OAuth app or key)"
                        )?,
                        Forbidden::Unknown => write!(f, " (forbidden)")?,
                    },
                    408 | 429 => match retry_at {
                        Some(at) => write!(f, " (rate limited for {} s)", seconds_left(*at))?,
                        None => write!(f, " (rate limited)")?,
                    },
                    _ => {
                        if let Some(at) = retry_at {
                            write!(f, " (retry after {} s)", seconds_left(*at))?;
                        }
                    }
                }
                if !body.fields.is_empty() {
                    let fields: Vec<String> = body
                        .fields
                        .iter()
                        .map(|(field, messages)| format!("{field}: {}", messages.join(", ")))
                        .collect();
                    write!(f, "; {}", fields.join("; "))?;
                }
                if let Some(excerpt) = &body.excerpt {
                    write!(f, " (body: {excerpt})")?;
                }
                Ok(())
            }
            ApiError::Transport {
                operation,
                kind,
                detail,
            } => write!(f, "{operation:?}: {kind:?} error: {detail}"),
            ApiError::Decode { operation, detail } => {
                write!(f, "{operation:?}: unreadable response: {detail}")
            }
            ApiError::TooLarge {
                operation,
                limit,
                declared,
            } => {
                write!(f, "{operation:?}: answer larger than {limit} bytes")?;
                if let Some(declared) = declared {
                    write!(f, " (Content-Length {declared})")?;
                }
                write!(
                    f,
                    "; refused without reading the rest (the limit is api.max_bytes_per_item times the page size)"
                )
            }
            ApiError::Redirect {
                operation,
                status,
                location,
            } => write!(
                f,
                "{operation:?}: HTTP {status} redirect to {} not followed (the agent follows only 307/308 redirects within the same scheme, host and port); point the configured URL at the new address",
                location.as_deref().unwrap_or("(no Location)")
            ),
        }
    }
}

impl std::error::Error for ApiError {}

/// Whole seconds from now until `at`, rounded up.
fn seconds_left(at: Instant) -> u64 {
    at.saturating_duration_since(Instant::now())
        .as_millis()
        .div_ceil(1000) as u64
}

/// Why DoorFlow answered 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// admit_person's `{error, reason}`: the person may not pass this door.
    Person,
    /// The token or key lacks this scope (the spec's security requirement for the call).
    Scope(&'static str),
    /// A call that needs no scope (the event sink).
    Unknown,
}

/// The cause of a 403 on `operation`: a body with `reason` on an admit is about the person
/// (the spec's admitPerson 403); anything else is the scope the spec requires for the call.
pub fn forbidden_cause(operation: Operation, body: &ErrorBody) -> Forbidden {
    let scope_error = body.code.as_deref() == Some("insufficient_scope");
    if operation == Operation::AdmitPerson && body.reason.is_some() && !scope_error {
        return Forbidden::Person;
    }
    operation
        .required_scope()
        .map_or(Forbidden::Unknown, Forbidden::Scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_error(operation: Operation, status: u16) -> ApiError {
        ApiError::Status {
            operation,
            status,
            body: ErrorBody::parse(br#"{"error":"invalid_grant"}"#),
            retry_at: None,
        }
    }

    /// Issue 16 item 6: a refused refresh held the admit as `rejected`; the call that needed
    /// the token is not at fault.
    #[test]
    fn a_refused_token_call_holds_rather_than_dead_letters() {
        for status in [400, 401, 403, 404] {
            let error = status_error(Operation::RefreshToken, status);
            assert!(error.is_auth_refused(), "{status}");
            assert_eq!(error.class(), RetryClass::RefreshAuth, "{status}");
        }
        for status in [408, 429, 500] {
            assert!(!status_error(Operation::RefreshToken, status).is_auth_refused());
        }
        assert!(status_error(Operation::AdmitPerson, 401).is_auth_refused());
        let rejected = status_error(Operation::AdmitPerson, 400);
        assert!(!rejected.is_auth_refused());
        assert_eq!(rejected.class(), RetryClass::DeadLetter { reason: "rejected" });
    }

    #[test]
    fn every_documented_status_is_classified() {
        for status in [200, 201, 202, 204] {
            assert_eq!(classify_status(status, None), RetryClass::Done);
        }
        assert_eq!(classify_status(401, None), RetryClass::RefreshAuth);
        assert_eq!(
            classify_status(403, None),
            RetryClass::DeadLetter { reason: "forbidden" }
        );
        for status in [404, 410] {
            assert_eq!(
                classify_status(status, None),
                RetryClass::DeadLetter { reason: "gone" }
            );
        }
        for status in [400, 402, 405, 406, 418, 422, 409] {
            assert_eq!(
                classify_status(status, None),
                RetryClass::DeadLetter { reason: "rejected" },
                "{status}"
            );
        }
        for status in [408, 429] {
            assert!(matches!(
                classify_status(status, None),
                RetryClass::RateLimited { .. }
            ));
        }
        for status in [500, 502, 503, 504, 599] {
            assert_eq!(classify_status(status, None), RetryClass::Backoff);
        }
    }

    #[test]
    fn both_body_styles_and_endpoint_specific_ones_parse() {
        let current = ErrorBody::parse(
            br#"{"error":"validation_failed","error_description":"Invalid","errors":{"value":["is already in use","must be between 4 and 7 digits"],"limit_reached":"HID limit"}}"#,
        );
        assert_eq!(current.code.as_deref(), Some("validation_failed"));
        assert_eq!(current.fields["value"].len(), 2);
        assert_eq!(current.fields["limit_reached"], ["HID limit"]);

        let older = ErrorBody::parse(
            br#"{"type":"invalid_request_error","message":"No such person","param":"person_id"}"#,
        );
        assert_eq!(older.code.as_deref(), Some("invalid_request_error"));
        assert_eq!(older.fields["person_id"], ["No such person"]);

        let admit = ErrorBody::parse(br#"{"error":"forbidden","reason":"Person has no access"}"#);
        assert_eq!(admit.message.as_deref(), Some("Person has no access"));
        assert_eq!(admit.reason.as_deref(), Some("Person has no access"));

        let limited =
            ErrorBody::parse(br#"{"error":"rate_limited","description":"slow down","retry_in":60}"#);
        assert_eq!(limited.retry_in, Some(60));

        assert_eq!(ErrorBody::parse(b""), ErrorBody::default());
        let html = ErrorBody::parse(b"<html><body>502 Bad Gateway</body></html>");
        assert!(html.excerpt.unwrap().contains("502"));
        assert_eq!(ErrorBody::parse(br#"[1,2,3]"#), ErrorBody::default());
        assert_eq!(ErrorBody::parse(br#"{"error":42,"errors":[1]}"#).code, None);
    }

    #[test]
    fn messages_are_actionable() {
        let forbidden = ApiError::Status {
            operation: Operation::AdmitPerson,
            status: 403,
            body: ErrorBody::parse(br#"{"error":"insufficient_scope","error_description":"Missing scope"}"#),
            retry_at: None,
        };
        assert!(
            forbidden.to_string().contains("account.channel.admit.person"),
            "{forbidden}"
        );
        // admit_person's own 403 is about the person: no scope hint.
        let person = ApiError::Status {
            operation: Operation::AdmitPerson,
            status: 403,
            body: ErrorBody::parse(
                br#"{"error":"Access denied","reason":"Person does not have valid credentials for this channel"}"#,
            ),
            retry_at: None,
        };
        let text = person.to_string();
        assert!(
            text.contains("valid credentials") && text.contains("person's access rights"),
            "{text}"
        );
        assert!(!text.contains("account."), "{text}");
        // The same body on a list call, or a scope error on an admit, names the scope.
        let scope_on_admit = ErrorBody::parse(br#"{"error":"insufficient_scope","reason":"scope"}"#);
        assert_eq!(
            forbidden_cause(Operation::AdmitPerson, &scope_on_admit),
            Forbidden::Scope("account.channel.admit.person")
        );
        assert_eq!(
            forbidden_cause(
                Operation::ListSites,
                &ErrorBody::parse(br#"{"error":"x","reason":"y"}"#)
            ),
            Forbidden::Scope("account.site.readonly")
        );
        assert_eq!(
            forbidden_cause(Operation::PostEvent, &ErrorBody::default()),
            Forbidden::Unknown
        );
        let invalid = ApiError::Status {
            operation: Operation::PostEvent,
            status: 422,
            body: ErrorBody::parse(
                br#"{"error":"validation_failed","errors":{"value":["must be between 4 and 7 digits"]}}"#,
            ),
            retry_at: None,
        };
        assert!(
            invalid
                .to_string()
                .contains("value: must be between 4 and 7 digits"),
            "{invalid}"
        );
        let long = ErrorBody::parse("x".repeat(10_000).as_bytes());
        assert_eq!(long.excerpt.unwrap().len(), 120);
    }
}
