//! The door against the wire, through the real binary: `doorflow-agent run` with mock GPIO, fed
//! frames from device documentation and captured reads over the mock control socket (never
//! frames made by the project's own encoder), and hostile control requests. Outcomes are read
//! from the agent's journal output (stderr), where every decision is logged with its reason.

use doorflow_agent::config::values::{Ranged, Seconds};
use doorflow_agent::config::{CardFormatConfig, Config, FacilityCodes, ParityConfig};
use doorflow_agent::credential::CardFormat;
use doorflow_agent::credential::CardValueMapping;
use doorflow_agent::snapshot::*;
use doorflow_agent::store::Store;
use doorflow_agent::testing::config::wiegand_reader;
use doorflow_agent::testing::process::AgentProcess;
use doorflow_agent::wiegand::{BitRange, BitSet, Parity};
use serde_json::json;
use std::path::Path;

const BINARY: &str = env!("CARGO_BIN_EXE_doorflow-agent");

/// Allegion 26A worked example: H10301, facility 101, card 4095.
const H10301_FC101_CN4095: &str = "00110010100001111111111111";
/// CIVINTEC CN56X0B-X manual 6.4.5: H10306 (34-bit), facility 0x89D4 = 35284, card 7041.
const H10306_FC35284_CN7041: &str = "1100010011101010000011011100000011";
/// Captured ValuProx HID card read by a Proxmark3 (flipperzero-firmware issue #1029): H10304
/// facility 22602, card 89248.
const H10304_FC22602_CN89248: &str = "0010110000100101000101011100101000000";
/// An HID reader's output for a Corporate 1000 35-bit card, company 1337, card 2137
/// (jkramarz/TheTick pull request #20).
const C1000_FC1337_CN2137: &str = "10010100111001000000001000010110011";
/// Nedap COMBI-BOOSTER manual 6.3: H10302 (37-bit, no facility) card 123456789.
const H10302_CN123456789: &str = "1000000001110101101111001101000101011";
/// CIVINTEC CN56X0B-X manual 6.4.7 Wiegand42: data 00 89 D4 1B 81 between an even parity bit
/// over the first 20 data bits and an odd one over the last 20 (a site-defined format here).
const CIVINTEC42: &str = "000000000100010011101010000011011100000010";
/// Hikvision DS-2CD7A26G0 manual, 34-bit example: card 1234567890 (its 32 data bits).
const HIKVISION34_1234567890: &str = "1010010011001011000000010110100100";
/// CIVINTEC CN56X0B-X manual 6.4.3: a 32-bit frame, read raw as 2678762273.
const RAW_32: &str = "10011111101010101010101100100001";
/// Captured HID PhotoProx card (z9open-community TestBinaryFormatter.cs): facility 233, 30333.
const PHOTOPROX_FC233_CN30333: &str = "01110100101110110011111011";
/// 8-bit keypad bursts for 6, 7, 8, 9, # (HID PINpad 7393760 rev E Table 1; Rosslare option 3).
const EIGHT_BIT_6789: [&str; 5] = ["10010110", "10000111", "01111000", "01101001", "01001011"];
/// 4-bit bursts for 6, 7, 8, 9, # (Rosslare AYC-Q manual 4.2.3.9).
const FOUR_BIT_6789: [&str; 5] = ["0110", "0111", "1000", "1001", "1011"];

fn person(id: u64) -> Person {
    Person {
        id,
        enabled: true,
        valid_from: None,
        valid_to: None,
        roles: vec![1],
        groups: vec![],
    }
}

fn credential(person_id: u64, type_id: u64, value: &str) -> Credential {
    Credential {
        id: format!("c{person_id}-{value}"),
        credential_type_id: type_id,
        person_id,
        value: value.into(),
        status: None,
    }
}

