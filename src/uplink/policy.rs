//! What happens to a queued call after an attempt: the README's retry table applied to one
//! record. Pure: time and randomness come in as arguments, so every row is unit-tested.
//!
//! | outcome | action |
//! |---|---|
//! | 2xx | remove |
//! | 401 (after the client's one refresh) | keep the queue, hold the lane, alert |
//! | 403 / 404 / 410 / 400 / 402 / 405 / 406 / 418 / 422 | dead letter with the parsed error |
//! | 408 / 429 | hold the whole lane until the server's retry time (else backoff) |
//! | 5xx, timeout, connection error | exponential backoff with full jitter, capped |

use crate::doorflow::error::{ApiError, RetryClass, TransportKind};
pub use crate::store::Hold;
use crate::store::QueuedCall;
use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First backoff ceiling; doubles with each failed attempt.
    pub base: SignedDuration,
    /// Highest backoff ceiling.
    pub cap: SignedDuration,
    /// How long the lane holds after credentials are refused before trying again.
    pub auth_hold: SignedDuration,
    /// A 429 that names no retry time holds the lane this long (the client's budget does the
    /// same).
    pub rate_limit_hold: SignedDuration,
    /// Admits older than this are not sent.
    pub admit_ttl: SignedDuration,
}

impl RetryPolicy {
    /// The defaults: 1 s first ceiling, 120 s cap.
    pub fn new(admit_ttl_s: u64) -> RetryPolicy {
        RetryPolicy {
            base: SignedDuration::from_secs(1),
            cap: SignedDuration::from_secs(120),
            auth_hold: SignedDuration::from_secs(300),
            rate_limit_hold: SignedDuration::from_secs(60),
            admit_ttl: SignedDuration::from_secs(admit_ttl_s as i64),
        }
    }

    pub fn from_config(uplink: &crate::config::UplinkConfig) -> RetryPolicy {
        RetryPolicy {
            base: SignedDuration::from_millis(uplink.retry_base_ms.get() as i64),
            cap: SignedDuration::from_secs(uplink.retry_cap_s.get() as i64),
            ..RetryPolicy::new(uplink.admit_ttl_s.get())
        }
    }
}

/// The next step for the record that was just tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delivered: remove it.
    Remove,
    /// Not retryable: move it to the dead letters.
    DeadLetter {
        status: Option<u16>,
        reason: String,
        detail: String,
    },
    /// Try again at `at`; the record (attempts, time, error) is updated durably first.
    Retry {
        hold: Hold,
        attempts: u32,
        at: Timestamp,
        error: String,
    },
}

/// Full jitter: a uniform delay between zero and `min(cap, base * 2^(attempts-1))`.
/// `jitter` is uniform in [0, 1).
pub fn backoff_delay(policy: &RetryPolicy, attempts: u32, jitter: f64) -> SignedDuration {
    let exponent = attempts.saturating_sub(1).min(30);
    let ceiling = policy
        .base
        .checked_mul(1i32 << exponent)
        .unwrap_or(policy.cap)
        .min(policy.cap);
    let nanos = ceiling.as_nanos() as f64 * jitter.clamp(0.0, 1.0);
    SignedDuration::from_nanos(nanos as i64)
}

/// Whether an admit is too old to send: replayed long after the swipe, it could open a door for
/// nobody (DoorFlow's own admission timeout is 2 minutes). Events never expire.
pub fn is_expired(call: &QueuedCall, now: Timestamp, policy: &RetryPolicy) -> bool {
    call.call.is_admit() && now.duration_since(call.created_at) > policy.admit_ttl
}

