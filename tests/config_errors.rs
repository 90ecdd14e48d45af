//! Every kind of config mistake produces a message that names the key (and line) at fault, and
//! `check-config` exits 2 for it.

use doorflow_agent::config::{Config, ConfigError};

fn agent() -> std::process::Command {
    doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
}

const DEMO: &str = include_str!("../config/demo.toml");
const PRODUCTION: &str = include_str!("../config/doorflow-agent.toml");

/// Applies one textual edit to the demo config and returns the error message.
fn error_after(from: &str, to: &str) -> String {
    assert!(DEMO.contains(from), "fixture text `{from}` not in demo.toml");
    let text = DEMO.replacen(from, to, 1);
    match Config::parse(&text, "demo.toml") {
        Ok(_) => panic!("`{from}` → `{to}` was accepted"),
        Err(error) => error.to_string(),
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "`{needle}` missing from: {message}");
    }
}

#[test]
fn shipped_configs_are_valid() {
    let demo = Config::parse(DEMO, "demo.toml").unwrap();
    assert_eq!(demo.doors.len(), 3);
    assert!(
        matches!(
            demo.doors[2].reader,
            doorflow_agent::config::ReaderConfig::Osdp(_)
        ),
        "the demo's lobby has an OSDP reader"
    );
    // The production template is refused until its placeholder is replaced, so an installed
    // package never runs (and drives GPIO lines) on it.
    let message = Config::parse(PRODUCTION, "doorflow-agent.toml")
        .unwrap_err()
        .to_string();
    let line = PRODUCTION
        .lines()
        .position(|l| l.contains("REPLACE-WITH-YOUR-OAUTH-CLIENT-ID"))
        .unwrap()
        + 1;
    assert_mentions(
        &message,
        &[
            &format!("line {line}:"),
            "api.auth.client_id",
            "template's placeholder",
        ],
    );
    let edited = PRODUCTION.replace("REPLACE-WITH-YOUR-OAUTH-CLIENT-ID", "site-client-id");
    let production = Config::parse(&edited, "doorflow-agent.toml").unwrap();
    assert_eq!(production.doors[0].channel_id, Some(1340));
}

#[test]
fn unknown_key() {
    let message = error_after("interval_s = 10", "intervall_s = 10");
    assert_mentions(&message, &["line 17", "intervall_s", "unknown field", "sync"]);
}

#[test]
fn unknown_key_in_a_door() {
    let message = error_after("unlock_s = 3", "unlock_secs = 3");
    assert_mentions(&message, &["doors[0]", "unlock_secs", "unknown field"]);
}

#[test]
fn wrong_type() {
    let message = error_after("interval_s = 10", "interval_s = \"ten\"");
    assert_mentions(
        &message,
        &["line 17", "sync.interval_s", "invalid type", "string"],
    );
}

#[test]
fn missing_required() {
    let message = error_after("[doors.relay]\nline = 2\n", "[doors.relay]\n");
    assert_mentions(&message, &["doors[0].relay", "missing field `line`"]);
    let message = error_after("base_url = \"http://127.0.0.1:18080\"\n", "");
    assert_mentions(&message, &["base_url"]);
}

#[test]
fn missing_secret_for_the_auth_method() {
    let message = error_after("api_key = \"/tmp/doorflow-agent-demo/api_key\"\n", "");
    assert_mentions(
        &message,
        &["api.auth.api_key", "required when method = \"api_key\""],
    );
}

#[test]
fn inline_secret_is_refused() {
    let message = error_after(
        "api_key = \"/tmp/doorflow-agent-demo/api_key\"",
        "api_key = \"dfk_live_123\"",
    );
    assert_mentions(&message, &["api_key", "never written inline"]);
    assert!(
        !message.contains("dfk_live_123"),
        "a pasted secret is echoed: {message}"
    );
}

#[test]
fn out_of_range() {
    let message = error_after("unlock_s = 2", "unlock_s = 900");
    assert_mentions(&message, &["line 61", "doors[1].unlock_s", "900", "out of range"]);
    let message = error_after("admit_ttl_s = 120", "admit_ttl_s = 0");
    assert_mentions(&message, &["uplink.admit_ttl_s", "0 is out of range"]);
}

