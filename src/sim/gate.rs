//! What every request goes through around its endpoint, in this order: the request log and
//! counters, the fixed-window rate limit (429 with X-RateLimit headers), auth (DoorFlow's for the
//! API, the sink's own bearer token for `/events`, none for `/oauth/token`), then a queued or
//! chaos fault. `/_sim/...` (the simulator's own inspection paths) skips all of it.

use super::faults::{error, rate_limited, Fault};
use super::server::ConnMeta;
use super::{Inner, Shared};
use crate::mutex::lock;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Status logged for a connection cut without an answer.
pub(super) const NO_RESPONSE: u16 = 0;

pub(super) async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/_sim/") {
        return next.run(request).await;
    }
    let latency = lock(&shared.inner).config.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let connection = request
        .extensions()
        .get::<ConnectInfo<ConnMeta>>()
        .map(|info| info.0.id);
    let (entry, checked) = {
        let mut inner = lock(&shared.inner);
        inner.log.push((Instant::now(), path.clone(), NO_RESPONSE));
        let entry = inner.log.len() - 1;
        (entry, checks(&mut inner, &path, request.headers()))
    };
    let finish = |status: u16| lock(&shared.inner).log[entry].2 = status;
    let (rate, fault) = match checked {
        Ok(passed) => passed,
        Err(refused) => {
            finish(refused.status().as_u16());
            return *refused;
        }
    };
    let Some(fault) = fault else {
        let mut response = next.run(request).await;
        response.headers_mut().extend(rate);
        finish(response.status().as_u16());
        return response;
    };
    if let Some(answer) = fault.answer(rate.clone(), &shared.huge_sent) {
        if fault == Fault::Drop {
            if let Some(id) = connection {
                shared.connections.cut(id);
            }
            // The placeholder answer goes nowhere: the socket is shut down.
            return answer;
        }
        finish(answer.status().as_u16());
        return answer;
    }
    // The endpoint does its work (and records it); then its answer is spoiled.
    let mut response = next.run(request).await;
    response.headers_mut().extend(rate);
    finish(response.status().as_u16());
    match fault {
        Fault::Truncated => {
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            Response::from_parts(parts, Body::from(bytes.slice(..bytes.len() / 2)))
        }
        Fault::Malformed => {
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, Body::from("{\"id\": ["))
        }
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            response
        }
        _ => response,
    }
}

/// Counting, rate limit, auth and fault choice. `Ok` carries the X-RateLimit headers to add and
/// the fault to apply, if any.
fn checks(
    inner: &mut Inner,
    path: &str,
    headers: &HeaderMap,
) -> Result<(HeaderMap, Option<Fault>), Box<Response>> {
    let rate = rate_window(inner)?;
    authorise(inner, path, headers)?;
    let queued = match inner
        .faults
        .iter_mut()
        .position(|(prefix, _, _)| path.starts_with(prefix.as_str()))
    {
        Some(i) if inner.faults[i].1 > 0 => {
            inner.faults[i].1 -= 1;
            None
        }
        Some(i) => inner.faults.remove(i).map(|(_, _, fault)| fault),
        None => None,
    };
    let fault = match queued {
        Some(fault) => Some(fault),
        None => inner.chaos.as_mut().and_then(|chaos| chaos.roll(path)),
    };
    if let Some(fault) = &fault {
        *inner.fault_counts.entry(fault.kind()).or_default() += 1;
    }
    Ok((rate, fault))
}

/// DoorFlow's limit: a fixed window of `requests_per_window`, reported in X-RateLimit headers.
fn rate_window(inner: &mut Inner) -> Result<HeaderMap, Box<Response>> {
    let now = Instant::now();
    if now.duration_since(inner.window_start) >= inner.config.window {
        inner.window_start = now;
        inner.window_count = 0;
    }
    let remaining_window = inner
        .config
        .window
        .saturating_sub(now.duration_since(inner.window_start));
    let reset = jiff::Timestamp::now().as_second() + remaining_window.as_secs() as i64 + 1;
    let limit = inner.config.requests_per_window;
    let mut headers = HeaderMap::new();
    headers.insert("X-RateLimit-Limit", HeaderValue::from(limit));
    headers.insert("X-RateLimit-Reset", HeaderValue::from(reset));
    if inner.window_count >= limit {
        inner.rate_limited += 1;
        headers.insert("X-RateLimit-Remaining", HeaderValue::from(0));
        let retry = remaining_window.as_secs() + 1;
        return Err(Box::new(rate_limited(headers, retry, "Rate limit exceeded")));
    }
    inner.window_count += 1;
    headers.insert(
        "X-RateLimit-Remaining",
        HeaderValue::from(limit - inner.window_count),
    );
    Ok(headers)
}

fn authorise(inner: &Inner, path: &str, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let value = headers.get("authorization").and_then(|v| v.to_str().ok());
    let allowed = match path {
        "/oauth/token" => true,
        // The sink is not DoorFlow: its own optional bearer token, no DoorFlow credentials.
        "/events" => match &inner.config.sink_token {
            None => true,
            Some(token) => value.and_then(|v| v.strip_prefix("Bearer ")) == Some(token.as_str()),
        },
        _ => value.is_some_and(|v| doorflow_credentials_valid(inner, v)),
    };
    let description = match path {
        _ if allowed => return Ok(()),
        "/events" => "The event sink token is missing or wrong",
        _ => "The access token is invalid or expired",
    };
    Err(Box::new(error(401, "invalid_token", description)))
}

fn doorflow_credentials_valid(inner: &Inner, value: &str) -> bool {
    if let Some(token) = value.strip_prefix("Bearer ") {
        let lifetime = Duration::from_secs(inner.config.token_lifetime_s);
        return inner
            .access_tokens
            .get(token)
            .is_some_and(|issued| issued.elapsed() < lifetime);
    }
    if let Some(basic) = value.strip_prefix("Basic ") {
        return decode_basic(basic)
            .is_some_and(|(user, password)| user == inner.config.api_key && password == "X");
    }
    false
}

fn decode_basic(encoded: &str) -> Option<(String, String)> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in encoded.trim_end_matches('=').bytes() {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c)? as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
        }
    }
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