/// People 1-4 hold the documented cards' numbers, 5 and 6 the PINs 6789 and 9876, 7 the
/// captured PhotoProx card's number (from another facility), 8-11 the field-map formats' cards.
fn seed_store(dir: &Path) {
    let store = Store::open(&dir.join("db"), 1 << 20).unwrap();
    let parts = SnapshotParts {
        people: (1..=11).map(person).collect(),
        credentials: vec![
            credential(1, 1, "4095"),
            credential(2, 1, "7041"),
            credential(3, 1, "89248"),
            credential(4, 1, "2678762273"),
            credential(5, 2, "6789"),
            credential(6, 2, "9876"),
            credential(7, 1, "30333"),
            credential(8, 1, "2137"),
            credential(9, 1, "123456789"),
            credential(10, 1, "2312379265"),
            credential(11, 1, "1234567890"),
        ],
        credential_types: vec![
            CredentialType::new(1, "card", CredentialKind::Card),
            CredentialType::new(2, "pin", CredentialKind::Pin),
        ],
        roles: vec![Role::unrestricted(1)],
        channels: vec![Channel {
            id: 1340,
            mode: ChannelMode::Normal,
            lockdown: None,
            site_id: None,
        }],
        ..Default::default()
    };
    store.save_snapshot(&parts).unwrap();
}

/// The demo config offline (nothing listens on its API port), its front door accepting the
/// documented cards' facility codes and raw frames.
fn start(dir: &Path) -> AgentProcess {
    seed_store(dir);
    let mut config: Config = doorflow_agent::testing::config::demo_config(dir, "http://127.0.0.1:9");
    let front = &mut config.doors[0];
    front.facility_codes = Some(FacilityCodes::Only(vec![101, 35284, 22602]));
    wiegand_reader(front).formats.push(CardFormat::RAW);
    AgentProcess::start_config(BINARY, &config, dir)
}

/// Sends one frame to the front door, waiting while its simulated reader is busy.
fn send_bits(agent: &AgentProcess, bits: &str) {
    send_bits_to(agent, "front", bits);
}

/// Sends one frame, waiting while the door's simulated reader is busy (it queues 8 requests).
fn send_bits_to(agent: &AgentProcess, door: &str, bits: &str) {
    loop {
        let reply = agent.control(json!({"op": "wiegand", "door": door, "bits": bits}));
        if reply["ok"] == true {
            return;
        }
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains("busy"), "{bits}: {reply}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn flip(bits: &str, i: usize) -> String {
    bits.char_indices()
        .map(|(j, c)| {
            if i == j {
                if c == '0' {
                    '1'
                } else {
                    '0'
                }
            } else {
                c
            }
        })
        .collect()
}

/// How a grant reads in the log: `front: granted card **** (person 1): authorised`.
const GRANTED: &str = ": granted ";

#[test]
fn documented_frames_open_the_door_for_their_holders() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path());
    for (bits, person) in [
        (H10301_FC101_CN4095, 1),
        (H10306_FC35284_CN7041, 2),
        (H10304_FC22602_CN89248, 3),
        (RAW_32, 4),
    ] {
        send_bits(&agent, bits);
        let who = format!("person_id={person}");
        let lines = agent.wait_for_log(&[GRANTED, "event_code=10", "reason=authorised", &who], 1);
        assert_eq!(lines.len(), 1, "{bits}: {lines:?}");
    }
    // One misread bit in any position of a parity-checked frame: refused, never another card.
    for bits in [H10301_FC101_CN4095, H10306_FC35284_CN7041, H10304_FC22602_CN89248] {
        for i in [0, bits.len() / 2, bits.len() - 1] {
            send_bits(&agent, &flip(bits, i));
        }
    }
    agent.wait_for_log(&["card frame rejected", "reason=parity"], 9);
    assert_eq!(agent.log_lines_with(&[GRANTED]).len(), 4, "{}", agent.log());
}

/// The CIVINTEC Wiegand42 layout as a site writes it under `[[card_formats]]`.
fn civintec42() -> CardFormatConfig {
    CardFormatConfig {
        name: "civintec42".into(),
        bits: Ranged::new(42),
        facility: None,
        number: BitRange::new(1, 40),
        parity: vec![
            ParityConfig {
                bit: 0,
                kind: Parity::Even,
                over: BitSet::range(1, 20),
            },
            ParityConfig {
                bit: 41,
                kind: Parity::Odd,
                over: BitSet::range(21, 40),
            },
        ],
        bit_order: Default::default(),
    }
}

