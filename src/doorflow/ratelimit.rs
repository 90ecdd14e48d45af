//! Rate limits: parsing DoorFlow's headers, and the one client-side budget that sync and uplink
//! share so the agent never burns its own quota.
//!
//! Pacing rule: requests are spaced at least `window / limit` (plus 2 %) apart, the limit being
//! the lower of the server's `X-RateLimit-Limit` and this board's `requests_per_minute` (its
//! share of the account; until the server has answered, the limit assumed), so a steady caller
//! uses about 98 % of it. The account's limit may be shared with other boards
//! (issue 16 item 4): what the server says is left (`X-RateLimit-Remaining`) is spread over the
//! time to `X-RateLimit-Reset`, so when others spend from the window its remainder falls faster
//! than this board's own use and this board slows down, and the window is never spent before it
//! resets (with N boards doing the same, the remainder decays like (time left)^N and reaches its
//! last request only at the reset). The last request of a window is kept back: it is where
//! boards would collide. A 429 (or any answer with `Retry-After`) pauses every caller until its
//! retry time.
//!
//! All of it runs on the monotonic clock, so a wall clock stepped back or forward never stalls
//! or hurries a caller. Times the server sends become monotonic deadlines when the answer
//! arrives: `Retry-After` seconds count from the arrival; an absolute time (a `Retry-After`
//! HTTP date, an `X-RateLimit-Reset` epoch) is turned into a wait by subtracting the answer's
//! own `Date` (the server's clock, so a board whose clock is off still waits the right length;
//! the board's wall clock only when the answer has no `Date`), at most `MAX_SERVER_WAIT`.
//! Pure: every method takes its clock readings as arguments.

use jiff::Timestamp;
use reqwest::header::HeaderMap;
use std::time::{Duration, Instant};

/// The longest wait a server's time can impose (a date far ahead, a wrong epoch).
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);
/// An `X-RateLimit-Reset` below this (2001-09-09) is read as seconds from now, the form some
/// servers send, rather than as an epoch.
const EPOCH_MIN: u64 = 1_000_000_000;

/// What one response said about the limit, with its times as monotonic deadlines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// When the window resets (`X-RateLimit-Reset`).
    pub reset: Option<Instant>,
    /// `Retry-After`.
    pub retry_after: Option<Instant>,
    /// The answer's `Date`: the server's clock when it answered.
    pub date: Option<Timestamp>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// An HTTP date in any of the three forms RFC 9110 §5.6.7 requires recipients to accept
/// (IMF-fixdate, RFC 850, asctime).
pub fn parse_http_date(value: &str) -> Option<Timestamp> {
    let time = httpdate::parse_http_date(value).ok()?;
    Timestamp::try_from(time).ok()
}

/// The wait until `server_time`, measured on the server's clock (`server_now`).
fn wait_until(server_time: Timestamp, server_now: Timestamp) -> Duration {
    let wait = server_time.duration_since(server_now);
    if wait.is_negative() {
        return Duration::ZERO;
    }
    wait.unsigned_abs().min(MAX_SERVER_WAIT)
}

/// `Retry-After` (RFC 9110 §10.2.3): delta seconds, or an HTTP date read against the server's
/// clock `server_now`. Returns the wait.
pub fn parse_retry_after(value: &str, server_now: Timestamp) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_SERVER_WAIT));
    }
    parse_http_date(value).map(|at| wait_until(at, server_now))
}

/// `X-RateLimit-Reset`: epoch seconds (DoorFlow's form) read against `server_now`, or small
/// values as seconds from now. Returns the wait.
pub fn parse_reset(value: &str, server_now: Timestamp) -> Option<Duration> {
    let value: u64 = value.parse().ok()?;
    if value < EPOCH_MIN {
        return Some(Duration::from_secs(value).min(MAX_SERVER_WAIT));
    }
    let at = Timestamp::from_second(i64::try_from(value).ok()?).ok()?;
    Some(wait_until(at, server_now))
}

