//! The simulator against DoorFlow's published OpenAPI spec (tests/fixtures, MIT): every body it
//! serves is checked against the schema the spec declares for that path, method and status.
//! Also the schema checker's own tests, so a conformance failure can be trusted.

use doorflow_agent::sim::{Fault, SimConfig, Simulator};
use doorflow_agent::testing::openapi::{
    check_against_schema, check_schema, component_response_schema, load_spec, parse_spec, response_schema,
};
use serde_json::{json, Value};

const LISTS: [&str; 9] = [
    "/api/3/people",
    "/api/3/credentials",
    "/api/3/credential_types",
    "/api/3/groups",
    "/api/3/roles",
    "/api/3/group_reservations",
    "/api/3/reservations",
    "/api/3/channels",
    "/api/3/sites",
];

async fn start(config: SimConfig) -> (Simulator, reqwest::Client) {
    doorflow_agent::doorflow::client::install_crypto_provider();
    let sim = Simulator::start(config).await.unwrap();
    (sim, reqwest::Client::new())
}

/// Sends a request (with the API key unless `auth` is false); status and JSON body.
async fn send(request: reqwest::RequestBuilder, auth: bool) -> (u16, Value) {
    let request = if auth {
        request.basic_auth("sim-api-key", Some("X"))
    } else {
        request
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, body)
}

/// Panics unless `body` matches what the spec declares for `method path status`.
fn conforms(spec: &Value, path: &str, method: &str, status: u16, body: &Value, strict: bool) {
    let schema = response_schema(spec, path, method, status)
        .unwrap_or_else(|| panic!("the spec declares no JSON body for {method} {path} {status}"));
    if let Err(errors) = check_schema(spec, &schema, body, strict) {
        panic!(
            "{method} {path} {status} does not match the spec:\n  {}\nbody: {body}",
            errors.join("\n  ")
        );
    }
}

fn conforms_to_component(spec: &Value, name: &str, body: &Value, strict: bool) {
    let schema = component_response_schema(spec, name).unwrap_or_else(|| panic!("no component {name}"));
    if let Err(errors) = check_schema(spec, &schema, body, strict) {
        panic!("{name} does not match:\n  {}\nbody: {body}", errors.join("\n  "));
    }
}

// --- the checker itself ---------------------------------------------------------------------

fn channel() -> Value {
    json!({
        "id": 1340, "name": "Front Door", "mac_address": "00:11:22:33:44:55", "status": "online", "unit": 1,
        "sync": {"status": "ok", "last_sync_completed_at": null}, "mode": {"description": "normal", "relock_at": null},
        "lockdown": null,
    })
}

