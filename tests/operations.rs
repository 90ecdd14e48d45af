//! What an operator sees of a running agent, through the real binary: a missing secret or a
//! failing sync is a degraded state in `status` (a reason list), in the unit's status line
//! (systemd's `STATUS=`, through a stand-in notify socket) and in the log's message text; the
//! status line follows syncs and the queue; a missing CA trust store is named at start-up; a
//! door decision is logged as a readable sentence.

use doorflow_agent::testing::config::{demo_config, without_osdp_doors, write_config};
use doorflow_agent::testing::harness::unlimited_simulator;
use doorflow_agent::testing::mock_control::control;
use doorflow_agent::testing::notify::NotifySocket;
use doorflow_agent::testing::process::AgentProcess;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn start(dir: &Path, config: &doorflow_agent::config::Config, notify: &NotifySocket) -> AgentProcess {
    let path = write_config(config, dir);
    let socket = notify.path().to_path_buf();
    AgentProcess::start_with(
        env!("CARGO_BIN_EXE_doorflow-agent"),
        &path,
        &config.admin.socket,
        move |command| {
            command.env("NOTIFY_SOCKET", socket);
        },
    )
}

fn reasons(status: &Value) -> Vec<String> {
    status["degraded"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn cli_status(config: &Path) -> String {
    let out = doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
        .args(["status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_degraded_state_everywhere_an_operator_looks() {
    let sim = unlimited_simulator(20).await;
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), sim.base_url());
    std::fs::remove_file(dir.path().join("api_key")).unwrap();
    let notify = NotifySocket::bind(dir.path());
    let mut agent = start(dir.path(), &config, &notify);

    let status = tokio::task::block_in_place(|| {
        agent.wait_for_status("a degraded report", LIMIT, |s| {
            reasons(s).iter().any(|r| r.contains("cannot talk to DoorFlow"))
        })
    });
    let reason = reasons(&status)
        .into_iter()
        .find(|r| r.contains("cannot talk to DoorFlow"))
        .unwrap();
    assert!(
        reason.contains("api.auth.api_key: secret file") && reason.contains("No such file"),
        "the reason names the key and the cause: {reason}"
    );
    // The doors still run (on an empty snapshot every card is denied, and the report says so).
    assert_eq!(status["agent_running"], true);
    assert!(reasons(&status).iter().any(|r| r.contains("no snapshot yet")));

    let text = cli_status(&dir.path().join("config.toml"));
    assert!(
        text.contains("DEGRADED: cannot talk to DoorFlow (api.auth.api_key"),
        "{text}"
    );
    let line = notify.wait_for("STATUS", LIMIT, |s| s.contains("api.auth.api_key"));
    let line = line.expect("the unit's status line names the missing secret");
    assert!(
        line.starts_with("DEGRADED (cannot talk to DoorFlow (api.auth.api_key"),
        "{line}"
    );
    assert!(line.contains("0 people, 0 credentials; never synced"), "{line}");
    let log = agent.log();
    assert!(
        log.contains("degraded: cannot talk to DoorFlow (api.auth.api_key: secret file"),
        "the journal's message text carries the reason:\n{log}"
    );
    assert!(
        log.contains("DoorFlow client not available (api.auth.api_key"),
        "{log}"
    );
    assert!(sim.request_log().is_empty(), "no request without a key");
    assert_eq!(agent.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_line_follows_syncs_outages_and_the_queue() {
    let sim = unlimited_simulator(30).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), sim.base_url());
    // The demo's OSDP reader is not there in a test: its door would keep the agent degraded.
    without_osdp_doors(&mut config);
    let notify = NotifySocket::bind(dir.path());
    let mut agent = start(dir.path(), &config, &notify);
    let ready = notify.wait_for("READY", LIMIT, |v| v == "1");
    assert!(ready.is_some(), "no READY=1:\n{}", agent.log());

    let synced = tokio::task::block_in_place(|| {
        agent.wait_for_status("the first sync", LIMIT, |s| s["snapshot"]["people"] == 30)
    });
    let healthy = format!(
        "30 people, {} credentials; synced <1 min ago; online; queue 0, 0 dead",
        synced["snapshot"]["credentials"]
    );
    let line = tokio::task::block_in_place(|| notify.wait_for("STATUS", LIMIT, |s| s == healthy));
    assert!(
        line.is_some(),
        "status line after the sync: {:?}",
        notify.values("STATUS")
    );

    // DoorFlow goes away: the next sync fails, a swipe's event waits in the queue.
    sim.set_offline(true);
    let mock_socket = config.gpio.mock_socket.clone();
    let reply = tokio::task::spawn_blocking(move || {
        control(
            &mock_socket,
            json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": 17}),
        )
    })
    .await
    .unwrap();
    assert_eq!(reply["ok"], true);
    let outage = tokio::task::block_in_place(|| {
        notify.wait_for("STATUS", LIMIT, |s| {
            s.starts_with("DEGRADED (sync failing: ") && s.contains("offline") && !s.contains("queue 0,")
        })
    });
    assert!(
        outage.is_some(),
        "status line during the outage: {:?}",
        notify.values("STATUS")
    );
    let log = agent.log();
    assert!(log.contains("degraded: sync failing: "), "{log}");
    assert!(
        log.contains("sync failed ("),
        "the failure's cause is in the message:\n{log}"
    );

    sim.set_offline(false);
    let back = tokio::task::block_in_place(|| {
        notify.wait_for("STATUS", Duration::from_secs(90), |s| {
            !s.starts_with("DEGRADED") && s.contains("online; queue 0,")
        })
    });
    assert!(
        back.is_some(),
        "status line after recovery: {:?}",
        notify.values("STATUS")
    );
    assert!(agent.log().contains("no longer degraded"));
    assert_eq!(agent.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_logged_as_sentences_with_their_fields() {
    let sim = unlimited_simulator(30).await;
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), sim.base_url());
    let notify = NotifySocket::bind(dir.path());
    let mut agent = start(dir.path(), &config, &notify);
    tokio::task::block_in_place(|| {
        agent.wait_for_status("the first sync", LIMIT, |s| s["snapshot"]["people"] == 30)
    });
    let mock_socket = config.gpio.mock_socket.clone();
    tokio::task::spawn_blocking(move || {
        for number in [17, 4242] {
            let request =
                json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": number});
            assert_eq!(control(&mock_socket, request)["ok"], true);
            // One frame at a time: each is ~50 ms of edges plus the 30 ms gap.
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await
    .unwrap();
    let logged = doorflow_agent::testing::eventually(Duration::from_secs(20), || {
        agent
            .log()
            .contains("front: denied card ****: unknown_credential")
    })
    .await;
    let log = agent.log();
    assert!(logged, "{log}");
    let grant = log
        .lines()
        .find(|l| l.contains("front: granted card **** (person 17): authorised"))
        .unwrap_or_else(|| panic!("no readable grant line:\n{log}"));
    for field in ["door=front", "event_code=10", "reason=authorised", "person_id=17"] {
        assert!(grant.contains(field), "field {field} missing: {grant}");
    }
    assert_eq!(agent.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_trust_store_is_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), "https://api.doorflow.com");
    config.uplink.events_url = None;
    let notify = NotifySocket::bind(dir.path());
    let path = write_config(&config, dir.path());
    let socket = notify.path().to_path_buf();
    let mut agent = AgentProcess::start_with(
        env!("CARGO_BIN_EXE_doorflow-agent"),
        &path,
        &config.admin.socket,
        move |command| {
            command
                .env("NOTIFY_SOCKET", socket)
                .env("SSL_CERT_FILE", "/nonexistent/doorflow-test-ca.pem")
                .env("SSL_CERT_DIR", "/nonexistent/doorflow-test-certs");
        },
    );
    let status = tokio::task::block_in_place(|| {
        agent.wait_for_status("a degraded report", LIMIT, |s| {
            reasons(s).iter().any(|r| r.contains("cannot talk to DoorFlow"))
        })
    });
    let reason = reasons(&status).join("; ");
    assert!(
        reason.contains("No CA certificates were loaded from the system"),
        "the root cause is kept: {reason}"
    );
    assert!(agent.log().contains("No CA certificates were loaded"));
    assert_eq!(agent.stop().code(), Some(0));
}