impl RateInfo {
    /// Reads the headers of an answer that arrived at `received` (monotonic), when the board's
    /// wall clock said `local_wall`; malformed values are ignored.
    pub fn from_headers(headers: &HeaderMap, received: Instant, local_wall: Timestamp) -> RateInfo {
        let date = header(headers, "date").and_then(parse_http_date);
        let server_now = date.unwrap_or(local_wall);
        RateInfo {
            limit: header(headers, "x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: header(headers, "x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset: header(headers, "x-ratelimit-reset")
                .and_then(|v| parse_reset(v, server_now))
                .map(|wait| received + wait),
            retry_after: header(headers, "retry-after")
                .and_then(|v| parse_retry_after(v, server_now))
                .map(|wait| received + wait),
            date,
        }
    }

    /// When to come back after a 429/408: `Retry-After`, else `X-RateLimit-Reset`, else the
    /// body's `retry_in` (seconds from `received`), else unknown (the caller backs off).
    pub fn retry_at(&self, body_retry_in: Option<u64>, received: Instant) -> Option<Instant> {
        self.retry_after
            .or(self.reset.filter(|reset| *reset > received))
            .or_else(|| body_retry_in.map(|s| received + Duration::from_secs(s).min(MAX_SERVER_WAIT)))
    }
}

/// Pagination totals: `Total`/`Per-Page` (spec) or `X-Total-Results`/`X-Per-Page` (older).
pub fn total_results(headers: &HeaderMap) -> Option<u64> {
    header(headers, "total")
        .or_else(|| header(headers, "x-total-results"))
        .and_then(|v| v.parse().ok())
}

/// The shared budget, on the monotonic clock.
#[derive(Debug, Clone)]
pub struct RateBudget {
    /// The server's limit per window (`requests_per_minute` until it says).
    limit: u32,
    /// This board's own cap per window (`requests_per_minute`), whatever the server allows.
    cap: u32,
    remaining: u32,
    reset: Option<Instant>,
    window: Duration,
    last_slot: Option<Instant>,
    paused_until: Option<Instant>,
    /// 429 answers since the budget was created, for metrics.
    rate_limited: u64,
}

const CLOCK_MARGIN: Duration = Duration::from_secs(1);
/// Requests of a window left unused when the server says only this many remain: with several
/// boards on one account, the last one is where they would collide.
const WINDOW_RESERVE: u32 = 1;

impl RateBudget {
    /// `per_minute` is this board's cap, and the limit assumed until the server's headers say
    /// what the account's is.
    pub fn new(per_minute: u32) -> RateBudget {
        RateBudget {
            limit: per_minute.max(1),
            cap: per_minute.max(1),
            remaining: per_minute.max(1),
            reset: None,
            window: Duration::from_secs(60),
            last_slot: None,
            paused_until: None,
            rate_limited: 0,
        }
    }

    fn spacing(&self) -> Duration {
        self.window / self.limit.min(self.cap) * 102 / 100
    }

    /// The spacing that spreads what the server says is left of its window over the time to
    /// its reset, keeping the window's last request back; `None` when the window is spent (wait
    /// for the reset) or the server gave no reset.
    fn share_of_window(&self, from: Instant) -> Option<Option<Duration>> {
        let reset = self.reset?;
        let usable = self.remaining.saturating_sub(WINDOW_RESERVE);
        Some((usable > 0).then(|| reset.saturating_duration_since(from) / usable))
    }

