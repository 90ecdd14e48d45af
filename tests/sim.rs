//! The simulator's own behaviour: admits and events recorded with their idempotency keys, the
//! sink's validation and token, dropped connections, going offline and back on the same port,
//! chaos mode, incremental `since_utc` lists, list answers bent like other servers bend them
//! (capped pages, totals in the older headers or none, a wrong total, `skip_pagination`
//! ignored), faults on the nth request, and the request log.

use doorflow_agent::sim::{Chaos, Fault, ListBehaviour, SimConfig, Simulator, Totals};
use serde_json::{json, Value};
use std::time::Duration;

async fn start(config: SimConfig) -> Simulator {
    doorflow_agent::doorflow::client::install_crypto_provider();
    Simulator::start(config).await.unwrap()
}

fn http() -> reqwest::Client {
    doorflow_agent::doorflow::client::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get_list(http: &reqwest::Client, sim: &Simulator, path_and_query: &str) -> Vec<Value> {
    let response = http
        .get(format!("{}{path_and_query}", sim.base_url()))
        .basic_auth("sim-api-key", Some("X"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{path_and_query}: {body}");
    body.as_array().unwrap().clone()
}

fn ids(items: &[Value]) -> Vec<u64> {
    items.iter().map(|item| item["id"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn admits_are_recorded_with_their_idempotency_key() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let post = |tail: &str| {
        http.post(format!("{}/api/3/channels/{tail}", sim.base_url()))
            .basic_auth("sim-api-key", Some("X"))
    };
    let response = post("1340/admit_person")
        .header("Idempotency-Key", "call-1")
        .json(&json!({"person_id": 17}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["admission_request_id"].is_u64());
    // Refused admits are not recorded: disabled person, unknown person, unknown channel.
    for (tail, person, expected) in [
        ("1340/admit_person", 50, 403),
        ("1340/admit_person", 10_000, 403),
        ("9/admit_person", 17, 404),
    ] {
        let response = post(tail)
            .json(&json!({"person_id": person}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{tail} {person}");
    }
    let response = post("1341/admit").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);

    let admits = sim.received_admits();
    assert_eq!(admits.len(), 2);
    assert_eq!(admits[0].idempotency_key.as_deref(), Some("call-1"));
    assert_eq!(admits[0].body, json!({"person_id": 17, "channel_id": 1340}));
    assert_eq!(admits[0].path, "/api/3/channels/1340/admit_person");
    assert_eq!(admits[1].idempotency_key, None);
    assert_eq!(admits[1].body, json!({"channel_id": 1341}));
    assert!(admits[0].at <= admits[1].at);

    // The same, for shell scripts, without auth.
    let (status, body) = json_of(
        http.get(format!("{}/_sim/received", sim.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["admits"][0]["idempotency_key"], "call-1");
    assert_eq!(body["admits"][0]["person_id"], 17);
    assert_eq!(body["events"], json!([]));
}

#[tokio::test]
async fn the_event_sink_records_validates_and_checks_its_token() {
    let sim = start(SimConfig {
        sink_token: Some("sink-secret".into()),
        ..Default::default()
    })
    .await;
    let http = http();
    let url = format!("{}/events", sim.base_url());
    let event = json!({"id": 7, "event_code": 10, "channel_id": 1340, "person_id": 17,
        "credentials_number": "****", "created_at": "2026-11-22T10:00:00Z"});

    // Missing, wrong, or DoorFlow's credentials instead of the sink's: 401.
    let attempts = [
        http.post(&url).json(&event),
        http.post(&url).bearer_auth("wrong").json(&event),
        http.post(&url).basic_auth("sim-api-key", Some("X")).json(&event),
    ];
    for attempt in attempts {
        let (status, body) = json_of(attempt.send().await.unwrap()).await;
        assert_eq!(status, 401, "{body}");
    }
    let response = http
        .post(&url)
        .bearer_auth("sink-secret")
        .header("Idempotency-Key", "ev-7")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, (202, json!({"accepted": true})));

    // Garbage: 422 naming the fields.
    let garbage = [
        ("not json", "base"),
        ("[1, 2]", "base"),
        (r#"{"id": "7", "event_code": 10}"#, "id"),
        (r#"{"id": 7}"#, "event_code"),
        (r#"{"id": 7.5, "event_code": 10}"#, "id"),
    ];
    for (body, field) in garbage {
        let response = http
            .post(&url)
            .bearer_auth("sink-secret")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, answer) = json_of(response).await;
        assert_eq!(status, 422, "{body}");
        assert!(answer["errors"][field].is_array(), "{body}: {answer}");
    }

    let events = sim.received_events();
    assert_eq!(events.len(), 1, "only the accepted event is recorded");
    assert_eq!(events[0].body, event);
    assert_eq!(events[0].idempotency_key.as_deref(), Some("ev-7"));
    assert_eq!(events[0].path, "/events");
    let received: Value = http
        .get(format!("{}/_sim/received", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received["events"][0]["idempotency_key"], "ev-7");
    assert_eq!(received["events"][0]["event_code"], 10);
}

#[tokio::test]
async fn the_sink_without_a_token_needs_no_auth_but_is_rate_limited() {
    let sim = start(SimConfig {
        requests_per_window: 3,
        ..Default::default()
    })
    .await;
    let http = http();
    let mut statuses = Vec::new();
    for id in 0..4 {
        let response = http
            .post(format!("{}/events", sim.base_url()))
            .json(&json!({"id": id, "event_code": 30}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 429]);
    assert_eq!(sim.received_events().len(), 3);
    // `/_sim/received` is outside the limit.
    let response = http
        .get(format!("{}/_sim/received", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn a_dropped_connection_is_an_error_not_a_status() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    sim.inject("/events", Fault::Drop);
    let error = http
        .post(format!("{}/events", sim.base_url()))
        .json(&json!({"id": 1, "event_code": 10}))
        .send()
        .await
        .unwrap_err();
    assert!(error.status().is_none(), "{error:?}");
    assert!(sim.received_events().is_empty(), "a dropped request did no work");
    // The next request is served normally.
    let response = http
        .post(format!("{}/events", sim.base_url()))
        .json(&json!({"id": 1, "event_code": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let log: Vec<(String, u16)> = sim.request_log().into_iter().map(|(_, p, s)| (p, s)).collect();
    assert_eq!(log, [("/events".to_string(), 0), ("/events".to_string(), 202)]);
    assert_eq!(sim.fault_counts().get("drop"), Some(&1));
}

#[tokio::test]
async fn offline_refuses_connections_and_online_serves_the_same_port_again() {
    use tokio::io::AsyncReadExt;
    let sim = start(SimConfig::default()).await;
    let http = http();
    let addr = sim.base_url().trim_start_matches("http://").to_string();
    assert_eq!(get_list(&http, &sim, "/api/3/roles").await.len(), 2);
    // An idle keep-alive connection from before the drop.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Called from a plain thread: no runtime needed.
    let handle = sim.clone();
    std::thread::spawn(move || handle.set_offline(true))
        .join()
        .unwrap();
    let refused = std::net::TcpStream::connect(&addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buffer))
        .await
        .expect("the idle connection was not cut");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let error = http
        .get(format!("{}/api/3/roles", sim.base_url()))
        .basic_auth("sim-api-key", Some("X"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect() || error.status().is_none(), "{error:?}");
    sim.set_offline(true); // twice is harmless

    sim.set_offline(false);
    sim.set_offline(false); // twice is harmless
                            // A fresh client each time: a pooled connection cut by the drop fails once more if the
                            // client reuses it before noticing, as with any server restart.
    assert_eq!(get_list(&self::http(), &sim, "/api/3/roles").await.len(), 2);
    // And again, to show the cycle repeats.
    sim.set_offline(true);
    assert!(std::net::TcpStream::connect(&addr).is_err());
    sim.set_offline(false);
    assert_eq!(get_list(&self::http(), &sim, "/api/3/roles").await.len(), 2);
    assert_eq!(sim.base_url(), format!("http://{addr}"));
}

/// `count` sequential requests under chaos; each outcome as the server logged it, and the
/// number of faults applied.
async fn chaos_run(sim: &Simulator, http: &reqwest::Client, seed: u64, count: usize) -> (Vec<u16>, u64) {
    sim.set_chaos(Some(Chaos {
        failure_rate: 0.3,
        seed,
        path_prefix: "/api/3/".into(),
        slow: Duration::from_secs(60),
    }));
    let before = sim.request_log().len();
    let faults_before: u64 = sim.fault_counts().values().sum();
    for _ in 0..count {
        let result = http
            .get(format!("{}/api/3/credential_types", sim.base_url()))
            .basic_auth("sim-api-key", Some("X"))
            .send()
            .await;
        if let Ok(response) = result {
            let status = response.status().as_u16();
            assert!([200, 429, 500, 502, 503, 504].contains(&status), "{status}");
            let _ = response.bytes().await;
        }
    }
    sim.set_chaos(None);
    let statuses = sim.request_log()[before..].iter().map(|(_, _, s)| *s).collect();
    let failures = sim.fault_counts().values().sum::<u64>() - faults_before;
    (statuses, failures)
}

#[tokio::test]
async fn chaos_fails_a_seeded_share_of_requests_in_every_way() {
    let sim = start(SimConfig {
        requests_per_window: 100_000,
        ..Default::default()
    })
    .await;
    // A slow answer must take longer than this; other answers take milliseconds.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (first, failures) = chaos_run(&sim, &http, 7, 200).await;
    assert_eq!(first.len(), 200);
    assert!(
        (30..=90).contains(&failures),
        "{failures} of 200 failed at a 0.3 rate"
    );
    let counts = sim.fault_counts();
    assert!(counts.len() >= 6, "several kinds: {counts:?}");
    for kind in counts.keys() {
        assert!(
            [
                "500",
                "502_html",
                "503",
                "504",
                "500_old_style",
                "429",
                "drop",
                "slow"
            ]
            .contains(&kind.as_str()),
            "{kind}"
        );
    }
    // Server-side: a status for each failure but the slow ones (answered 200, late) and the
    // dropped ones (0).
    let failed_statuses = first.iter().filter(|s| **s != 200).count() as u64;
    assert_eq!(
        failed_statuses,
        failures - counts.get("slow").copied().unwrap_or(0)
    );
    assert_eq!(first.iter().filter(|s| **s == 0).count() as u64, counts["drop"]);

    // Same seed: the same requests fail the same way.
    let (again, failures_again) = chaos_run(&sim, &http, 7, 200).await;
    assert_eq!(again, first);
    assert_eq!(failures_again, failures);
    let doubled: Vec<u64> = sim.fault_counts().values().copied().collect();
    assert_eq!(doubled, counts.values().map(|n| n * 2).collect::<Vec<_>>());
    // Another seed: another pattern.
    let (other, _) = chaos_run(&sim, &http, 8, 60).await;
    assert_ne!(other, first[..60]);
    // Chaos off: nothing fails.
    let before = sim.fault_counts();
    assert_eq!(get_list(&http, &sim, "/api/3/roles").await.len(), 2);
    assert_eq!(sim.fault_counts(), before);
}

#[tokio::test]
async fn slow_answers_are_recorded_and_dropped_or_failed_ones_are_not() {
    let sim = start(SimConfig::default()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let send = |id: u64| {
        http.post(format!("{}/events", sim.base_url()))
            .header("Idempotency-Key", format!("ev-{id}"))
            .json(&json!({"id": id, "event_code": 10}))
            .send()
    };
    sim.inject("/events", Fault::Delay(Duration::from_secs(60)));
    let timed_out = send(1).await.unwrap_err();
    assert!(timed_out.is_timeout(), "{timed_out:?}");
    sim.inject("/events", Fault::Status(503));
    assert_eq!(send(2).await.unwrap().status().as_u16(), 503);
    sim.inject("/events", Fault::NonJson);
    assert_eq!(send(3).await.unwrap().status().as_u16(), 502);
    // The retry of the slow one: a duplicate, as at-least-once delivery produces.
    assert_eq!(send(1).await.unwrap().status().as_u16(), 202);
    let keys: Vec<Option<String>> = sim
        .received_events()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys, [Some("ev-1".to_string()), Some("ev-1".to_string())]);
}

#[tokio::test]
async fn since_utc_returns_only_what_changed() {
    let sim = start(SimConfig {
        people: 500,
        ..Default::default()
    })
    .await;
    let http = http();
    let cursor = jiff::Timestamp::now();
    let since = |extra: &str| format!("/api/3/people?since_utc={cursor}{extra}");
    assert!(
        get_list(&http, &sim, &since("")).await.is_empty(),
        "nothing changed yet"
    );
    assert_eq!(
        get_list(&http, &sim, "/api/3/people?per_page=100&page=5")
            .await
            .len(),
        100
    );

    sim.update_person(3, false);
    sim.disable_person(40);
    sim.update_person(4, true);
    sim.delete_person(5);
    sim.delete_person(40);
    let added = sim.add_person();
    assert_eq!(added, 501);
    sim.revoke_credential("7");

    let changed = get_list(&http, &sim, &since("")).await;
    assert_eq!(ids(&changed), [3, 4, 501]);
    assert_eq!(changed[0]["enabled"], false);
    assert_eq!(changed[1]["enabled"], true);
    assert_eq!(changed[2]["enabled"], true);
    for person in &changed {
        let updated: jiff::Timestamp = person["updated_at"].as_str().unwrap().parse().unwrap();
        assert!(updated >= cursor);
    }
    // Paginated like the full list.
    assert_eq!(
        ids(&get_list(&http, &sim, &since("&per_page=2&page=2")).await),
        [501]
    );
    // The full list: 500 - 2 deleted + 1 added.
    let mut everyone = Vec::new();
    for page in 1..=6 {
        everyone.extend(ids(&get_list(
            &http,
            &sim,
            &format!("/api/3/people?per_page=100&page={page}"),
        )
        .await));
    }
    assert_eq!(everyone.len(), 499);
    assert!(!everyone.contains(&5) && !everyone.contains(&40) && everyone.contains(&501));
    // A cursor inside the dataset's history selects part of it, however the offset is written
    // (an unencoded `+` arrives as a space).
    let older = get_list(
        &http,
        &sim,
        "/api/3/people?since_utc=2025-07-01T00:00:00Z&skip_pagination=true",
    )
    .await;
    assert!(older.len() > 100 && older.len() < 400, "{}", older.len());
    let plus = "/api/3/people?since_utc=2025-07-01T02:00:00+02:00&skip_pagination=true";
    assert_eq!(get_list(&http, &sim, plus).await, older);

    // Credentials: deleted people's and revoked ones are gone; the added card is there.
    let credentials = get_list(&http, &sim, "/api/3/credentials?per_page=500&page=1").await;
    let more = get_list(&http, &sim, "/api/3/credentials?per_page=500&page=2").await;
    let values: Vec<&str> = credentials
        .iter()
        .chain(&more)
        .map(|c| c["value"].as_str().unwrap())
        .collect();
    for gone in ["5", "500005", "40", "500040", "7"] {
        assert!(!values.contains(&gone), "{gone}");
    }
    assert!(values.contains(&"501") && values.contains(&"100013"));
    assert_eq!(values.len(), 500 + 100 + 50 - 4 - 1 + 1);

    // Group reservations follow the same cursor.
    let hour = jiff::SignedDuration::from_hours(1);
    let path = format!("/api/3/group_reservations?since_utc={cursor}");
    assert!(get_list(&http, &sim, &path).await.is_empty());
    let id = sim.add_group_reservation(9, vec![100], cursor - hour, cursor + hour);
    let reservations = get_list(&http, &sim, &path).await;
    assert_eq!(ids(&reservations), [id]);
    assert_eq!(reservations[0]["state"], "active");
    let later = jiff::Timestamp::now() + hour;
    assert!(get_list(
        &http,
        &sim,
        &format!("/api/3/group_reservations?since_utc={later}")
    )
    .await
    .is_empty());
}

#[tokio::test]
async fn the_request_log_shows_when_each_request_arrived_and_its_status() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    sim.inject("/api/3/roles", Fault::RateLimited { retry_after_s: 1 });
    let response = http
        .get(format!("{}/api/3/roles", sim.base_url()))
        .basic_auth("sim-api-key", Some("X"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.json::<Value>().await.unwrap()["retry_in"], 1);
    get_list(&http, &sim, "/api/3/roles").await;
    let _ = http
        .get(format!("{}/api/3/roles", sim.base_url()))
        .send()
        .await
        .unwrap();
    let log = sim.request_log();
    let entries: Vec<(&str, u16)> = log.iter().map(|(_, p, s)| (p.as_str(), *s)).collect();
    assert_eq!(
        entries,
        [
            ("/api/3/roles", 429),
            ("/api/3/roles", 200),
            ("/api/3/roles", 401)
        ]
    );
    assert!(log[0].0 <= log[1].0 && log[1].0 <= log[2].0);
    assert_eq!(sim.fault_counts().get("429"), Some(&1));
}

/// What the agent's paging is tested against: pages capped below `per_page`, totals in the
/// spec's headers, the older ones, misreported or left out, `skip_pagination` honoured or not.
#[tokio::test]
async fn lists_can_be_capped_counted_in_either_header_style_or_not_at_all() {
    let sim = start(SimConfig {
        people: 300,
        ..Default::default()
    })
    .await;
    let http = http();
    let page = |query: &'static str| {
        let (http, sim) = (http.clone(), sim.clone());
        async move {
            let response = http
                .get(format!("{}/api/3/credentials?{query}", sim.base_url()))
                .basic_auth("sim-api-key", Some("X"))
                .send()
                .await
                .unwrap();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let headers = [
                header("Total"),
                header("Per-Page"),
                header("X-Total-Results"),
                header("X-Per-Page"),
            ];
            let items = response.json::<Vec<Value>>().await.unwrap();
            (items.len(), headers)
        }
    };
    let some = |v: &str| Some(v.to_string());
    assert_eq!(
        page("per_page=500").await,
        (390, [some("390"), some("500"), None, None])
    );
    sim.set_lists(ListBehaviour {
        page_cap: Some(100),
        ..Default::default()
    });
    assert_eq!(
        page("per_page=500&page=4").await,
        (90, [some("390"), some("100"), None, None]),
        "capped: page 4 of 100 holds the last 90"
    );
    sim.set_lists(ListBehaviour {
        totals: Totals::Older,
        total_offset: -5,
        ..Default::default()
    });
    assert_eq!(
        page("per_page=100").await,
        (100, [None, None, some("385"), some("100")])
    );
    sim.set_lists(ListBehaviour {
        totals: Totals::None,
        honour_skip_pagination: false,
        ..Default::default()
    });
    assert_eq!(
        page("skip_pagination=true&per_page=50").await,
        (50, [None, None, None, None]),
        "skip_pagination ignored: the first page"
    );
    sim.set_lists(ListBehaviour::default());
    assert_eq!(page("skip_pagination=true").await.0, 390);
}

#[tokio::test]
async fn a_fault_can_wait_for_the_nth_request() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    sim.inject_after("/api/3/people", 2, Fault::Status(503));
    for expected in [200, 200, 503, 200] {
        let response = http
            .get(format!("{}/api/3/people", sim.base_url()))
            .basic_auth("sim-api-key", Some("X"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected);
    }
}