/// Formats beyond the first three: Corporate 1000 and H10302 built in, a format the site
/// defined by field map, and cards enrolled by their data bits, each from a published or
/// captured frame through the real binary; a misread bit in any of them is refused.
#[test]
fn field_map_formats_and_data_bit_values_open_the_door() {
    let dir = tempfile::tempdir().unwrap();
    seed_store(dir.path());
    let mut config: Config = doorflow_agent::testing::config::demo_config(dir.path(), "http://127.0.0.1:9");
    config.card_formats.push(civintec42());
    let front = &mut config.doors[0];
    front.facility_codes = Some(FacilityCodes::Only(vec![1337]));
    wiegand_reader(front).formats = vec![
        CardFormat::CORPORATE_1000_35,
        CardFormat::H10302,
        CardFormat::named("civintec42"),
    ];
    let server_room = &mut config.doors[1];
    server_room.card_value = CardValueMapping::DataBits;
    server_room.facility_codes = None;
    server_room.allowed_roles = vec![1];
    server_room.unlock_s = Seconds::new(0.5);
    wiegand_reader(server_room).formats = vec![CardFormat::H10306];
    let agent = AgentProcess::start_config(BINARY, &config, dir.path());

    for (door, bits, person) in [
        ("front", C1000_FC1337_CN2137, 8),
        ("front", H10302_CN123456789, 9),
        ("front", CIVINTEC42, 10),
        ("server-room", HIKVISION34_1234567890, 11),
    ] {
        send_bits_to(&agent, door, bits);
        let who = format!("person_id={person}");
        let lines = agent.wait_for_log(&[GRANTED, "reason=authorised", &who], 1);
        assert_eq!(lines.len(), 1, "{bits}: {lines:?}");
    }
    let mut refused = 0;
    for (door, bits) in [
        ("front", C1000_FC1337_CN2137),
        ("front", H10302_CN123456789),
        ("front", CIVINTEC42),
        ("server-room", HIKVISION34_1234567890),
    ] {
        for i in [0, 1, bits.len() / 2, bits.len() - 1] {
            send_bits_to(&agent, door, &flip(bits, i));
            refused += 1;
        }
    }
    agent.wait_for_log(&["card frame rejected", "reason=parity"], refused);
    assert_eq!(agent.log_lines_with(&[GRANTED]).len(), 4, "{}", agent.log());
}

#[test]
fn keypads_present_the_pin_as_typed() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path());
    for burst in EIGHT_BIT_6789 {
        send_bits(&agent, burst);
    }
    agent.wait_for_log(&[GRANTED, "event_code=11", "person_id=5"], 1);
    for burst in FOUR_BIT_6789 {
        send_bits(&agent, burst);
    }
    agent.wait_for_log(&[GRANTED, "event_code=11", "person_id=5"], 2);
    // The mock's own 8-bit keypad speaks the same wire format.
    let reply = agent.control(json!({"op": "pin", "door": "front", "digits": "6789", "eight_bit": true}));
    assert_eq!(reply["ok"], true, "{reply}");
    agent.wait_for_log(&[GRANTED, "event_code=11", "person_id=5"], 3);
    assert!(
        agent.log_lines_with(&["person_id=6"]).is_empty(),
        "9876's holder was named: {}",
        agent.log()
    );
}

#[test]
fn a_card_from_another_site_is_denied_as_wrong_facility_code() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path());
    // Person 7 holds number 30333 here, but this card's facility code (233) is not the door's.
    send_bits(&agent, PHOTOPROX_FC233_CN30333);
    let lines = agent.wait_for_log(
        &[": denied card", "event_code=20", "reason=wrong_facility_code"],
        1,
    );
    assert!(
        !lines[0].contains("person_id"),
        "a foreign card names nobody: {lines:?}"
    );
    assert!(agent.log_lines_with(&[GRANTED]).is_empty());
    // The journal names the card's facility code, so an integrator can set the list.
    agent.wait_for_log(
        &["does not list in facility_codes", "facility=233", "door=front"],
        1,
    );
}