    /// Reserves the next request slot and returns when it may be sent.
    pub fn reserve(&mut self, now: Instant) -> Instant {
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
        match self.share_of_window(self.last_slot.unwrap_or(now)) {
            Some(Some(share)) => slot = slot.max(self.last_slot.unwrap_or(now) + share),
            Some(None) => self.remaining = 0,
            None => {}
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

    /// A 429, or an answer with `Retry-After`: everyone waits until `until`.
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        self.remaining = 0;
        self.reset = Some(until.checked_sub(CLOCK_MARGIN).unwrap_or(until));
    }

    /// Counts a 429 answer (for metrics; `pause_until` does the holding).
    pub fn count_rate_limited(&mut self) {
        self.rate_limited += 1;
    }

    /// How many 429 answers this budget has seen.
    pub fn rate_limited_total(&self) -> u64 {
        self.rate_limited
    }

    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
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

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn headers_become_monotonic_deadlines_and_malformed_ones_are_ignored() {
        let received = Instant::now();
        let mut headers = HeaderMap::new();
        headers.insert("X-RateLimit-Limit", HeaderValue::from_static("120"));
        headers.insert("X-RateLimit-Remaining", HeaderValue::from_static("7"));
        headers.insert("X-RateLimit-Reset", HeaderValue::from_static("1800000060"));
        headers.insert("Retry-After", HeaderValue::from_static("30"));
        let info = RateInfo::from_headers(&headers, received, t(NOW));
        assert_eq!((info.limit, info.remaining), (Some(120), Some(7)));
        assert_eq!(info.reset, Some(received + secs(60)));
        assert_eq!(info.retry_after, Some(received + secs(30)));

        headers.insert("X-RateLimit-Limit", HeaderValue::from_static("lots"));
        headers.insert("Retry-After", HeaderValue::from_static("soon"));
        headers.insert("Date", HeaderValue::from_static("yesterday"));
        let info = RateInfo::from_headers(&headers, received, t(NOW));
        assert_eq!((info.limit, info.retry_after, info.date), (None, None, None));
    }

    /// The board's clock is an hour behind (or two days ahead): the server's `Date` sets the
    /// length of the wait, not the board's clock.
    #[test]
    fn server_times_are_read_against_the_server_date() {
        let received = Instant::now();
        let mut headers = HeaderMap::new();
        headers.insert("Date", HeaderValue::from_static("Fri, 15 Jan 2027 08:00:00 GMT"));
        headers.insert(
            "Retry-After",
            HeaderValue::from_static("Fri, 15 Jan 2027 08:00:08 GMT"),
        );
        let server_now: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
        headers.insert(
            "X-RateLimit-Reset",
            HeaderValue::from(server_now.as_second() + 42),
        );
        for board_skew in [-3600i64, -40, 0, 7200, 2 * 86_400] {
            let board = server_now + jiff::SignedDuration::from_secs(board_skew);
            let info = RateInfo::from_headers(&headers, received, board);
            assert_eq!(info.date, Some(server_now));
            assert_eq!(info.retry_after, Some(received + secs(8)), "skew {board_skew}");
            assert_eq!(info.reset, Some(received + secs(42)), "skew {board_skew}");
        }
        // Without a Date, the board's clock is all there is.
        headers.remove("Date");
        let info = RateInfo::from_headers(&headers, received, server_now - secs(2));
        assert_eq!(info.retry_after, Some(received + secs(10)));
    }

    /// RFC 9110 §5.6.7: recipients accept IMF-fixdate, the obsolete RFC 850 form and asctime.
    #[test]
    fn retry_after_in_all_three_date_forms() {
        let now = t(1_445_412_470); // 2015-10-21T07:27:50Z
        for form in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(parse_retry_after(form, now), Some(secs(10)), "{form}");
        }
        assert_eq!(parse_retry_after("8", now), Some(secs(8)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "past"
        );
        assert_eq!(
            parse_retry_after("99999999", now),
            Some(MAX_SERVER_WAIT),
            "capped"
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_reset("1445412530", now), Some(secs(60)));
        assert_eq!(parse_reset("45", now), Some(secs(45)), "seconds, not an epoch");
    }

    #[test]
    fn retry_precedence() {
        let now = Instant::now();
        let all = RateInfo {
            retry_after: Some(now + secs(10)),
            reset: Some(now + secs(20)),
            ..Default::default()
        };
        assert_eq!(all.retry_at(Some(30), now), Some(now + secs(10)));
        let reset = RateInfo {
            reset: Some(now + secs(20)),
            ..Default::default()
        };
        assert_eq!(reset.retry_at(Some(30), now), Some(now + secs(20)));
        assert_eq!(RateInfo::default().retry_at(Some(30), now), Some(now + secs(30)));
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

    /// A steady caller of a server with fixed 60 s windows and headers, counting what it
    /// served and what drew a 429. The clock is the test's: a base instant moved on.
    fn steady_caller(mut budget: RateBudget, limit: u32) -> (u32, u32) {
        let base = Instant::now();
        // Windows not aligned with the caller's start.
        let (mut window_start, mut count, mut rejected, mut served) = (Duration::ZERO, 0u32, 0u32, 0u32);
        let mut now = base + secs(17);
        let end = base + secs(617);
        while now < end {
            now = budget.reserve(now);
            while now.duration_since(base) >= window_start + secs(60) {
                window_start += secs(60);
                count = 0;
            }
            let info = RateInfo {
                limit: Some(limit),
                remaining: Some(limit.saturating_sub(count + 1)),
                reset: Some(base + window_start + secs(60)),
                ..Default::default()
            };
            if count >= limit {
                rejected += 1;
                budget.pause_until(base + window_start + secs(60));
            } else {
                count += 1;
                served += 1;
                budget.observe(&info);
            }
        }
        (served, rejected)
    }

    /// A steady caller never sees a 429 and uses at least 90 % of the server's limit, whether
    /// the limit it assumed before the first answer was higher or lower.
    #[test]
    fn steady_caller_stays_under_a_fixed_window_limit() {
        for (assumed, limit) in [(600u32, 120u32), (600, 30), (600, 600), (10_000, 120)] {
            let (served, rejected) = steady_caller(RateBudget::new(assumed), limit);
            assert_eq!(rejected, 0, "limit {limit}");
            let share = served as f64 / (limit as f64 * 10.0);
            assert!(share >= 0.9, "limit {limit}: used {share:.2} of the budget");
        }
    }

    /// `requests_per_minute` caps this board's share (issue 16 item 4): under an account limit
    /// of 600/min a board capped at 40/min sends 36 to 40 a minute.
    #[test]
    fn the_board_keeps_to_its_own_cap_under_a_larger_account_limit() {
        let (served, rejected) = steady_caller(RateBudget::new(40), 600);
        assert_eq!(rejected, 0);
        assert!(
            (360..=400).contains(&served),
            "{served} in 10 minutes at a cap of 40/min"
        );
    }

    /// Issue 16 item 4: three boards on one 120/min account, each configured for 120/min and
    /// sending back to back for 10 minutes, drew 429s. Each slot is reserved before the other
    /// boards' answers are seen (the stale view a real board has); the server counts a fixed
    /// 60 s window and answers with Remaining and Reset.
    #[test]
    fn three_boards_share_one_account_without_a_429() {
        let base = Instant::now();
        let limit = 120u32;
        let mut boards: Vec<RateBudget> = (0..3).map(|_| RateBudget::new(limit)).collect();
        let mut next: Vec<Instant> = boards
            .iter_mut()
            .enumerate()
            .map(|(i, b)| b.reserve(base + Duration::from_millis(7 * i as u64)))
            .collect();
        let (mut window_start, mut count) = (base, 0u32);
        let (mut rejected, mut served) = (0u32, [0u32; 3]);
        let end = base + secs(600);
        loop {
            let (board, at) = next
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(_, at)| *at)
                .unwrap();
            if at >= end {
                break;
            }
            while at >= window_start + secs(60) {
                window_start += secs(60);
                count = 0;
            }
            let reset = window_start + secs(60);
            if count >= limit {
                rejected += 1;
                boards[board].pause_until(reset);
            } else {
                count += 1;
                served[board] += 1;
                boards[board].observe(&RateInfo {
                    limit: Some(limit),
                    remaining: Some(limit - count),
                    reset: Some(reset),
                    ..Default::default()
                });
            }
            next[board] = boards[board].reserve(at + Duration::from_millis(50));
        }
        assert_eq!(rejected, 0, "served {served:?}");
        let total: u32 = served.iter().sum();
        assert!(total >= 1_000, "the account's 1,200 mostly used: {served:?}");
        for share in served {
            assert!(share >= 250, "every board progresses: {served:?}");
        }
    }

    #[test]
    fn a_429_pauses_everyone() {
        let now = Instant::now();
        let mut budget = RateBudget::new(120);
        budget.pause_until(now + secs(1000));
        assert!(budget.reserve(now) >= now + secs(1000));
        assert_eq!(budget.paused_until(now), Some(now + secs(1000)));
    }

    /// The budget never looks at the wall clock: the slots of a steady caller are the same
    /// whatever the wall clock does (issue 15: a wall clock set back an hour stalled every
    /// caller for an hour when the last slot was a wall time).
    #[test]
    fn slots_follow_the_monotonic_clock_only() {
        let base = Instant::now();
        let mut budget = RateBudget::new(120);
        let mut slot = budget.reserve(base);
        for _ in 0..10 {
            let next = budget.reserve(slot);
            assert_eq!(next - slot, Duration::from_millis(510));
            slot = next;
        }
    }
}