#[test]
fn negative_number_is_a_type_error() {
    let message = error_after("admit_ttl_s = 120", "admit_ttl_s = -5");
    assert_mentions(&message, &["uplink.admit_ttl_s"]);
}

#[test]
fn duplicate_gpio_line() {
    let message = error_after("d1 = 11", "d1 = 10");
    assert_mentions(
        &message,
        &[
            "doors[1].reader.d1",
            "line 10",
            "already used by doors[1].reader.d0",
        ],
    );
    // Across doors, and with an explicit /dev/ chip path that names the same chip.
    let message = error_after(
        "[doors.relay]\nline = 12",
        "[doors.relay]\nchip = \"/dev/gpiochip0\"\nline = 2",
    );
    assert_mentions(
        &message,
        &["doors[1].relay.line", "already used by doors[0].relay.line"],
    );
}

#[test]
fn same_line_on_another_chip_is_fine() {
    let text = DEMO.replacen(
        "[doors.relay]\nline = 12",
        "[doors.relay]\nchip = \"gpiochip1\"\nline = 2",
        1,
    );
    Config::parse(&text, "demo.toml").unwrap();
}

#[test]
fn plain_http_to_a_remote_host() {
    let message = error_after(
        "base_url = \"http://127.0.0.1:18080\"",
        "base_url = \"http://api.doorflow.com\"",
    );
    assert_mentions(
        &message,
        &["line 5", "api.base_url", "plain http", "non-loopback"],
    );
    let message = error_after(
        "events_url = \"http://127.0.0.1:18080/events\"",
        "events_url = \"http://192.168.1.10/events\"",
    );
    assert_mentions(&message, &["uplink.events_url", "non-loopback"]);
}

#[test]
fn bad_values_with_their_own_rules() {
    let message = error_after("time_zone = \"Europe/London\"", "time_zone = \"Europe/Londn\"");
    assert_mentions(&message, &["sync.time_zone", "Europe/Londn", "IANA"]);
    let message = error_after("start = \"08:00\"", "start = \"8am\"");
    assert_mentions(&message, &["shifts[0].times[0].start", "8am"]);
    let message = error_after("card_value = \"number\"", "card_value = \"hex\"");
    assert_mentions(&message, &["doors[0].card_value", "unknown variant `hex`"]);
    let message = error_after("name = \"server-room\"", "name = \"front\"");
    assert_mentions(&message, &["doors[1].name", "already used by doors[0]"]);
    let message = error_after("channel_id = 1341", "channel_id = 1340");
    assert_mentions(&message, &["doors[1].channel_id", "1340"]);
}

#[test]
fn not_toml_at_all() {
    let error = Config::parse("[api\nbase_url = 1", "broken.toml").unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }));
    assert_mentions(&error.to_string(), &["broken.toml", "line 1"]);
}

#[test]
fn missing_file() {
    let error = Config::load(std::path::Path::new("/nonexistent/config.toml")).unwrap_err();
    assert_mentions(&error.to_string(), &["/nonexistent/config.toml", "cannot read"]);
}

#[test]
fn check_config_exit_codes() {
    // The demo config with its API key file in place (check-config reads the secrets too).
    let dir = tempfile::tempdir().unwrap();
    let demo = doorflow_agent::testing::config::demo_config(dir.path(), "http://127.0.0.1:18080");
    let path = doorflow_agent::testing::config::write_config(&demo, dir.path());
    let ok = agent()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_mentions(&stdout, &["ok", "3 door(s)", "front (channel 1340)"]);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, DEMO.replacen("d1 = 11", "d1 = 10", 1)).unwrap();
    let out = agent()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["doors[1].reader.d1", "already used"],
    );
}

/// The demo's OSDP reader table, to edit in the tests below.
const OSDP_READER: &str = "type = \"osdp\"\nport = \"/tmp/doorflow-agent-demo/osdp-bus\"\naddress = 0\n";

