//! Sync through the DoorFlow simulator: pagination at scale, auth, faults that must leave the
//! last good snapshot in force, and the rate budget.

use doorflow_agent::access::decide;
use doorflow_agent::agent::Agent;
use doorflow_agent::config::values::Ranged;
use doorflow_agent::config::{AuthConfig, AuthMethod, SecretSource};
use doorflow_agent::credential::{CardFormat, CardRead, Presented};
use doorflow_agent::doorflow::client::Client;
use doorflow_agent::doorflow::ratelimit::RateBudget;
use doorflow_agent::sim::{Fault, SimConfig, Simulator};
use doorflow_agent::sync::{sync_once, SyncError, SyncTarget};
use doorflow_agent::testing::config::{assert_valid, demo_config};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Setup {
    sim: Simulator,
    agent: Arc<Agent>,
    /// The agent's sync handle (never stopped).
    target: SyncTarget,
    client: Client,
    dir: tempfile::TempDir,
}

async fn setup(people: u64, oauth: bool, per_minute: u32) -> Setup {
    let sim = Simulator::start(SimConfig {
        people,
        requests_per_window: per_minute,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), sim.base_url());
    config.api.requests_per_minute = Ranged::new(per_minute.into());
    config.api.request_timeout_s = Ranged::new(2);
    if oauth {
        std::fs::write(dir.path().join("client_secret"), "shh\n").unwrap();
        std::fs::write(dir.path().join("refresh_token"), sim.refresh_token()).unwrap();
        config.api.auth = AuthConfig {
            method: AuthMethod::Oauth,
            client_id: Some("agent".into()),
            client_secret: Some(SecretSource::File(dir.path().join("client_secret"))),
            refresh_token_file: Some(dir.path().join("refresh_token")),
            api_key: None,
        };
    }
    assert_valid(&config);
    let budget = Arc::new(Mutex::new(RateBudget::new(
        config.api.requests_per_minute.get() as u32
    )));
    let agent = Agent::start(config.clone()).unwrap();
    let client = Client::new(&config.api, budget)
        .unwrap()
        .with_clock(Arc::clone(&agent.clock));
    Setup {
        sim,
        target: agent.sync_target(Default::default()),
        agent,
        client,
        dir,
    }
}

fn card(number: u64) -> Presented {
    Presented::Card(CardRead {
        format: CardFormat::H10301,
        facility: Some(1),
        number,
        bit_count: 26,
        raw: 0,
        data: 0,
    })
}

fn front_grants(agent: &Agent, number: u64) -> bool {
    let policy = agent.config.doors[0].policy();
    decide(
        &agent.snapshot.current(),
        &policy,
        &card(number),
        jiff::Timestamp::now(),
    )
    .granted
}

#[tokio::test]
async fn ten_thousand_people_sync_through_pagination() {
    let s = setup(10_000, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    let counts = s.agent.snapshot.current().counts();
    assert_eq!(
        (counts.people, counts.credentials, counts.channels),
        (10_000, 13_000, 2)
    );
    // 100 pages of people and 26 of credentials, each followed by one empty page.
    assert_eq!(s.sim.requests_to("/api/3/people"), 101);
    assert_eq!(s.sim.requests_to("/api/3/credentials"), 27);
    let pin = Presented::Pin("500010".into());
    let policy = s.agent.config.doors[0].policy();
    assert!(decide(&s.agent.snapshot.current(), &policy, &pin, jiff::Timestamp::now()).granted);
    assert!(front_grants(&s.agent, 17));
    assert!(
        !front_grants(&s.agent, 50),
        "person 50 is disabled in the dataset"
    );
    assert!(!front_grants(&s.agent, 10_001));
    // Stored too: survives a restart.
    assert_eq!(
        s.agent.store.snapshot_header().unwrap().unwrap().counts.people,
        10_000
    );
    assert!(s.agent.status().online);
}

#[tokio::test]
async fn oauth_refreshes_once_on_expiry_and_persists_the_rotated_token() {
    let s = setup(50, true, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    let token_file = s.dir.path().join("refresh_token");
    let saved = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(saved.trim(), s.sim.refresh_token(), "rotated token written back");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = s.sim.requests_to("/oauth/token");
    assert_eq!(before, 1);

    s.sim.expire_tokens();
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(
        s.sim.requests_to("/oauth/token"),
        2,
        "exactly one refresh after the 401"
    );
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        s.sim.refresh_token()
    );
}

#[tokio::test]
async fn a_revoked_refresh_token_fails_clearly_and_keeps_the_snapshot() {
    let s = setup(20, true, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    std::fs::write(s.dir.path().join("refresh_token"), "revoked").unwrap();
    s.sim.expire_tokens();
    let error = sync_once(&s.target, &s.client).await.unwrap_err();
    assert!(error.to_string().contains("invalid_grant"), "{error}");
    assert_eq!(s.agent.snapshot.current().counts().people, 20);
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("refresh_token")).unwrap(),
        "revoked",
        "old token kept"
    );
}

