//! The admin and mock GPIO sockets stay bounded whatever a local client does: the real agent
//! binary, with systemd's default soft limit of 1024 open files, while a client holds a
//! thousand idle connections on each socket and keeps sending 200 MB lines, still grants
//! swipes, answers `status`, syncs and delivers events, and its memory stays bounded.

use doorflow_agent::sim::Simulator;
use doorflow_agent::testing::config::{demo_config, write_config};
use doorflow_agent::testing::harness::unlimited_simulator;
use doorflow_agent::testing::mock_control::control;
use doorflow_agent::testing::process::AgentProcess;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HELD_PER_SOCKET: usize = 1000;
const HUGE_LINE: usize = 200 << 20;
/// systemd's default soft limit for a service without `LimitNOFILE=`.
const SYSTEMD_DEFAULT_NOFILE: libc::rlim_t = 1024;

fn set_nofile(soft: libc::rlim_t) -> std::io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the struct we pass; nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = soft.min(limit.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens `n` connections and keeps them (the ones the agent closes stay open on our side).
fn hold_connections(socket: &Path, n: usize) -> Vec<UnixStream> {
    (0..n).filter_map(|_| UnixStream::connect(socket).ok()).collect()
}

/// Sends 200 MB lines (no newline) on fresh connections until `stop`; counts the bytes the
/// socket accepted before the agent hung up (its buffers included). Returns the lines sent.
fn flood(socket: PathBuf, stop: Arc<AtomicBool>, taken: Arc<AtomicU64>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let chunk = vec![b'{'; 1 << 20];
        let mut lines = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = UnixStream::connect(&socket) else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            let mut sent = 0;
            while sent < HUGE_LINE {
                match stream.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            taken.fetch_add(sent as u64, Ordering::Relaxed);
            lines += 1;
        }
        lines
    })
}

fn granted_events(sim: &Simulator) -> usize {
    sim.received_events()
        .iter()
        .filter(|r| r.body["event_code"] == 10)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_and_huge_lines_never_stop_the_doors_status_sync_or_uplink() {
    let sim = unlimited_simulator(50).await;
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), sim.base_url());
    assert!(config.uplink.events_url.is_some(), "the demo config posts events");
    let (admin_socket, mock_socket) = (config.admin.socket.clone(), config.gpio.mock_socket.clone());
    let config_path = write_config(&config, dir.path());
    let mut agent = AgentProcess::start_with(
        env!("CARGO_BIN_EXE_doorflow-agent"),
        &config_path,
        &admin_socket,
        |command| {
            // SAFETY: setrlimit between fork and exec touches no memory of the parent.
            unsafe {
                command.pre_exec(|| set_nofile(SYSTEMD_DEFAULT_NOFILE));
            }
        },
    );
    // The test itself needs more than a thousand descriptors.
    set_nofile(8192).unwrap();

    let synced = agent.wait_for_status("the first sync", Duration::from_secs(60), |s| {
        s["snapshot"]["people"] == 50
    });
    let first_sync = synced["sync"]["last_success"].clone();
    let rss_before = agent.memory_kb("VmRSS");
    let hwm_before = agent.memory_kb("VmHWM");

    let test = tokio::task::spawn_blocking(move || {
        let mut held = hold_connections(&admin_socket, HELD_PER_SOCKET);
        held.extend(hold_connections(&mock_socket, HELD_PER_SOCKET));
        assert!(held.len() >= HELD_PER_SOCKET, "could not open the connections");
        let stop = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(AtomicU64::new(0));
        let floods = [&admin_socket, &mock_socket, &admin_socket, &mock_socket]
            .map(|socket| flood(socket.to_path_buf(), Arc::clone(&stop), Arc::clone(&taken)));
        // Meanwhile: swipes are granted, status answers, a sync and the uplink go on.
        let mut swipes = 0;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_status = Value::Null;
        let mut synced_again = false;
        while Instant::now() < deadline {
            let reply = control(
                &mock_socket,
                json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": 17}),
            );
            assert_eq!(reply["ok"], true, "{reply}");
            swipes += 1;
            let status = doorflow_agent::admin::call(&admin_socket, &doorflow_agent::admin::Request::Status)
                .expect("status answers while the sockets are flooded");
            last_status = status["status"].clone();
            synced_again |= last_status["sync"]["last_success"] != first_sync;
            if synced_again && swipes >= 5 {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, Ordering::Relaxed);
        let lines: u64 = floods.into_iter().map(|f| f.join().unwrap()).sum();
        (
            held,
            swipes,
            synced_again,
            last_status,
            lines,
            taken.load(Ordering::Relaxed),
        )
    });
    let (held, swipes, synced_again, last_status, lines, taken) = test.await.unwrap();
    assert!(synced_again, "no sync succeeded during the flood: {last_status}");
    assert!(lines >= 4, "the flood sent only {lines} huge lines");
    let rss_after = agent.memory_kb("VmRSS");
    let hwm_after = agent.memory_kb("VmHWM");
    let fds = agent.open_fds();
    eprintln!(
        "{} connections held, {lines} lines of 200 MB offered ({} MB accepted by the socket buffers before the agent hung up), \
         {swipes} swipes; VmRSS {rss_before} -> {rss_after} kB, VmHWM {hwm_before} -> {hwm_after} kB, {fds} open fds",
        held.len(),
        taken >> 20,
    );
    // The granted swipes reach the event sink: the uplink kept working.
    let delivered =
        doorflow_agent::testing::eventually(Duration::from_secs(30), || granted_events(&sim) >= swipes).await;
    assert!(delivered, "{} of {swipes} grants delivered", granted_events(&sim));
    assert!(
        hwm_after <= hwm_before + 32 * 1024,
        "peak memory grew from {hwm_before} to {hwm_after} kB"
    );
    assert!(fds < 200, "{fds} descriptors open: connections are not capped");
    drop(held);
    assert_eq!(agent.stop().code(), Some(0));
}
