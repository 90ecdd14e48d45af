//! `check-config` is as strict as `run`: every case here goes through the real binary. Each
//! mistake is refused by `check-config` with exit 2, naming the key and the line it is on; the
//! ones `run` would refuse are refused by `run` too (so `check-config` never says ok to a config
//! the service will not start with). A secret `run` cannot read does not stop the doors (the
//! agent runs degraded on its stored snapshot), but `check-config` refuses it.

use doorflow_agent::config::{Config, GpioBackend, ReaderConfig, SecretSource};
use doorflow_agent::testing::config::demo_config;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn agent() -> std::process::Command {
    doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
}

/// What a case expects.
struct Case {
    name: &'static str,
    /// Changes the demo config (state in `dir`); may create files there.
    setup: fn(&Path, &mut Config),
    /// `check-config`'s exit code.
    exit: i32,
    /// The key named in the message.
    key: &'static str,
    /// Text of the config line the message must point at (its line number is looked up in the
    /// written file), or `None` when the key is not in the file.
    line_with: Option<&'static str>,
    /// Words the message must contain.
    says: &'static [&'static str],
    /// Whether `run` refuses the config as well.
    run_refuses: bool,
    /// Environment for both runs.
    env: &'static [(&'static str, &'static str)],
}

fn long_socket(dir: &Path) -> PathBuf {
    dir.join(format!("{}.sock", "s".repeat(120)))
}

fn api_key(config: &Config) -> PathBuf {
    match &config.api.auth.api_key {
        Some(SecretSource::File(path)) => path.clone(),
        other => panic!("the demo config reads its API key from a file, not {other:?}"),
    }
}

fn use_gpiod_chip(config: &mut Config, chip: &str) {
    config.gpio.backend = GpioBackend::Gpiod;
    config.gpio.chip = chip.to_string();
}

