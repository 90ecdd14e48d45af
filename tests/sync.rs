//! Sync through the DoorFlow simulator: lists ended where the server's totals say (capped pages,
//! headers in either style or none, counts that do not add up), a pull that resumes after a
//! failed page, incremental syncs that cost a handful of requests, `skip_pagination`, progress,
//! the cadence, auth, faults that must leave the last good snapshot in force, and the rate
//! budget.

use doorflow_agent::access::decide;
use doorflow_agent::agent::Agent;
use doorflow_agent::config::values::Ranged;
use doorflow_agent::credential::{CardFormat, CardRead, Presented};
use doorflow_agent::doorflow::client::Client;
use doorflow_agent::doorflow::operation::Operation;
use doorflow_agent::doorflow::ratelimit::RateBudget;
use doorflow_agent::sim::{Fault, ListBehaviour, SimConfig, Simulator, Totals};
use doorflow_agent::sync::{sync_once, SyncError, SyncTarget, PAGE_ATTEMPTS};
use doorflow_agent::testing::config::{assert_valid, demo_config, use_oauth};
use reqwest::Method;
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
    setup_with(
        SimConfig {
            people,
            requests_per_window: per_minute,
            ..Default::default()
        },
        oauth,
    )
    .await
}

/// `setup` with the simulator configured as `sim_config` says; the agent's limit is the
/// simulator's.
async fn setup_with(sim_config: SimConfig, oauth: bool) -> Setup {
    let per_minute = sim_config.requests_per_window;
    let sim = Simulator::start(sim_config).await.unwrap();
    board(sim, oauth, per_minute)
}

/// An agent (a board) of its own against `sim`, configured for `per_minute`.
fn board(sim: Simulator, oauth: bool, per_minute: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), sim.base_url());
    config.api.requests_per_minute = Ranged::new(per_minute.into());
    config.api.request_timeout_s = Ranged::new(2);
    if oauth {
        use_oauth(&mut config, dir.path(), &sim.refresh_token());
    }
    assert_valid(&config);
    let budget = Arc::new(Mutex::new(RateBudget::new(
        config.api.requests_per_minute.get() as u32
    )));
    let agent = Agent::start(config.clone()).unwrap();
    // Wired as the agent wires its own client.
    let client = Client::new(&config.api, budget)
        .unwrap()
        .with_clock(Arc::clone(&agent.clock))
        .with_online(Arc::clone(&agent.online));
    let mut target = agent.sync_target(Default::default());
    // A failed page is asked again after 50–100 ms, not the configured second.
    target.retry_base = jiff::SignedDuration::from_millis(100);
    target.retry_cap = jiff::SignedDuration::from_millis(200);
    Setup {
        sim,
        target,
        agent,
        client,
        dir,
    }
}

