//! Faults the simulator applies to requests: queued one-shot faults (`Simulator::inject`) and
//! random ones (chaos mode, `Simulator::set_chaos`), and the answers they produce.
//!
//! Most faults answer *instead of* the endpoint, so the endpoint never runs and nothing is
//! recorded (a 5xx or a cut connection before the work). Three let the endpoint run first and
//! then spoil the answer — a truncated or malformed body, or a slow answer — because a real
//! server that breaks while answering has usually done the work: that is what makes a client's
//! retry produce a duplicate, which at-least-once delivery has to cope with.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Chunk size of a huge answer.
const HUGE_CHUNK: usize = 64 * 1024;

/// A fault applied to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and a current-style error body.
    Status(u16),
    /// Answer with this status and the older `{type, message, param}` body.
    OldStyleStatus(u16),
    /// 429 with `Retry-After` and body `retry_in`.
    RateLimited { retry_after_s: u64 },
    /// The endpoint's answer with only the first half of its body.
    Truncated,
    /// The endpoint's status with a body that is not the expected shape.
    Malformed,
    /// 502 with an HTML page (a proxy in front of the API failing).
    NonJson,
    /// The endpoint's answer, sent this much later (slower than a client timeout).
    Delay(Duration),
    /// The connection is closed without any response.
    Drop,
    /// This status with a current-style error body and `Retry-After: value` (seconds or an
    /// HTTP date, in whichever form the test writes it).
    RetryAfter { status: u16, value: String },
    /// A redirect (`Location: location`, which may be relative) with an empty body.
    Redirect { status: u16, location: String },
    /// 200 with a valid JSON array `bytes` long (mostly whitespace), produced only as fast as
    /// the client reads it; with `content_length` the size is declared up front, otherwise it
    /// is sent chunked. `Simulator::huge_bytes_sent` counts what left the server.
    Huge { bytes: u64, content_length: bool },
}

impl Fault {
    /// Name used by `Simulator::fault_counts`.
    pub(super) fn kind(&self) -> String {
        match self {
            Fault::Status(status) => status.to_string(),
            Fault::OldStyleStatus(status) => format!("{status}_old_style"),
            Fault::RateLimited { .. } => "429".into(),
            Fault::Truncated => "truncated".into(),
            Fault::Malformed => "malformed".into(),
            Fault::NonJson => "502_html".into(),
            Fault::Delay(_) => "slow".into(),
            Fault::Drop => "drop".into(),
            Fault::Redirect { status, .. } => format!("redirect_{status}"),
            Fault::RetryAfter { status, .. } => format!("{status}_retry_after"),
            Fault::Huge { .. } => "huge".into(),
        }
    }

