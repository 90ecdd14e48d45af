//! The endpoints: DoorFlow's lists in the spec's shapes, the token endpoint, admits, the event
//! sink, and `/_sim/received` for scripts. Auth, rate limit and faults happen in `gate` first.

use super::dataset::STAMP;
use super::faults::error;
use super::{ListBehaviour, Received, Shared, Totals};
use crate::mutex::lock;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Form;
use jiff::Timestamp;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

type Sim = State<Arc<Shared>>;
type Params = Query<HashMap<String, String>>;

/// The channels of the dataset.
const CHANNELS: [(u64, &str); 2] = [(1340, "Front Door"), (1341, "Server Room")];

/// The scopes the simulator grants to every token: those the agent's calls need.
fn scopes() -> String {
    let mut scopes: Vec<&str> = crate::doorflow::operation::Operation::ALL
        .iter()
        .filter_map(|operation| operation.required_scope())
        .collect();
    scopes.dedup();
    scopes.join(" ")
}

/// `page`/`per_page`/`skip_pagination` as DoorFlow reads them, and as the account's
/// [`ListBehaviour`] bends them (a page cap, headers left out or misreported).
struct Paging {
    skip: usize,
    take: usize,
    per_page: usize,
    behaviour: ListBehaviour,
}

impl Paging {
    fn new(
        params: &HashMap<String, String>,
        default_per_page: usize,
        max_per_page: usize,
        behaviour: &ListBehaviour,
    ) -> Paging {
        let cap = behaviour.page_cap.unwrap_or(usize::MAX).max(1);
        let per_page = params
            .get("per_page")
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_per_page)
            .clamp(1, max_per_page)
            .min(cap);
        let whole = params.get("skip_pagination").map(String::as_str) == Some("true");
        if whole && behaviour.honour_skip_pagination {
            return Paging {
                skip: 0,
                take: usize::MAX,
                per_page,
                behaviour: behaviour.clone(),
            };
        }
        let page = params
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        Paging {
            skip: (page - 1).saturating_mul(per_page),
            take: per_page,
            per_page,
            behaviour: behaviour.clone(),
        }
    }

    /// This page's items and the total, in one pass over cheap keys (ids), so only the page's
    /// items are turned into JSON.
    fn select<T>(&self, items: impl Iterator<Item = T>) -> (Vec<T>, usize) {
        let mut total = 0;
        let mut page = Vec::new();
        for item in items {
            if total >= self.skip && page.len() < self.take {
                page.push(item);
            }
            total += 1;
        }
        (page, total)
    }

    /// A bare JSON array with the totals headers the behaviour asks for (the spec's `Total`
    /// and `Per-Page` by default).
    fn respond(&self, items: Vec<Value>, total: usize) -> Response {
        let mut response = axum::Json(Value::Array(items)).into_response();
        let headers = response.headers_mut();
        let said = (total as i64 + self.behaviour.total_offset).max(0);
        let names = match self.behaviour.totals {
            Totals::Spec => Some(("Total", "Per-Page")),
            Totals::Older => Some(("X-Total-Results", "X-Per-Page")),
            Totals::None => None,
        };
        if let Some((total_name, per_page_name)) = names {
            headers.insert(total_name, HeaderValue::from(said));
            headers.insert(per_page_name, HeaderValue::from(self.per_page));
        }
        response
    }
}

fn validation_failed(description: &str, errors: Map<String, Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"error": "validation_failed", "error_description": description, "errors": errors})),
    )
        .into_response()
}

/// `since_utc` (RFC 3339), for the lists that support incremental pulls.
fn since_utc(params: &HashMap<String, String>) -> Result<Option<Timestamp>, Box<Response>> {
    match params.get("since_utc") {
        None => Ok(None),
        // An unencoded `+00:00` offset arrives as a space.
        Some(text) => text
            .replace(' ', "+")
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|_| {
                let mut errors = Map::new();
                errors.insert("since_utc".into(), json!(["is not a valid date-time"]));
                Box::new(validation_failed("since_utc is not a valid date-time", errors))
            }),
    }
}

pub(super) async fn people(State(sim): Sim, Query(params): Params) -> Response {
    let since = match since_utc(&params) {
        Ok(since) => since,
        Err(response) => return *response,
    };
    let inner = lock(&sim.inner);
    let paging = Paging::new(&params, 50, 100, &inner.lists);
    let (ids, total) = paging.select(inner.data.people(since));
    let items = ids.into_iter().map(|id| inner.data.person(id)).collect();
    paging.respond(items, total)
}