#[tokio::test]
async fn every_fault_mid_sync_keeps_the_previous_snapshot() {
    let s = setup(300, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    let generation = s.agent.store.snapshot_header().unwrap().unwrap().generation;
    s.sim.disable_person(17);
    let faults = [
        ("/api/3/people", Fault::Status(500)),
        ("/api/3/credentials", Fault::Status(502)),
        ("/api/3/people", Fault::Status(503)),
        ("/api/3/channels", Fault::Status(504)),
        ("/api/3/people", Fault::OldStyleStatus(400)),
        ("/api/3/credentials", Fault::Truncated),
        ("/api/3/sites", Fault::Malformed),
        ("/api/3/roles", Fault::NonJson),
        ("/api/3/people", Fault::Delay(Duration::from_secs(4))),
    ];
    for (path, fault) in faults {
        s.sim.inject(path, fault.clone());
        let error = sync_once(&s.target, &s.client).await.unwrap_err();
        assert!(matches!(error, SyncError::Api(_)), "{fault:?}: {error}");
        assert!(front_grants(&s.agent, 17), "{fault:?} replaced the snapshot");
        let status = s.agent.status();
        assert!(status.sync.last_error.is_some());
        assert_eq!(
            s.agent.store.snapshot_header().unwrap().unwrap().generation,
            generation
        );
    }
    sync_once(&s.target, &s.client).await.unwrap();
    assert!(!front_grants(&s.agent, 17), "the later sync brought the change");
    assert!(s.agent.status().sync.last_error.is_none());
}

#[tokio::test]
async fn forbidden_names_the_scope() {
    let s = setup(10, false, 10_000).await;
    s.sim.inject("/api/3/people", Fault::Status(403));
    let error = sync_once(&s.target, &s.client).await.unwrap_err().to_string();
    assert!(error.contains("account.person.readonly"), "{error}");
}

#[tokio::test]
async fn nothing_is_sent_before_a_429_reset() {
    let s = setup(10, false, 10_000).await;
    s.sim
        .inject("/api/3/people", Fault::RateLimited { retry_after_s: 2 });
    let started = Instant::now();
    assert!(sync_once(&s.target, &s.client).await.is_err());
    let requests = s.sim.requests();
    sync_once(&s.target, &s.client).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "sent before Retry-After"
    );
    assert!(s.sim.requests() > requests);
}