#[test]
fn checker_accepts_a_valid_body() {
    let spec = load_spec();
    check_against_schema(&spec, "Channel", &channel()).unwrap();
    let event = json!({"id": 1, "event_code": 10, "event_label": "Admitted", "channel_id": 1340,
        "person_id": null, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00.123Z"});
    check_against_schema(&spec, "Event", &event).unwrap();
}

#[test]
fn checker_rejects_a_wrong_type() {
    let spec = load_spec();
    let mut body = channel();
    body["unit"] = json!("1");
    let errors = check_against_schema(&spec, "Channel", &body).unwrap_err();
    assert_eq!(errors, vec!["$.unit: expected integer, got string".to_string()]);
    let mut body = channel();
    body["id"] = json!(1.5);
    assert!(
        check_against_schema(&spec, "Channel", &body).is_err(),
        "a float is not an integer"
    );
}

#[test]
fn checker_rejects_a_missing_required_field() {
    let spec = load_spec();
    let mut body = channel();
    body.as_object_mut().unwrap().remove("mode");
    let errors = check_against_schema(&spec, "Channel", &body).unwrap_err();
    assert_eq!(errors, vec!["$: missing required property \"mode\"".to_string()]);
    let event = json!({"id": 1, "event_code": 10, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"});
    let errors = check_against_schema(&spec, "Event", &event).unwrap_err();
    assert!(errors[0].contains("event_label"), "{errors:?}");
}

#[test]
fn checker_rejects_a_wrong_enum_value() {
    let spec = load_spec();
    let mut body = channel();
    body["mode"]["description"] = json!("party");
    let errors = check_against_schema(&spec, "Channel", &body).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("$.mode.description: \"party\" is not one of"),
        "{errors:?}"
    );
}

#[test]
fn checker_handles_nullable_dates_refs_arrays_and_strictness() {
    let spec = load_spec();
    let mut body = channel();
    body["sync"]["status"] = Value::Null; // not nullable
    body["mode"]["relock_at"] = json!("tomorrow"); // not a date-time
    let errors = check_against_schema(&spec, "Channel", &body).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    // Lists through a response's `$ref` items.
    let schema = response_schema(&spec, "/api/3/channels", "get", 200).unwrap();
    let mut broken = channel();
    broken["status"] = json!(3);
    let errors = check_schema(&spec, &schema, &json!([channel(), broken]), false).unwrap_err();
    assert_eq!(
        errors,
        vec!["$[1].status: expected string, got integer".to_string()]
    );
    // Unknown properties: allowed by OpenAPI, reported in strict mode; allowed by Person's
    // additionalProperties in both.
    let mut extra = channel();
    extra["colour"] = json!("red");
    assert!(check_schema(&spec, &schema, &json!([extra.clone()]), false).is_ok());
    assert!(check_schema(&spec, &schema, &json!([extra]), true).is_err());
    let person = json!({"id": 1, "first_name": "A", "last_name": "B", "enabled": true, "groups": [1], "roles": [],
        "card_number": "17"});
    let people = response_schema(&spec, "/api/3/people", "get", 200).unwrap();
    assert!(check_schema(&spec, &people, &json!([person]), true).is_ok());
    assert!(response_schema(&spec, "/api/3/people", "get", 404).is_none());
}

#[test]
fn checker_handles_composition_keywords() {
    let spec = parse_spec(
        r##"
components:
  schemas:
    Id: {type: object, required: [id], properties: {id: {type: integer}}}
    Named: {type: object, required: [name], properties: {name: {type: string}}}
    Both: {allOf: [{"$ref": "#/components/schemas/Id"}, {"$ref": "#/components/schemas/Named"}]}
    Either: {oneOf: [{type: integer}, {type: string}]}
    Any: {anyOf: [{type: integer}, {type: boolean}]}
    Loop: {"$ref": "#/components/schemas/Loop"}
"##,
    );
    assert!(check_against_schema(&spec, "Both", &json!({"id": 1, "name": "x"})).is_ok());
    assert!(check_against_schema(&spec, "Both", &json!({"id": 1})).is_err());
    assert!(check_against_schema(&spec, "Either", &json!("x")).is_ok());
    assert!(check_against_schema(&spec, "Either", &json!(true)).is_err());
    assert!(check_against_schema(&spec, "Any", &json!(true)).is_ok());
    assert!(check_against_schema(&spec, "Any", &json!("x")).is_err());
    assert!(check_against_schema(&spec, "Loop", &json!(1)).is_err());
    assert!(check_against_schema(&spec, "Missing", &json!(1)).is_err());
}

// --- the simulator against the spec ---------------------------------------------------------

#[tokio::test]
async fn every_list_endpoint_serves_the_spec_shapes() {
    let spec = load_spec();
    let (sim, http) = start(SimConfig {
        people: 120,
        ..Default::default()
    })
    .await;
    let now = jiff::Timestamp::now();
    let hour = jiff::SignedDuration::from_hours(1);
    sim.add_group_reservation(3, vec![100], now - hour, now + hour);
    sim.add_group_reservation(4, vec![100], now + hour, now + hour * 2);
    sim.add_reservation(5, vec![1340, 1341], now, now + hour);
    sim.update_person(7, false);
    sim.add_person();
    for path in LISTS {
        for query in ["", "?per_page=100&page=2", "?skip_pagination=true"] {
            let (status, body) = send(http.get(format!("{}{path}{query}", sim.base_url())), true).await;
            assert_eq!(status, 200, "{path}{query}: {body}");
            if query.is_empty() {
                assert!(
                    !body.as_array().unwrap().is_empty(),
                    "{path} is empty: the check would prove nothing"
                );
            }
            conforms(&spec, path, "get", 200, &body, true);
        }
    }
    let since = format!("?since_utc={}", now);
    for path in [
        "/api/3/people",
        "/api/3/group_reservations",
        "/api/3/reservations",
    ] {
        let (status, body) = send(http.get(format!("{}{path}{since}", sim.base_url())), true).await;
        assert_eq!(status, 200);
        conforms(&spec, path, "get", 200, &body, true);
    }
}

#[tokio::test]
async fn token_endpoint_serves_the_spec_shapes() {
    let spec = load_spec();
    let (sim, http) = start(SimConfig::default()).await;
    let form = |token: String| {
        vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", token),
            ("client_id", "agent".into()),
            ("client_secret", "shh".into()),
        ]
    };
    let first = sim.refresh_token();
    let url = format!("{}/oauth/token", sim.base_url());
    let (status, body) = send(http.post(&url).form(&form(first.clone())), false).await;
    assert_eq!(status, 200);
    conforms(&spec, "/oauth/token", "post", 200, &body, true);
    let access = body["access_token"].as_str().unwrap().to_string();
    let (status, _) = send(
        http.get(format!("{}/api/3/roles", sim.base_url()))
            .bearer_auth(&access),
        false,
    )
    .await;
    assert_eq!(status, 200, "the issued token works");
    // The old refresh token was rotated away.
    let (status, body) = send(http.post(&url).form(&form(first)), false).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    conforms(&spec, "/oauth/token", "post", 400, &body, true);
}

#[tokio::test]
async fn admit_answers_serve_the_spec_shapes() {
    let spec = load_spec();
    let (sim, http) = start(SimConfig::default()).await;
    let admit_person = "/api/3/channels/{id}/admit_person";
    let url = |channel: u64, tail: &str| format!("{}/api/3/channels/{channel}/{tail}", sim.base_url());

    let (status, body) = send(
        http.post(url(1340, "admit_person"))
            .json(&json!({"person_id": 1})),
        true,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["status"], "pending");
    conforms(&spec, admit_person, "post", 202, &body, true);

    let (status, body) = send(http.post(url(1341, "admit")), true).await;
    assert_eq!(status, 202);
    conforms(&spec, "/api/3/channels/{id}/admit", "post", 202, &body, true);

    for person in [50, 999_999] {
        let (status, body) = send(
            http.post(url(1340, "admit_person"))
                .json(&json!({"person_id": person})),
            true,
        )
        .await;
        assert_eq!(status, 403, "person {person}");
        assert!(body["reason"].is_string());
        conforms(&spec, admit_person, "post", 403, &body, true);
    }
    for tail in ["admit_person", "admit"] {
        let (status, body) = send(http.post(url(77, tail)).json(&json!({"person_id": 1})), true).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"], "not_found");
        conforms(
            &spec,
            &format!("/api/3/channels/{{id}}/{tail}"),
            "post",
            404,
            &body,
            true,
        );
    }
    let (status, body) = send(
        http.post(url(1340, "admit_person"))
            .json(&json!({"person_id": 1})),
        false,
    )
    .await;
    assert_eq!(status, 401);
    conforms(&spec, admit_person, "post", 401, &body, true);
    // Not declared for admit_person; the simulator uses the spec's 422 shape.
    let (status, body) = send(
        http.post(url(1340, "admit_person")).json(&json!({"person": 1})),
        true,
    )
    .await;
    assert_eq!(status, 422);
    conforms_to_component(&spec, "UnprocessableEntityError", &body, false);
    assert_eq!(sim.received_admits().len(), 2, "only the two 202s are recorded");
}

#[tokio::test]
async fn error_bodies_serve_the_spec_shapes() {
    let spec = load_spec();
    let (sim, http) = start(SimConfig {
        requests_per_window: 40,
        ..Default::default()
    })
    .await;
    for path in LISTS {
        let (status, body) = send(http.get(format!("{}{path}", sim.base_url())), false).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["error"], "invalid_token");
        conforms(&spec, path, "get", 401, &body, true);
    }
    for (status, fault) in [(403, Fault::Status(403)), (500, Fault::Status(500))] {
        sim.inject("/api/3/people", fault);
        let (got, body) = send(http.get(format!("{}/api/3/people", sim.base_url())), true).await;
        assert_eq!(got, status);
        conforms(&spec, "/api/3/people", "get", status, &body, true);
    }
    // The spec declares a 429 body only for POST /api/3/sync; the simulator uses that shape
    // for its rate limit and for injected 429s everywhere.
    assert_eq!(
        response_schema(&spec, "/api/3/sync", "post", 429),
        component_response_schema(&spec, "RateLimitedError")
    );
    sim.inject("/api/3/roles", Fault::RateLimited { retry_after_s: 1 });
    let (status, body) = send(http.get(format!("{}/api/3/roles", sim.base_url())), true).await;
    assert_eq!(status, 429);
    conforms_to_component(&spec, "RateLimitedError", &body, true);
    let mut status = 0;
    let mut body = Value::Null;
    for _ in 0..40 {
        (status, body) = send(http.get(format!("{}/api/3/groups", sim.base_url())), true).await;
        if status == 429 {
            break;
        }
    }
    assert_eq!(status, 429, "the window of 40 requests ran out");
    assert_eq!(sim.rate_limited(), 1);
    conforms_to_component(&spec, "RateLimitedError", &body, true);
}

#[tokio::test]
async fn validation_errors_use_the_spec_422_shape() {
    let spec = load_spec();
    let (sim, http) = start(SimConfig::default()).await;
    let (status, body) = send(
        http.get(format!("{}/api/3/people?since_utc=yesterday", sim.base_url())),
        true,
    )
    .await;
    assert_eq!(status, 422);
    assert!(body["errors"]["since_utc"].is_array());
    conforms_to_component(&spec, "UnprocessableEntityError", &body, false);
    let (status, body) = send(
        http.post(format!("{}/events", sim.base_url()))
            .body("{\"id\": \"x\"}"),
        false,
    )
    .await;
    assert_eq!(status, 422);
    conforms_to_component(&spec, "UnprocessableEntityError", &body, false);
}

#[tokio::test]
async fn the_sink_keeps_event_bodies_that_the_event_schema_checks() {
    let spec = load_spec();
    let (sim, http) = start(SimConfig::default()).await;
    let event = json!({
        "id": 4242, "event_code": 10, "event_label": "Person17 Sim admitted using card",
        "channel_id": 1340, "channel_name": "Front Door", "person_id": 17, "person_name": "Person17 Sim",
        "credentials_number": "****", "created_at": "2026-11-22T10:00:00.000Z", "updated_at": "2026-11-22T10:00:00.000Z",
    });
    let incomplete = json!({"id": 4243, "event_code": 32, "channel_id": 1340});
    for body in [&event, &incomplete] {
        let (status, answer) = send(http.post(format!("{}/events", sim.base_url())).json(body), false).await;
        assert_eq!((status, answer), (202, json!({"accepted": true})));
    }
    let received = sim.received_events();
    assert_eq!(received.len(), 2);
    check_against_schema(&spec, "Event", &received[0].body).unwrap();
    // The sink itself only insists on `id` and `event_code`; the schema check catches the rest.
    let errors = check_against_schema(&spec, "Event", &received[1].body).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}"); // event_label, created_at, updated_at
}
