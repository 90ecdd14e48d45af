//! The watchdog never kills a healthy agent: the real binary, given systemd's watchdog
//! environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`) with several intervals, syncing
//! and draining against the simulator, pings often enough that systemd's deadline is never
//! missed, and never reports a loop as stuck.

use doorflow_agent::sim::Simulator;
use doorflow_agent::testing::config::{demo_config, write_config};
use doorflow_agent::testing::harness::unlimited_simulator;
use doorflow_agent::testing::notify::NotifySocket;
use doorflow_agent::testing::process::AgentProcess;
use serde_json::json;
use std::time::{Duration, Instant};

/// Runs the agent with a watchdog of `interval` for `intervals` of them; returns the pings'
/// arrival times after READY and the agent's log.
async fn run_with_watchdog(
    sim: &Simulator,
    interval: Duration,
    intervals: u32,
    watchdog_pid: Option<&'static str>,
) -> (Vec<Instant>, Instant, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), sim.base_url());
    let path = write_config(&config, dir.path());
    let notify = NotifySocket::bind(dir.path());
    let socket = notify.path().to_path_buf();
    let usec = interval.as_micros().to_string();
    // `WATCHDOG_PID` must be the agent's own pid: a shell exports its pid, then execs the agent
    // (same pid). `None` exports a pid that is not the agent's.
    let binary = env!("CARGO_BIN_EXE_doorflow-agent");
    let mut agent = AgentProcess::start_with(binary, &path, &config.admin.socket, move |command| {
        let program = command.get_program().to_os_string();
        let args: Vec<_> = command.get_args().map(|a| a.to_os_string()).collect();
        let export = match watchdog_pid {
            Some(pid) => format!("export WATCHDOG_PID={pid}"),
            None => "export WATCHDOG_PID=$$".to_string(),
        };
        let mut wrapped = std::process::Command::new("sh");
        wrapped
            .arg("-c")
            .arg(format!("{export}; exec \"$@\""))
            .arg("sh")
            .arg(program)
            .args(args);
        *command = wrapped;
        command.env("NOTIFY_SOCKET", socket).env("WATCHDOG_USEC", usec);
    });
    let ready = notify
        .wait_for("READY", Duration::from_secs(60), |v| v == "1")
        .unwrap_or_else(|| panic!("no READY=1:\n{}", agent.log()));
    let ready_at = notify
        .received()
        .iter()
        .find(|n| n.text.contains("READY=1"))
        .map(|n| n.at)
        .unwrap();
    assert_eq!(ready, "1");
    // Keep the lanes and the door busy now and then while the watchdog runs.
    let mock = config.gpio.mock_socket.clone();
    let end = Instant::now() + interval * intervals;
    tokio::task::spawn_blocking(move || {
        while Instant::now() < end {
            let request =
                json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": 17});
            doorflow_agent::testing::mock_control::control(&mock, request);
            std::thread::sleep(Duration::from_millis(700));
        }
    })
    .await
    .unwrap();
    let pings = notify.watchdog_pings();
    let log = agent.log();
    assert_eq!(agent.stop().code(), Some(0));
    (pings, ready_at, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_within_every_watchdog_interval() {
    let sim = unlimited_simulator(30).await;
    // 2 s is the drop-in that used to get a healthy agent reported as stuck.
    let intervals = [
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(5),
    ];
    let (one, two, five) = tokio::join!(
        run_with_watchdog(&sim, intervals[0], 4, None),
        run_with_watchdog(&sim, intervals[1], 4, None),
        run_with_watchdog(&sim, intervals[2], 4, None),
    );
    for (interval, (pings, ready_at, log)) in intervals.into_iter().zip([one, two, five]) {
        assert!(
            !log.contains("not responding"),
            "WatchdogSec={interval:?}: a healthy loop was reported stuck:\n{log}"
        );
        // systemd kills when a whole interval passes without a ping.
        let mut previous = ready_at;
        let mut longest = Duration::ZERO;
        for at in &pings {
            longest = longest.max(at.duration_since(previous));
            previous = *at;
        }
        eprintln!(
            "WatchdogSec={interval:?}: {} pings, longest gap {longest:?}",
            pings.len()
        );
        assert!(
            pings.len() >= 8,
            "WatchdogSec={interval:?}: only {} pings",
            pings.len()
        );
        assert!(
            longest < interval,
            "WatchdogSec={interval:?}: {longest:?} without a ping; systemd would have killed the agent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_meant_for_another_process_is_left_alone() {
    let sim = unlimited_simulator(5).await;
    let (pings, _, _) = run_with_watchdog(&sim, Duration::from_secs(1), 2, Some("1")).await;
    assert!(pings.is_empty(), "pinged a watchdog set for pid 1");
}
