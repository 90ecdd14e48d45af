//! Command-line entry point: `doorflow-agent run | check-config | status | queue | demo`.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use doorflow_agent::config::{
    line_of_key, template_placeholders, Config, ConfigError, DEFAULT_CONFIG_PATH, PLACEHOLDER,
};
use doorflow_agent::error_chain::chain;
use doorflow_agent::preflight::{self, Severity};
use doorflow_agent::{admin, agent, metrics, out, outln, queue_table, status, store, telemetry};
use std::path::{Path, PathBuf};
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
    /// Validate the configuration and what it points at (secret files readable, GPIO chips
    /// present): exit 0 with a summary, or 2 naming each key at fault and its line. Everything
    /// `run` would refuse is refused here first.
    CheckConfig {
        /// For the unit's ExecCondition=: exit 0 unless the file still holds the template's
        /// placeholders (REPLACE-WITH-…), then exit 1 so systemd skips the start without a
        /// failure. Every other problem is left to `run`, which reports it.
        #[arg(long)]
        unit_condition: bool,
    },
    /// Show snapshot counts, last sync, queue depth and door states (from the running agent
    /// through its admin socket, or from the store when the agent is stopped).
    Status {
        /// Print one JSON object instead of text.
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print metrics in the Prometheus text format (what `metrics.textfile` holds).
        #[arg(long)]
        prometheus: bool,
    },
    #[cfg(feature = "demo")]
    /// Play the built-in demonstration: the agent with mock GPIO doors, a scripted scenario and
    /// a readable timeline. No network, hardware or account needed.
    ///
    /// It runs on its own built-in configuration (config/demo.toml) with its state in a fresh
    /// private directory under $TMPDIR, removed at the end, on Ctrl-C, SIGTERM or SIGHUP. --config is
    /// refused (DOORFLOW_AGENT_CONFIG is ignored).
    Demo,
    /// Inspect and manage the outbox of queued admit and event calls.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// List queued calls, oldest first: a table, or JSON lines with --json.
    ///
    /// How many were shown, of how many are queued, goes to stderr.
    List {
        /// Show at most this many (the oldest).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// One JSON object per line (`{"key", "call"}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List dead letters (calls DoorFlow refused, or admits that expired), oldest first: a
    /// table, or JSON lines with --json.
    ///
    /// How many were shown, of how many there are, goes to stderr.
    Dead {
        /// Show at most this many (the oldest).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// One JSON object per line (`{"key", "letter"}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the queue: one by ID, or every one with --all.
    ///
    /// Requeued calls get a fresh attempt count. An ID that is not a dead letter is an error
    /// (exit 1); --all with none to retry is not.
    #[command(
        override_usage = "doorflow-agent queue retry-dead <ID>\n       doorflow-agent queue retry-dead --all"
    )]
    RetryDead {
        /// The dead letter to requeue: its ID or KEY column in `queue dead`.
        #[arg(value_name = "ID", required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Requeue every dead letter instead of one (none is not an error).
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    PurgeDead,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match cli.command {
        Command::CheckConfig { unit_condition } => {
            if unit_condition {
                site_config_condition(&cli.config)
            } else {
                check_config(&cli.config)
            }
        }
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
                    let why = chain(&error);
                    tracing::error!(error = %why, "agent stopped with an error: {why}");
                    failure(&why)
                }
            }
        }
        Command::Status { json, prometheus } => {
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(error) => return config_failure(&error),
            };
            if prometheus {
                return match gather_metrics(&config) {
                    Ok(text) => {
                        out!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(message) => failure(&message),
                };
            }
            match gather_status(&config) {
                Ok(report) => {
                    if json {
                        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
                    } else {
                        out!("{}", status::render(&report));
                    }
                    ExitCode::SUCCESS
                }
                Err(message) => failure(&message),
            }
        }
        #[cfg(feature = "demo")]
        Command::Demo => {
            if matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine) {
                return failure_with(
                    EXIT_CONFIG,
                    "demo runs on its own built-in configuration (config/demo.toml) and takes no \
                     --config; to run the agent on a configuration of your own: `doorflow-agent \
                     run --config FILE`",
                );
            }
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

