//! `doorflow-agent demo`: the agent with mock GPIO in one process, playing a scripted scenario
//! with a readable timeline. Needs no network, no hardware and no account.

use crate::agent::{self, Agent};
use crate::audit::AuditEvent;
use crate::cli_output::{write_stdout, OutputError};
use crate::config::{Config, ReaderConfig};
use crate::hw::mock::OutputChange;
use crate::osdp::emulator::{EmulatedReader, Seen};
use crate::status;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
const DEMO_DIR: &str = "/tmp/doorflow-agent-demo";

/// A timeline printer: seconds since the start, a subject column, a message.
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    /// Cancelled when stdout fails (its reader went away): the demo then stops and cleans up.
    gone: CancellationToken,
    /// Why stdout failed, for the exit once the demo has cleaned up.
    failure: Arc<Mutex<Option<OutputError>>>,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            start: Instant::now(),
            gone: CancellationToken::new(),
            failure: Arc::default(),
        }
    }

    /// Prints one line; after stdout failed, nothing.
    pub fn say(&self, subject: &str, message: impl AsRef<str>) {
        if self.gone.is_cancelled() {
            return;
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let line = format_args!("{elapsed:7.2}s  {subject:<12} {}\n", message.as_ref());
        if let Err(error) = write_stdout(line) {
            crate::mutex::lock(&self.failure).get_or_insert(error);
            self.gone.cancel();
        }
    }

    /// Resolves once stdout has failed.
    async fn output_gone(&self) {
        self.gone.cancelled().await
    }

    /// Why stdout failed, if it did.
    fn output_failure(&self) -> Option<OutputError> {
        crate::mutex::lock(&self.failure).take()
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

/// The demo config with its state under `dir`.
pub fn demo_config(dir: &Path) -> Config {
    let text = DEMO_CONFIG.replace(DEMO_DIR, &dir.display().to_string());
    // The embedded file is validated by the test suite; a failure here is a build defect.
    Config::parse(&text, "config/demo.toml (embedded)").expect("embedded demo config is valid")
}

/// A line-oriented client for the mock GPIO control socket.
struct Control {
    path: PathBuf,
}

impl Control {
    fn send(&self, request: Value) -> Result<Value, String> {
        let mut stream = UnixStream::connect(&self.path).map_err(|e| format!("mock GPIO socket: {e}"))?;
        writeln!(stream, "{request}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let reply: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if reply["ok"] != true {
            return Err(format!("{request} refused: {}", reply["error"]));
        }
        Ok(reply)
    }
}

fn describe(event: &AuditEvent) -> String {
    let who = event
        .person_id
        .map(|p| format!(" person {p}"))
        .unwrap_or_default();
    let credential = event
        .credential
        .as_deref()
        .map(|c| format!(" credential {c}"))
        .unwrap_or_default();
    let verdict = match event.event_code {
        10..=18 => "GRANTED",
        20..=29 => "DENIED",
        _ => "event",
    };
    format!(
        "{verdict} {} ({}){who}{credential}",
        event.event_code, event.reason
    )
}

/// How long an interrupted demo waits for its tasks before its state is removed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Runs the demo in a fresh private directory (a random name under `$TMPDIR`, mode 0700,
/// created new: never one that already exists), removed at the end, on SIGINT/SIGTERM/SIGHUP and when
/// stdout's reader goes away. Ends the process by SIGPIPE in that last case, as other tools do.
pub fn run() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("doorflow-agent-demo-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| format!("cannot create the demo's state directory: {e}"))?;
    let timeline = Timeline::new();
    let result = run_in(dir.path(), &timeline);
    let path = dir.path().display().to_string();
    let removed = dir
        .close()
        .map_err(|e| format!("the demo's state {path} could not be removed: {e}"));
    if let Some(error) = timeline.output_failure() {
        crate::cli_output::exit_on(error);
    }
    result.and(removed)
}

fn run_in(dir: &Path, timeline: &Timeline) -> Result<(), String> {
    let config = demo_config(dir);
    timeline.say(
        "demo",
        "doorflow-agent demo: mock GPIO doors, DoorFlow simulator on loopback, no hardware, no account",
    );
    timeline.say("demo", format!("state in {}", dir.display()));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let signal = crate::shutdown::on_signal();
        tokio::select! {
            result = scenario(config, timeline.clone()) => result,
            () = signal => Err(format!(
                "demo stopped by a signal before its end; its state {} is removed",
                dir.display()
            )),
            // The exit status says why (see `run`).
            () = timeline.output_gone() => Ok(()),
        }
    });
    // An interrupted scenario leaves the agent's tasks running: end them before the state goes.
    runtime.shutdown_timeout(STOP_WAIT);
    result
}

