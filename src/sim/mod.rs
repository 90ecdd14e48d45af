//! A DoorFlow API simulator on a loopback port, for tests and the demo: spec-shaped JSON from a
//! generated dataset, pagination, API-key and OAuth auth with expiring access tokens and rotated
//! refresh tokens, a fixed-window rate limit with X-RateLimit headers, and injected faults.
//!
//! Dataset: person *n* has card value *n*; every fifth person also a PIN 500000+*n*; people with
//! *n* % 10 == 3 have the office-hours role and a second card enrolled as facility 1 + number;
//! every 50th person is disabled, every 97th expired.
//!
//! First cut: serves the sync endpoints. Admit/event recording, dropped connections and the
//! chaos mode come with the uplink work.

use crate::agent::lock;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault applied to the next matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and a current-style error body.
    Status(u16),
    /// Answer with this status and the older `{type, message, param}` body.
    OldStyleStatus(u16),
    /// 429 with `Retry-After`.
    RateLimited { retry_after_s: u64 },
    /// 200 with half a JSON document.
    Truncated,
    /// 200 with a body that is not the expected shape.
    Malformed,
    /// 502 with an HTML page.
    NonJson,
    /// Answer after this long (slower than a short client timeout).
    Delay(Duration),
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub people: u64,
    pub requests_per_window: u32,
    pub window: Duration,
    pub api_key: String,
    pub token_lifetime_s: u64,
    /// Loopback port; 0 picks a free one.
    pub port: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            people: 200,
            requests_per_window: 120,
            window: Duration::from_secs(60),
            api_key: "sim-api-key".into(),
            token_lifetime_s: 3600,
            port: 0,
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: u64,
    rate_limited: u64,
    by_path: HashMap<String, u64>,
}

struct Inner {
    config: SimConfig,
    faults: VecDeque<(String, Fault)>,
    counters: Counters,
    window_start: std::time::Instant,
    window_count: u32,
    refresh_token: String,
    access_tokens: HashMap<String, std::time::Instant>,
    issued: u64,
    disabled: Vec<u64>,
}

/// Handle to a running simulator.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Mutex<Inner>>,
    base_url: String,
}

