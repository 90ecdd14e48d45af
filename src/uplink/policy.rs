//! What happens to a queued call after an attempt: the README's retry table applied to one
//! record. Pure: clocks and randomness come in as arguments, so every row is unit-tested.
//!
//! | outcome | action |
//! |---|---|
//! | 2xx | remove |
//! | 401 (after the client's one refresh) | keep the queue, hold the lane, alert |
//! | 403 / 404 / 410 / 400 / 402 / 405 / 406 / 418 / 422 | dead letter with the parsed error |
//! | 408 / 429 | hold the whole lane until the server's retry time (else backoff) |
//! | 5xx, timeout, connection error | exponential backoff with full jitter, capped; never sooner than a `Retry-After` |
//!
//! Time: waits are durations on the monotonic clock. A record keeps its times twice, on the
//! wall clock (for display, and for the rare wait carried across a reboot) and on the boot clock
//! (what the lane really waits for), and the admit TTL counts elapsed boot-clock time, so a wall
//! clock step neither expires a fresh admit nor lets a stale one out. After a reboot only the
//! wall clock is left: the TTL then errs towards expiry (a call from the future has an unknown
//! age and expires), and a wait is cut to at most `RetryPolicy::longest_hold`.

use crate::clock::Now;
use crate::doorflow::error::{ApiError, RetryClass, TransportKind};
pub use crate::store::Hold;
use crate::store::QueuedCall;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First backoff ceiling; doubles with each failed attempt.
    pub base: Duration,
    /// Highest backoff ceiling.
    pub cap: Duration,
    /// How long the lane holds after credentials are refused before trying again.
    pub auth_hold: Duration,
    /// A 429 that names no retry time holds the lane this long (the client's budget does the
    /// same).
    pub rate_limit_hold: Duration,
    /// Admits older than this are not sent.
    pub admit_ttl: Duration,
}

impl RetryPolicy {
    /// The defaults: 1 s first ceiling, 120 s cap.
    pub fn new(admit_ttl_s: u64) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(120),
            auth_hold: Duration::from_secs(300),
            rate_limit_hold: Duration::from_secs(60),
            admit_ttl: Duration::from_secs(admit_ttl_s),
        }
    }

    pub fn from_config(uplink: &crate::config::UplinkConfig) -> RetryPolicy {
        RetryPolicy {
            base: uplink.retry_base_ms.millis(),
            cap: uplink.retry_cap_s.secs(),
            ..RetryPolicy::new(uplink.admit_ttl_s.get())
        }
    }

    /// The longest wait this policy sets itself (a server's `Retry-After` can be longer, up to
    /// an hour): what a wait carried across a reboot is cut to.
    pub fn longest_hold(&self) -> Duration {
        self.cap.max(self.auth_hold).max(self.rate_limit_hold)
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
    /// Try again after `wait`; the record (attempts, times, error) is updated durably first.
    Retry {
        hold: Hold,
        attempts: u32,
        wait: Duration,
        error: String,
    },
}