pub(super) async fn credentials(State(sim): Sim, Query(params): Params) -> Response {
    let inner = lock(&sim.inner);
    let paging = Paging::new(&params, 500, 500, &inner.lists);
    let (creds, total) = paging.select(inner.data.credentials());
    paging.respond(creds.into_iter().map(|c| c.to_json()).collect(), total)
}

pub(super) async fn credential_types(State(sim): Sim, Query(params): Params) -> Response {
    let types = [
        (1, "Employee Card", "employee_card"),
        (2, "PIN", "pin"),
        (3, "HID Mobile", "hid_mobile"),
    ];
    let paging = Paging::new(&params, 500, 500, &lock(&sim.inner).lists);
    let (page, total) = paging.select(types.iter());
    let items = page
        .into_iter()
        .map(|(id, label, slug)| json!({"id": id, "label": label, "slug": slug, "code": null}))
        .collect();
    paging.respond(items, total)
}

/// Not paginated in the API.
pub(super) async fn groups() -> Response {
    axum::Json(json!([
        {"id": 100, "name": "Everyone", "notes": null, "global_across_sites": false, "created_at": STAMP, "updated_at": STAMP}
    ]))
    .into_response()
}

/// Not paginated in the API.
pub(super) async fn roles() -> Response {
    axum::Json(json!([
        {"id": 1, "name": "Staff", "shift_id": null, "notes": null, "created_at": STAMP, "updated_at": STAMP},
        {"id": 2, "name": "Office hours", "shift_id": 7, "notes": null, "created_at": STAMP, "updated_at": STAMP},
    ]))
    .into_response()
}

pub(super) async fn group_reservations(State(sim): Sim, Query(params): Params) -> Response {
    let since = match since_utc(&params) {
        Ok(since) => since,
        Err(response) => return *response,
    };
    let (all, paging) = {
        let inner = lock(&sim.inner);
        (
            inner.data.group_reservations(since),
            Paging::new(&params, 500, 500, &inner.lists),
        )
    };
    let (page, total) = paging.select(all.into_iter());
    paging.respond(page, total)
}

pub(super) async fn reservations(State(sim): Sim, Query(params): Params) -> Response {
    let since = match since_utc(&params) {
        Ok(since) => since,
        Err(response) => return *response,
    };
    let (all, paging) = {
        let inner = lock(&sim.inner);
        (
            inner.data.reservations(since),
            Paging::new(&params, 500, 500, &inner.lists),
        )
    };
    let (page, total) = paging.select(all.into_iter());
    paging.respond(page, total)
}

pub(super) async fn channels(State(sim): Sim, Query(params): Params) -> Response {
    let (lockdowns, paging) = {
        let inner = lock(&sim.inner);
        (
            inner.data.lockdowns.clone(),
            Paging::new(&params, 500, 1000, &inner.lists),
        )
    };
    let (page, total) = paging.select(CHANNELS.iter());
    let items = page
        .into_iter()
        .map(|(id, name)| {
            json!({
                "id": id, "name": name, "mac_address": "00:11:22:33:44:55", "status": "online", "unit": 1,
                "sync": {"status": "ok", "last_sync_completed_at": null},
                "mode": {"description": "normal", "relock_at": null},
                "lockdown": if lockdowns.contains(id) {
                    json!({"message": "Lockdown", "card_lockdown": {"state": true}, "rex_lockdown": {"state": true}})
                } else {
                    Value::Null
                },
                "site_id": 1, "created_at": STAMP, "updated_at": STAMP,
            })
        })
        .collect();
    paging.respond(items, total)
}

pub(super) async fn sites(State(sim): Sim, Query(params): Params) -> Response {
    let paging = Paging::new(&params, 500, 500, &lock(&sim.inner).lists);
    let (page, total) = paging.select(std::iter::once(
        json!({"id": 1, "name": "Main Office", "time_zone": "Europe/London", "site_ips": []}),
    ));
    paging.respond(page, total)
}