impl Simulator {
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner {
            config,
            faults: VecDeque::new(),
            counters: Counters::default(),
            window_start: std::time::Instant::now(),
            window_count: 0,
            refresh_token: "refresh-0".into(),
            access_tokens: HashMap::new(),
            issued: 0,
            disabled: Vec::new(),
        }));
        let app = Router::new()
            .route("/api/3/people", get(people))
            .route("/api/3/credentials", get(credentials))
            .route("/api/3/credential_types", get(credential_types))
            .route("/api/3/groups", get(groups))
            .route("/api/3/roles", get(roles))
            .route("/api/3/group_reservations", get(empty_list))
            .route("/api/3/reservations", get(empty_list))
            .route("/api/3/channels", get(channels))
            .route("/api/3/sites", get(sites))
            .route("/oauth/token", post(token))
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Simulator { inner, base_url })
    }

    /// Runs until Ctrl-C/SIGTERM for manual testing (`doorflow-agent simulate`).
    pub async fn run_standalone(config: SimConfig) -> std::io::Result<()> {
        let api_key = config.api_key.clone();
        let sim = Simulator::start(config).await?;
        println!("DoorFlow simulator on {}", sim.base_url());
        println!("  API key (HTTP Basic user, password X): {api_key}");
        println!("  OAuth refresh token: {}", sim.refresh_token());
        println!(
            "  try: curl -u {api_key}:X '{}/api/3/people?per_page=2'",
            sim.base_url()
        );
        crate::agent::shutdown_signal().await;
        Ok(())
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Applies `fault` to the next request whose path starts with `path_prefix`.
    pub fn inject(&self, path_prefix: &str, fault: Fault) {
        lock(&self.inner)
            .faults
            .push_back((path_prefix.to_string(), fault));
    }

    pub fn requests(&self) -> u64 {
        lock(&self.inner).counters.requests
    }

    pub fn rate_limited(&self) -> u64 {
        lock(&self.inner).counters.rate_limited
    }

    pub fn requests_to(&self, path: &str) -> u64 {
        lock(&self.inner).counters.by_path.get(path).copied().unwrap_or(0)
    }

    /// The refresh token a client must present next.
    pub fn refresh_token(&self) -> String {
        lock(&self.inner).refresh_token.clone()
    }

    /// Expires every access token issued so far.
    pub fn expire_tokens(&self) {
        lock(&self.inner).access_tokens.clear();
    }

    pub fn disable_person(&self, id: u64) {
        lock(&self.inner).disabled.push(id);
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

fn error(status: u16, code: &str, description: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

/// Rate limit, auth and faults, shared by every endpoint. `Ok` carries the headers to add.
fn admit(inner: &mut Inner, path: &str, headers: &HeaderMap) -> Result<HeaderMap, Box<Response>> {
    inner.counters.requests += 1;
    *inner.counters.by_path.entry(path.to_string()).or_default() += 1;
    let now = std::time::Instant::now();
    if now.duration_since(inner.window_start) >= inner.config.window {
        inner.window_start = now;
        inner.window_count = 0;
    }
    let remaining_window = inner
        .config
        .window
        .saturating_sub(now.duration_since(inner.window_start));
    let reset = jiff::Timestamp::now().as_second() + remaining_window.as_secs() as i64 + 1;
    let mut out = HeaderMap::new();
    let limit = inner.config.requests_per_window;
    out.insert("X-RateLimit-Limit", HeaderValue::from(limit));
    out.insert("X-RateLimit-Reset", HeaderValue::from(reset));
    if inner.window_count >= limit {
        inner.counters.rate_limited += 1;
        out.insert("X-RateLimit-Remaining", HeaderValue::from(0));
        out.insert("Retry-After", HeaderValue::from(remaining_window.as_secs() + 1));
        let body = json!({"error": "rate_limited", "description": "Rate limit exceeded", "retry_in": remaining_window.as_secs() + 1});
        return Err(Box::new(
            (StatusCode::TOO_MANY_REQUESTS, out, axum::Json(body)).into_response(),
        ));
    }
    inner.window_count += 1;
    out.insert(
        "X-RateLimit-Remaining",
        HeaderValue::from(limit - inner.window_count),
    );
    if path != "/oauth/token" && !authorised(inner, headers) {
        return Err(Box::new(error(
            401,
            "invalid_token",
            "The access token is invalid or expired",
        )));
    }
    Ok(out)
}

fn authorised(inner: &mut Inner, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
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

/// Runs the shared checks and a pending fault, then the endpoint's own answer.
async fn respond(
    state: &Arc<Mutex<Inner>>,
    path: &str,
    headers: &HeaderMap,
    body: impl FnOnce(&Inner) -> Value,
) -> Response {
    let (extra, fault, value) = {
        let mut inner = lock(state);
        let extra = match admit(&mut inner, path, headers) {
            Ok(extra) => extra,
            Err(response) => return *response,
        };
        let fault = inner
            .faults
            .iter()
            .position(|(prefix, _)| path.starts_with(prefix.as_str()))
            .and_then(|i| inner.faults.remove(i))
            .map(|(_, f)| f);
        let value = body(&inner);
        (extra, fault, value)
    };
    match fault {
        None => (extra, axum::Json(value)).into_response(),
        Some(Fault::Status(status)) => error(status, "simulated_fault", "Injected by the simulator"),
        Some(Fault::OldStyleStatus(status)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            axum::Json(json!({"type": "invalid_request_error", "message": "Injected", "param": "person_id"})),
        )
            .into_response(),
        Some(Fault::RateLimited { retry_after_s }) => {
            let mut headers = extra;
            headers.insert("Retry-After", HeaderValue::from(retry_after_s));
            let body = json!({"error": "rate_limited", "description": "Injected", "retry_in": retry_after_s});
            (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response()
        }
        Some(Fault::Truncated) => {
            let text = value.to_string();
            (extra, text[..text.len() / 2].to_string()).into_response()
        }
        Some(Fault::Malformed) => (extra, "{\"id\": [").into_response(),
        Some(Fault::NonJson) => (
            StatusCode::BAD_GATEWAY,
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            (extra, axum::Json(value)).into_response()
        }
    }
}

fn page(
    params: &HashMap<String, String>,
    total: u64,
    max_per_page: u64,
    item: impl Fn(u64) -> Value,
) -> Value {
    let per_page = params
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(max_per_page.min(25))
        .clamp(1, max_per_page);
    let page = params
        .get("page")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1) * per_page;
    Value::Array(
        (start..(start + per_page).min(total))
            .map(|i| item(i + 1))
            .collect(),
    )
}

const STAMP: &str = "2026-01-01T00:00:00Z";

fn person(inner: &Inner, id: u64) -> Value {
    json!({
        "id": id, "first_name": format!("Person{id}"), "last_name": "Sim", "email": format!("p{id}@example.com"),
        "enabled": id % 50 != 0 && !inner.disabled.contains(&id), "valid_from": null,
        "valid_to": if id % 97 == 0 { json!("2020-01-01T00:00:00Z") } else { Value::Null },
        "groups": [100], "roles": [if id % 10 == 3 { 2 } else { 1 }], "created_at": STAMP, "updated_at": STAMP,
    })
}

async fn people(
    State(state): Shared,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    respond(&state, "/api/3/people", &headers, |inner| {
        page(&params, inner.config.people, 100, |id| person(inner, id))
    })
    .await
}

/// Credential *i* of the dataset: cards first (value = person id), then a PIN for every fifth
/// person (500000 + id), then a facility-1 card ("1" + 5-digit id) for the office-hours staff.
fn credential(people: u64, i: u64) -> Value {
    let pins = people / 5;
    if i <= people {
        json!({"id": format!("cr{i:x}"), "credential_type_id": 1, "label": "Employee Card", "person_id": i, "value": i.to_string()})
    } else if i <= people + pins {
        let id = (i - people) * 5;
        json!({"id": format!("pn{id:x}"), "credential_type_id": 2, "label": "PIN", "person_id": id, "value": (500_000 + id).to_string()})
    } else {
        let id = (i - people - pins - 1) * 10 + 3;
        json!({"id": format!("fc{id:x}"), "credential_type_id": 1, "label": "Employee Card", "person_id": id, "value": format!("1{id:05}")})
    }
}

fn credential_count(people: u64) -> u64 {
    people + people / 5 + (people + 7) / 10
}

async fn credentials(
    State(state): Shared,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    respond(&state, "/api/3/credentials", &headers, |inner| {
        let people = inner.config.people;
        page(&params, credential_count(people), 500, |i| credential(people, i))
    })
    .await
}

async fn credential_types(
    State(state): Shared,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    respond(&state, "/api/3/credential_types", &headers, |_| {
        let types = [
            (1, "Employee Card", "employee_card"),
            (2, "PIN", "pin"),
            (3, "HID Mobile", "hid_mobile"),
        ];
        page(&params, 3, 500, |i| {
            let (id, label, slug) = types[i as usize - 1];
            json!({"id": id, "label": label, "slug": slug, "code": null})
        })
    })
    .await
}

async fn groups(State(state): Shared, headers: HeaderMap) -> Response {
    respond(&state, "/api/3/groups", &headers, |_| {
        json!([{"id": 100, "name": "Everyone", "global_across_sites": false, "created_at": STAMP, "updated_at": STAMP}])
    })
    .await
}

async fn roles(State(state): Shared, headers: HeaderMap) -> Response {
    respond(&state, "/api/3/roles", &headers, |_| {
        json!([
            {"id": 1, "name": "Staff", "shift_id": null, "created_at": STAMP, "updated_at": STAMP},
            {"id": 2, "name": "Office hours", "shift_id": 7, "created_at": STAMP, "updated_at": STAMP},
        ])
    })
    .await
}

/// Reservations and group reservations: the dataset has none.
async fn empty_list(State(state): Shared, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    respond(&state, uri.path(), &headers, |_| json!([])).await
}

async fn channels(State(state): Shared, headers: HeaderMap) -> Response {
    respond(&state, "/api/3/channels", &headers, |_| {
        let channel = |id: u64, name: &str| json!({
            "id": id, "name": name, "mac_address": "00:11:22:33:44:55", "status": "online", "unit": 1,
            "sync": {"status": "ok", "last_sync_completed_at": null}, "mode": {"description": "normal", "relock_at": null},
            "lockdown": null, "site_id": 1, "created_at": STAMP, "updated_at": STAMP,
        });
        json!([channel(1340, "Front Door"), channel(1341, "Server Room")])
    })
    .await
}

async fn sites(State(state): Shared, headers: HeaderMap) -> Response {
    respond(
        &state,
        "/api/3/sites",
        &headers,
        |_| json!([{"id": 1, "name": "Main Office", "time_zone": "Europe/London", "site_ips": []}]),
    )
    .await
}

/// `POST /oauth/token`: a valid refresh token yields a new access token and a rotated refresh
/// token; the old refresh token stops working at once.
async fn token(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut inner = lock(&state);
    if let Err(response) = admit(&mut inner, "/oauth/token", &headers) {
        return *response;
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return error(400, "unsupported_grant_type", "Only refresh_token is supported");
    }
    if form.get("refresh_token") != Some(&inner.refresh_token) {
        return error(
            400,
            "invalid_grant",
            "The refresh token is invalid or was already used",
        );
    }
    inner.issued += 1;
    let access = format!("access-{}", inner.issued);
    inner.refresh_token = format!("refresh-{}", inner.issued);
    inner
        .access_tokens
        .insert(access.clone(), std::time::Instant::now());
    let body = json!({
        "access_token": access, "token_type": "Bearer", "expires_in": inner.config.token_lifetime_s,
        "refresh_token": inner.refresh_token, "scope": "account.person.readonly", "created_at": jiff::Timestamp::now().as_second(),
    });
    axum::Json(body).into_response()
}