/// Full jitter: a uniform delay between zero and `min(cap, base * 2^(attempts-1))`.
/// `jitter` is uniform in [0, 1).
pub fn backoff_delay(policy: &RetryPolicy, attempts: u32, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let ceiling = policy
        .base
        .checked_mul(1u32 << exponent)
        .unwrap_or(policy.cap)
        .min(policy.cap);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

/// How long ago `call` was queued: elapsed boot-clock time when it was queued in this boot;
/// otherwise the (trusted) wall clock's difference, `None` when that puts the call in the future
/// (a clock set back, a board booted without a real-time clock): its age is then unknown.
pub fn age(call: &QueuedCall, now: &Now) -> Option<Duration> {
    if let Some(elapsed) = call.created_boot.and_then(|created| now.boot.since(created)) {
        return Some(elapsed);
    }
    let wall = now.wall.duration_since(call.created_at);
    (!wall.is_negative()).then(|| wall.unsigned_abs())
}

/// Whether an admit is too old to send: replayed long after the swipe, it could open a door for
/// nobody (DoorFlow's own admission timeout is 2 minutes). An admit of unknown age counts as
/// too old. Events never expire.
pub fn is_expired(call: &QueuedCall, now: &Now, policy: &RetryPolicy) -> bool {
    call.call.is_admit() && age(call, now).is_none_or(|age| age > policy.admit_ttl)
}

/// Time left until an admit expires (zero once it has); `None` for events.
pub fn time_to_expiry(call: &QueuedCall, now: &Now, policy: &RetryPolicy) -> Option<Duration> {
    call.call
        .is_admit()
        .then(|| age(call, now).map_or(Duration::ZERO, |age| policy.admit_ttl.saturating_sub(age)))
}

/// How long until `call` may be tried again (zero when it is due): on the boot clock when the
/// wait was set in this boot; otherwise what the wall clock says is left, at most
/// `policy.longest_hold()`.
pub fn wait_left(call: &QueuedCall, now: &Now, policy: &RetryPolicy) -> Duration {
    if let Some(at) = call.next_attempt_boot.filter(|at| at.same_boot(now.boot)) {
        return at.since(now.boot).unwrap_or_default();
    }
    match call.next_attempt_at {
        Some(at) => {
            let left = at.duration_since(now.wall);
            if left.is_negative() {
                Duration::ZERO
            } else {
                left.unsigned_abs().min(policy.longest_hold())
            }
        }
        None => Duration::ZERO,
    }
}

/// The action after one attempt at `call` that ended with `result`.
pub fn after_attempt(
    call: &QueuedCall,
    result: Result<(), &ApiError>,
    now: &Now,
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
    let retry = |hold: Hold, attempts: u32, wait: Duration| Action::Retry {
        hold,
        attempts,
        wait,
        error: error.to_string(),
    };
    let backoff = || backoff_delay(policy, attempts, jitter);
    // What the server asked for (`Retry-After` on any status), from now.
    let server_wait = error.retry_at().map(|at| at.saturating_duration_since(now.mono));
    match error.class() {
        RetryClass::Done => Action::Remove,
        RetryClass::DeadLetter { reason } => Action::DeadLetter {
            status: error.status(),
            reason: reason.to_string(),
            detail: error.to_string(),
        },
        // A rate limit is the server's pacing, not the record's fault: the attempt count (which
        // drives backoff) stays.
        RetryClass::RateLimited { .. } => {
            let fallback = match error.status() {
                Some(429) => policy.rate_limit_hold,
                _ => backoff(),
            };
            retry(Hold::RateLimited, prior, server_wait.unwrap_or(fallback))
        }
        RetryClass::RefreshAuth => retry(Hold::AuthRefused, attempts, policy.auth_hold),
        RetryClass::Backoff => {
            let hold = match error {
                ApiError::Transport {
                    kind: TransportKind::Connect | TransportKind::Timeout,
                    ..
                } => Hold::Unreachable,
                _ => Hold::ServerError,
            };
            // `Retry-After` is the least the server asked for; backoff may wait longer.
            retry(hold, attempts, backoff().max(server_wait.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::BootInstant;
    use crate::doorflow::error::{ErrorBody, Operation};
    use crate::store::Call;
    use jiff::{SignedDuration, Timestamp};
    use std::time::Instant;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const NOW: i64 = 1_800_000_000;
    const BOOT: u64 = 42;

    /// A clock of the test's choosing: wall `NOW`, 1000 s into boot `BOOT`.
    fn now() -> Now {
        Now {
            wall: t(NOW),
            boot: BootInstant {
                boot: BOOT,
                ns: 1_000_000_000_000,
            },
            mono: Instant::now(),
        }
    }

    /// `clock` with only the wall clock moved by `step` (what NTP or an RTC correction does).
    fn stepped(clock: Now, step: SignedDuration) -> Now {
        Now {
            wall: clock.wall + step,
            ..clock
        }
    }

    /// An admit queued `age_s` before `now()`, on both clocks.
    fn admit(age_s: u64, attempts: u32) -> QueuedCall {
        let clock = now();
        QueuedCall {
            id: "a".into(),
            call: Call::Admit {
                channel_id: 1340,
                person_id: 17,
            },
            created_at: t(NOW - age_s as i64),
            created_boot: Some(BootInstant {
                ns: clock.boot.ns - age_s * 1_000_000_000,
                ..clock.boot
            }),
            attempts,
            next_attempt_at: None,
            next_attempt_boot: None,
            last_error: None,
            hold: None,
        }
    }

    fn status(status: u16, body: &[u8], retry_at: Option<Instant>) -> ApiError {
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

    fn act_at(clock: &Now, call: &QueuedCall, error: &ApiError) -> Action {
        after_attempt(call, Err(error), clock, 0.5, &RetryPolicy::new(120))
    }

    fn act(call: &QueuedCall, error: &ApiError) -> Action {
        act_at(&now(), call, error)
    }

    #[test]
    fn success_removes() {
        let policy = RetryPolicy::new(120);
        assert_eq!(
            after_attempt(&admit(0, 3), Ok(()), &now(), 0.5, &policy),
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
            match act(&admit(0, 0), &error) {
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
        let Action::DeadLetter { detail, .. } = act(&admit(0, 0), &forbidden) else {
            panic!()
        };
        assert!(detail.contains("account.channel.admit.person"), "{detail}");
    }

    #[test]
    fn rate_limits_hold_until_the_server_says_without_counting_an_attempt() {
        let clock = now();
        let error = status(429, b"{}", Some(clock.mono + secs(42)));
        assert!(matches!(
            act_at(&clock, &admit(0, 2), &error),
            Action::Retry { hold: Hold::RateLimited, attempts: 2, wait, .. } if wait == secs(42)
        ));
        // No retry time at all: the same hold as the client's budget applies.
        let bare = status(429, b"", None);
        assert!(matches!(
            act(&admit(0, 0), &bare),
            Action::Retry { hold: Hold::RateLimited, wait, .. } if wait == secs(60)
        ));
        // A 408 without a time backs off.
        let timeout = status(408, b"", None);
        let Action::Retry { hold, wait, .. } = act(&admit(0, 0), &timeout) else {
            panic!()
        };
        assert_eq!(hold, Hold::RateLimited);
        assert!(wait <= secs(1));
    }

    #[test]
    fn server_errors_and_transport_errors_back_off() {
        for code in [500, 502, 503, 504] {
            let Action::Retry {
                hold, attempts, wait, ..
            } = act(&admit(0, 4), &status(code, b"<html>", None))
            else {
                panic!("{code}")
            };
            assert_eq!((hold, attempts), (Hold::ServerError, 5));
            // Ceiling for the 5th attempt is 16 s; jitter 0.5 gives 8 s.
            assert_eq!(wait, secs(8));
        }
        for kind in [TransportKind::Connect, TransportKind::Timeout] {
            let Action::Retry { hold, .. } = act(&admit(0, 0), &transport(kind)) else {
                panic!()
            };
            assert_eq!(hold, Hold::Unreachable);
        }
        let Action::Retry { hold, .. } = act(&admit(0, 0), &transport(TransportKind::Tls)) else {
            panic!()
        };
        assert_eq!(hold, Hold::ServerError);
    }

    /// Issue 16 item 7: a 503 with `Retry-After: 8` waits at least 8 s, whatever the backoff
    /// drew; a longer backoff stays longer.
    #[test]
    fn retry_after_on_any_status_is_the_least_wait() {
        let clock = now();
        let asked = status(503, b"", Some(clock.mono + secs(8)));
        let Action::Retry { hold, wait, .. } = act_at(&clock, &admit(0, 0), &asked) else {
            panic!()
        };
        assert_eq!((hold, wait), (Hold::ServerError, secs(8)));
        let Action::Retry { wait, .. } = act_at(&clock, &admit(0, 6), &asked) else {
            panic!()
        };
        assert_eq!(
            wait,
            secs(32),
            "64 s ceiling at the 7th attempt, half of it drawn"
        );
    }

    #[test]
    fn an_answer_after_the_server_was_unreachable_restarts_the_count() {
        let mut call = admit(0, 6);
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
        let Action::Retry { hold, wait, .. } = act(&admit(0, 0), &status(401, b"", None)) else {
            panic!()
        };
        assert_eq!((hold, wait), (Hold::AuthRefused, secs(300)));
    }

    #[test]
    fn backoff_is_full_jitter_and_capped() {
        let policy = RetryPolicy::new(120);
        assert_eq!(backoff_delay(&policy, 1, 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(&policy, 1, 0.999_999_999).as_secs(), 0);
        assert_eq!(backoff_delay(&policy, 3, 0.5), secs(2));
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
        assert!(!is_expired(&admit(120, 0), &now(), &policy));
        assert!(is_expired(&admit(121, 0), &now(), &policy));
        assert_eq!(time_to_expiry(&admit(100, 0), &now(), &policy), Some(secs(20)));
        let mut event = admit(0, 0);
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
            },
        };
        assert!(!is_expired(&event, &now().after(secs(1_000_000)), &policy));
        assert_eq!(time_to_expiry(&event, &now(), &policy), None);
    }

    /// Issue 15: the wall clock set forward 2 hours or 3 days, or back an hour, neither expires
    /// a fresh admit nor lets an old one out; only elapsed (boot-clock) time counts.
    #[test]
    fn the_admit_ttl_counts_elapsed_time_whatever_the_wall_clock_does() {
        let policy = RetryPolicy::new(120);
        for step in [
            SignedDuration::from_hours(2),
            SignedDuration::from_hours(72),
            SignedDuration::from_secs(-3600),
            SignedDuration::from_secs(-40),
        ] {
            let clock = stepped(now(), step);
            assert!(
                !is_expired(&admit(1, 0), &clock, &policy),
                "{step:?}: fresh admit"
            );
            assert_eq!(age(&admit(5, 0), &clock), Some(secs(5)), "{step:?}");
            assert!(is_expired(&admit(121, 0), &clock, &policy), "{step:?}: old admit");
        }
    }

    /// After a reboot the boot clock says nothing about the admit: the wall clock decides,
    /// and a call from the future (a clock set back, or not yet set) has an unknown age and
    /// expires.
    #[test]
    fn across_a_reboot_the_ttl_falls_back_to_the_wall_clock_erring_towards_expiry() {
        let policy = RetryPolicy::new(120);
        let rebooted = |wall_step: i64| Now {
            wall: t(NOW + wall_step),
            boot: BootInstant {
                boot: BOOT + 1,
                ns: 30_000_000_000,
            },
            mono: Instant::now(),
        };
        let call = admit(10, 0); // queued 10 s before NOW in the old boot
        assert!(
            !is_expired(&call, &rebooted(30), &policy),
            "40 s old by the wall clock"
        );
        assert!(is_expired(&call, &rebooted(200), &policy), "210 s old");
        assert!(
            is_expired(&call, &rebooted(-3600), &policy),
            "from the future: unknown age"
        );
        let mut old_record = admit(10, 0);
        old_record.created_boot = None; // written before boot stamps existed
        assert!(!is_expired(&old_record, &now(), &policy));
        assert!(is_expired(
            &old_record,
            &stepped(now(), SignedDuration::from_secs(-60)),
            &policy
        ));
    }

    #[test]
    fn waits_run_on_the_boot_clock_and_are_capped_after_a_reboot() {
        let policy = RetryPolicy::new(120);
        let clock = now();
        let mut call = admit(0, 1);
        call.next_attempt_at = Some(t(NOW + 30));
        call.next_attempt_boot = Some(clock.boot + secs(30));
        for step in [SignedDuration::from_secs(-3600), SignedDuration::from_hours(2)] {
            assert_eq!(
                wait_left(&call, &stepped(clock, step), &policy),
                secs(30),
                "{step:?}"
            );
        }
        assert_eq!(wait_left(&call, &clock.after(secs(31)), &policy), Duration::ZERO);
        // Another boot: the wall clock's remainder, at most the longest hold.
        let rebooted = Now {
            boot: BootInstant {
                boot: BOOT + 1,
                ns: 1,
            },
            ..clock
        };
        assert_eq!(wait_left(&call, &rebooted, &policy), secs(30));
        call.next_attempt_at = Some(t(NOW + 86_400));
        assert_eq!(wait_left(&call, &rebooted, &policy), policy.longest_hold());
        call.next_attempt_at = None;
        call.next_attempt_boot = None;
        assert_eq!(wait_left(&call, &clock, &policy), Duration::ZERO);
    }
}