#[test]
fn osdp_reader_mistakes_name_their_key() {
    let message = error_after("type = \"osdp\"", "type = \"rs485\"");
    assert_mentions(&message, &["doors[2].reader", "unknown reader type `rs485`"]);
    let message = error_after("port = \"/tmp", "prot = \"/tmp");
    assert_mentions(&message, &["osdp reader", "unknown field `prot`"]);
    let message = error_after("address = 0\n", "address = 0\nbaud = 9601\n");
    assert_mentions(
        &message,
        &["doors[2].reader.baud", "9601", "not an OSDP baud rate"],
    );
    let message = error_after("address = 0\n", "address = 127\n");
    assert_mentions(
        &message,
        &["doors[2].reader", "`address`", "127 is out of range (0 to 126)"],
    );
    let message = error_after("port = \"/tmp/doorflow-agent-demo/osdp-bus\"", "port = \"ttyS1\"");
    assert_mentions(&message, &["doors[2].reader.port", "absolute device path"]);
    let message = error_after(
        "address = 0\n",
        "address = 0\nsecure_channel = false\nkey_file = \"/etc/k\"\n",
    );
    assert_mentions(&message, &["doors[2].reader.key_file", "secure_channel = true"]);
    let message = error_after("address = 0\n", "address = 0\nkey_file = \"inline-secret\"\n");
    assert_mentions(&message, &["key_file", "absolute file path"]);
    assert!(!message.contains("inline-secret"), "{message}");
    let message = error_after(
        "address = 0\n",
        "address = 0\nfeedback = { grant = { beeps = 40 } }\n",
    );
    assert_mentions(&message, &["doors[2].reader.feedback.grant.beeps", "0 to 10"]);
}

#[test]
fn readers_sharing_a_port_need_distinct_addresses_and_one_baud() {
    // The server room's Wiegand reader becomes a second reader on the lobby's bus.
    let second = DEMO.replacen("d0 = 10\nd1 = 11\n", OSDP_READER, 1);
    let message = match Config::parse(&second, "demo.toml") {
        Ok(_) => panic!("two readers at one address were accepted"),
        Err(error) => error.to_string(),
    };
    assert_mentions(&message, &["doors[2].reader.address", "already used by doors[1]"]);
    let other_baud = DEMO.replacen(
        "d0 = 10\nd1 = 11\n",
        &OSDP_READER.replace("address = 0", "address = 1\nbaud = 38400"),
        1,
    );
    let message = Config::parse(&other_baud, "demo.toml").unwrap_err().to_string();
    assert_mentions(
        &message,
        &["doors[2].reader.baud", "differs from doors[1] (38400)"],
    );
    let fine = DEMO.replacen(
        "d0 = 10\nd1 = 11\n",
        &OSDP_READER.replace("address = 0", "address = 1"),
        1,
    );
    let config = Config::parse(&fine, "demo.toml").unwrap();
    assert_eq!(config.doors.len(), 3);
}

/// A field-map format as a site writes it, before the demo's shifts.
fn with_card_format(definition: &str) -> String {
    let shifts = "[[shifts]]";
    assert!(DEMO.contains(shifts), "demo.toml has no `{shifts}`");
    DEMO.replacen(shifts, &format!("[[card_formats]]\n{definition}\n\n{shifts}"), 1)
}

const ACME42: &str = "name = \"acme42\"\nbits = 42\nnumber = \"1-40\"\nparity = [\n  { bit = 0, kind = \"even\", over = \"1-20\" },\n  { bit = 41, kind = \"odd\", over = \"21-40\" },\n]";

#[test]
fn card_formats_are_checked_by_field_with_their_line() {
    let config = Config::parse(&with_card_format(ACME42), "demo.toml").unwrap();
    assert_eq!(config.card_formats[0].name, "acme42");
    // A parity bit past the frame, named down to the field.
    let text = with_card_format(&ACME42.replace("bit = 41", "bit = 42"));
    let message = Config::parse(&text, "demo.toml").unwrap_err().to_string();
    let line = text.lines().position(|l| l.contains("bit = 42")).unwrap() + 1;
    assert_mentions(
        &message,
        &[
            "card_formats[0].parity[1].bit",
            "42 is past",
            &format!("line {line}"),
        ],
    );
    // A range written backwards is refused while parsing, with its line.
    let text = with_card_format(&ACME42.replace("\"21-40\"", "\"40-21\""));
    let message = Config::parse(&text, "demo.toml").unwrap_err().to_string();
    assert_mentions(&message, &["card_formats[0].parity[1].over", "runs backwards"]);
    // The name of a built-in format is taken.
    let text = with_card_format(&ACME42.replace("acme42", "h10302"));
    let message = Config::parse(&text, "demo.toml").unwrap_err().to_string();
    assert_mentions(&message, &["card_formats[0].name", "built-in"]);
}

