//! Whole-door scenarios on the mock GPIO backend: card edges in through the control interface,
//! the real decoder, decision, door machine and relay, audit events out.

use doorflow_agent::audit::AuditEvent;
use doorflow_agent::config::values::Seconds;
use doorflow_agent::config::Config;
use doorflow_agent::door_task::{DoorState, DoorTask};
use doorflow_agent::hw::mock::{MockGpio, OutputChange};
use doorflow_agent::hw::DoorHardware;
use doorflow_agent::snapshot::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const WAIT: Duration = Duration::from_secs(10);

fn config() -> Config {
    let mut config = doorflow_agent::testing::config::demo();
    config.doors[0].unlock_s = Seconds::new(0.3);
    config.doors[0].held_open_s = Seconds::new(1.0);
    config
}

fn person(id: u64, enabled: bool, valid_to: Option<&str>) -> Person {
    Person {
        id,
        enabled,
        valid_from: None,
        valid_to: valid_to.map(|t| t.parse().unwrap()),
        roles: vec![1],
        groups: vec![],
    }
}

fn snapshot(front_mode: ChannelMode, lockdown: Option<Lockdown>) -> Snapshot {
    let parts = SnapshotParts {
        people: vec![
            person(17, true, None),
            person(18, false, None),
            person(19, true, Some("2020-01-01T00:00:00Z")),
        ],
        credentials: [17, 18, 19]
            .iter()
            .map(|&id| Credential {
                id: format!("c{id}"),
                credential_type_id: 1,
                person_id: id,
                value: id.to_string(),
                status: None,
            })
            .chain(std::iter::once(Credential {
                id: "pin17".into(),
                credential_type_id: 2,
                person_id: 17,
                value: "500017".into(),
                status: None,
            }))
            .collect(),
        credential_types: vec![
            CredentialType {
                id: 1,
                slug: "employee_card".into(),
                kind: CredentialKind::Card,
            },
            CredentialType {
                id: 2,
                slug: "pin".into(),
                kind: CredentialKind::Pin,
            },
        ],
        roles: vec![Role {
            id: 1,
            shift_id: None,
            channel_ids: vec![],
            group_ids: vec![],
        }],
        channels: vec![Channel {
            id: 1340,
            mode: front_mode,
            lockdown,
            site_id: None,
        }],
        ..Default::default()
    };
    Snapshot::new(parts, "UTC")
}

