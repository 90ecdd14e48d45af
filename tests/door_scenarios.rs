//! Whole-door scenarios on the mock GPIO backend: card edges in through the control interface,
//! the real decoder, decision, door machine and relay, audit events out.

use doorflow_agent::audit::AuditEvent;
use doorflow_agent::config::values::Seconds;
use doorflow_agent::config::Config;
use doorflow_agent::door_task::{DoorState, DoorTask, SwipeTiming};
use doorflow_agent::hw::mock::{MockGpio, OutputChange};
use doorflow_agent::hw::DoorHardware;
use doorflow_agent::snapshot::*;
use doorflow_agent::testing::config::{wiegand_reader, wire_reader_feedback};
use doorflow_agent::testing::first_occurrences;
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
            CredentialType::new(1, "employee_card", CredentialKind::Card),
            CredentialType::new(2, "pin", CredentialKind::Pin),
        ],
        roles: vec![Role::unrestricted(1)],
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
    state: Arc<Mutex<DoorState>>,
    audit: mpsc::UnboundedReceiver<AuditEvent>,
    changes: broadcast::Receiver<OutputChange>,
    timings: mpsc::UnboundedReceiver<SwipeTiming>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Door {
    fn start(snapshot: Snapshot) -> Door {
        Door::start_with(config(), snapshot)
    }

    fn start_with(config: Config, snapshot: Snapshot) -> Door {
        let mock = MockGpio::new(&config, Default::default());
        let hardware = mock.open_door(0);
        Door::run(config, mock, hardware, snapshot)
    }

    fn run(config: Config, mock: Arc<MockGpio>, hardware: DoorHardware, snapshot: Snapshot) -> Door {
        let changes = mock.watch();
        let shared = Arc::new(SharedSnapshot::new(snapshot));
        let state = Arc::new(Mutex::new(DoorState::new(&config.doors[0])));
        let (audit_tx, audit) = mpsc::unbounded_channel();
        let (timings_tx, timings) = mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = DoorTask::new(
            &config,
            0,
            hardware,
            Arc::clone(&shared),
            Arc::clone(&state),
            audit_tx,
        )
        .with_timings(timings_tx);
        let task = tokio::spawn(task.run(stop.clone()));
        Door {
            mock,
            snapshot: shared,
            state,
            audit,
            changes,
            timings,
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

    /// A swipe, waiting while the simulated reader's queue is full.
    async fn swipe_when_ready(&self, number: u64) {
        let request =
            json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": number});
        loop {
            let reply = self.mock.handle(&request);
            if reply["ok"] == true {
                return;
            }
            assert!(reply["error"].as_str().unwrap().contains("busy"), "{reply}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    // `status` shows what the reader sent that was refused, and the learned frame end.
    let rejected = doorflow_agent::testing::eventually(WAIT, || {
        door.state.lock().unwrap().reader.rejected_frames == Some(2)
    })
    .await;
    let reader = door.state.lock().unwrap().reader.clone();
    assert!(rejected, "{reader:?}");
    assert_eq!(reader.last_rejected.as_deref(), Some("unsupported_length"));
    assert_eq!(
        reader.frame_end_us,
        Some(8_000),
        "4 × the mock's 2 ms bit interval"
    );
    assert!(reader
        .describe()
        .contains("2 frames rejected (last: unsupported_length)"));
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

/// A tag held at a long-range reader: 15 reads while the door is released for it are one grant,
/// one event and one admit; the event is sent once more when the reads stop, with the count.
#[tokio::test]
async fn a_tag_held_at_the_reader_is_one_grant_counted_on_its_event() {
    let mut config = config();
    // Generous, so a loaded machine's slower frames still fall inside the release.
    config.doors[0].unlock_s = Seconds::new(2.0);
    config.doors[0].repeat_window_s = Seconds::new(2.0);
    let mut door = Door::start_with(config, snapshot(ChannelMode::Normal, None));
    for _ in 0..15 {
        door.swipe_when_ready(17).await;
    }
    let first = door.event().await;
    assert_eq!(
        (first.event_code, first.person_id, first.repeats),
        (10, Some(17), 0)
    );
    assert!(first.admit, "one admit, with the grant");
    let update = door.event().await;
    assert_eq!(update.id, first.id, "the same event, updated");
    assert_eq!((update.repeats, update.admit), (14, false));
    assert!(update.updated_at.unwrap() > first.created_at);
    assert!(
        update.label().contains("read 14 more times"),
        "{}",
        update.label()
    );
    let mut timings = Vec::new();
    while let Ok(timing) = door.timings.try_recv() {
        timings.push(timing);
    }
    assert_eq!(timings.len(), 15);
    assert_eq!(timings.iter().filter(|t| t.repeat).count(), 14);
    // Released once, held through the reads, relocked once.
    assert!(door.relay_change().await.released);
    assert!(!door.relay_change().await.released);
    // The next read, after the run has ended, is a new grant.
    door.swipe(17);
    let next = door.event().await;
    assert_ne!(next.id, first.id);
    assert_eq!((next.event_code, next.repeats), (10, 0));
    assert!(!door.stop().await);
}

/// With `repeat_window_s = 0` every read is a grant of its own, as before.
#[tokio::test]
async fn without_a_repeat_window_every_read_is_granted() {
    let mut config = config();
    config.doors[0].unlock_s = Seconds::new(2.0);
    config.doors[0].repeat_window_s = Seconds::new(0.0);
    let mut door = Door::start_with(config, snapshot(ChannelMode::Normal, None));
    for _ in 0..3 {
        door.swipe_when_ready(17).await;
    }
    let ids: Vec<u64> = [door.event().await, door.event().await, door.event().await]
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(first_occurrences(&ids).len(), 3);
    door.no_event_for(Duration::from_millis(300)).await;
}

/// A Wiegand reader's LED and beeper lines play the grant and deny patterns on the mock's
/// `watch` stream, after the relay.
#[tokio::test]
async fn reader_led_and_beeper_lines_play_grant_and_deny() {
    use doorflow_agent::reader::feedback::{FeedbackPattern, LedColor};
    let mut config = config();
    let front = &mut config.doors[0];
    wire_reader_feedback(front, 5, 6);
    let reader = wiegand_reader(front);
    // Shorter than the 0.3 s release, so the LED goes out before the relay relocks.
    reader.feedback.grant = FeedbackPattern {
        led: Some(LedColor::Green),
        led_ms: 200,
        beeps: 1,
        beep_ms: 100,
    };
    reader.feedback.deny = FeedbackPattern {
        led: Some(LedColor::Red),
        led_ms: 300,
        beeps: 2,
        beep_ms: 100,
    };
    let mut door = Door::start_with(config, snapshot(ChannelMode::Normal, None));
    door.swipe(17);
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let change = door.relay_change().await;
        seen.push((change.line.clone(), change.active, change.timestamp_ns));
    }
    let lines: Vec<(&str, bool)> = seen.iter().map(|(l, a, _)| (l.as_str(), *a)).collect();
    assert_eq!(
        lines,
        [
            ("relay", true),
            ("led", true),
            ("beeper", true),
            ("beeper", false),
            ("led", false),
            ("relay", false)
        ],
        "relay first, then green and one beep"
    );
    // The pattern's steps are due at fixed offsets from its start, so a late "on" write (a
    // loaded or emulated machine) shortens the measured beep a little; it never doubles it.
    let beep_ms = (seen[3].2 - seen[2].2) / 1_000_000;
    assert!((80..2_000).contains(&beep_ms), "beeped for {beep_ms} ms");
    assert_eq!(door.event().await.event_code, 10);

    door.swipe(4242);
    let mut beeps = Vec::new();
    while beeps.len() < 4 {
        let change = door.relay_change().await;
        assert_eq!(
            change.line, "beeper",
            "a denial leaves the relay and the (red) LED alone"
        );
        beeps.push(change.active);
    }
    assert_eq!(beeps, [true, false, true, false]);
    let state = door.mock.handle(&json!({"op": "state", "door": 0}));
    assert_eq!(
        (state["led"].clone(), state["beeper"].clone()),
        (json!(false), json!(false))
    );
    assert!(!door.stop().await);
}

/// The frame end is learned: the first frame waits the configured 30 ms, later ones four times
/// the reader's bit interval (the mock's readers send a bit every 2 ms: 8 ms). With
/// `learn_frame_end = false` every frame waits 30 ms.
#[tokio::test]
async fn frames_end_after_the_learned_bit_period() {
    for (learn, second_ms) in [(true, 8), (false, 30)] {
        let mut config = config();
        wiegand_reader(&mut config.doors[0]).learn_frame_end = learn;
        let mut door = Door::start_with(config, snapshot(ChannelMode::Normal, None));
        let mut silences = Vec::new();
        for _ in 0..2 {
            door.swipe_when_ready(4242).await;
            let timing = tokio::time::timeout(WAIT, door.timings.recv())
                .await
                .unwrap()
                .unwrap();
            silences.push((timing.frame_end_ns - timing.last_edge_ns) / 1_000_000);
            assert!(
                timing.frame_seen_ns >= timing.frame_end_ns,
                "never before the end"
            );
        }
        assert_eq!(silences, [30, second_ms], "learn_frame_end = {learn}");
        door.stop().await;
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
    let state = stdout
        .lines()
        .find_map(|line| line.split_once("state in ").map(|(_, dir)| dir.trim()))
        .expect("the demo names its state directory");
    assert!(!std::path::Path::new(state).exists(), "{state} left behind");
}

/// A relay that only records what it was told.
struct RecordingRelay(Arc<Mutex<Vec<bool>>>);

impl doorflow_agent::hw::RelayOutput for RecordingRelay {
    fn set_released(&mut self, released: bool) -> Result<(), doorflow_agent::hw::GpioError> {
        self.0.lock().unwrap().push(released);
        Ok(())
    }
}

/// A door task fed raw edges, stamped as the test chooses (no mock reader pacing them).
struct EdgeDoor {
    edges: mpsc::Sender<doorflow_agent::hw::InputEvent>,
    audit: mpsc::UnboundedReceiver<AuditEvent>,
    relay: Arc<Mutex<Vec<bool>>>,
    state: Arc<Mutex<DoorState>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl EdgeDoor {
    fn start() -> EdgeDoor {
        let config = config();
        let (edges, events) = mpsc::channel(doorflow_agent::hw::EVENT_BUFFER);
        let relay = Arc::new(Mutex::new(Vec::new()));
        let hardware = DoorHardware {
            events,
            relay: Box::new(RecordingRelay(Arc::clone(&relay))),
            contact_open: Some(false),
            rex_pressed: Some(false),
            feedback: Default::default(),
        };
        let shared = Arc::new(SharedSnapshot::new(snapshot(ChannelMode::Normal, None)));
        let state = Arc::new(Mutex::new(DoorState::new(&config.doors[0])));
        let (audit_tx, audit) = mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = DoorTask::new(&config, 0, hardware, shared, Arc::clone(&state), audit_tx);
        let task = tokio::spawn(task.run(stop.clone()));
        EdgeDoor {
            edges,
            audit,
            relay,
            state,
            stop,
            task,
        }
    }

    /// Each edge as the GPIO backend reports it: a falling edge makes its line active.
    async fn send(&self, edges: Vec<doorflow_agent::wiegand::Edge>) {
        use doorflow_agent::hw::{DoorInput, InputEvent};
        use doorflow_agent::wiegand::{EdgeKind, WiegandLine};
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
            self.edges.send(event).await.unwrap();
        }
    }

    /// The next audit event, within `WAIT`.
    async fn event(&mut self) -> Option<AuditEvent> {
        tokio::time::timeout(WAIT, self.audit.recv()).await.ok().flatten()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// The kind "implausible edge timestamps", through a real door task: edges stamped a minute
/// ahead (what a 600-digit PIN used to produce), edges going backwards, a lone edge from boot
/// time, and floods. After each, the next valid card is granted: the decoder resynchronised.
#[tokio::test]
async fn no_edge_timestamp_deafens_the_door() {
    use doorflow_agent::credential::CardFormat;
    use doorflow_agent::hw::mock::reader::{edges_for, encode_card, PulseTiming};
    use doorflow_agent::hw::monotonic_ns;
    use doorflow_agent::wiegand::{Bits, Edge, EdgeKind, WiegandLine};
    const MS: u64 = 1_000_000;

    let mut door = EdgeDoor::start();
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
        door.send(hostile(monotonic_ns())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The card, its whole frame already in the past: as a real reader's edges arrive.
        door.send(edges_for(&card, monotonic_ns() - 60 * MS, &timing))
            .await;
        let event = door
            .event()
            .await
            .unwrap_or_else(|| panic!("{what}: the next card got no decision"));
        assert_eq!((event.event_code, event.person_id), (10, Some(17)), "{what}");
        while door.audit.try_recv().is_ok() {}
    }
    assert!(door.relay.lock().unwrap().contains(&true));
    door.stop().await;
}

/// A reader that pauses 12 ms inside a frame once its 2 ms bit interval is learned (8 ms frame
/// end): that one frame is split and both halves refused (never read as a card), the pause is
/// learned (status shows the longer frame end), and the same paused frame is then read whole.
#[tokio::test]
async fn a_pause_inside_a_frame_splits_it_once_then_is_learned() {
    use doorflow_agent::credential::CardFormat;
    use doorflow_agent::hw::mock::reader::{edges_for, encode_card, PulseTiming};
    use doorflow_agent::hw::monotonic_ns;
    use doorflow_agent::wiegand::Bits;
    const MS: u64 = 1_000_000;

    let mut door = EdgeDoor::start();
    let card = encode_card(CardFormat::H10301, 1, 17).unwrap();
    let timing = PulseTiming::default();
    // A card's edges, its bits 13 on coming 10 ms late, the whole frame already past.
    let paused = |card: &Bits| {
        let start = monotonic_ns() - 100 * MS;
        edges_for(card, start, &timing)
            .into_iter()
            .map(|mut edge| {
                if edge.timestamp_ns >= start + 26 * MS {
                    edge.timestamp_ns += 10 * MS;
                }
                edge
            })
            .collect::<Vec<_>>()
    };
    let reader = |door: &EdgeDoor| door.state.lock().unwrap().reader.clone();

    door.send(edges_for(&card, monotonic_ns() - 60 * MS, &timing))
        .await;
    let first = door.event().await.expect("a decision");
    assert_eq!(
        (first.event_code, first.person_id),
        (10, Some(17)),
        "learned 2 ms"
    );
    assert_eq!(reader(&door).frame_end_us, Some(8_000), "4 × 2 ms");

    door.send(paused(&card)).await;
    let split = doorflow_agent::testing::eventually(WAIT, || reader(&door).rejected_frames == Some(2)).await;
    assert!(split, "{:?}", reader(&door));
    assert_eq!(
        reader(&door).frame_end_us,
        Some(30_000),
        "4 × 12 ms, capped at 30 ms"
    );
    assert!(door.audit.try_recv().is_err(), "no half of the frame is a card");

    // Another card (17's would be a repeated read while the door is still released).
    door.send(paused(&encode_card(CardFormat::H10301, 1, 18).unwrap()))
        .await;
    let whole = door.event().await.expect("a decision");
    assert_eq!(
        (whole.event_code, whole.person_id),
        (20, Some(18)),
        "read whole, decided"
    );
    assert_eq!(reader(&door).rejected_frames, Some(2));
    door.stop().await;
}
