//! The uplink against the DoorFlow simulator: delivery, the README's retry table row by row,
//! the admit TTL, resuming when the server comes back, and a 30 % chaos run.

use doorflow_agent::sim::{Chaos, Fault};
use doorflow_agent::store::Lane;
use doorflow_agent::testing::config::use_oauth;
use doorflow_agent::testing::harness::{Harness, Options};
use doorflow_agent::testing::mock_control::control;
use doorflow_agent::testing::{eventually, first_occurrences, openapi};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swipe_reaches_doorflow_as_an_admit_and_an_event_with_idempotency_keys() {
    let h = Harness::start(Options::default()).await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    let socket = h.config.gpio.mock_socket.clone();
    let reply = tokio::task::spawn_blocking(move || {
        control(
            &socket,
            json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": 17}),
        )
    })
    .await
    .unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(
        eventually(LIMIT, || !h.sim.received_events().is_empty()
            && !h.sim.received_admits().is_empty())
        .await
    );
    assert!(eventually(LIMIT, || h.pending() == 0).await);

    let event = &h.sim.received_events()[0];
    assert_eq!(event.body["event_code"], 10);
    assert_eq!(event.body["person_id"], 17);
    assert_eq!(event.body["channel_id"], 1340);
    let credential = event.body["credentials_number"].as_str().unwrap();
    assert!(
        credential.starts_with("****") && credential != "17",
        "card numbers leave masked: {credential}"
    );
    assert!(event.body["id"].as_u64().is_some());
    let spec = openapi::load_spec();
    if let Err(errors) = openapi::check_against_schema(&spec, "Event", &event.body) {
        panic!("the posted event does not match DoorFlow's Event schema: {errors:?}");
    }
    let admit = &h.sim.received_admits()[0];
    assert_eq!(admit.body["person_id"], 17);
    let (event_key, admit_key) = (
        event.idempotency_key.clone().unwrap(),
        admit.idempotency_key.clone().unwrap(),
    );
    assert_eq!(event_key.len(), 36, "a UUID: {event_key}");
    assert_ne!(event_key, admit_key, "each queued call has its own key");
    let status = h.agent.status();
    assert_eq!(status.queue.pending, 0);
    assert!(status.online);
}

