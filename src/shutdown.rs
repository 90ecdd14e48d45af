//! How the agent is told to stop: SIGTERM, SIGINT, or SIGHUP (a closed terminal).

use std::future::Future;

/// Installs the SIGTERM/SIGINT/SIGHUP handlers now (so a signal during start-up is not fatal)
/// and returns a future that resolves on any of them. SIGHUP stops too: its default action
/// kills the process without a clean stop (doors not put in their fail state, the demo's state
/// left behind), and the agent has no configuration to reload. Call inside the runtime, before
/// starting.
pub fn on_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let hup = signal(SignalKind::hangup());
    async move {
        match (term, int, hup) {
            (Ok(mut term), Ok(mut int), Ok(mut hup)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = hup.recv() => tracing::info!("SIGHUP received (the terminal closed)"),
                }
            }
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                tracing::error!(%error, "cannot listen for signals; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
