//! Command-line entry point: `doorflow-agent run | check-config | status | demo`.

use clap::{Parser, Subcommand};
use doorflow_agent::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use doorflow_agent::{admin, agent, demo, status, store, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for an invalid configuration (as `check-config` promises).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "doorflow-agent",
    version,
    about = "Door-controller agent for DoorFlow: reads Wiegand card readers, drives door strikes, \
             decides every swipe locally from a cached snapshot and keeps the DoorFlow cloud in step.",
    after_help = "Exit codes: 0 success, 1 runtime failure, 2 invalid configuration.\n\
                  Logging: DOORFLOW_LOG=debug (filter), DOORFLOW_LOG_TARGET=journald|stderr."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "DOORFLOW_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load the snapshot, open the admin socket, serve the doors until SIGTERM.
    Run,
    /// Validate the configuration file; exit 0 with a summary, or 2 naming the key at fault.
    CheckConfig,
    /// Show snapshot counts, last sync, queue depth and door states (from the running agent
    /// through its admin socket, or from the store when the agent is stopped).
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Play the built-in demonstration: the agent with mock GPIO doors, a scripted scenario and
    /// a readable timeline. No network, hardware or account needed.
    Demo,
    /// Run the built-in DoorFlow API simulator on a loopback port for manual testing.
    Simulate {
        #[arg(long, default_value_t = 18080)]
        port: u16,
        /// Size of the generated dataset.
        #[arg(long, default_value_t = 200)]
        people: u64,
        /// Requests allowed per minute before 429.
        #[arg(long, default_value_t = 120)]
        limit: u32,
        /// Fail this fraction of all requests at random (0.0 to 1.0): 5xx, HTML 502, old-style
        /// 500, 429, dropped connections and 30 s answers. Seeded, so runs repeat.
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        chaos: Option<f64>,
        /// Seed for --chaos.
        #[arg(long, default_value_t = 1, requires = "chaos")]
        chaos_seed: u64,
        /// Lifetime of issued OAuth access tokens.
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        token_lifetime: u64,
        /// File holding a bearer token the event sink (`POST /events`) then requires.
        #[arg(long, value_name = "FILE")]
        sink_token: Option<PathBuf>,
        /// Put this channel in lockdown (cards and exit buttons) from the start; repeatable.
        #[arg(long, value_name = "CHANNEL_ID")]
        lockdown: Vec<u64>,
    },
    /// Inspect and manage the outbox of queued admit and event calls.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// List queued calls, oldest first (JSON lines).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List dead letters: calls DoorFlow refused or that expired (JSON lines).
    Dead {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on the queue: one by id (or key), or all with --all.
    RetryDead {
        /// The call id (as in `queue dead`) or its key.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    PurgeDead,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => match Config::load(&cli.config).and_then(|config| {
            let unchecked = check_gpio_lines(&cli.config, &config)?;
            Ok((config, unchecked))
        }) {
            Ok((config, unchecked)) => {
                println!("{}: ok", cli.config.display());
                println!("{}", config.summary());
                if !unchecked.is_empty() {
                    println!(
                        "GPIO line offsets not checked against {} (not present here)",
                        unchecked.join(", ")
                    );
                }
                ExitCode::SUCCESS
            }
            Err(error) => config_failure(&error),
        },
        Command::Run => {
            telemetry::init();
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(error) => return config_failure(&error),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => return failure(&format!("cannot start the runtime: {error}")),
            };
            match runtime.block_on(async {
                // Handlers first: a SIGTERM during start-up must still stop cleanly.
                let shutdown = agent::shutdown_signal();
                agent::run(config, shutdown).await
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "agent stopped with an error");
                    failure(&error.to_string())
                }
            }
        }
        Command::Status { json } => {
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(error) => return config_failure(&error),
            };
            match gather_status(&config) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    } else {
                        print!("{}", status::render(&report));
                    }
                    ExitCode::SUCCESS
                }
                Err(message) => failure(&message),
            }
        }
        Command::Demo => {
            telemetry::init_with_default("error");
            match demo::run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => failure(&message),
            }
        }
        Command::Simulate {
            port,
            people,
            limit,
            chaos,
            chaos_seed,
            token_lifetime,
            sink_token,
            lockdown,
        } => {
            let sink_token = match sink_token.as_deref().map(doorflow_agent::secrets::read_file) {
                None => None,
                Some(Ok(token)) => Some(token.expose().to_string()),
                Some(Err(error)) => return failure(&format!("--sink-token: {error}")),
            };
            let config = doorflow_agent::sim::SimConfig {
                port,
                people,
                requests_per_window: limit,
                token_lifetime_s: token_lifetime,
                sink_token,
                ..Default::default()
            };
            let chaos = chaos.map(|failure_rate| doorflow_agent::sim::Chaos {
                failure_rate,
                seed: chaos_seed,
                path_prefix: "/".into(),
                slow: std::time::Duration::from_secs(30),
            });
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => return failure(&error.to_string()),
            };
            match runtime.block_on(doorflow_agent::sim::Simulator::run_standalone(
                config, chaos, &lockdown,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => failure(&format!("simulator on port {port}: {error}")),
            }
        }
        Command::Queue { action } => match Config::load(&cli.config) {
            Ok(config) => queue_command(&config, action),
            Err(error) => config_failure(&error),
        },
    }
}