/// The reported fault: a tag held at a long-range reader, read 15 times in a few seconds, made
/// 15 grants, 15 events and 15 admit_person calls. Now DoorFlow gets one admit, and the one
/// event twice: as granted, then updated with the count when the reads stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_tag_reaches_doorflow_as_one_admit_and_one_updated_event() {
    let h = Harness::start(Options::default()).await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    let socket = h.config.gpio.mock_socket.clone();
    tokio::task::spawn_blocking(move || {
        let card = json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": 17});
        for _ in 0..15 {
            // The simulated reader queues 8 requests: wait while it is busy.
            loop {
                let reply = control(&socket, card.clone());
                if reply["ok"] == true {
                    break;
                }
                assert!(reply["error"].as_str().unwrap().contains("busy"), "{reply}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
    .await
    .unwrap();
    assert!(eventually(LIMIT, || h.sim.received_events().len() >= 2).await);
    assert!(eventually(LIMIT, || h.pending() == 0).await);
    let events = h.sim.received_events();
    assert_eq!(
        events.len(),
        2,
        "{:?}",
        events.iter().map(|e| &e.body).collect::<Vec<_>>()
    );
    let (granted, updated) = (&events[0].body, &events[1].body);
    assert_eq!(granted["id"], updated["id"], "the same event");
    assert_eq!(
        (granted["event_code"].clone(), updated["event_code"].clone()),
        (json!(10), json!(10))
    );
    let label = updated["event_label"].as_str().unwrap();
    assert!(label.contains("read 14 more times while released"), "{label}");
    let time = |body: &serde_json::Value, field: &str| -> jiff::Timestamp {
        body[field].as_str().unwrap().parse().unwrap()
    };
    assert!(time(updated, "updated_at") > time(granted, "updated_at"));
    assert_eq!(time(updated, "created_at"), time(granted, "created_at"));
    let spec = openapi::load_spec();
    openapi::check_against_schema(&spec, "Event", updated).unwrap();
    assert_eq!(h.sim.received_admits().len(), 1, "one admit_person call");
    assert_ne!(events[0].idempotency_key, events[1].idempotency_key, "two calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_go_to_the_dead_letters_with_an_actionable_reason_and_the_queue_moves_on() {
    let h = Harness::start(Options::default()).await;
    h.sim
        .inject("/api/3/channels/1340/admit_person", Fault::Status(403));
    h.sim.inject("/events", Fault::Status(422));
    let refused = h.queue_admit(17); // an admit and its door event, which meets the 422
    let ids = h.queue_events(2);
    assert!(eventually(LIMIT, || h.pending() == 0).await);

    let dead = h.agent.store.dead_list(10).unwrap();
    let reasons: Vec<(&str, Option<u16>)> = dead
        .iter()
        .map(|d| (d.value.reason.as_str(), d.value.status))
        .collect();
    assert!(reasons.contains(&("forbidden", Some(403))), "{reasons:?}");
    assert!(reasons.contains(&("rejected", Some(422))), "{reasons:?}");
    let forbidden = dead.iter().find(|d| d.value.reason == "forbidden").unwrap();
    assert!(
        forbidden.value.detail.contains("account.channel.admit.person"),
        "a 403 names the scope: {}",
        forbidden.value.detail
    );
    // The refused event is not delivered; those queued after it still went out, in order.
    assert_eq!(h.received_event_ids(), ids);

    // An operator fixes the cause and requeues: it is delivered.
    assert_eq!(h.agent.store.dead_retry(None).unwrap(), 2);
    h.agent.kick_queue();
    assert!(eventually(LIMIT, || h.received_event_ids().contains(&refused)).await);
    assert!(eventually(LIMIT, || h.sim.received_admits().len() == 1).await);
}

/// Issue 16 item 7: `Retry-After` on any status is the least wait, in seconds or in any of the
/// three HTTP-date forms (read against the answer's `Date`). Without it, the test's 100 ms
/// backoff would retry at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_a_503_is_the_least_wait_in_every_form() {
    let h = Harness::start(Options::default()).await;
    let in_3_s = |format: &str| {
        (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3))
            .strftime(format)
            .to_string()
    };
    let forms = [
        None,
        Some("%a, %d %b %Y %H:%M:%S GMT"), // IMF-fixdate
        Some("%A, %d-%b-%y %H:%M:%S GMT"), // RFC 850
        Some("%a %b %e %H:%M:%S %Y"),      // asctime
    ];
    for form in forms {
        let value = form.map_or_else(|| "3".to_string(), in_3_s);
        let before = h.sim.request_log().len();
        h.sim.inject(
            "/events",
            Fault::RetryAfter {
                status: 503,
                value: value.clone(),
            },
        );
        let ids = h.queue_events(1);
        assert!(eventually(LIMIT, || h.received_event_ids().ends_with(&ids)).await);
        let attempts: Vec<_> = h.sim.request_log()[before..]
            .iter()
            .filter(|(_, path, _)| path == "/events")
            .map(|(at, _, status)| (*at, *status))
            .collect();
        assert_eq!(attempts[0].1, 503, "{value}: {attempts:?}");
        let waited = attempts[1].0 - attempts[0].0;
        // Dates have whole seconds: 3 s asked, at least 2 s waited.
        assert!(
            waited >= Duration::from_secs(2),
            "{value}: retried after {waited:?}"
        );
    }
}

/// Issue 11 item 9: admit_person's own 403 (`{error, reason}`: the person may not pass) is about
/// the person's access, so its dead letter quotes DoorFlow's reason and names no scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admit_refused_for_the_person_names_the_person_not_a_scope() {
    let h = Harness::start(Options::default()).await;
    h.queue_admit(50); // the simulator's person 50 is disabled
    assert!(eventually(LIMIT, || h.pending() == 0).await);
    let dead = h.agent.store.dead_list(10).unwrap();
    let admit = dead
        .iter()
        .find(|d| d.value.queued.call.is_admit())
        .expect("the admit is dead-lettered");
    let detail = &admit.value.detail;
    assert_eq!(admit.value.status, Some(403));
    assert!(
        detail.contains("Person is disabled") && detail.contains("person's access rights"),
        "{detail}"
    );
    assert!(
        !detail.contains("scope") && !detail.contains("account."),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_holds_every_call_until_its_retry_time_and_nothing_is_dead_lettered() {
    let h = Harness::start(Options::default()).await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    h.sim.inject("/events", Fault::RateLimited { retry_after_s: 2 });
    let ids = h.queue_events(5);
    assert!(eventually(LIMIT, || h.received_event_ids().len() == 5).await);

    let log = h.sim.request_log();
    let limited_at = log
        .iter()
        .find(|(_, path, status)| path == "/events" && *status == 429)
        .map(|(at, _, _)| *at)
        .expect("the injected 429 was served");
    // Retry-After: 2 → nothing at all (events, admits or sync) before two seconds have passed.
    let too_early: Vec<_> = log
        .iter()
        .filter(|(at, _, _)| *at > limited_at && at.duration_since(limited_at) < Duration::from_millis(1900))
        .collect();
    assert!(
        too_early.is_empty(),
        "requests inside the 429 hold: {too_early:?}"
    );
    assert_eq!(first_occurrences(&h.received_event_ids()), ids, "order kept");
    assert_eq!(h.agent.store.outbox_stats().unwrap().dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_back_off_with_the_attempts_on_disk_and_then_deliver_in_order() {
    let h = Harness::start(Options {
        retry_base_ms: 300,
        ..Options::default()
    })
    .await;
    for fault in [
        Fault::Status(503),
        Fault::NonJson,
        Fault::Status(500),
        Fault::Drop,
    ] {
        h.sim.inject("/events", fault);
    }
    let ids = h.queue_events(3);
    // While it backs off, the head's attempt count and next time are in the store.
    assert!(
        eventually(LIMIT, || {
            h.agent
                .store
                .outbox_head(Lane::Event)
                .unwrap()
                .is_some_and(|head| head.value.attempts >= 2 && head.value.next_attempt_at.is_some())
        })
        .await
    );
    let head = h.agent.store.outbox_head(Lane::Event).unwrap().unwrap().value;
    assert!(head.last_error.is_some());
    assert!(eventually(LIMIT, || h.pending() == 0).await);
    assert_eq!(first_occurrences(&h.received_event_ids()), ids);
    assert_eq!(h.agent.store.outbox_stats().unwrap().dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_past_their_ttl_expire_unsent_but_events_wait_forever() {
    let h = Harness::start(Options {
        admit_ttl_s: 1,
        ..Options::default()
    })
    .await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    h.sim.set_offline(true);
    let swipe = h.queue_admit(17);
    let ids = [vec![swipe], h.queue_events(1)].concat();
    assert!(
        eventually(LIMIT, || h.agent.store.outbox_stats().unwrap().dead == 1).await,
        "the admit expires"
    );
    let dead = h.agent.store.dead_list(10).unwrap();
    assert_eq!(dead[0].value.reason, "expired");
    assert!(dead[0].value.queued.call.is_admit());
    // Events never expire: it is still queued, and goes out when the server is back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.agent.store.outbox_stats().unwrap().pending_events, 2);
    h.sim.set_offline(false);
    assert!(eventually(LIMIT, || h.received_event_ids() == ids).await);
    assert!(
        h.sim.received_admits().is_empty(),
        "an expired admit is never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_server_comes_back_the_queue_resumes_without_sleeping_out_its_backoff() {
    // Long backoff: after a couple of failures the next try is up to a minute away.
    let h = Harness::start(Options {
        retry_base_ms: 30_000,
        retry_cap_s: 60,
        ..Options::default()
    })
    .await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    h.sim.set_offline(true);
    let ids = h.queue_events(3);
    // Wait for a backoff that ends well in the future.
    let mut deadline = None;
    assert!(
        eventually(Duration::from_secs(120), || {
            let queue = h.agent.status().queue;
            deadline = queue.uplink_until.filter(|until| {
                queue.uplink == "backing_off"
                    && *until > jiff::Timestamp::now() + jiff::SignedDuration::from_secs(15)
            });
            deadline.is_some()
        })
        .await,
        "a long backoff was scheduled"
    );
    assert!(!h.agent.status().online);
    h.sim.set_offline(false);
    assert!(eventually(LIMIT, || h.received_event_ids().len() == 3).await);
    assert!(
        jiff::Timestamp::now() < deadline.unwrap(),
        "delivered before the backoff would have ended: the reachability probe resumed it"
    );
    assert_eq!(h.received_event_ids(), ids);
}

/// Queues an admit that DoorFlow's auth refuses: the admit lane holds as `auth_refused` with
/// the admit kept (never dead-lettered), and `status` says the credentials are refused and
/// the board is not online. Returns that status.
async fn queue_admit_refused_by_doorflow(h: &Harness) -> doorflow_agent::status::StatusReport {
    h.queue_admit(17);
    assert!(
        eventually(LIMIT, || h.agent.uplink.lane(Lane::Admit).state.as_str()
            == "auth_refused")
        .await
    );
    let stats = h.agent.store.outbox_stats().unwrap();
    assert_eq!(
        (stats.pending_admits, stats.dead),
        (1, 0),
        "kept, not dead-lettered"
    );
    let status = h.agent.status();
    assert_eq!(status.doorflow_auth.state, "refused");
    assert!(!status.online, "refused credentials are not online");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_hold_the_admit_lane_and_keep_the_queue() {
    let h = Harness::start(Options {
        api_key: "revoked-key".into(),
        ..Options::default()
    })
    .await;
    let status = queue_admit_refused_by_doorflow(&h).await;
    assert_eq!(status.queue.uplink, "auth_refused");
    // The event lane (the sink, which does not use DoorFlow's key) is not held by it.
    assert!(eventually(LIMIT, || h.received_event_ids().len() == 1).await);
}

/// Issue 16 item 6: a refused refresh (`invalid_grant`) dead-lettered a queued admit as
/// `rejected` while `status` said online. It holds the admit lane as `auth_refused`, keeps the
/// admit, and `status` says DoorFlow refuses the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_holds_the_admit_lane_and_status_says_so() {
    let sim = doorflow_agent::sim::Simulator::start(Default::default())
        .await
        .unwrap();
    let refresh_token = sim.refresh_token();
    let h = Harness::start_edited(sim, Options::default(), |config| {
        let dir = config.store.path.parent().unwrap().to_path_buf();
        use_oauth(config, &dir, &refresh_token);
    })
    .await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    assert_eq!(h.agent.status().doorflow_auth.state, "ok");
    // The refresh token is revoked at DoorFlow and the access token expires.
    std::fs::write(h.config.api.auth.refresh_token_file.as_ref().unwrap(), "revoked").unwrap();
    h.sim.expire_tokens();
    let status = queue_admit_refused_by_doorflow(&h).await;
    let error = status.doorflow_auth.error.clone().unwrap();
    assert!(error.contains("invalid_grant"), "{error}");
    let text = doorflow_agent::status::render(&status);
    assert!(text.contains("DoorFlow auth refused"), "{text}");
    assert!(text.contains("offline"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_survives_a_restart() {
    let h = Harness::start(Options {
        retry_base_ms: 20_000,
        retry_cap_s: 60,
        ..Options::default()
    })
    .await;
    h.sim.inject("/events", Fault::Status(503));
    h.sim.inject("/events", Fault::Status(503));
    h.queue_events(1);
    assert!(
        eventually(LIMIT, || h
            .agent
            .store
            .outbox_head(Lane::Event)
            .unwrap()
            .is_some_and(|head| head.value.attempts >= 1))
        .await
    );
    let before = h.agent.store.outbox_head(Lane::Event).unwrap().unwrap().value;
    let h = h.restart().await;
    let after = h.agent.store.outbox_head(Lane::Event).unwrap().unwrap().value;
    assert_eq!(after.attempts, before.attempts);
    assert_eq!(after.next_attempt_at, before.next_attempt_at);
}

/// The chaos run the issue asks for: 30 % of requests fail with mixed faults (5xx in both body
/// styles, HTML 502, 429, dropped connections, responses slower than the client timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_30_percent_chaos_every_event_arrives_in_order_and_nothing_retryable_dies() {
    let h = Harness::start(Options {
        request_timeout_s: 1,
        retry_base_ms: 50,
        retry_cap_s: 1,
        ..Options::default()
    })
    .await;
    assert!(eventually(LIMIT, || h.agent.snapshot.current().synced_at().is_some()).await);
    h.sim.set_chaos(Some(Chaos {
        failure_rate: 0.3,
        seed: 20261123,
        path_prefix: "/".into(),
        slow: Duration::from_millis(1500),
    }));
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.extend(h.queue_events(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        eventually(Duration::from_secs(240), || h.pending() == 0).await,
        "drained under chaos; {} still pending",
        h.pending()
    );
    let received = h.received_event_ids();
    assert_eq!(first_occurrences(&received), ids, "every event, in order");
    assert_eq!(
        h.agent.store.outbox_stats().unwrap().dead,
        0,
        "nothing retryable dead-lettered"
    );
    let faults = h.sim.fault_counts();
    assert!(
        faults.values().sum::<u64>() >= 20,
        "chaos really happened: {faults:?}"
    );
    assert!(faults.len() >= 5, "several kinds of fault: {faults:?}");
    // Duplicates come only from requests the server processed but whose answer was lost.
    let duplicates = received.len() - ids.len();
    assert!(
        duplicates as u64 <= faults.get("slow").copied().unwrap_or(0),
        "{duplicates} duplicates, faults {faults:?}"
    );
}