/// `check-config`: the file's own rules, then what it points at (`preflight`).
fn check_config(path: &Path) -> ExitCode {
    let text = match Config::read_text(path) {
        Ok(text) => text,
        Err(error) => return config_failure(&error),
    };
    let config = match Config::parse_all(&text, &path.display().to_string()) {
        Ok(config) => config,
        Err(errors) => {
            // Every problem at once, so a file is fixed in one round.
            for error in &errors {
                eprintln!("error: {error}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut failed = false;
    for finding in preflight::check(&config) {
        let line = line_of_key(&text, &finding.key);
        let location = line.map(|l| format!(" line {l}:")).unwrap_or_default();
        let (label, verb) = match finding.severity {
            Severity::Error => ("error", "invalid value for "),
            Severity::Warning => ("warning", ""),
            Severity::Note => ("note", ""),
        };
        failed |= finding.severity == Severity::Error;
        eprintln!(
            "{label}: {}:{location} {verb}`{}`: {}",
            path.display(),
            finding.key,
            finding.message
        );
    }
    if failed {
        return ExitCode::from(EXIT_CONFIG);
    }
    outln!("{}: ok", path.display());
    outln!("{}", config.summary());
    ExitCode::SUCCESS
}

/// `check-config --unit-condition`: whether the config has been made the site's own.
fn site_config_condition(path: &Path) -> ExitCode {
    let Ok(text) = Config::read_text(path) else {
        // `run` says why it cannot read it.
        return ExitCode::SUCCESS;
    };
    let keys = template_placeholders(&text);
    if keys.is_empty() {
        return ExitCode::SUCCESS;
    }
    for key in &keys {
        let location = line_of_key(&text, key)
            .map(|l| format!(" line {l}:"))
            .unwrap_or_default();
        eprintln!(
            "{}:{location} `{key}` still holds the template's placeholder ({PLACEHOLDER}…)",
            path.display()
        );
    }
    eprintln!(
        "not starting: {} is still the installed template; edit it for this site, check it with \
         `doorflow-agent check-config`, then `systemctl start doorflow-agent`",
        path.display()
    );
    ExitCode::FAILURE
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
            Err(error) => return Err(chain(&error)),
        }
        match store::Store::open(&config.store.path, config.store.cache_capacity_bytes()) {
            Ok(store) => return Ok(Answerer::Store(Box::new(store))),
            Err(store::StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(error) => return Err(chain(&error)),
        }
    }
}

/// Asks the running agent; reads the store when it is stopped.
fn gather_status(config: &Config) -> Result<status::StatusReport, String> {
    match reach(config, &admin::Request::Status)? {
        Answerer::Agent(reply) => serde_json::from_value(reply["status"].clone())
            .map_err(|e| format!("unreadable status reply: {e}")),
        Answerer::Store(store) => status::from_store(config, &store).map_err(|e| chain(&e)),
    }
}

/// Metrics from the running agent, or from the store when it is stopped.
fn gather_metrics(config: &Config) -> Result<String, String> {
    match reach(config, &admin::Request::Metrics)? {
        Answerer::Agent(reply) => reply["metrics"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "unreadable metrics reply".to_string()),
        Answerer::Store(store) => {
            let report = status::from_store(config, &store).map_err(|e| chain(&e))?;
            Ok(metrics::from_store(&report, &store))
        }
    }
}

/// Runs a queue action through the running agent, or on the store when it is stopped.
fn queue_command(config: &Config, action: QueueAction) -> ExitCode {
    let json = matches!(
        action,
        QueueAction::List { json: true, .. } | QueueAction::Dead { json: true, .. }
    );
    let request = match action {
        QueueAction::List { limit, .. } => admin::Request::QueueList { limit },
        QueueAction::Dead { limit, .. } => admin::Request::QueueDead { limit },
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
        let Some(items) = reply[list].as_array() else {
            continue;
        };
        // How many there are in all (a `--limit` shows fewer).
        let total = reply["total"].as_u64().unwrap_or(items.len() as u64);
        if json {
            for item in items {
                outln!("{item}");
            }
        } else {
            match render_queue(list, items, total) {
                Ok(table) => out!("{table}"),
                Err(message) => return failure(&message),
            }
        }
        eprintln!("{}", queue_table::count_line(items.len(), total, list));
    }
    for count in ["requeued", "purged"] {
        if let Some(n) = reply[count].as_u64() {
            outln!("{n} {count}");
        }
    }
    ExitCode::SUCCESS
}

/// The table for a `queued` or `dead` list of `{"key", "call"|"letter"}` items, `total` of them
/// in all.
fn render_queue(list: &str, items: &[serde_json::Value], total: u64) -> Result<String, String> {
    fn entries<T: serde::de::DeserializeOwned>(
        items: &[serde_json::Value],
        field: &str,
    ) -> Result<Vec<(u64, T)>, String> {
        items
            .iter()
            .map(|item| {
                let key = item["key"].as_u64().unwrap_or_default();
                serde_json::from_value(item[field].clone())
                    .map(|value| (key, value))
                    .map_err(|e| format!("unreadable {field} {key}: {e} (try --json)"))
            })
            .collect()
    }
    Ok(match list {
        "dead" => queue_table::dead_letters(&entries(items, "letter")?, total),
        _ => queue_table::queued_calls(
            &entries(items, "call")?,
            total,
            &doorflow_agent::clock::Now::read_raw(),
        ),
    })
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn failure(message: &str) -> ExitCode {
    failure_with(1, message)
}

fn failure_with(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}