/// The kind "hostile control requests": oversized PINs and bit strings are refused before
/// anything is generated, a flood of frames is bounded by the reader's queue, and after each
/// the next valid card is granted.
#[test]
fn no_control_request_deafens_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path());
    let card = || json!({"op": "wiegand", "door": "front", "bits": H10301_FC101_CN4095});
    let hostile = [
        json!({"op": "pin", "door": "front", "digits": "1".repeat(600)}),
        json!({"op": "pin", "door": "front", "digits": "1".repeat(10_000)}),
        json!({"op": "pin", "door": "front", "digits": "1".repeat(16), "eight_bit": true}),
        json!({"op": "wiegand", "door": "front", "bits": "1".repeat(10_000)}),
        json!({"op": "wiegand", "door": "front", "bits": "0".repeat(129)}),
        json!({"op": "card", "door": "front", "format": "h10304", "facility": 70_000, "number": 1}),
    ];
    let mut grants = 0;
    for request in hostile {
        let reply = agent.control(request.clone());
        assert_eq!(reply["ok"], false, "{request} → {reply}");
        assert_eq!(agent.control(card())["ok"], true);
        grants += 1;
        agent.wait_for_log(&[GRANTED, "person_id=1"], grants);
    }
    // A flood: as many 128-bit frames as the reader will queue (about 2 s on the wire), then
    // the card as soon as the reader takes it.
    let mut refused = 0;
    for _ in 0..20 {
        let reply = agent.control(json!({"op": "wiegand", "door": "front", "bits": "1".repeat(128)}));
        if reply["ok"] == false {
            assert!(reply["error"].as_str().unwrap().contains("busy"), "{reply}");
            refused += 1;
        }
    }
    assert!(refused > 0, "the reader's queue is bounded");
    while agent.control(card())["ok"] != true {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    grants += 1;
    agent.wait_for_log(&[GRANTED, "person_id=1"], grants);
    // A PIN too long for the door, then a valid PIN at once.
    let reply = agent.control(json!({"op": "pin", "door": "front", "digits": "1".repeat(15)}));
    assert_eq!(reply["ok"], true, "{reply}");
    agent.wait_for_log(&["PIN entry rejected", "reason=pin_too_long"], 1);
    for burst in EIGHT_BIT_6789 {
        send_bits(&agent, burst);
    }
    agent.wait_for_log(&[GRANTED, "event_code=11", "person_id=5"], 1);
}

const DEMO: &str = include_str!("../config/demo.toml");

/// demo.toml with its first `facility_codes` line replaced (asserted present, so a fixture that
/// stops matching fails loudly).
fn demo_with_facility_codes(line: &str) -> String {
    let original = "facility_codes = [1]\n";
    assert!(DEMO.contains(original), "demo.toml no longer has `{original}`");
    DEMO.replacen(original, line, 1)
}

#[test]
fn facility_codes_are_checked_by_the_parser_and_check_config() {
    for (line, needles) in [
        (
            "",
            vec![
                "doors[0].facility_codes",
                "door `front` has none",
                "required with card_value = \"number\"",
            ],
        ),
        (
            "facility_codes = []\n",
            vec!["facility_codes", "empty list would deny every card", "line 39"],
        ),
        (
            "facility_codes = \"all\"\n",
            vec!["facility_codes", "neither a list", "line 39"],
        ),
        (
            "facility_codes = [70000]\n",
            vec!["doors[0].facility_codes", "70000 cannot occur", "65535"],
        ),
    ] {
        let text = demo_with_facility_codes(line);
        let message = Config::parse(&text, "demo.toml").unwrap_err().to_string();
        for needle in needles {
            assert!(
                message.contains(needle),
                "`{line}`: `{needle}` missing from: {message}"
            );
        }
    }
    // `"any"` is a deliberate, written choice: accepted.
    let any = Config::parse(
        &demo_with_facility_codes("facility_codes = \"any\"\n"),
        "demo.toml",
    )
    .unwrap();
    assert_eq!(any.doors[0].facility_codes, Some(FacilityCodes::Any));
    assert_eq!(any.doors[0].policy().facility_codes, None);
    // Where the enrolled value holds the facility, no list is needed.
    let text = DEMO.replacen(
        "card_value = \"number\"\nfacility_codes = [1]\n",
        "card_value = \"facility_number\"\n",
        1,
    );
    assert!(Config::parse(&text, "demo.toml").is_ok());

    // The binary: check-config refuses a config without the list, naming the key.
    let (code, stderr) =
        doorflow_agent::testing::config::check_config_text(BINARY, &demo_with_facility_codes(""));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("doors[0].facility_codes"), "{stderr}");
}
