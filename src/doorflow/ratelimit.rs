//! Rate limits: parsing DoorFlow's headers, and the one client-side budget that sync and uplink
//! share so the agent never burns its own quota.
//!
//! Pacing rule: requests are spaced at least `window / limit` (plus 2 %) apart, so a steady
//! caller uses about 98 % of the allowed rate; when the server's `X-RateLimit-Remaining` says
//! the window is spent, callers wait for `X-RateLimit-Reset` plus a second of clock margin; a
//! 429 pauses every caller until its retry time. Pure: every method takes `now`.

use jiff::{SignedDuration, Timestamp};
use reqwest::header::HeaderMap;

/// What one response said about the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset: Option<Timestamp>,
    /// `Retry-After`, as an instant.
    pub retry_after: Option<Timestamp>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

impl RateInfo {
    /// Reads the headers; malformed values are ignored.
    pub fn from_headers(headers: &HeaderMap, now: Timestamp) -> RateInfo {
        RateInfo {
            limit: header(headers, "x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: header(headers, "x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset: header(headers, "x-ratelimit-reset")
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|s| Timestamp::from_second(s).ok()),
            retry_after: header(headers, "retry-after").and_then(|v| parse_retry_after(v, now)),
        }
    }

    /// When to come back after a 429/408: `Retry-After`, else `X-RateLimit-Reset`, else the
    /// body's `retry_in`, else unknown (the caller backs off).
    pub fn retry_at(&self, body_retry_in: Option<u64>, now: Timestamp) -> Option<Timestamp> {
        self.retry_after
            .or(self.reset.filter(|reset| *reset > now))
            .or_else(|| body_retry_in.and_then(|s| now.checked_add(SignedDuration::from_secs(s as i64)).ok()))
    }
}

/// `Retry-After` is delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Timestamp> {
    if let Ok(seconds) = value.parse::<u32>() {
        return now.checked_add(SignedDuration::from_secs(seconds as i64)).ok();
    }
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()
}

/// Pagination totals: `Total`/`Per-Page` (spec) or `X-Total-Results`/`X-Per-Page` (older).
pub fn total_results(headers: &HeaderMap) -> Option<u64> {
    header(headers, "total")
        .or_else(|| header(headers, "x-total-results"))
        .and_then(|v| v.parse().ok())
}

/// The shared budget.
#[derive(Debug, Clone)]
pub struct RateBudget {
    limit: u32,
    remaining: u32,
    reset: Option<Timestamp>,
    window: SignedDuration,
    last_slot: Option<Timestamp>,
    paused_until: Option<Timestamp>,
    /// 429 answers (pauses) since the budget was created, for metrics.
    rate_limited: u64,
}

const CLOCK_MARGIN: SignedDuration = SignedDuration::from_secs(1);

impl RateBudget {
    /// `per_minute` applies until the server's headers say otherwise.
    pub fn new(per_minute: u32) -> RateBudget {
        RateBudget {
            limit: per_minute.max(1),
            remaining: per_minute.max(1),
            reset: None,
            window: SignedDuration::from_secs(60),
            last_slot: None,
            paused_until: None,
            rate_limited: 0,
        }
    }

    fn spacing(&self) -> SignedDuration {
        let nanos = self.window.as_nanos() / self.limit as i128;
        SignedDuration::from_nanos((nanos * 102 / 100) as i64)
    }

    /// Reserves the next request slot and returns when it may be sent.
    pub fn reserve(&mut self, now: Timestamp) -> Timestamp {
        let mut slot = now;
        if let Some(paused) = self.paused_until {
            slot = slot.max(paused);
        }
        if let Some(last) = self.last_slot {
            slot = slot.max(last + self.spacing());
        }
        // A window that has passed is fresh again.
        if self.reset.is_some_and(|reset| slot >= reset) {
            self.remaining = self.limit;
            self.reset = None;
        }
        if self.remaining == 0 {
            let resume = self
                .reset
                .map_or(slot + self.window, |reset| reset + CLOCK_MARGIN);
            slot = slot.max(resume);
            self.remaining = self.limit;
            self.reset = None;
        }
        self.remaining -= 1;
        self.last_slot = Some(slot);
        slot
    }

