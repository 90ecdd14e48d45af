//! Command-line entry point: `doorflow-agent run | check-config | status | queue | demo`.

use clap::{Parser, Subcommand};
use doorflow_agent::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use doorflow_agent::{admin, agent, status, store, telemetry};
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
    #[cfg(feature = "demo")]
    /// Play the built-in demonstration: the agent with mock GPIO doors, a scripted scenario and
    /// a readable timeline. No network, hardware or account needed.
    Demo,
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
            doorflow_agent::memory::limit_arenas();
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
                let shutdown = doorflow_agent::shutdown::on_signal();
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
        #[cfg(feature = "demo")]
        Command::Demo => {
            // The emulated OSDP reader's own LibOSDP log (target libosdp::pd) is not the agent's.
            telemetry::init_with_default("error,libosdp::pd=off");
            match doorflow_agent::demo::run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => failure(&message),
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

/// Who answers a CLI request: the running agent, or the store of a stopped one.
enum Answerer {
    Agent(serde_json::Value),
    Store(Box<store::Store>),
}

/// How long the CLI waits for a starting agent's admin socket.
const AGENT_START_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks the running agent; opens the store only when no agent has it. A starting agent holds
/// the store before its admin socket is up: then the CLI waits for the socket instead, so it
/// never takes the store from an agent (and an agent waits out a CLI that has it briefly).
fn reach(config: &Config, request: &admin::Request) -> Result<Answerer, String> {
    let deadline = std::time::Instant::now() + AGENT_START_WAIT;
    loop {
        match admin::call(&config.admin.socket, request) {
            Ok(reply) => return Ok(Answerer::Agent(reply)),
            Err(admin::ClientError::NotRunning(_)) => {}
            Err(error) => return Err(error.to_string()),
        }
        match store::Store::open(&config.store.path, config.store.cache_capacity_bytes()) {
            Ok(store) => return Ok(Answerer::Store(Box::new(store))),
            Err(store::StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// Asks the running agent; reads the store when it is stopped.
fn gather_status(config: &Config) -> Result<status::StatusReport, String> {
    match reach(config, &admin::Request::Status)? {
        Answerer::Agent(reply) => serde_json::from_value(reply["status"].clone())
            .map_err(|e| format!("unreadable status reply: {e}")),
        Answerer::Store(store) => status::from_store(config, &store).map_err(|e| e.to_string()),
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
    let reply = reach(config, &request).and_then(|answerer| match answerer {
        Answerer::Agent(reply) => Ok(reply),
        Answerer::Store(store) => admin::queue_reply(&store, &request),
    });
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

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn failure(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
