//! Metrics for fleets, through the real binary: the node_exporter text file (rewritten while the
//! agent runs, `running 0` after it stops) and `status --prometheus` (from the running agent or
//! from the store), with door events by code, queue depth and age per lane, sync age and
//! duration, 429s and retries.

use doorflow_agent::config::values::Ranged;
use doorflow_agent::sim::Fault;
use doorflow_agent::testing::config::{demo_config, write_config};
use doorflow_agent::testing::harness::unlimited_simulator;
use doorflow_agent::testing::mock_control::control;
use doorflow_agent::testing::process::AgentProcess;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The value of the sample `line_start` (name and labels) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

fn prometheus(config: &Path) -> String {
    let out = doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
        .args(["status", "--prometheus", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_textfile_and_status_prometheus_carry_the_fleet_figures() {
    let sim = unlimited_simulator(20).await;
    // The event sink (on DoorFlow's server, so DoorFlow's budget) answers the first two posts
    // with 429: the event lane retries.
    for _ in 0..2 {
        sim.inject("/events", Fault::RateLimited { retry_after_s: 1 });
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), sim.base_url());
    let textfile = dir.path().join("collector").join("doorflow_agent.prom");
    std::fs::create_dir(textfile.parent().unwrap()).unwrap();
    config.metrics.textfile = Some(textfile.clone());
    config.metrics.interval_s = Ranged::new(1);
    let config_path = write_config(&config, dir.path());
    let mut agent = AgentProcess::start_with(
        env!("CARGO_BIN_EXE_doorflow-agent"),
        &config_path,
        &config.admin.socket,
        |_| {},
    );
    tokio::task::block_in_place(|| {
        agent.wait_for_status("the first sync", Duration::from_secs(60), |s| {
            s["snapshot"]["people"] == 20
        })
    });
    let mock = config.gpio.mock_socket.clone();
    tokio::task::spawn_blocking(move || {
        for number in [4242, 4243] {
            let request =
                json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": number});
            assert_eq!(control(&mock, request)["ok"], true);
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await
    .unwrap();

    let file = |text: &str| {
        sample(
            text,
            "doorflow_agent_door_events_total{door=\"front\",event_code=\"20\"}",
        ) == Some(2.0)
            && sample(text, "doorflow_agent_http_429_total") == Some(2.0)
            && sample(text, "doorflow_agent_uplink_retries_total{lane=\"event\"}") == Some(2.0)
            && sample(text, "doorflow_agent_uplink_delivered_total{lane=\"event\"}") == Some(2.0)
    };
    let written = doorflow_agent::testing::eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(&textfile).is_ok_and(|t| file(&t))
    })
    .await;
    let text = std::fs::read_to_string(&textfile).unwrap_or_default();
    assert!(written, "metrics file:\n{text}\nlog:\n{}", agent.log());
    assert_eq!(sample(&text, "doorflow_agent_running"), Some(1.0));
    for family in [
        "doorflow_agent_queue_pending{lane=\"admit\"}",
        "doorflow_agent_queue_pending{lane=\"event\"}",
        "doorflow_agent_queue_oldest_age_seconds{lane=\"event\"}",
        "doorflow_agent_uplink_retries_total{lane=\"event\"}",
        "doorflow_agent_dead_letters",
        "doorflow_agent_store_errors_total",
        "doorflow_agent_clock_behind_trusted_floor",
        "doorflow_agent_snapshot_people",
    ] {
        assert!(sample(&text, family).is_some(), "no {family} in:\n{text}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&textfile).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644, "node_exporter must be able to read it");

    // The same families from the CLI, through the admin socket.
    let live = prometheus(&config_path);
    assert!(
        live.contains("# TYPE doorflow_agent_door_events_total counter"),
        "{live}"
    );
    assert_eq!(
        sample(
            &live,
            "doorflow_agent_door_events_total{door=\"front\",event_code=\"20\"}"
        ),
        Some(2.0)
    );

    assert!(sample(&text, "doorflow_agent_sync_age_seconds").is_some_and(|s| s < 60.0));
    assert!(sample(&text, "doorflow_agent_sync_duration_seconds").is_some_and(|s| s > 0.0));
    assert_eq!(sample(&text, "doorflow_agent_snapshot_people"), Some(20.0));

    assert_eq!(agent.stop().code(), Some(0));
    let last = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(sample(&last, "doorflow_agent_running"), Some(0.0), "{last}");
    // Stopped: from the store, without counters.
    let stopped = prometheus(&config_path);
    assert_eq!(sample(&stopped, "doorflow_agent_running"), Some(0.0));
    assert!(sample(&stopped, "doorflow_agent_queue_pending{lane=\"event\"}").is_some());
}