struct Door {
    mock: Arc<MockGpio>,
    snapshot: Arc<SharedSnapshot>,
    audit: mpsc::UnboundedReceiver<AuditEvent>,
    changes: broadcast::Receiver<OutputChange>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Door {
    fn start(snapshot: Snapshot) -> Door {
        let config = config();
        let mock = MockGpio::new(&config, Default::default());
        let hardware = mock.open_door(0);
        Door::run(config, mock, hardware, snapshot)
    }

    fn run(config: Config, mock: Arc<MockGpio>, hardware: DoorHardware, snapshot: Snapshot) -> Door {
        let changes = mock.watch();
        let shared = Arc::new(SharedSnapshot::new(snapshot));
        let state = Arc::new(Mutex::new(DoorState::new(&config.doors[0])));
        let (audit_tx, audit) = mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = DoorTask::new(&config.doors[0], hardware, Arc::clone(&shared), state, audit_tx);
        let task = tokio::spawn(task.run(stop.clone()));
        Door {
            mock,
            snapshot: shared,
            audit,
            changes,
            stop,
            task,
        }
    }

    fn send(&self, request: Value) {
        let reply = self.mock.handle(&request);
        assert_eq!(reply["ok"], true, "{request} → {reply}");
    }

    fn swipe(&self, number: u64) {
        self.send(
            json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": number}),
        );
    }

    async fn event(&mut self) -> AuditEvent {
        tokio::time::timeout(WAIT, self.audit.recv())
            .await
            .expect("no audit event")
            .unwrap()
    }

    async fn relay_change(&mut self) -> OutputChange {
        tokio::time::timeout(WAIT, self.changes.recv())
            .await
            .expect("no relay change")
            .unwrap()
    }

    fn relay_released(&self) -> bool {
        self.mock.handle(&json!({"op": "state", "door": 0}))["relay"]["released"] == true
    }

    async fn no_event_for(&mut self, wait: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(wait, self.audit.recv()).await {
            panic!("unexpected event {event:?}");
        }
    }

    async fn stop(self) -> bool {
        self.stop.cancel();
        self.task.await.unwrap();
        self.mock.handle(&json!({"op": "state", "door": 0}))["relay"]["released"] == true
    }
}

/// ARCHITECTURE.md's invariant: the relay is written before anything is logged, stored or
/// sent. The mock publishes a relay change synchronously inside the write, so by the time the
/// audit event reaches the writer's channel the change must already be there.
#[tokio::test]
async fn the_relay_is_written_before_the_event_is_handed_on() {
    let mut door = Door::start(snapshot(ChannelMode::Normal, None));
    door.swipe(17);
    let event = door.event().await;
    assert_eq!(event.event_code, 10);
    let change = door
        .changes
        .try_recv()
        .expect("the relay change was published before the audit event");
    assert!(change.released);
    assert!(!door.stop().await);
}

#[tokio::test]
async fn valid_card_opens_then_relocks() {
    let mut door = Door::start(snapshot(ChannelMode::Normal, None));
    door.swipe(17);
    let change = door.relay_change().await;
    assert!(change.released);
    let event = door.event().await;
    assert_eq!((event.event_code, event.person_id), (10, Some(17)));
    assert_eq!(
        event.credential.as_deref(),
        Some("****"),
        "2-digit value fully masked"
    );
    assert!(event.admit, "front has admit_via_api");
    let relock = door.relay_change().await;
    assert!(!relock.released);
    let held_ms = (relock.timestamp_ns - change.timestamp_ns) / 1_000_000;
    assert!((300..5000).contains(&held_ms), "released for {held_ms} ms");
    assert!(!door.stop().await, "fail-secure: locked after stop");
}

/// Issue 11: a fail-safe door is locked from the moment its line is requested, whatever the
/// backend did, and released only when it stops. The mock models the level a line request
/// asks for, so a door whose relay was requested released (the old start-up) is seen released
/// until its task writes its own starting state.
#[tokio::test]
async fn fail_safe_door_starts_locked_and_stops_released() {
    for active_low in [false, true] {
        let mut config = config();
        config.doors[0].fail_mode = doorflow_agent::config::FailMode::Safe;
        config.doors[0].relay.active_low = active_low;

        // As the agent opens it: the request itself holds the door locked.
        let mock = MockGpio::new(&config, Default::default());
        let _hardware = mock.open_door(0);
        let state = mock.handle(&json!({"op": "state", "door": 0}));
        assert_eq!(
            state["relay"]["released"], false,
            "active_low={active_low}: {state}"
        );
        assert_eq!(state["relay"]["level"], active_low, "the locked level on the pin");

        // Requested released (the fail state, as start-up used to): the door task locks it.
        let mock = MockGpio::new(&config, Default::default());
        let hardware = mock.open_door_with_relay(0, true);
        let door = Door::run(
            config,
            Arc::clone(&mock),
            hardware,
            snapshot(ChannelMode::Normal, None),
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        while door.relay_released() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the door task never wrote its starting state"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(door.stop().await, "fail-safe: released after stop");
    }
}

#[tokio::test]
async fn unknown_disabled_and_expired_are_denied_without_touching_the_relay() {
    let mut door = Door::start(snapshot(ChannelMode::Normal, None));
    for (number, reason) in [
        (4242, "unknown_credential"),
        (18, "person_disabled"),
        (19, "person_expired"),
    ] {
        door.swipe(number);
        let event = door.event().await;
        assert_eq!((event.event_code, event.reason.as_str()), (20, reason));
        assert!(!event.admit);
    }
    assert!(!door.relay_released());
    assert!(door.changes.try_recv().is_err(), "relay must not have moved");
}

#[tokio::test]
async fn pin_on_the_keypad_opens() {
    let mut door = Door::start(snapshot(ChannelMode::Normal, None));
    door.send(json!({"op": "pin", "door": "front", "digits": "500017"}));
    let event = door.event().await;
    assert_eq!((event.event_code, event.person_id), (11, Some(17)));
    assert!(door.relay_change().await.released);
}

#[tokio::test]
async fn bad_parity_and_noise_never_grant() {
    let mut door = Door::start(snapshot(ChannelMode::Normal, None));
    // Facility 1 card 17 in H10301 with its trailing odd-parity bit flipped.
    let good =
        doorflow_agent::hw::mock::reader::encode_card(doorflow_agent::credential::CardFormat::H10301, 1, 17)
            .unwrap();
    let mut bad = good.to_string();
    let last = bad.pop().unwrap();
    bad.push(if last == '1' { '0' } else { '1' });
    door.send(json!({"op": "wiegand", "door": "front", "bits": bad}));
    door.send(json!({"op": "wiegand", "door": "front", "bits": "101"}));
    door.no_event_for(Duration::from_millis(400)).await;
    assert!(!door.relay_released());
}

#[tokio::test]
async fn unlock_mode_holds_and_lockdown_locks() {
    let mut door = Door::start(snapshot(ChannelMode::Unlock { relock_at: None }, None));
    assert!(
        door.relay_change().await.released,
        "unlock mode releases without a swipe"
    );
    door.swipe(4242);
    assert_eq!(door.event().await.event_code, 16);

    door.snapshot.replace(Arc::new(snapshot(
        ChannelMode::Unlock { relock_at: None },
        Some(Lockdown {
            cards: true,
            rex: true,
        }),
    )));
    assert!(
        !door.relay_change().await.released,
        "lockdown locks within the mode check"
    );
    door.swipe(17);
    assert_eq!(door.event().await.event_code, 22);
    door.send(json!({"op": "input", "door": "front", "line": "rex", "value": true}));
    let event = door.event().await;
    assert_eq!(event.event_code, 30, "REX is reported but ignored in lockdown");
    door.no_event_for(Duration::from_millis(300)).await;
    assert!(!door.relay_released());
}

#[tokio::test]
async fn rex_releases_and_opening_is_not_forced() {
    let mut door = Door::start(snapshot(ChannelMode::Normal, None));
    door.send(json!({"op": "input", "door": "front", "line": "rex", "value": true}));
    assert_eq!(door.event().await.event_code, 30);
    assert_eq!(door.event().await.event_code, 13);
    assert!(door.relay_change().await.released);
    door.send(json!({"op": "input", "door": "front", "line": "contact", "value": true}));
    door.send(json!({"op": "input", "door": "front", "line": "contact", "value": false}));
    door.no_event_for(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn forced_open_then_held_open_then_normal() {
    let mut door = Door::start(snapshot(ChannelMode::Normal, None));
    door.send(json!({"op": "input", "door": "front", "line": "contact", "value": true}));
    assert_eq!(door.event().await.event_code, 32);
    let held = door.event().await; // after held_open_s = 1
    assert_eq!((held.event_code, held.reason.as_str()), (33, "held_open"));
    door.send(json!({"op": "input", "door": "front", "line": "contact", "value": false}));
    assert_eq!(door.event().await.event_code, 31);
}

#[tokio::test]
async fn control_requests_are_validated() {
    let door = Door::start(snapshot(ChannelMode::Normal, None));
    for (request, needle) in [
        (
            json!({"op": "card", "door": "back", "format": "h10301", "number": 1}),
            "no door named",
        ),
        (
            json!({"op": "card", "door": 0, "format": "h10301", "facility": 300, "number": 1}),
            "facility",
        ),
        (json!({"op": "wiegand", "door": 0, "bits": "01x"}), "bits"),
        (
            json!({"op": "input", "door": 1, "line": "contact", "value": true}),
            "no Contact input",
        ),
        (json!({"op": "dance"}), "unknown op"),
    ] {
        let reply = door.mock.handle(&request);
        assert_eq!(reply["ok"], false, "{request}");
        assert!(reply["error"].as_str().unwrap().contains(needle), "{reply}");
    }
}

#[test]
fn the_demo_runs_its_scenario() {
    let out = doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
        .arg("demo")
        .env("DOORFLOW_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "GRANTED 10 (authorised) person 17",
        "DENIED 20 (unknown_credential)",
        "DENIED 20 (person_disabled) person 50",
        "DENIED 20 (person_expired) person 97",
        "DENIED 20 (wrong_facility_code) credential ****\n",
        "GRANTED 11 (authorised) person 5 credential ****\n",
        "GRANTED 13 (request_to_exit)",
        "event 32 (forced_open)",
        "event 31 (door_normal)",
        "DENIED 22 (lockdown) person 17",
        "relay RELEASED",
        "calls waiting on disk",
        "uplink paused",
        "drained: 0 pending, 0 dead",
        "duplicate deliveries), 5 admits accepted by DoorFlow, 0 pending, 0 dead, 0 dropped",
        "front door mode is now lockdown",
        "doors left locked",
        // The lobby's emulated OSDP reader: key installed, feedback, loss and return.
        "reader received its own secure channel key (osdp_KEYSET)",
        "reader osdp /dev/pts/",
        "reader LED Green for 2.0s",
        "reader beeps 2x",
        "event 34 (reader_no_answer)",
        "event 35 (reader_online)",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from the demo output:\n{stdout}"
        );
    }
}

/// A relay that only records what it was told.
struct RecordingRelay(Arc<Mutex<Vec<bool>>>);

impl doorflow_agent::hw::RelayOutput for RecordingRelay {
    fn set_released(&mut self, released: bool) -> Result<(), doorflow_agent::hw::GpioError> {
        self.0.lock().unwrap().push(released);
        Ok(())
    }
}

/// The kind "implausible edge timestamps", through a real door task: edges stamped a minute
/// ahead (what a 600-digit PIN used to produce), edges going backwards, a lone edge from boot
/// time, and floods. After each, the next valid card is granted: the decoder resynchronised.
#[tokio::test]
async fn no_edge_timestamp_deafens_the_door() {
    use doorflow_agent::credential::CardFormat;
    use doorflow_agent::hw::mock::reader::{edges_for, encode_card, PulseTiming};
    use doorflow_agent::hw::{monotonic_ns, DoorHardware, DoorInput, InputEvent, EVENT_BUFFER};
    use doorflow_agent::wiegand::{Bits, Edge, EdgeKind, WiegandLine};
    const MS: u64 = 1_000_000;

    let config = config();
    let (edges_tx, events) = mpsc::channel(EVENT_BUFFER);
    let relay = Arc::new(Mutex::new(Vec::new()));
    let hardware = DoorHardware {
        events,
        relay: Box::new(RecordingRelay(Arc::clone(&relay))),
        contact_open: Some(false),
        rex_pressed: Some(false),
    };
    let shared = Arc::new(SharedSnapshot::new(snapshot(ChannelMode::Normal, None)));
    let state = Arc::new(Mutex::new(DoorState::new(&config.doors[0])));
    let (audit_tx, mut audit) = mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = DoorTask::new(&config.doors[0], hardware, shared, state, audit_tx);
    let task = tokio::spawn(task.run(stop.clone()));

    let send = |edges: Vec<Edge>| {
        let tx = edges_tx.clone();
        async move {
            for edge in edges {
                let event = InputEvent {
                    input: if edge.line == WiegandLine::D0 {
                        DoorInput::D0
                    } else {
                        DoorInput::D1
                    },
                    active: edge.kind == EdgeKind::Falling,
                    timestamp_ns: edge.timestamp_ns,
                };
                tx.send(event).await.unwrap();
            }
        }
    };
    fn bit(line: WiegandLine, timestamp_ns: u64) -> Edge {
        Edge {
            line,
            kind: EdgeKind::Falling,
            timestamp_ns,
        }
    }
    let card = encode_card(CardFormat::H10301, 1, 17).unwrap();
    let ones = Bits::from_value(u128::MAX, 100);
    let timing = PulseTiming::default();
    /// Hostile edges, given the monotonic clock's reading.
    type Hostile = Box<dyn Fn(u64) -> Vec<Edge>>;
    let cases: Vec<(&str, Hostile)> = vec![
        (
            "a long PIN stamped up to a minute ahead",
            Box::new(|now| {
                (0..6_000u64)
                    .map(|i| bit(WiegandLine::D1, now + 1_000 * MS + i * 10 * MS))
                    .collect()
            }),
        ),
        (
            "a card whose stamps go backwards mid-frame",
            Box::new(move |now| {
                let mut edges = edges_for(&card, now - 60 * MS, &timing);
                edges.insert(20, bit(WiegandLine::D0, now - 5_000 * MS));
                edges
            }),
        ),
        (
            "a lone edge stamped at boot",
            Box::new(|_| vec![bit(WiegandLine::D0, 1)]),
        ),
        (
            "a stamp at the end of time",
            Box::new(|_| vec![bit(WiegandLine::D0, u64::MAX)]),
        ),
        (
            "a flood of 4,000 edges 10 µs apart",
            Box::new(|now| {
                (0..4_000u64)
                    .map(|i| bit(WiegandLine::D0, now - 60 * MS + i * 10_000))
                    .collect()
            }),
        ),
        (
            "100 bits of noise",
            Box::new(move |now| edges_for(&ones, now - 250 * MS, &timing)),
        ),
    ];
    for (what, hostile) in cases {
        send(hostile(monotonic_ns())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The card, its whole frame already in the past: as a real reader's edges arrive.
        send(edges_for(&card, monotonic_ns() - 60 * MS, &timing)).await;
        let event = tokio::time::timeout(WAIT, audit.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: the next card got no decision"))
            .unwrap();
        assert_eq!((event.event_code, event.person_id), (10, Some(17)), "{what}");
        while audit.try_recv().is_ok() {}
    }
    assert!(relay.lock().unwrap().contains(&true));
    stop.cancel();
    task.await.unwrap();
}