    /// Takes in what a response's headers said.
    pub fn observe(&mut self, info: &RateInfo) {
        if let Some(limit) = info.limit.filter(|l| *l > 0) {
            self.limit = limit;
        }
        if let Some(remaining) = info.remaining {
            self.remaining = remaining.min(self.limit);
        }
        if let Some(reset) = info.reset {
            self.reset = Some(reset);
        }
    }

    /// A 429: everyone waits until `until`.
    pub fn pause_until(&mut self, until: Timestamp) {
        self.rate_limited += 1;
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        self.remaining = 0;
        self.reset = Some(until - CLOCK_MARGIN);
    }

    /// How many 429 answers paused this budget.
    pub fn rate_limited_total(&self) -> u64 {
        self.rate_limited
    }

    pub fn paused_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.paused_until.filter(|p| *p > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn headers_parse_and_malformed_ones_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert("X-RateLimit-Limit", HeaderValue::from_static("120"));
        headers.insert("X-RateLimit-Remaining", HeaderValue::from_static("7"));
        headers.insert("X-RateLimit-Reset", HeaderValue::from_static("1800000060"));
        headers.insert("Retry-After", HeaderValue::from_static("30"));
        let info = RateInfo::from_headers(&headers, t(1_800_000_000));
        assert_eq!((info.limit, info.remaining), (Some(120), Some(7)));
        assert_eq!(info.reset, Some(t(1_800_000_060)));
        assert_eq!(info.retry_after, Some(t(1_800_000_030)));

        headers.insert("X-RateLimit-Limit", HeaderValue::from_static("lots"));
        headers.insert("Retry-After", HeaderValue::from_static("soon"));
        let info = RateInfo::from_headers(&headers, t(0));
        assert_eq!((info.limit, info.retry_after), (None, None));
    }

    #[test]
    fn retry_after_as_http_date() {
        let at = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", t(0)).unwrap();
        assert_eq!(at.to_string(), "2015-10-21T07:28:00Z");
    }

    #[test]
    fn retry_precedence() {
        let now = t(1000);
        let all = RateInfo {
            retry_after: Some(t(1010)),
            reset: Some(t(1020)),
            ..Default::default()
        };
        assert_eq!(all.retry_at(Some(30), now), Some(t(1010)));
        let reset = RateInfo {
            reset: Some(t(1020)),
            ..Default::default()
        };
        assert_eq!(reset.retry_at(Some(30), now), Some(t(1020)));
        assert_eq!(RateInfo::default().retry_at(Some(30), now), Some(t(1030)));
        assert_eq!(RateInfo::default().retry_at(None, now), None);
    }

    #[test]
    fn totals_in_both_header_styles() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Total-Results", HeaderValue::from_static("1050"));
        assert_eq!(total_results(&headers), Some(1050));
        headers.insert("Total", HeaderValue::from_static("1051"));
        assert_eq!(total_results(&headers), Some(1051));
    }

    /// A server with fixed 60 s windows and headers; a steady caller must never see a 429 and
    /// must use at least 90 % of the limit.
    #[test]
    fn steady_caller_stays_under_a_fixed_window_limit() {
        for limit in [120u32, 30, 600] {
            let start = 1_800_000_017i64; // windows not aligned with the caller's start
            let mut budget = RateBudget::new(120);
            let (mut window_start, mut count, mut rejected, mut served) = (start - 17, 0u32, 0u32, 0u32);
            let mut now = t(start);
            let end = t(start + 600);
            while now < end {
                now = budget.reserve(now);
                while now.as_second() >= window_start + 60 {
                    window_start += 60;
                    count = 0;
                }
                let info = RateInfo {
                    limit: Some(limit),
                    remaining: Some(limit.saturating_sub(count + 1)),
                    reset: Some(t(window_start + 60)),
                    retry_after: None,
                };
                if count >= limit {
                    rejected += 1;
                    budget.pause_until(t(window_start + 60));
                } else {
                    count += 1;
                    served += 1;
                    budget.observe(&info);
                }
            }
            assert_eq!(rejected, 0, "limit {limit}");
            let share = served as f64 / (limit as f64 * 10.0);
            assert!(share >= 0.9, "limit {limit}: used {share:.2} of the budget");
        }
    }

    #[test]
    fn a_429_pauses_everyone() {
        let mut budget = RateBudget::new(120);
        budget.pause_until(t(2000));
        assert!(budget.reserve(t(1000)) >= t(2000));
        assert_eq!(budget.paused_until(t(1000)), Some(t(2000)));
    }
}