fn generation(s: &Setup) -> u64 {
    s.agent.store.snapshot_header().unwrap().unwrap().generation
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
    // 100 pages of people and 26 of credentials: the totals say where they end, so no empty
    // page is asked for after the last one.
    assert_eq!(s.sim.requests_to("/api/3/people"), 100);
    assert_eq!(s.sim.requests_to("/api/3/credentials"), 26);
    assert_eq!(
        s.sim.requests(),
        100 + 26 + 7,
        "and one request for each small list"
    );
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

/// Issue 16 item 4: three boards on one 120/min account, each configured for the whole
/// 120/min and syncing back to back, drew 429s. Each paces to what the server says is left of
/// the window: no 429, and every board converges. (40 s here; README has the 10-minute run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_boards_on_one_account_share_its_limit_without_a_429() {
    let first = setup(1_000, false, 120).await;
    let boards = [
        board(first.sim.clone(), false, 120),
        board(first.sim.clone(), false, 120),
    ];
    let sim = first.sim.clone();
    // `SHARED_ACCOUNT_RUN_S=600` for the README's 10-minute run.
    let run_s = std::env::var("SHARED_ACCOUNT_RUN_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let end = Instant::now() + Duration::from_secs(run_s);
    let runs: Vec<_> = [first]
        .into_iter()
        .chain(boards)
        .map(|board| {
            tokio::spawn(async move {
                let mut synced = 0;
                while Instant::now() < end {
                    if sync_once(&board.target, &board.client).await.is_ok() {
                        synced += 1;
                    }
                }
                (synced, board.agent.snapshot.current().counts().people)
            })
        })
        .collect();
    let mut results = Vec::new();
    for run in runs {
        results.push(run.await.unwrap());
    }
    assert_eq!(sim.rate_limited(), 0, "no 429 in {} requests", sim.requests());
    for &(synced, people) in &results {
        assert!(synced >= 1 && people == 1_000, "{synced} syncs, {people} people");
    }
    assert!(
        sim.requests() >= 60,
        "the boards kept using the account: {}",
        sim.requests()
    );
    println!(
        "3 boards, {run_s} s, one 120/min account: {} requests, {} x 429, syncs per board {:?}",
        sim.requests(),
        sim.rate_limited(),
        results.iter().map(|(synced, _)| synced).collect::<Vec<_>>()
    );
}

/// Issue 16 item 4: `requests_per_minute` caps this board's share of the account, however much
/// the server's `X-RateLimit-Limit` allows (a site that splits one account between boards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_keeps_to_its_own_cap_below_the_accounts_limit() {
    let sim = Simulator::start(SimConfig {
        people: 2_000,
        requests_per_window: 100_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let s = board(sim, false, 600);
    let started = Instant::now();
    sync_once(&s.target, &s.client).await.unwrap();
    let elapsed = started.elapsed();
    let requests = s.sim.requests() as u32;
    assert!(
        requests >= 10,
        "a full sync of 2,000 people took {requests} requests"
    );
    // 600/min is one request per 100 ms (102 ms with the margin), the first one at once.
    assert!(
        elapsed >= Duration::from_millis(100) * (requests - 1),
        "{requests} requests in {elapsed:?} at a cap of 600/min"
    );
}

/// Issue 16 item 6: with tokens of 5 minutes or less the agent refreshed before every request
/// (38 refreshes for 38 requests). Refreshed half way through a short lifetime instead: never
/// sent expired (no 401), one refresh per token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_once_each_half_way_through_their_lifetime() {
    let s = setup_with(
        SimConfig {
            people: 2_000,
            requests_per_window: 1_200,
            token_lifetime_s: 4,
            ..Default::default()
        },
        true,
    )
    .await;
    let started = Instant::now();
    let mut syncs = 0;
    while started.elapsed() < Duration::from_secs(6) || syncs < 2 {
        sync_once(&s.target, &s.client).await.unwrap();
        syncs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refreshes = s.sim.requests_to("/oauth/token");
    let requests = s.sim.requests() - refreshes;
    let refused = s
        .sim
        .request_log()
        .iter()
        .filter(|(_, _, status)| *status == 401)
        .count();
    assert_eq!(refused, 0, "every token refreshed before it expired");
    assert!(refreshes >= 2, "a 4 s token is refreshed within {elapsed:.1} s");
    // A token lasts 2 s (half its 4 s lifetime) from when it was asked for.
    assert!(
        refreshes as f64 <= elapsed / 2.0 + 1.0,
        "{refreshes} refreshes in {elapsed:.1} s"
    );
    assert!(
        requests >= 5 * refreshes,
        "{requests} requests on {refreshes} tokens"
    );
}

/// A refresh token DoorFlow rotates but the agent cannot write back (its file on a read-only
/// filesystem, as under `ProtectSystem=strict`) locked the agent out at the next refresh: the
/// file's token had been retired. The rotated token is kept in memory and used for the next
/// refresh, and `status` says a restart would lose access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_that_cannot_be_saved_is_kept_in_memory_and_reported() {
    let Some(secrets) = doorflow_agent::testing::store_fs::SmallFs::mount(1, "unsaved refresh token") else {
        return;
    };
    let sim = Simulator::start(SimConfig {
        people: 20,
        requests_per_window: 10_000,
        token_lifetime_s: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), sim.base_url());
    use_oauth(&mut config, &secrets.path, &sim.refresh_token());
    assert_valid(&config);
    secrets.remount_read_only();
    let token_file = config.api.auth.refresh_token_file.clone().unwrap();
    let original = std::fs::read_to_string(&token_file).unwrap();
    let agent = Agent::start(config.clone()).unwrap();
    let budget = Arc::new(Mutex::new(RateBudget::new(10_000)));
    let client = Client::new(&config.api, budget)
        .unwrap()
        .with_clock(Arc::clone(&agent.clock))
        .with_auth_health(Arc::clone(&agent.doorflow_auth));
    let target = agent.sync_target(Default::default());
    // Tokens of 2 s are refreshed every second: several rotations, each one unsaved.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        sync_once(&target, &client).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refreshes = sim.requests_to("/oauth/token");
    assert!(refreshes >= 3, "{refreshes} refreshes");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        original,
        "the file is read-only"
    );
    let status = agent.status();
    assert_eq!(status.doorflow_auth.state, "ok");
    let unsaved = status.doorflow_auth.refresh_token_unsaved.clone().unwrap();
    assert!(unsaved.contains("a restart would lose access"), "{unsaved}");
    assert!(
        status.degraded.iter().any(|r| r.contains("could not be saved")),
        "{:?}",
        status.degraded
    );
}