    /// The answer for a fault that replaces the endpoint (`rate` carries the X-RateLimit
    /// headers), or `None` for one that lets the endpoint run and then spoils its answer.
    pub(super) fn answer(&self, rate: HeaderMap, huge_sent: &Arc<AtomicU64>) -> Option<Response> {
        let response = match *self {
            Fault::Status(status) => {
                let (code, description) = error_code(status);
                error(status, code, description)
            }
            Fault::OldStyleStatus(status) => {
                let kind = if status >= 500 { "api_error" } else { "invalid_request_error" };
                let body = json!({"type": kind, "message": "Injected by the simulator", "param": if status < 500 { json!("person_id") } else { json!(null) }});
                (status_code(status), axum::Json(body)).into_response()
            }
            Fault::RateLimited { retry_after_s } => rate_limited(rate, retry_after_s, "Injected by the simulator"),
            Fault::NonJson => (
                StatusCode::BAD_GATEWAY,
                [("content-type", "text/html")],
                "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
            // Never delivered: the connection is cut first.
            Fault::Drop => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Fault::RetryAfter { status, ref value } => {
                let (code, description) = error_code(status);
                let mut response = error(status, code, description);
                if let Ok(value) = HeaderValue::from_str(value) {
                    response.headers_mut().insert("retry-after", value);
                }
                response
            }
            Fault::Redirect { status, ref location } => {
                (status_code(status), [("location", location.as_str())]).into_response()
            }
            Fault::Huge {
                bytes,
                content_length,
            } => huge(bytes, content_length, Arc::clone(huge_sent)),
            Fault::Truncated | Fault::Malformed | Fault::Delay(_) => return None,
        };
        Some(response)
    }
}

/// `[`, whitespace, `]`: `bytes` long in all, each chunk counted in `sent` as it is handed to
/// the connection (which takes more only as the client reads).
fn huge(bytes: u64, content_length: bool, sent: Arc<AtomicU64>) -> Response {
    let bytes = bytes.max(2);
    let chunks = bytes.div_ceil(HUGE_CHUNK as u64);
    let stream = futures_util::stream::iter(0..chunks).map(move |index| {
        let start = index * HUGE_CHUNK as u64;
        let len = (bytes - start).min(HUGE_CHUNK as u64) as usize;
        let mut chunk = vec![b' '; len];
        if index == 0 {
            chunk[0] = b'[';
        }
        if index == chunks - 1 {
            chunk[len - 1] = b']';
        }
        sent.fetch_add(len as u64, Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(chunk)
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if content_length {
        headers.insert("content-length", HeaderValue::from(bytes));
    }
    response
}

/// Chaos mode: while set, each request whose path starts with `path_prefix` fails with
/// probability `failure_rate`, the failure chosen uniformly among eight kinds (see
/// `Chaos::menu`). The RNG is seeded, so the same requests in the same order fail the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    pub failure_rate: f64,
    pub seed: u64,
    pub path_prefix: String,
    /// Delay of the "slow" failure; meant to exceed the client's timeout.
    pub slow: Duration,
}

impl Chaos {
    /// The failures chaos draws from: 500, 502 HTML, 503, 504, old-style 500, 429 (Retry-After
    /// 1, retry_in 1), a dropped connection, and a slow answer.
    pub fn menu(&self) -> [Fault; 8] {
        [
            Fault::Status(500),
            Fault::NonJson,
            Fault::Status(503),
            Fault::Status(504),
            Fault::OldStyleStatus(500),
            Fault::RateLimited { retry_after_s: 1 },
            Fault::Drop,
            Fault::Delay(self.slow),
        ]
    }
}

/// Chaos settings with their RNG (reset whenever chaos is set).
pub(super) struct ChaosState {
    chaos: Chaos,
    rng: fastrand::Rng,
}

impl ChaosState {
    pub(super) fn new(chaos: Chaos) -> ChaosState {
        let rng = fastrand::Rng::with_seed(chaos.seed);
        ChaosState { chaos, rng }
    }

    /// One draw per matching request: the failure, if this request fails.
    pub(super) fn roll(&mut self, path: &str) -> Option<Fault> {
        if !path.starts_with(self.chaos.path_prefix.as_str()) {
            return None;
        }
        if self.rng.f64() >= self.chaos.failure_rate {
            return None;
        }
        let menu = self.chaos.menu();
        Some(menu[self.rng.usize(..menu.len())].clone())
    }
}

pub(super) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A current-style error body: `{error, error_description}`.
pub(super) fn error(status: u16, code: &str, description: &str) -> Response {
    (
        status_code(status),
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

/// DoorFlow's error codes for the statuses its guides document.
fn error_code(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request", "The request could not be processed"),
        401 => ("invalid_token", "The access token is invalid or expired"),
        403 => (
            "insufficient_scope",
            "The access token does not have the required scope",
        ),
        404 => ("not_found", "The requested resource was not found"),
        422 => ("validation_failed", "Validation failed"),
        429 => ("rate_limit_exceeded", "Too many requests"),
        500 => ("internal_server_error", "An unexpected error occurred"),
        502 => ("bad_gateway", "The upstream server failed"),
        503 => ("service_unavailable", "The service is temporarily unavailable"),
        504 => ("gateway_timeout", "The upstream server timed out"),
        _ => ("simulated_fault", "Injected by the simulator"),
    }
}

/// A 429 in DoorFlow's rate-limit style: `Retry-After` and `{error, description, retry_in}`.
pub(super) fn rate_limited(mut headers: HeaderMap, retry_after_s: u64, description: &str) -> Response {
    headers.insert("Retry-After", HeaderValue::from(retry_after_s));
    let body = json!({"error": "rate_limited", "description": description, "retry_in": retry_after_s});
    (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response()
}