#[test]
fn a_door_lists_only_formats_that_exist_and_can_be_told_apart() {
    let message = error_after(
        "[doors.reader]\nd0 = 0",
        "[doors.reader]\nformats = [\"h10301\", \"acme42\"]\nd0 = 0",
    );
    assert_mentions(
        &message,
        &[
            "doors[0].reader.formats",
            "unknown card format `acme42`",
            "corporate1000_35",
            "[[card_formats]]",
        ],
    );
    let text = with_card_format(ACME42).replacen(
        "[doors.reader]\nd0 = 0",
        "[doors.reader]\nformats = [\"h10301\", \"acme42\"]\nd0 = 0",
        1,
    );
    Config::parse(&text, "demo.toml").unwrap();
    let message = error_after(
        "[doors.reader]\nd0 = 0",
        "[doors.reader]\nformats = [\"h10302\", \"h10304\"]\nd0 = 0",
    );
    assert_mentions(
        &message,
        &[
            "doors[0].reader.formats",
            "`h10302` and `h10304`",
            "37 bits",
            "no frame tells them apart",
        ],
    );
    // A UID format accepts every frame of its length: it shares it with nothing.
    let text = with_card_format(
        &ACME42
            .replace("bits = 42", "bits = 40")
            .replace("1-40", "1-38")
            .replace("bit = 41", "bit = 39")
            .replace("21-40", "21-38"),
    )
    .replacen(
        "[doors.reader]\nd0 = 0",
        "[doors.reader]\nformats = [\"uid40\", \"acme42\"]\nd0 = 0",
        1,
    )
    .replacen("facility_codes = [1]\n", "", 1);
    let message = Config::parse(&text, "demo.toml").unwrap_err().to_string();
    assert_mentions(&message, &["`uid40` and `acme42`", "40 bits"]);
}

#[test]
fn reader_feedback_lines_are_gpio_lines_like_any_other() {
    let message = error_after("d0 = 0\nd1 = 1\n", "d0 = 0\nd1 = 1\nled = { line = 2 }\n");
    assert_mentions(
        &message,
        &["doors[0].relay.line", "already used by doors[0].reader.led.line"],
    );
    let message = error_after(
        "d0 = 0\nd1 = 1\n",
        "d0 = 0\nd1 = 1\nbeeper = { line = 5 }\nfeedback = { deny = { beeps = 20 } }\n",
    );
    assert_mentions(&message, &["doors[0].reader.feedback.deny.beeps", "0 to 10"]);
    let text = DEMO.replacen(
        "d0 = 0\nd1 = 1\n",
        "d0 = 0\nd1 = 1\nled = { line = 5, active_low = true }\nbeeper = { line = 6 }\n",
        1,
    );
    let config = Config::parse(&text, "demo.toml").unwrap();
    let reader = config.doors[0].reader.wiegand().unwrap();
    assert_eq!(
        reader.led.as_ref().map(|l| (l.line, l.active_low)),
        Some((5, true))
    );
}

/// Door names start log lines and label metrics: a control character would forge a line, and
/// names that differ only in case or padding, or run to a page, are two doors no one can tell
/// apart. Each kind refused, naming the key.
#[test]
fn door_names_that_forge_or_blur_log_lines_are_refused() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "name = \"front\\nfake: granted\"",
            &["doors[0].name", "control character U+000A"],
        ),
        (
            "name = \"front \"",
            &["doors[0].name", "spaces at its start or end"],
        ),
        // Reported on the later door.
        (
            "name = \"Server-Room\"",
            &["doors[1].name", "already used by doors[0]", "without case"],
        ),
        (
            "name = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
            &["doors[0].name", "65 characters long; at most 64"],
        ),
    ];
    for (to, needles) in cases {
        assert_mentions(&error_after("name = \"front\"", to), needles);
    }
}