/// Two calls refused with the same expired token (sync and the admit lane share the client)
/// cost one refresh, not two: the second finds the token the first got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_refused_with_the_same_token_share_one_refresh() {
    // With a round trip of 100 ms the second and third 401 arrive while the first call is
    // already refreshing.
    let s = setup_with(
        SimConfig {
            people: 20,
            requests_per_window: 10_000,
            latency: Duration::from_millis(100),
            ..Default::default()
        },
        true,
    )
    .await;
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(s.sim.requests_to("/oauth/token"), 1);
    s.sim.expire_tokens();
    let url = s.client.url(&Operation::ListSites.path(None));
    let call = || s.client.request(Operation::ListSites, Method::GET, &url, |r| r);
    let (a, b, c) = tokio::join!(call(), call(), call());
    for result in [a, b, c] {
        assert_eq!(result.unwrap().status(), 200);
    }
    assert_eq!(
        s.sim.requests_to("/oauth/token"),
        2,
        "one refresh for the refused token"
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

/// A fault that may pass is met by asking for the same page again after the wait: the pages
/// already fetched are kept, so the list is not pulled again from page 1.
#[tokio::test]
async fn a_page_that_fails_once_is_asked_again_and_the_pull_resumes() {
    let s = setup(300, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    let faults = [
        ("/api/3/people", Fault::Status(500)),
        ("/api/3/credentials", Fault::Status(502)),
        ("/api/3/people", Fault::Status(503)),
        ("/api/3/channels", Fault::Status(504)),
        ("/api/3/credentials", Fault::Truncated),
        ("/api/3/sites", Fault::Malformed),
        ("/api/3/roles", Fault::NonJson),
        ("/api/3/people", Fault::Delay(Duration::from_secs(4))),
        ("/api/3/people", Fault::Drop),
    ];
    for (n, (path, fault)) in faults.into_iter().enumerate() {
        s.sim.disable_person(17 + n as u64);
        s.sim.inject(path, fault.clone());
        let before = s.sim.requests();
        let outcome = sync_once(&s.target, &s.client)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert!(outcome.changed, "{fault:?}");
        assert!(
            !front_grants(&s.agent, 17 + n as u64),
            "{fault:?}: the change arrived"
        );
        // An incremental sync with one change is nine requests; the fault costs one more.
        assert_eq!(
            s.sim.requests() - before,
            10,
            "{fault:?}: one page asked again, nothing else"
        );
        assert!(s.agent.status().sync.last_error.is_none());
    }
}

/// A fault that does not pass within the retries, or one that never will, fails the sync; the
/// last good snapshot stays in force, in memory and in the store.
#[tokio::test]
async fn a_fault_that_outlasts_the_retries_keeps_the_previous_snapshot() {
    let s = setup(300, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    let generation_before = generation(&s);
    s.sim.disable_person(17);
    for _ in 0..PAGE_ATTEMPTS {
        s.sim.inject("/api/3/people", Fault::Status(503));
    }
    let error = sync_once(&s.target, &s.client).await.unwrap_err();
    assert!(matches!(error, SyncError::Api(_)), "{error}");
    assert!(front_grants(&s.agent, 17), "the previous snapshot decides");
    assert_eq!(generation(&s), generation_before);
    assert!(s.agent.status().sync.last_error.is_some());
    assert!(s.agent.status().sync.progress.is_none());

    // Not worth asking again: a 400 fails at once.
    let before = s.sim.requests();
    s.sim.inject("/api/3/people", Fault::OldStyleStatus(400));
    let error = sync_once(&s.target, &s.client).await.unwrap_err();
    assert!(matches!(error, SyncError::Api(_)), "{error}");
    assert_eq!(s.sim.requests() - before, 1);
    assert_eq!(generation(&s), generation_before);

    sync_once(&s.target, &s.client).await.unwrap();
    assert!(!front_grants(&s.agent, 17), "the later sync brought the change");
    assert!(s.agent.status().sync.last_error.is_none());
}

/// Issue 16 item 3: a 429 on page 6 of a full sync of 1,000 people holds the pull until the
/// server's time, then page 6 is asked again; pages 1 to 5 are not fetched twice.
#[tokio::test]
async fn a_429_on_page_six_resumes_at_page_six_after_the_wait() {
    let s = setup(1_000, false, 10_000).await;
    s.sim
        .inject_after("/api/3/people", 5, Fault::RateLimited { retry_after_s: 2 });
    let started = Instant::now();
    let outcome = sync_once(&s.target, &s.client).await.unwrap();
    assert!(outcome.changed);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "nothing sent before Retry-After"
    );
    assert_eq!(
        s.sim.requests_to("/api/3/people"),
        11,
        "10 pages and page 6 once more"
    );
    assert_eq!(s.agent.snapshot.current().counts().people, 1_000);
    assert_eq!(s.sim.fault_counts().get("429"), Some(&1));
}

#[tokio::test]
async fn forbidden_names_the_scope() {
    let s = setup(10, false, 10_000).await;
    s.sim.inject("/api/3/people", Fault::Status(403));
    let error = sync_once(&s.target, &s.client).await.unwrap_err().to_string();
    assert!(error.contains("account.person.readonly"), "{error}");
}

#[tokio::test]
async fn incremental_syncs_pull_only_changes_and_a_full_reconcile_drops_deleted_people() {
    use doorflow_agent::sync::{Cursor, CURSOR_KEY};
    let s = setup(1_000, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(s.agent.status().sync.last_kind.as_deref(), Some("full"));
    let full_people_requests = s.sim.requests_to("/api/3/people");
    assert_eq!(full_people_requests, 10, "10 pages of 100");
    let full_credential_requests = s.sim.requests_to("/api/3/credentials");

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
    assert_eq!(
        s.sim.requests_to("/api/3/credentials") - full_credential_requests,
        1 + 3,
        "the probe saw the count change: the credentials were pulled in full"
    );
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

/// Issue 16 item 2: an independent server sent 100 items a page when 500 were asked; the agent
/// took the short page as the end and kept 100 of 390 credentials. The totals say where the
/// list ends, in either header style; without them the next page tells.
#[tokio::test]
async fn a_server_capping_pages_is_followed_to_the_end_with_or_without_totals() {
    for totals in [Totals::Spec, Totals::Older, Totals::None] {
        let s = setup(300, false, 10_000).await;
        s.sim.set_lists(ListBehaviour {
            page_cap: Some(100),
            totals,
            ..Default::default()
        });
        sync_once(&s.target, &s.client).await.unwrap();
        let counts = s.agent.snapshot.current().counts();
        assert_eq!((counts.people, counts.credentials), (300, 390), "{totals:?}");
        assert!(
            front_grants(&s.agent, 299),
            "{totals:?}: a card from the last page"
        );
        // Credentials: a first page of 100 (500 asked), then pages of 100 to 390.
        assert_eq!(s.sim.requests_to("/api/3/credentials"), 4, "{totals:?}");
        // People come in full pages of 100: without totals only an empty page ends them.
        let people = if totals == Totals::None { 4 } else { 3 };
        assert_eq!(s.sim.requests_to("/api/3/people"), people, "{totals:?}");
    }
}

/// A count that does not add up fails the sync and keeps the previous snapshot.
#[tokio::test]
async fn a_total_that_does_not_add_up_keeps_the_previous_snapshot() {
    for offset in [5, -5] {
        let s = setup(300, false, 10_000).await;
        sync_once(&s.target, &s.client).await.unwrap();
        let before = generation(&s);
        s.sim.set_lists(ListBehaviour {
            page_cap: Some(100),
            total_offset: offset,
            ..Default::default()
        });
        s.sim.disable_person(17);
        s.sim.revoke_credential("3"); // so the credentials are pulled in full
        let error = sync_once(&s.target, &s.client).await.unwrap_err();
        assert!(matches!(error, SyncError::Incomplete { .. }), "{offset}: {error}");
        assert!(error.to_string().contains("does not add up"), "{error}");
        assert_eq!(generation(&s), before, "{offset}: nothing swapped");
        assert!(
            front_grants(&s.agent, 17) && front_grants(&s.agent, 3),
            "{offset}"
        );
        assert!(s
            .agent
            .status()
            .sync
            .last_error
            .unwrap()
            .contains("does not add up"));
    }
}

/// Issue 16 item 5: with nothing changed an incremental sync is nine requests whatever the
/// site's size (people and group reservations since the cursor, a one-item credential probe,
/// the five other small lists), writes nothing, and still moves `synced_at` on.
#[tokio::test]
async fn an_incremental_sync_with_nothing_changed_costs_nine_requests_and_writes_nothing() {
    let s = setup(3_000, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    let before = (generation(&s), s.sim.requests());
    let synced = s.agent.snapshot.current().synced_at().unwrap();
    // The first sync began on the board's clock; from then on the time is DoorFlow's `Date`,
    // whole seconds, so it passes the first stamp only after a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let outcome = sync_once(&s.target, &s.client).await.unwrap();
    assert!(!outcome.changed && !outcome.credentials_pulled);
    assert_eq!(s.sim.requests() - before.1, 9);
    assert_eq!(generation(&s), before.0, "no new snapshot");
    assert!(s.agent.snapshot.current().synced_at().unwrap() > synced);
    let stored = s.agent.store.snapshot_header().unwrap().unwrap();
    assert!(
        stored.synced_at.unwrap() > synced,
        "the stored snapshot says so too"
    );
}

/// A card revoked and another enrolled between two syncs leave the count as it was; the new
/// card is listed last, so the probe still sees the change.
#[tokio::test]
async fn a_card_revoked_and_another_enrolled_in_one_interval_are_both_seen() {
    let s = setup(300, false, 10_000).await;
    sync_once(&s.target, &s.client).await.unwrap();
    s.sim.revoke_credential("42");
    let added = s.sim.add_person();
    let outcome = sync_once(&s.target, &s.client).await.unwrap();
    assert!(outcome.credentials_pulled);
    assert_eq!(s.agent.snapshot.current().counts().credentials, 390);
    assert!(!front_grants(&s.agent, 42), "revoked");
    assert!(front_grants(&s.agent, added), "enrolled");
}

/// `sync.skip_pagination`: one request per list, parsed as it arrives; a server that ignores
/// it is paged.
#[tokio::test]
async fn skip_pagination_pulls_each_list_at_once_and_falls_back_to_pages() {
    let mut s = setup(10_000, false, 10_000).await;
    s.target.skip_pagination = true;
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(s.sim.requests_to("/api/3/people"), 1);
    assert_eq!(s.sim.requests_to("/api/3/credentials"), 1);
    assert_eq!(s.agent.snapshot.current().counts().credentials, 13_000);
    assert!(front_grants(&s.agent, 9_999));

    let mut s = setup(1_000, false, 10_000).await;
    s.target.skip_pagination = true;
    s.sim.set_lists(ListBehaviour {
        honour_skip_pagination: false,
        ..Default::default()
    });
    sync_once(&s.target, &s.client).await.unwrap();
    assert_eq!(
        s.sim.requests_to("/api/3/people"),
        10,
        "the first answer was page 1"
    );
    assert_eq!(s.agent.snapshot.current().counts().people, 1_000);
}

/// Issue 16 item 8: `status` shows the sync in progress — the list, items fetched of the total,
/// requests left, the expected finish — and nothing once it is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_sync_in_progress() {
    let s = setup(2_000, false, 1_200).await;
    let agent = Arc::clone(&s.agent);
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2_000 {
            if let Some(progress) = agent.status().sync.progress {
                seen.push(progress);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    });
    sync_once(&s.target, &s.client).await.unwrap();
    assert!(
        s.agent.status().sync.progress.is_none(),
        "none once the sync is over"
    );
    watcher.abort();
    let _ = watcher.await;
    let status = s.agent.status();
    assert!(status.sync.progress.is_none());
    // Seen while the people were pulled (20 pages at 20 requests/s).
    let s2 = setup(2_000, false, 1_200).await;
    let agent = Arc::clone(&s2.agent);
    let sync = tokio::spawn(async move { sync_once(&s2.target, &s2.client).await.map(|_| ()) });
    let mut seen = None;
    for _ in 0..400 {
        let status = agent.status();
        if let Some(progress) = status
            .sync
            .progress
            .filter(|p| p.list == "people" && p.total.is_some())
        {
            // DoorFlow has answered pages already: online, not only once the sync has ended
            // (a first sync of 100,000 people said offline for 11 minutes).
            assert!(status.online, "offline while the sync is answered: {progress:?}");
            seen = Some(progress);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sync.await.unwrap().unwrap();
    let progress = seen.expect("progress while the people were pulled");
    assert_eq!(progress.kind, "full");
    assert_eq!(progress.total, Some(2_000));
    assert!(progress.fetched > 0 && progress.fetched < 2_000, "{progress:?}");
    assert!(progress.pages_left.unwrap() > 0);
    assert!(progress.expected_finish.unwrap() > progress.started_at);
    assert!(
        progress.summary().starts_with("full sync: people "),
        "{}",
        progress.summary()
    );
    let json = serde_json::to_value(agent.status()).unwrap();
    assert!(
        json["sync"].get("progress").is_some(),
        "the status contract carries the key"
    );
}

/// Issue 16 item 5: `interval_s` runs from the start of one sync to the start of the next; a
/// sync that overruns is followed at the next boundary, never back to back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_start_an_interval_apart_and_never_back_to_back() {
    let s = setup(20, false, 10_000).await;
    let people_starts = |sim: &Simulator| -> Vec<Instant> {
        sim.request_log()
            .into_iter()
            .filter(|(_, path, _)| path == "/api/3/people")
            .map(|(at, _, _)| at)
            .collect()
    };
    // Each sync waits 1.5 s on its first answer; the period is 2 s.
    for _ in 0..3 {
        s.sim
            .inject("/api/3/people", Fault::Delay(Duration::from_millis(1_500)));
    }
    let mut target = s.target.clone();
    target.stop = tokio_util::sync::CancellationToken::new();
    let stop = target.stop.clone();
    let client = Arc::new(Client::new(&s.agent.config.api, Arc::clone(&s.agent.budget)).unwrap());
    let looping = tokio::spawn(doorflow_agent::sync::run_loop(
        target,
        client,
        Duration::from_secs(2),
    ));
    let sim = s.sim.clone();
    assert!(
        doorflow_agent::testing::eventually(Duration::from_secs(20), || people_starts(&sim).len() >= 3).await,
        "three syncs"
    );
    let starts = people_starts(&s.sim);
    for pair in starts.windows(2).take(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1_800) && gap <= Duration::from_millis(3_000),
            "start to start {gap:?}: 2 s, not 2 s after the end (3.5 s)"
        );
    }
    // Overrun: 2.5 s per sync (two answers of 1.25 s, each within the request timeout) with a
    // 2 s period starts every 4 s, not every 2.5 s.
    for _ in 0..2 {
        s.sim
            .inject("/api/3/people", Fault::Delay(Duration::from_millis(1_250)));
        s.sim
            .inject("/api/3/credentials", Fault::Delay(Duration::from_millis(1_250)));
    }
    let before = starts.len();
    let sim = s.sim.clone();
    assert!(
        doorflow_agent::testing::eventually(Duration::from_secs(30), || people_starts(&sim).len()
            >= before + 3)
        .await
    );
    let starts = people_starts(&s.sim);
    let gap = starts[before + 1] - starts[before];
    assert!(
        gap >= Duration::from_millis(3_500),
        "back to back after an overrun: {gap:?}"
    );
    stop.cancel();
    looping.await.unwrap();
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
