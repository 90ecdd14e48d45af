//! Issue 11 item 8 through the real binary: a 50 MB answer to a list page (which used to raise
//! the agent's resident memory by 52 MB) is refused as a sync error without being buffered:
//! the agent's peak resident memory hardly moves, and the previous snapshot stays.

use doorflow_agent::sim::{Fault, SimConfig};
use doorflow_agent::testing::config::{demo_config, write_config};
use doorflow_agent::testing::harness::simulator_on_own_runtime;
use doorflow_agent::testing::process::{wait_until, AgentProcess};
use std::time::Duration;

const HUGE: u64 = 50 * 1024 * 1024;
/// Room for what a failed sync may allocate besides the answer (a debug build's temporaries).
const MOST_GROWTH_KIB: u64 = 12 * 1024;

#[test]
fn a_50_mb_page_fails_the_sync_without_raising_memory() {
    if std::env::var_os("DOORFLOW_TEST_RUNNER").is_some_and(|r| !r.is_empty()) {
        // /proc/PID/status would be qemu-user's own, not the agent's.
        eprintln!("skipped under DOORFLOW_TEST_RUNNER: the agent's memory cannot be read through qemu-user");
        return;
    }
    let (_runtime, sim) = simulator_on_own_runtime(SimConfig {
        people: 200,
        requests_per_window: 10_000,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), sim.base_url());
    let path = write_config(&config, dir.path());
    let mut agent = AgentProcess::start(
        env!("CARGO_BIN_EXE_doorflow-agent"),
        &path,
        &config.admin.socket,
        &[],
    );
    let synced = wait_until(Duration::from_secs(60), || {
        agent.status()["sync"]["last_success"].is_string()
    });
    assert!(synced, "{}", agent.log());
    let before = agent.peak_rss_kib();

    for content_length in [false, true] {
        sim.inject(
            "/api/3/people",
            Fault::Huge {
                bytes: HUGE,
                content_length,
            },
        );
        // The next sync (every 10 s) meets it.
        let refused = wait_until(Duration::from_secs(60), || {
            agent.status()["sync"]["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("larger than"))
        });
        assert!(refused, "{}\n{}", agent.status(), agent.log());
        let status = agent.status();
        assert_eq!(status["snapshot"]["people"], 200, "the previous snapshot stays");
        let growth = agent.peak_rss_kib().saturating_sub(before);
        assert!(
            growth < MOST_GROWTH_KIB,
            "content_length {content_length}: peak memory grew by {growth} KiB for a {HUGE}-byte answer"
        );
        // Back to normal for the next round.
        let recovered = wait_until(Duration::from_secs(60), || {
            agent.status()["sync"]["last_error"].is_null()
        });
        assert!(recovered, "{}", agent.log());
    }
    assert_eq!(agent.stop().code(), Some(0));
}