async fn scenario(config: Config, timeline: Timeline) -> Result<(), String> {
    // A DoorFlow simulator on loopback stands in for the cloud; the agent syncs from it.
    let sim = crate::sim::Simulator::start(crate::sim::SimConfig::default())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    timeline.say(
        "doorflow",
        format!("simulator listening on {} (200 people)", sim.base_url()),
    );
    let mut config = config;
    config.api.base_url = crate::config::ServiceUrl::parse(sim.base_url()).map_err(|e| e.to_string())?;
    config.uplink.events_url = Some(
        crate::config::ServiceUrl::parse(&format!("{}/events", sim.base_url())).map_err(|e| e.to_string())?,
    );
    if let Some(crate::config::SecretSource::File(path)) = &config.api.auth.api_key {
        crate::secrets::write_atomic(path, &crate::secrets::Secret::new("sim-api-key"))
            .map_err(|e| e.to_string())?;
    }
    let lobby_reader = start_emulated_reader(&mut config, &timeline)?;
    let agent = Agent::start(config.clone()).map_err(|e| e.to_string())?;
    let mut feed = agent.audit_feed.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(agent::serve(Arc::clone(&agent), async {
        let _ = stopped.await;
    }));
    let control = Control {
        path: config.gpio.mock_socket.clone(),
    };
    wait_for_socket(&control.path).await?;
    timeline.say(
        "agent",
        format!(
            "ready: {} doors on the mock GPIO backend; first sync running",
            config.doors.len()
        ),
    );
    for _ in 0..200 {
        if agent.snapshot.current().synced_at().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = agent.snapshot.current().counts();
    timeline.say(
        "sync",
        format!(
            "snapshot in force: {} people, {} credentials ({} API requests)",
            counts.people,
            counts.credentials,
            sim.requests()
        ),
    );

    // Print relay changes and audit events as they happen.
    let relay_timeline = timeline.clone();
    let mut changes = watch_relays(&control.path).await?;
    let relay_printer = tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            let what = match (change.line.as_str(), change.active) {
                ("relay", true) => "relay RELEASED",
                ("relay", false) => "relay locked",
                ("led", true) => "reader LED green",
                ("beeper", true) => "reader beeps",
                _ => continue,
            };
            relay_timeline.say(&change.door, what);
        }
    });
    let event_timeline = timeline.clone();
    let event_printer = tokio::spawn(async move {
        while let Ok(event) = feed.recv().await {
            event_timeline.say(&event.door, describe(&event));
        }
    });

    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    let card = |door: &str, number: u64| json!({"op": "card", "door": door, "format": "h10301", "facility": 1, "number": number});

    timeline.say("front", "card 17 presented (staff, 24/7 role)");
    control.send(card("front", 17))?;
    pause(3600).await;
    timeline.say("front", "card 4242 presented (not enrolled)");
    control.send(card("front", 4242))?;
    pause(600).await;
    timeline.say("front", "card 50 presented (person disabled)");
    control.send(card("front", 50))?;
    pause(600).await;
    timeline.say("front", "card 97 presented (valid_to has passed)");
    control.send(card("front", 97))?;
    pause(600).await;
    timeline.say("front", "card 17 of another site presented (facility code 2)");
    control.send(json!({"op": "card", "door": "front", "format": "h10301", "facility": 2, "number": 17}))?;
    pause(600).await;
    timeline.say("front", "PIN 500005 typed on the keypad, then #");
    control.send(json!({"op": "pin", "door": "front", "digits": "500005"}))?;
    pause(3600).await;
    timeline.say(
        "server-room",
        "card 1/3 presented (office-hours role, weekdays 08:00-18:00 London)",
    );
    control.send(card("server-room", 3))?;
    pause(2600).await;
    osdp_reader_scenario(&agent, &lobby_reader, &timeline).await?;
    timeline.say("front", "exit button pressed");
    control.send(json!({"op": "input", "door": "front", "line": "rex", "value": true}))?;
    pause(100).await;
    control.send(json!({"op": "input", "door": "front", "line": "rex", "value": false}))?;
    pause(3600).await;
    timeline.say("front", "door pushed open without a grant");
    control.send(json!({"op": "input", "door": "front", "line": "contact", "value": true}))?;
    pause(1000).await;
    timeline.say("front", "door closed again");
    control.send(json!({"op": "input", "door": "front", "line": "contact", "value": false}))?;
    pause(600).await;

    network_drop_and_recovery(&agent, &sim, &control, &timeline).await?;

    timeline.say(
        "doorflow",
        "front door channel put into lockdown on DoorFlow; the agent syncs",
    );
    sim.set_lockdown(1340, true);
    let client = crate::doorflow::client::Client::new(&config.api, Arc::clone(&agent.budget))
        .map_err(|e| e.to_string())?;
    crate::sync::sync_once(&agent.sync_target(Default::default()), &client)
        .await
        .map_err(|e| format!("sync: {e}"))?;
    let mode = status::door_mode(&agent.snapshot.current(), Some(1340), jiff::Timestamp::now());
    timeline.say(
        "sync",
        format!(
            "{} sync done: front door mode is now {mode}",
            agent.status().sync.last_kind.unwrap_or_default()
        ),
    );
    pause(800).await;
    timeline.say("front", "card 17 presented during the lockdown");
    control.send(card("front", 17))?;
    pause(800).await;
    wait_for_drain(&agent, Duration::from_secs(30)).await;

    let report = agent.status();
    timeline.say(
        "summary",
        status::render(&report)
            .trim_end()
            .replace('\n', "\n                      "),
    );
    summarise(&agent, &sim, &timeline)?;
    let _ = stop.send(());
    serving
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    relay_printer.abort();
    event_printer.abort();
    timeline.say(
        "demo",
        "agent stopped: doors left locked (fail-secure), store flushed",
    );
    Ok(())
}