/// The action after one attempt at `call` that ended with `result`.
pub fn after_attempt(
    call: &QueuedCall,
    result: Result<(), &ApiError>,
    now: Timestamp,
    jitter: f64,
    policy: &RetryPolicy,
) -> Action {
    let error = match result {
        Ok(()) => return Action::Remove,
        Err(error) => error,
    };
    // Failures while the server did not answer say nothing about how it answers now: an HTTP
    // answer after such a hold starts the count again (a refused connection keeps counting).
    let prior = match (call.hold, error) {
        (Some(Hold::Unreachable), ApiError::Status { .. }) => 0,
        _ => call.attempts,
    };
    let attempts = prior.saturating_add(1);
    let retry = |hold: Hold, attempts: u32, at: Timestamp| Action::Retry {
        hold,
        attempts,
        at,
        error: error.to_string(),
    };
    let backoff = || now + backoff_delay(policy, attempts, jitter);
    match error.class() {
        RetryClass::Done => Action::Remove,
        RetryClass::DeadLetter { reason } => Action::DeadLetter {
            status: error.status(),
            reason: reason.to_string(),
            detail: error.to_string(),
        },
        // A rate limit is the server's pacing, not the record's fault: the attempt count (which
        // drives backoff) stays.
        RetryClass::RateLimited { retry_at } => {
            let fallback = match error.status() {
                Some(429) => now + policy.rate_limit_hold,
                _ => backoff(),
            };
            retry(Hold::RateLimited, prior, retry_at.unwrap_or(fallback).max(now))
        }
        RetryClass::RefreshAuth => retry(Hold::AuthRefused, attempts, now + policy.auth_hold),
        RetryClass::Backoff => {
            let hold = match error {
                ApiError::Transport {
                    kind: TransportKind::Connect | TransportKind::Timeout,
                    ..
                } => Hold::Unreachable,
                _ => Hold::ServerError,
            };
            retry(hold, attempts, backoff())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doorflow::error::{ErrorBody, Operation};
    use crate::store::Call;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn admit(created: i64, attempts: u32) -> QueuedCall {
        QueuedCall {
            id: "a".into(),
            call: Call::Admit {
                channel_id: 1340,
                person_id: 17,
            },
            created_at: t(created),
            attempts,
            next_attempt_at: None,
            last_error: None,
            hold: None,
        }
    }

    fn status(status: u16, body: &[u8], retry_at: Option<Timestamp>) -> ApiError {
        ApiError::Status {
            operation: Operation::AdmitPerson,
            status,
            body: ErrorBody::parse(body),
            retry_at,
        }
    }

    fn transport(kind: TransportKind) -> ApiError {
        ApiError::Transport {
            operation: Operation::PostEvent,
            kind,
            detail: "boom".into(),
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn act(call: &QueuedCall, error: &ApiError) -> Action {
        after_attempt(call, Err(error), t(NOW), 0.5, &RetryPolicy::new(120))
    }

    #[test]
    fn success_removes() {
        let policy = RetryPolicy::new(120);
        assert_eq!(
            after_attempt(&admit(NOW, 3), Ok(()), t(NOW), 0.5, &policy),
            Action::Remove
        );
    }

    #[test]
    fn every_non_retryable_client_error_is_dead_lettered_with_its_detail() {
        for (code, reason) in [
            (400, "rejected"),
            (402, "rejected"),
            (403, "forbidden"),
            (404, "gone"),
            (405, "rejected"),
            (406, "rejected"),
            (410, "gone"),
            (418, "rejected"),
            (422, "rejected"),
        ] {
            let error = status(
                code,
                br#"{"error":"x","errors":{"person_id":["is unknown"]}}"#,
                None,
            );
            match act(&admit(NOW, 0), &error) {
                Action::DeadLetter {
                    status,
                    reason: r,
                    detail,
                } => {
                    assert_eq!((status, r.as_str()), (Some(code), reason), "{code}");
                    assert!(detail.contains("person_id: is unknown"), "{code}: {detail}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        let forbidden = status(403, br#"{"error":"insufficient_scope"}"#, None);
        let Action::DeadLetter { detail, .. } = act(&admit(NOW, 0), &forbidden) else {
            panic!()
        };
        assert!(detail.contains("account.channel.admit.person"), "{detail}");
    }

    #[test]
    fn rate_limits_hold_until_the_server_says_without_counting_an_attempt() {
        let error = status(429, b"{}", Some(t(NOW + 42)));
        assert!(matches!(
            act(&admit(NOW, 2), &error),
            Action::Retry { hold: Hold::RateLimited, attempts: 2, at, .. } if at == t(NOW + 42)
        ));
        // No retry time at all: the same hold as the client's budget applies.
        let bare = status(429, b"", None);
        assert!(matches!(
            act(&admit(NOW, 0), &bare),
            Action::Retry { hold: Hold::RateLimited, at, .. } if at == t(NOW + 60)
        ));
        // A 408 without a time backs off.
        let timeout = status(408, b"", None);
        let Action::Retry { hold, at, .. } = act(&admit(NOW, 0), &timeout) else {
            panic!()
        };
        assert_eq!(hold, Hold::RateLimited);
        assert!(at >= t(NOW) && at <= t(NOW + 1));
    }

    #[test]
    fn server_errors_and_transport_errors_back_off() {
        for code in [500, 502, 503, 504] {
            let Action::Retry {
                hold, attempts, at, ..
            } = act(&admit(NOW, 4), &status(code, b"<html>", None))
            else {
                panic!("{code}")
            };
            assert_eq!((hold, attempts), (Hold::ServerError, 5));
            // Ceiling for the 5th attempt is 16 s; jitter 0.5 gives 8 s.
            assert_eq!(at, t(NOW + 8));
        }
        for kind in [TransportKind::Connect, TransportKind::Timeout] {
            let Action::Retry { hold, .. } = act(&admit(NOW, 0), &transport(kind)) else {
                panic!()
            };
            assert_eq!(hold, Hold::Unreachable);
        }
        let Action::Retry { hold, .. } = act(&admit(NOW, 0), &transport(TransportKind::Tls)) else {
            panic!()
        };
        assert_eq!(hold, Hold::ServerError);
    }

    #[test]
    fn an_answer_after_the_server_was_unreachable_restarts_the_count() {
        let mut call = admit(NOW, 6);
        call.hold = Some(Hold::Unreachable);
        let Action::Retry { attempts, .. } = act(&call, &status(503, b"", None)) else {
            panic!()
        };
        assert_eq!(
            attempts, 1,
            "a 503 after the outage is the first failure of its kind"
        );
        let Action::Retry { attempts, .. } = act(&call, &transport(TransportKind::Connect)) else {
            panic!()
        };
        assert_eq!(attempts, 7, "still unreachable: the backoff keeps growing");
    }

    #[test]
    fn refused_credentials_hold_the_lane_and_keep_the_record() {
        let Action::Retry { hold, at, .. } = act(&admit(NOW, 0), &status(401, b"", None)) else {
            panic!()
        };
        assert_eq!((hold, at), (Hold::AuthRefused, t(NOW + 300)));
    }

    #[test]
    fn backoff_is_full_jitter_and_capped() {
        let policy = RetryPolicy::new(120);
        assert_eq!(backoff_delay(&policy, 1, 0.0), SignedDuration::ZERO);
        assert_eq!(backoff_delay(&policy, 1, 0.999_999_999).as_secs(), 0);
        assert_eq!(backoff_delay(&policy, 3, 0.5), SignedDuration::from_secs(2));
        for attempts in [8, 20, 40, u32::MAX] {
            let delay = backoff_delay(&policy, attempts, 0.999_999);
            assert!(
                delay <= policy.cap && delay.as_secs() >= 119,
                "{attempts}: {delay:?}"
            );
        }
    }

    #[test]
    fn only_admits_expire_and_only_after_the_ttl() {
        let policy = RetryPolicy::new(120);
        assert!(!is_expired(&admit(NOW, 0), t(NOW + 120), &policy));
        assert!(is_expired(&admit(NOW, 0), t(NOW + 121), &policy));
        let mut event = admit(NOW, 0);
        event.call = Call::Event {
            event: crate::audit::AuditEvent {
                id: 1,
                event_code: 10,
                reason: "authorised".into(),
                door: "front".into(),
                channel_id: None,
                person_id: None,
                credential: None,
                created_at: t(NOW),
                admit: false,
                repeats: 0,
                updated_at: None,
            },
        };
        assert!(!is_expired(&event, t(NOW + 1_000_000), &policy));
    }
}
