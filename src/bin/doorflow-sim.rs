//! `doorflow-sim`: the DoorFlow API simulator alone on a loopback port, for manual testing, the
//! install test and the VM bench. Built only with the `simulator` feature (on by default for
//! development; the .deb is built without it).

use clap::Parser;
use doorflow_agent::sim::{Chaos, SimConfig, Simulator};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "doorflow-sim",
    version,
    about = "DoorFlow API v3 simulator on loopback: people, credentials, admits, an event sink, \
             rate limits and fault injection. Try: curl -u sim-api-key:X \
             'http://127.0.0.1:18080/api/3/people?per_page=2'"
)]
struct Cli {
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Size of the generated dataset (person n has card value n).
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
    /// Lifetime of issued OAuth access tokens, s.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    token_lifetime: u64,
    /// File holding a bearer token the event sink (`POST /events`) then requires.
    #[arg(long, value_name = "FILE")]
    sink_token: Option<PathBuf>,
    /// Put this channel in lockdown (cards and exit buttons) from the start; repeatable.
    #[arg(long, value_name = "CHANNEL_ID")]
    lockdown: Vec<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sink_token = match cli.sink_token.as_deref().map(doorflow_agent::secrets::read_file) {
        None => None,
        Some(Ok(token)) => Some(token.expose().to_string()),
        Some(Err(error)) => return failure(&format!("--sink-token: {error}")),
    };
    let config = SimConfig {
        port: cli.port,
        people: cli.people,
        requests_per_window: cli.limit,
        token_lifetime_s: cli.token_lifetime,
        sink_token,
        ..Default::default()
    };
    let chaos = cli.chaos.map(|failure_rate| Chaos {
        failure_rate,
        seed: cli.chaos_seed,
        path_prefix: "/".into(),
        slow: std::time::Duration::from_secs(30),
    });
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return failure(&error.to_string()),
    };
    match runtime.block_on(Simulator::run_standalone(config, chaos, &cli.lockdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failure(&format!("simulator on port {}: {error}", cli.port)),
    }
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