/// `POST /oauth/token`: a valid refresh token yields a new access token and a rotated refresh
/// token; the old refresh token stops working at once.
pub(super) async fn token(State(sim): Sim, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut inner = lock(&sim.inner);
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
    inner.access_tokens.insert(access.clone(), Instant::now());
    axum::Json(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": inner.config.token_lifetime_s,
        "refresh_token": inner.refresh_token, "scope": scopes(), "created_at": Timestamp::now().as_second(),
    }))
    .into_response()
}

fn known_channel(id: &str) -> Option<u64> {
    let id = id.parse::<u64>().ok()?;
    CHANNELS.iter().any(|(known, _)| *known == id).then_some(id)
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn channel_not_found() -> Response {
    error(404, "not_found", "The requested resource was not found")
}

/// `POST /api/3/channels/{id}/admit_person {"person_id"}`: 202 for a present, enabled person.
pub(super) async fn admit_person(
    State(sim): Sim,
    Path(channel): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(channel_id) = known_channel(&channel) else {
        return channel_not_found();
    };
    let mut request = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) if object.get("person_id").is_some_and(Value::is_u64) => object,
        _ => {
            let mut errors = Map::new();
            errors.insert("person_id".into(), json!(["is required and must be an integer"]));
            return validation_failed("person_id is required", errors);
        }
    };
    let person_id = request["person_id"].as_u64().unwrap_or_default();
    let mut inner = lock(&sim.inner);
    let reason = if !inner.data.exists(person_id) {
        Some("Person not found")
    } else if !inner.data.enabled(person_id) {
        Some("Person is disabled")
    } else {
        None
    };
    if let Some(reason) = reason {
        let body = json!({"error": "Access denied", "reason": reason});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    request.insert("channel_id".into(), json!(channel_id));
    accept_admit(&mut inner, uri.path(), &headers, Value::Object(request))
}

/// `POST /api/3/channels/{id}/admit` (no body): 202.
pub(super) async fn admit(
    State(sim): Sim,
    Path(channel): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(channel_id) = known_channel(&channel) else {
        return channel_not_found();
    };
    let mut inner = lock(&sim.inner);
    accept_admit(
        &mut inner,
        uri.path(),
        &headers,
        json!({"channel_id": channel_id}),
    )
}

fn accept_admit(inner: &mut super::Inner, path: &str, headers: &HeaderMap, body: Value) -> Response {
    inner.next_admission_id += 1;
    let id = inner.next_admission_id;
    inner.admits.push(Received {
        idempotency_key: idempotency_key(headers),
        body,
        path: path.to_string(),
        at: Instant::now(),
    });
    let body = json!({"admission_request_id": id, "status": "pending"});
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// `POST /events`: the agent's event sink. Takes one event in DoorFlow's `Event` shape; only
/// an integer `id` and `event_code` are required here (the spec checks live in the tests).
pub(super) async fn event(State(sim): Sim, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut errors = Map::new();
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(event)) => {
            for field in ["id", "event_code"] {
                match event.get(field) {
                    None => errors.insert(field.into(), json!(["is required"])),
                    Some(value) if !value.is_i64() && !value.is_u64() => {
                        errors.insert(field.into(), json!(["must be an integer"]))
                    }
                    Some(_) => None,
                };
            }
            if errors.is_empty() {
                lock(&sim.inner).events.push(Received {
                    idempotency_key: idempotency_key(&headers),
                    body: Value::Object(event),
                    path: uri.path().to_string(),
                    at: Instant::now(),
                });
                return (StatusCode::ACCEPTED, axum::Json(json!({"accepted": true}))).into_response();
            }
        }
        Ok(_) => {
            errors.insert("base".into(), json!(["must be a JSON object"]));
        }
        Err(_) => {
            errors.insert("base".into(), json!(["is not valid JSON"]));
        }
    }
    validation_failed("The event was rejected", errors)
}

/// `GET /_sim/received`: what the sink and the admit endpoints accepted, for shell scripts.
pub(super) async fn received(State(sim): Sim) -> Response {
    let inner = lock(&sim.inner);
    let listed = |list: &[Received]| -> Vec<Value> {
        list.iter()
            .map(|r| {
                let mut body = r.body.clone();
                if let Value::Object(object) = &mut body {
                    object.insert("idempotency_key".into(), json!(r.idempotency_key));
                }
                body
            })
            .collect()
    };
    axum::Json(json!({"events": listed(&inner.events), "admits": listed(&inner.admits)})).into_response()
}

pub(super) async fn not_found() -> Response {
    error(404, "not_found", "The requested resource was not found")
}