const CASES: &[Case] = &[
    Case {
        name: "admin socket path longer than sun_path",
        setup: |dir, config| config.admin.socket = long_socket(dir),
        exit: 2,
        key: "admin.socket",
        line_with: Some("sssss.sock"),
        says: &["bytes long", "at most 107", "sun_path"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "mock socket path longer than sun_path",
        setup: |dir, config| config.gpio.mock_socket = long_socket(dir),
        exit: 2,
        key: "gpio.mock_socket",
        line_with: Some("sssss.sock"),
        says: &["at most 107"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "NUL byte in the store path",
        setup: |dir, config| config.store.path = dir.join("db\0x"),
        exit: 2,
        key: "store.path",
        line_with: Some("\\u0000"),
        says: &["NUL byte"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "NUL byte in a secret path",
        setup: |dir, config| {
            config.api.auth.api_key = Some(SecretSource::File(dir.join("key\0file")));
        },
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("\\u0000"),
        says: &["NUL byte"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "template placeholder left in",
        setup: |_, config| config.doors[0].name = "REPLACE-WITH-DOOR-NAME".into(),
        exit: 2,
        key: "doors[0].name",
        line_with: Some("REPLACE-WITH-DOOR-NAME"),
        says: &["template's placeholder", "REPLACE-WITH-DOOR-NAME"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "API key file missing",
        setup: |_, config| std::fs::remove_file(api_key(config)).unwrap(),
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("api_key = "),
        says: &["secret file", "No such file"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "API key path unreadable (a directory)",
        setup: |dir, config| {
            let path = dir.join("key-dir");
            std::fs::create_dir(&path).unwrap();
            config.api.auth.api_key = Some(SecretSource::File(path));
        },
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("key-dir"),
        says: &["secret file", "directory"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "API key file empty",
        setup: |_, config| std::fs::write(api_key(config), "\n").unwrap(),
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("api_key = "),
        says: &["is empty"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "admin socket path names an existing file (run would have deleted it)",
        setup: |dir, config| {
            let path = dir.join("queue-typo.sqlite");
            std::fs::write(&path, "acknowledged records").unwrap();
            config.admin.socket = path;
        },
        exit: 2,
        key: "admin.socket",
        line_with: Some("queue-typo.sqlite"),
        says: &["a regular file is there, not a socket"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "admin socket on the mock GPIO socket",
        setup: |_, config| config.admin.socket = config.gpio.mock_socket.clone(),
        exit: 2,
        key: "gpio.mock_socket",
        line_with: None,
        says: &["is also `admin.socket`", "each role needs a path of its own"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "a door nobody can open with a credential: a warning",
        setup: |_, config| {
            let door = &mut config.doors[0];
            door.channel_id = None;
            door.admit_via_api = false;
            door.allowed_roles.clear();
            door.allowed_groups.clear();
        },
        exit: 0,
        key: "doors[0].name",
        line_with: None,
        says: &["warning", "every card and PIN is denied there"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "store path below a regular file",
        setup: |dir, config| config.store.path = dir.join("api_key").join("db"),
        exit: 2,
        key: "store.path",
        line_with: None,
        says: &["api_key is a regular file, not a directory"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "metrics file reached through a symlinked directory onto the API key",
        setup: |dir, config| {
            std::os::unix::fs::symlink(dir, dir.join("via-link")).unwrap();
            config.metrics.textfile = Some(dir.join("via-link").join("api_key"));
        },
        exit: 2,
        key: "metrics.textfile",
        line_with: None,
        says: &["is also `api.auth.api_key`"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "admin socket inside the store directory",
        setup: |dir, config| config.admin.socket = dir.join("db").join("..").join("db").join("admin.sock"),
        exit: 2,
        key: "admin.socket",
        line_with: None,
        says: &["is inside the store directory `store.path`"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "API key path is a FIFO (reading it would wait for a writer)",
        setup: |dir, config| {
            let path = dir.join("key-fifo");
            assert!(std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap()
                .success());
            config.api.auth.api_key = Some(SecretSource::File(path));
        },
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("key-fifo"),
        says: &["secret file", "is a FIFO, not a regular file"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "API key path is an endless device",
        setup: |_, config| {
            config.api.auth.api_key = Some(SecretSource::File("/dev/zero".into()));
        },
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("/dev/zero"),
        says: &["secret file", "is a device, not a regular file"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "API key file of two lines",
        setup: |_, config| std::fs::write(api_key(config), "sim-api-key\nsomething else\n").unwrap(),
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("api_key = "),
        says: &["more than one line"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "systemd credential missing from CREDENTIALS_DIRECTORY",
        setup: |_, config| {
            config.api.auth.api_key = Some(SecretSource::SystemdCredential("doorflow-api-key".into()));
        },
        exit: 2,
        key: "api.auth.api_key",
        line_with: Some("systemd-credential:doorflow-api-key"),
        says: &["credentials/doorflow-api-key", "No such file"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "event sink token missing",
        setup: |dir, config| {
            config.uplink.events_token = Some(SecretSource::File(dir.join("sink-token")));
        },
        exit: 2,
        key: "uplink.events_token",
        line_with: Some("sink-token"),
        says: &["secret file", "No such file"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "API key readable by others: a warning, not a refusal",
        setup: |_, config| {
            std::fs::set_permissions(api_key(config), std::fs::Permissions::from_mode(0o644)).unwrap();
        },
        exit: 0,
        key: "api.auth.api_key",
        line_with: Some("api_key = "),
        says: &["warning", "readable by group or others", "mode 644", "chmod 600"],
        run_refuses: false,
        env: &[],
    },
    Case {
        name: "GPIO chip missing",
        setup: |_, config| use_gpiod_chip(config, "gpiochip-doorflow-test-none"),
        exit: 2,
        key: "gpio.chip",
        line_with: Some("gpiochip-doorflow-test-none"),
        says: &["no such GPIO chip", "/dev/gpiochip-doorflow-test-none"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "GPIO chip is a regular file",
        setup: |dir, config| {
            let path = dir.join("not-a-chip");
            std::fs::write(&path, "").unwrap();
            use_gpiod_chip(config, &path.display().to_string());
        },
        exit: 2,
        key: "gpio.chip",
        line_with: Some("not-a-chip"),
        says: &["not a character device"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "GPIO chip is a character device of another kind",
        setup: |_, config| use_gpiod_chip(config, "/dev/null"),
        exit: 2,
        key: "gpio.chip",
        line_with: Some("/dev/null"),
        says: &["not a GPIO chip"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "a line's own chip override is checked under its own key",
        setup: |dir, config| {
            let path = dir.join("relay-chip");
            std::fs::write(&path, "").unwrap();
            use_gpiod_chip(config, "/dev/null");
            config.doors[1].relay.chip = Some(path.display().to_string());
        },
        exit: 2,
        key: "doors[1].relay.chip",
        line_with: Some("relay-chip"),
        says: &["not a character device"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "OSDP key file that holds no key",
        setup: |dir, config| {
            let path = dir.join("lobby-osdp.key");
            std::fs::write(&path, "not-a-key\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let ReaderConfig::Osdp(reader) = &mut config.doors[2].reader else {
                panic!("the demo's lobby has an OSDP reader");
            };
            reader.secure_channel = true;
            reader.key_file = Some(SecretSource::File(path));
        },
        exit: 2,
        key: "doors[2].reader.key_file",
        line_with: Some("lobby-osdp.key"),
        says: &["OSDP key file", "lobby-osdp.key"],
        run_refuses: true,
        env: &[],
    },
    Case {
        name: "no CA trust store for an https API",
        setup: |_, config| {
            config.api.base_url =
                doorflow_agent::config::ServiceUrl::parse("https://api.doorflow.com").unwrap()
        },
        exit: 2,
        key: "api.base_url",
        line_with: Some("https://api.doorflow.com"),
        says: &["no CA trust store", "ca-certificates"],
        run_refuses: false,
        env: &[
            ("SSL_CERT_FILE", "/nonexistent/doorflow-test-ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent/doorflow-test-certs"),
        ],
    },
];

/// Writes `config` as TOML without validating it first (the point is to hand the binary a bad
/// one).
fn write_raw(config: &Config, dir: &Path) -> (PathBuf, String) {
    let path = dir.join("config.toml");
    let text = toml::to_string(config).unwrap();
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn run_binary(case: &Case, args: &[&str], config: &Path, credentials: &Path) -> Output {
    agent()
        .args(args)
        .arg("--config")
        .arg(config)
        .env("CREDENTIALS_DIRECTORY", credentials)
        .env("DOORFLOW_LOG_TARGET", "stderr")
        .envs(case.env.iter().copied())
        .output()
        .unwrap()
}

fn check(case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let mut config = demo_config(dir.path(), "http://127.0.0.1:9");
    std::fs::set_permissions(api_key(&config), std::fs::Permissions::from_mode(0o600)).unwrap();
    (case.setup)(dir.path(), &mut config);
    let (path, text) = write_raw(&config, dir.path());
    let out = run_binary(case, &["check-config"], &path, &credentials);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut wrong = Vec::new();
    if out.status.code() != Some(case.exit) {
        wrong.push(format!("exit {:?}, expected {}", out.status.code(), case.exit));
    }
    let mut needles: Vec<String> = case.says.iter().map(|s| s.to_string()).collect();
    needles.push(format!("`{}`", case.key));
    if let Some(line_with) = case.line_with {
        let line = text
            .lines()
            .position(|l| l.contains(line_with))
            .unwrap_or_else(|| panic!("{}: `{line_with}` not in the written config:\n{text}", case.name));
        needles.push(format!("line {}:", line + 1));
    }
    for needle in &needles {
        if !stderr.contains(needle.as_str()) {
            wrong.push(format!("check-config does not say `{needle}`"));
        }
    }
    if case.run_refuses {
        let run = run_binary(case, &["run"], &path, &credentials);
        let run_stderr = String::from_utf8_lossy(&run.stderr);
        if run.status.success() {
            wrong.push("`run` accepted it".into());
        }
        // A config rule names the key; a GPIO or OSDP failure names the chip or the key file.
        let named = [case.key, "GPIO chip", "OSDP key file"];
        if !named.iter().any(|n| run_stderr.contains(n)) {
            wrong.push(format!("`run` refused it without saying why: {run_stderr}"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n  check-config said: {stderr}",
            case.name,
            wrong.join("; ")
        ))
    }
}

#[test]
fn check_config_refuses_whatever_run_would_refuse() {
    let failures: Vec<String> = CASES.iter().filter_map(|case| check(case).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A refresh token on a read-only filesystem (what `ProtectSystem=strict` makes of /etc): the
/// agent could not save the token DoorFlow rotates, and a restart would lose access. A real
/// read-only mount, not a mode: root writes through modes.
#[test]
fn a_refresh_token_where_it_cannot_be_rewritten_is_refused() {
    let Some(secrets) = doorflow_agent::testing::store_fs::SmallFs::mount(1, "read-only refresh token")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), "http://127.0.0.1:9");
    doorflow_agent::testing::config::use_oauth(&mut config, &secrets.path, "refresh-token");
    for file in ["client_secret", "refresh_token"] {
        std::fs::set_permissions(secrets.path.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (path, text) = write_raw(&config, dir.path());
    let check = || {
        agent()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    secrets.remount_read_only();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("refresh_token_file"))
        .unwrap();
    for needle in [
        format!("line {line}:"),
        "`api.auth.refresh_token_file`".into(),
        "its directory is not writable".into(),
        "Read-only file system".into(),
    ] {
        assert!(stderr.contains(&needle), "no `{needle}` in: {stderr}");
    }
}

#[test]
fn a_good_config_passes_and_a_credential_outside_the_unit_is_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), "http://127.0.0.1:9");
    std::fs::set_permissions(api_key(&config), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (path, _) = write_raw(&config, dir.path());
    let out = agent()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    config.api.auth.api_key = Some(SecretSource::SystemdCredential("doorflow-api-key".into()));
    let (path, _) = write_raw(&config, dir.path());
    let out = agent()
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note:") && stderr.contains("checked when the service starts"),
        "{stderr}"
    );
}

#[test]
fn the_unit_condition_holds_back_only_the_untouched_template() {
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/config/doorflow-agent.toml");
    let out = agent()
        .args(["check-config", "--unit-condition", "--config", template])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "systemd's ExecCondition skips on 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = include_str!("../config/doorflow-agent.toml")
        .lines()
        .position(|l| l.contains("REPLACE-WITH-YOUR-OAUTH-CLIENT-ID"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("line {line}: `api.auth.client_id`")),
        "{stderr}"
    );
    assert!(stderr.contains("systemctl start doorflow-agent"), "{stderr}");
    // `run` refuses the template too, so it never requests the template's GPIO lines.
    let run = agent()
        .args(["run", "--config", template])
        .env("DOORFLOW_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("template's placeholder"));

    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("config.toml");
    std::fs::write(
        &edited,
        include_str!("../config/doorflow-agent.toml").replace("REPLACE-WITH-YOUR-OAUTH-CLIENT-ID", "site-id"),
    )
    .unwrap();
    for config in [edited, dir.path().join("broken.toml")] {
        // Any other problem (even an unreadable file) is left to `run`, which fails loudly.
        std::fs::write(dir.path().join("broken.toml"), "[api\n").unwrap();
        let out = agent()
            .args(["check-config", "--unit-condition", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", config.display());
    }
}