/// With the gpiod backend, checks every line offset against its chip when the chip is present
/// (as `run` would refuse it), naming the key and its line in the file. Returns the chips that
/// are not present, whose offsets could not be checked.
fn check_gpio_lines(path: &std::path::Path, config: &Config) -> Result<Vec<String>, ConfigError> {
    if config.gpio.backend != doorflow_agent::config::GpioBackend::Gpiod {
        return Ok(Vec::new());
    }
    let (problem, unchecked) = doorflow_agent::hw::chardev::check_offsets(config);
    match problem {
        None => Ok(unchecked),
        Some((key, message)) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            Err(ConfigError::Invalid {
                path: path.display().to_string(),
                line: doorflow_agent::config::line_of_key(&text, &key),
                key,
                message,
            })
        }
    }
}

/// Asks the running agent; falls back to the store when none is listening.
fn gather_status(config: &Config) -> Result<status::StatusReport, String> {
    match admin::call(&config.admin.socket, &admin::Request::Status) {
        Ok(reply) => serde_json::from_value(reply["status"].clone())
            .map_err(|e| format!("unreadable status reply: {e}")),
        Err(admin::ClientError::NotRunning(_)) => {
            status::from_store(config, &open_store(config)?).map_err(|e| e.to_string())
        }
        Err(error) => Err(error.to_string()),
    }
}

/// Runs a queue action through the running agent, or on the store when it is stopped.
fn queue_command(config: &Config, action: QueueAction) -> ExitCode {
    let request = match action {
        QueueAction::List { limit } => admin::Request::QueueList { limit },
        QueueAction::Dead { limit } => admin::Request::QueueDead { limit },
        QueueAction::RetryDead { id, .. } => admin::Request::RetryDead { id },
        QueueAction::PurgeDead => admin::Request::PurgeDead,
    };
    let reply = match admin::call(&config.admin.socket, &request) {
        Ok(reply) => Ok(reply),
        Err(admin::ClientError::NotRunning(_)) => {
            open_store(config).and_then(|store| admin::queue_reply(&store, &request))
        }
        Err(error) => Err(error.to_string()),
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(message) => return failure(&message),
    };
    for list in ["queued", "dead"] {
        if let Some(items) = reply[list].as_array() {
            for item in items {
                println!("{item}");
            }
            eprintln!("{} {list}", items.len());
        }
    }
    for count in ["requeued", "purged"] {
        if let Some(n) = reply[count].as_u64() {
            println!("{n} {count}");
        }
    }
    ExitCode::SUCCESS
}

fn open_store(config: &Config) -> Result<store::Store, String> {
    store::Store::open(&config.store.path, config.store.cache_capacity_mb * 1024 * 1024)
        .map_err(|e| e.to_string())
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// `--chaos`: a probability.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("`{text}` is not a rate between 0.0 and 1.0")),
    }
}

fn failure(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