#[test]
fn a_key_of_the_other_auth_method_is_refused() {
    let message = error_after(
        "method = \"api_key\"",
        "method = \"api_key\"\nclient_id = \"agent\"",
    );
    assert_mentions(
        &message,
        &["api.auth.client_id", "not used with method = \"api_key\""],
    );
}

#[test]
fn a_retry_base_above_the_cap_is_refused() {
    let message = error_after("[uplink]", "[uplink]\nretry_base_ms = 60000\nretry_cap_s = 1");
    assert_mentions(
        &message,
        &["uplink.retry_base_ms", "more than uplink.retry_cap_s"],
    );
}

/// `check-config` lists every problem the rules that span keys find, so a file is fixed in one
/// round (it stopped at the first).
#[test]
fn check_config_names_every_problem_at_once() {
    let text = DEMO
        .replacen("name = \"front\"", "name = \"front \"", 1)
        .replacen("[uplink]", "[uplink]\nretry_base_ms = 60000\nretry_cap_s = 1", 1)
        .replacen("name = \"server-room\"", "name = \"Lobby\"", 1);
    let (code, stderr) =
        doorflow_agent::testing::config::check_config_text(env!("CARGO_BIN_EXE_doorflow-agent"), &text);
    assert_eq!(code, Some(2), "{stderr}");
    for key in ["`doors[0].name`", "`uplink.retry_base_ms`", "`doors[2].name`"] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        3,
        "{stderr}"
    );
}

/// A facility code that is not one (negative, too large, a bare number) is named in the message
/// instead of "did not match any variant of untagged enum".
#[test]
fn facility_codes_that_are_not_codes_are_named() {
    for (to, says) in [
        ("facility_codes = [-1]", "facility code -1 is out of range"),
        (
            "facility_codes = [1, 4294967296]",
            "facility code 4294967296 is out of range",
        ),
        ("facility_codes = 7", "write a list of facility codes: [7]"),
    ] {
        let message = error_after("facility_codes = [1]", to);
        assert_mentions(&message, &["doors[0].facility_codes", says]);
        assert!(!message.contains("untagged"), "{message}");
    }
}

/// A value of the wrong kind is told what the key takes, in the field's words.
#[test]
fn a_wrong_kind_of_number_says_what_the_key_takes() {
    let message = error_after("unlock_s = 3", "unlock_s = \"3\"");
    assert_mentions(
        &message,
        &[
            "unlock_s",
            "a number of seconds from 0.1 to 300",
            "without quotes",
        ],
    );
    let message = error_after("interval_s = 10", "interval_s = 99999999999999999999");
    assert_mentions(&message, &["sync.interval_s", "out of range (10 to 86400)"]);
    assert!(!message.contains("i128"), "{message}");
    let message = error_after("interval_s = 10", "interval_s = -5");
    assert_mentions(&message, &["sync.interval_s", "-5 is out of range (10 to 86400)"]);
}

/// What serde calls Rust types is said in the file's words: no `i128`, `u32` or untagged enums.
#[test]
fn messages_use_the_files_words_not_rust_types() {
    for (from, to, says) in [
        (
            "facility_codes = [1]",
            "facility_codes = [99999999999999999999]",
            "expected a smaller number",
        ),
        (
            "facility_codes = [1]",
            "facility_codes = [\"1\"]",
            "expected a list of facility codes such as [1]",
        ),
        (
            "channel_id = 1340",
            "channel_id = 99999999999999999999",
            "expected a whole number of 0 or more",
        ),
        (
            "channel_id = 1340",
            "channel_id = -2",
            "expected a whole number of 0 or more",
        ),
    ] {
        let message = error_after(from, to);
        assert_mentions(&message, &[says]);
        for rust in ["i128", "u64", "u32", "untagged"] {
            assert!(!message.contains(rust), "`{rust}` in: {message}");
        }
    }
}
