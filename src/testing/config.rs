//! Configs for tests and benchmarks: the demo config (`config/demo.toml`, mock GPIO, two doors)
//! with every path moved into a test's own directory, changed field by field.

use crate::config::values::Ranged;
use crate::config::{
    AuthConfig, AuthMethod, Config, DoorConfig, OutputLineConfig, ReaderConfig, SecretSource, ServiceUrl,
    WiegandReaderConfig,
};
use std::path::{Path, PathBuf};

/// The API key the simulator accepts.
pub const SIM_API_KEY: &str = "sim-api-key";

/// The demo config with its store, sockets and API key file in `dir` (the key file is written
/// with the simulator's key), talking to `base_url`. Its periodic sync runs every 10 s as in the
/// demo; `quiet_sync` moves it out of the way. The board's own cap (`requests_per_minute`) is
/// lifted to 10,000/min: the pace is the simulator's limit, which each test chooses.
pub fn demo_config(dir: &Path, base_url: &str) -> Config {
    let mut config = demo();
    config.api.requests_per_minute = Ranged::new(10_000);
    let key_file = dir.join("api_key");
    std::fs::write(&key_file, format!("{SIM_API_KEY}\n")).expect("write the API key file");
    config.api.base_url = ServiceUrl::parse(base_url).expect("a valid test URL");
    config.api.auth.api_key = Some(SecretSource::File(key_file));
    config.store.path = dir.join("db");
    config.gpio.mock_socket = dir.join("mock-gpio.sock");
    config.admin.socket = dir.join("admin.sock");
    for door in &mut config.doors {
        if let ReaderConfig::Osdp(reader) = &mut door.reader {
            reader.port = dir.join("osdp-bus");
        }
    }
    if config.uplink.events_url.is_some() {
        config.uplink.events_url = Some(sink_url(base_url));
    }
    assert_valid(&config);
    config
}

/// The simulator's event sink under `base_url`.
pub fn sink_url(base_url: &str) -> ServiceUrl {
    ServiceUrl::parse(&format!("{}/events", base_url.trim_end_matches('/'))).expect("a valid sink URL")
}

/// `config/demo.toml` as it is (its paths under /tmp/doorflow-agent-demo), for tests that
/// never start the agent's I/O.
pub fn demo() -> Config {
    Config::parse(include_str!("../../config/demo.toml"), "config/demo.toml")
        .expect("config/demo.toml is valid")
}

/// Without the demo's OSDP door (`lobby`): for tests that count the events reaching the sink
/// exactly, since a reader that is not there raises one (34) soon after start.
pub fn without_osdp_doors(config: &mut Config) {
    config.doors.retain(|door| door.reader.wiegand().is_some());
}

/// No periodic sync for a day: for benchmarks and tests that drive sync traffic themselves.
pub fn quiet_sync(config: &mut Config) {
    config.sync.interval_s = Ranged::new(86_400);
    config.sync.full_interval_s = Ranged::new(86_400);
}

/// The demo config for a benchmark: state in `dir`, `requests_per_minute` assumed before the
/// server's headers are seen, and no periodic sync (a benchmark drives its own).
pub fn bench_config(dir: &Path, base_url: &str, requests_per_minute: u64) -> Config {
    let mut config = demo_config(dir, base_url);
    config.api.requests_per_minute = Ranged::new(requests_per_minute);
    without_osdp_doors(&mut config);
    quiet_sync(&mut config);
    config
}

/// Switches `config` to OAuth with the simulator's client (`agent`, secret `shh`) and
/// `refresh_token`, the secrets written under `dir`.
pub fn use_oauth(config: &mut Config, dir: &Path, refresh_token: &str) {
    std::fs::write(dir.join("client_secret"), "shh\n").expect("client secret file");
    std::fs::write(dir.join("refresh_token"), refresh_token).expect("refresh token file");
    config.api.auth = AuthConfig {
        method: AuthMethod::Oauth,
        client_id: Some("agent".into()),
        client_secret: Some(SecretSource::File(dir.join("client_secret"))),
        refresh_token_file: Some(dir.join("refresh_token")),
        api_key: None,
    };
}

/// Fails the test when a change made the config invalid (as `Config::parse` would refuse it).
pub fn assert_valid(config: &Config) {
    let problems = config.validate();
    assert!(problems.is_empty(), "invalid test config: {problems:?}");
}

/// Writes `config` as TOML to `dir/config.toml` for a test that starts the real binary, and
/// returns the path.
pub fn write_config(config: &Config, dir: &Path) -> PathBuf {
    assert_valid(config);
    let path = dir.join("config.toml");
    let text = toml::to_string(config).expect("a config serialises as TOML");
    std::fs::write(&path, text).expect("write the config file");
    path
}

/// Runs `binary check-config` on config `text` (written to a temporary file) and returns its
/// exit code and stderr.
pub fn check_config_text(binary: &str, text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write the config file");
    let out = super::agent_command(binary)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("check-config runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A door's Wiegand reader, to change field by field (panics for another reader type).
pub fn wiegand_reader(door: &mut DoorConfig) -> &mut WiegandReaderConfig {
    match &mut door.reader {
        ReaderConfig::Wiegand(reader) => reader,
        ReaderConfig::Osdp(_) => panic!("door `{}` has no Wiegand reader", door.name),
    }
}

/// Wires a door's Wiegand reader LED and beeper inputs to `led` and `beeper` (lines on the
/// default chip, active high).
pub fn wire_reader_feedback(door: &mut DoorConfig, led: u32, beeper: u32) {
    let line = |line| OutputLineConfig {
        chip: None,
        line,
        active_low: false,
    };
    let reader = wiegand_reader(door);
    reader.led = Some(line(led));
    reader.beeper = Some(line(beeper));
}