/// The lobby's OSDP reader: an emulated factory-fresh reader (LibOSDP in the PD role) on a
/// pseudo-terminal, so the agent's real control panel code drives it as it would a reader on
/// RS-485.
fn start_emulated_reader(config: &mut Config, timeline: &Timeline) -> Result<EmulatedReader, String> {
    let reader = EmulatedReader::start(0, None).map_err(|e| format!("emulated OSDP reader: {e}"))?;
    for door in &mut config.doors {
        if let ReaderConfig::Osdp(osdp) = &mut door.reader {
            osdp.port = reader.port().clone();
        }
    }
    timeline.say(
        "lobby",
        format!(
            "emulated OSDP reader in install mode on {} (a pseudo-terminal standing in for RS-485)",
            reader.port().display()
        ),
    );
    Ok(reader)
}

fn describe_feedback(seen: &Seen) -> String {
    match seen {
        Seen::Led(led) => format!(
            "reader LED {:?} for {:.1}s",
            led.temporary.on_color,
            f64::from(led.temporary.timer_count) / 10.0
        ),
        Seen::Buzzer(buzzer) => format!("reader beeps {}x", buzzer.rep_count),
        Seen::KeySet => "reader received its own secure channel key (osdp_KEYSET)".into(),
    }
}

/// Waits until the lobby reader's status satisfies `ready`, printing what the reader saw.
async fn wait_for_lobby_reader(
    agent: &Agent,
    reader: &EmulatedReader,
    timeline: &Timeline,
    ready: impl Fn(&crate::reader::ReaderStatus) -> bool,
) -> Result<crate::reader::ReaderStatus, String> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        for seen in reader.seen() {
            timeline.say("lobby", describe_feedback(&seen));
        }
        let status = agent
            .status()
            .doors
            .into_iter()
            .find(|d| d.name == "lobby")
            .map(|d| d.reader)
            .ok_or("the demo config has no lobby door")?;
        if ready(&status) {
            return Ok(status);
        }
        if Instant::now() > end {
            return Err(format!("lobby reader: {}", status.describe()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The OSDP reader: its key installed, a grant and a denial with LED and buzzer, the reader
/// unplugged (loss of communication is an event) and back.
async fn osdp_reader_scenario(
    agent: &Agent,
    reader: &EmulatedReader,
    timeline: &Timeline,
) -> Result<(), String> {
    let online = |s: &crate::reader::ReaderStatus| s.state == "online";
    let status = wait_for_lobby_reader(agent, reader, timeline, online).await?;
    timeline.say("lobby", format!("reader {}", status.describe()));
    let bits =
        |number| crate::hw::mock::reader::encode_card(crate::credential::CardFormat::H10301, 1, number);
    for (number, who) in [(17, "staff, 24/7 role"), (4242, "not enrolled")] {
        timeline.say(
            "lobby",
            format!("card {number} presented at the OSDP reader ({who})"),
        );
        reader.present_card(bits(number).map_err(|e| e.to_string())?);
        // What the reader is told to show, as it arrives.
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for seen in reader.seen() {
                timeline.say("lobby", describe_feedback(&seen));
            }
        }
    }
    timeline.say("lobby", "OSDP reader unplugged");
    reader.set_power(false);
    let offline = |s: &crate::reader::ReaderStatus| s.state == "offline";
    let status = wait_for_lobby_reader(agent, reader, timeline, offline).await?;
    timeline.say("lobby", format!("reader {}", status.describe()));
    timeline.say("lobby", "OSDP reader plugged back in");
    reader.set_power(true);
    let status = wait_for_lobby_reader(agent, reader, timeline, online).await?;
    timeline.say("lobby", format!("reader {}", status.describe()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// The network drops; swipes are still decided locally and their calls queue on disk. It comes
/// back into a burst of 429s and server errors, and the queue drains in order.
async fn network_drop_and_recovery(
    agent: &Arc<Agent>,
    sim: &crate::sim::Simulator,
    control: &Control,
    timeline: &Timeline,
) -> Result<(), String> {
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    let card = |number: u64| json!({"op": "card", "door": "front", "format": "h10301", "facility": 1, "number": number});
    wait_for_drain(agent, Duration::from_secs(20)).await;
    timeline.say(
        "network",
        "DoorFlow unreachable: the uplink can no longer connect",
    );
    sim.set_offline(true);
    let uplink_printer = tokio::spawn(print_uplink_changes(Arc::clone(agent), timeline.clone()));
    for number in [21, 4242, 33, 44] {
        timeline.say("front", format!("card {number} presented while offline"));
        control.send(card(number))?;
        pause(900).await;
    }
    let queue = agent.queue_status();
    timeline.say(
        "queue",
        format!(
            "{} calls waiting on disk ({} admits, {} events); swipes were decided locally",
            queue.pending, queue.pending_admits, queue.pending_events
        ),
    );
    timeline.say(
        "network",
        "DoorFlow reachable again, but answering with a 429 burst, then 503 and 502",
    );
    sim.inject("/events", crate::sim::Fault::RateLimited { retry_after_s: 3 });
    sim.inject("/events", crate::sim::Fault::Status(503));
    sim.inject("/events", crate::sim::Fault::NonJson);
    sim.set_offline(false);
    wait_for_drain(agent, Duration::from_secs(40)).await;
    let queue = agent.queue_status();
    timeline.say(
        "queue",
        format!("drained: {} pending, {} dead", queue.pending, queue.dead),
    );
    uplink_printer.abort();
    Ok(())
}

/// Prints the uplink's state whenever it changes (online, paused until…, backing off…).
async fn print_uplink_changes(agent: Arc<Agent>, timeline: Timeline) {
    let mut last_state = String::new();
    loop {
        let queue = agent.queue_status();
        if queue.uplink != last_state {
            let until = queue
                .uplink_until
                .map(|t| {
                    let wait = t.duration_since(jiff::Timestamp::now()).as_secs_f64().max(0.0);
                    format!(" for {wait:.1}s")
                })
                .unwrap_or_default();
            let error = queue
                .last_error
                .filter(|_| queue.uplink != "online" && queue.uplink != "idle")
                .map(|e| format!(" ({})", e.chars().take(90).collect::<String>()))
                .unwrap_or_default();
            timeline.say(
                "uplink",
                format!("uplink {}{until}{error}; {} pending", queue.uplink, queue.pending),
            );
            last_state = queue.uplink;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_drain(agent: &Agent, limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end && agent.queue_status().pending > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the audit trail looks like at the end: everything the doors produced reached DoorFlow.
fn summarise(agent: &Agent, sim: &crate::sim::Simulator, timeline: &Timeline) -> Result<(), String> {
    let stats = agent.store.outbox_stats().map_err(|e| e.to_string())?;
    let received = sim.received_events();
    let unique: std::collections::HashSet<u64> =
        received.iter().filter_map(|r| r.body["id"].as_u64()).collect();
    timeline.say(
        "summary",
        format!(
            "{} door events delivered to the event sink ({} duplicate deliveries), {} admits accepted by DoorFlow, {} pending, {} dead, {} dropped",
            unique.len(),
            received.len() - unique.len(),
            sim.received_admits().len(),
            stats.pending,
            stats.dead,
            stats.dropped_events
        ),
    );
    Ok(())
}

async fn wait_for_socket(path: &Path) -> Result<(), String> {
    for _ in 0..200 {
        if UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("the agent did not open {}", path.display()))
}

/// Subscribes to the mock backend's relay changes through its control socket.
async fn watch_relays(path: &Path) -> Result<tokio::sync::mpsc::UnboundedReceiver<OutputChange>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"{\"op\":\"watch\"}\n")
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = tokio::io::BufReader::new(stream).lines();
    // The first line confirms the subscription: changes from here on are not missed.
    lines.next_line().await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Ok(change) = serde_json::from_value::<OutputChange>(value["change"].clone()) {
                if tx.send(change).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