#[tokio::test]
async fn incremental_syncs_pull_only_changes_and_a_full_reconcile_drops_deleted_people() {
    use doorflow_agent::sync::{Cursor, CURSOR_KEY};
    let s = setup(1_000, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(s.agent.status().sync.last_kind.as_deref(), Some("full"));
    let full_people_requests = s.sim.requests_to("/api/3/people");
    assert_eq!(full_people_requests, 11, "10 pages of 100 and an empty one");

    s.sim.update_person(17, false);
    s.sim.delete_person(18);
    s.sim.revoke_credential("19");
    let added = s.sim.add_person();
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(s.agent.status().sync.last_kind.as_deref(), Some("incremental"));
    assert_eq!(
        s.sim.requests_to("/api/3/people") - full_people_requests,
        1,
        "only the changed people, on one page"
    );
    assert!(!front_grants(&s.agent, 17), "disabled since the last sync");
    assert!(
        !front_grants(&s.agent, 18),
        "deleted: the full credential list no longer has the card"
    );
    assert!(!front_grants(&s.agent, 19), "revoked card");
    assert!(front_grants(&s.agent, added), "new person");
    assert!(front_grants(&s.agent, 20), "untouched people keep their access");
    // Without tombstones the deleted person stays until the reconcile.
    assert_eq!(s.agent.snapshot.current().counts().people, 1_001);

    // The reconcile is due: a full pull drops the deleted person.
    let cursor: Cursor = s.agent.store.meta_get(CURSOR_KEY).unwrap().unwrap();
    let long_ago = cursor.last_full - jiff::SignedDuration::from_hours(2);
    s.agent
        .store
        .meta_put(
            CURSOR_KEY,
            &Cursor {
                last_full: long_ago,
                ..cursor
            },
        )
        .unwrap();
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(s.agent.status().sync.last_kind.as_deref(), Some("full"));
    assert_eq!(s.agent.snapshot.current().counts().people, 1_000);
    assert!(!front_grants(&s.agent, 17) && front_grants(&s.agent, added));
}

/// Issue 11 item 8: a list page longer than `per_page × api.max_bytes_per_item` is a sync error,
/// refused without being read: declared too long, it is refused before a byte is read; sent
/// chunked, reading stops once it passes the limit (the server sees the client stop taking
/// bytes). The previous snapshot stays in force either way.
#[tokio::test]
async fn an_oversized_page_is_refused_unread_and_keeps_the_snapshot() {
    let s = setup(300, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    let generation = s.agent.store.snapshot_header().unwrap().unwrap().generation;
    // 100 people per page × 8 KiB (the default) + 16 KiB: about 0.8 MB.
    let limit = 100 * 8192 + 16 * 1024;
    const HUGE: u64 = 50 * 1024 * 1024;
    for content_length in [true, false] {
        let sent_before = s.sim.huge_bytes_sent();
        s.sim.inject(
            "/api/3/people",
            Fault::Huge {
                bytes: HUGE,
                content_length,
            },
        );
        let error = sync_once(&s.target, &s.client).await.unwrap_err().to_string();
        assert!(
            error.contains(&format!("larger than {limit} bytes")),
            "content_length {content_length}: {error}"
        );
        // Give the server a moment to notice the closed connection, then see how much left it:
        // the limit plus what the kernel's socket buffers took, far from the whole answer.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = s.sim.huge_bytes_sent() - sent_before;
        assert!(
            sent < HUGE / 4,
            "content_length {content_length}: {sent} of {HUGE} bytes were sent"
        );
        assert_eq!(
            s.agent.store.snapshot_header().unwrap().unwrap().generation,
            generation
        );
        assert!(front_grants(&s.agent, 17));
    }
    sync_once(&s.target, &s.client).await.unwrap();
}

/// Issue 11 item 2: redirects stay within the origin and keep the method, so the API key never
/// reaches another server. A 307 to another host (here another loopback address) is not
/// followed: nothing connects there, and the sync error names the redirect. A 302 within the
/// origin is not followed either (it would turn a POST into a GET). A 307 within the origin is
/// followed, with the credentials (the simulator checks them).
#[tokio::test]
async fn redirects_are_followed_only_within_the_origin() {
    let s = setup(30, false, 10_000).await;
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let target = format!("http://{}/api/3/people", elsewhere.local_addr().unwrap());
    s.sim.inject(
        "/api/3/people",
        Fault::Redirect {
            status: 307,
            location: target.clone(),
        },
    );
    let error = sync_once(&s.target, &s.client).await.unwrap_err().to_string();
    assert!(
        error.contains("307 redirect") && error.contains(&target),
        "{error}"
    );
    let connected = tokio::time::timeout(Duration::from_millis(500), elsewhere.accept()).await;
    assert!(
        connected.is_err(),
        "the client followed the redirect off the origin"
    );

    s.sim.inject(
        "/api/3/people",
        Fault::Redirect {
            status: 302,
            location: "/api/3/people".into(),
        },
    );
    let error = sync_once(&s.target, &s.client).await.unwrap_err().to_string();
    assert!(error.contains("302 redirect to /api/3/people"), "{error}");

    let people_requests = s.sim.requests_to("/api/3/people");
    s.sim.inject(
        "/api/3/people",
        Fault::Redirect {
            status: 307,
            location: format!("{}/api/3/people?page=1&per_page=100", s.sim.base_url()),
        },
    );
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(
        s.sim.requests_to("/api/3/people"),
        people_requests + 2,
        "the redirect and the request it led to"
    );
}
