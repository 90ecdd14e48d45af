//! The local admin socket: how `status` and `queue` talk to a running agent, since one process
//! at a time has the store (the `lock` file's flock, see `store::layout`).
//!
//! Protocol: JSON lines. One request object per line (`{"op":"status"}`), one reply per line
//! with `"ok": true|false`. The socket is mode 0660 (owner and group), never world-writable.

use crate::audit::AuditEvent;
use crate::error_chain::chain;
use crate::line_server::{self, BroadcastFeed, Handler, Limits, LineServer, Reply};
use crate::status::StatusReport;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Metrics in the Prometheus text format (`status --prometheus`): `{"metrics": "..."}`.
    Metrics,
    /// Queued calls, oldest first.
    QueueList {
        limit: usize,
    },
    /// Dead letters, oldest first.
    QueueDead {
        limit: usize,
    },
    /// Requeue one dead letter (by id or key) or, with `id: null`, all of them.
    RetryDead {
        id: Option<String>,
    },
    PurgeDead,
    /// Streams every audit event once it is durable (`{"event": {...}}` per line) until the
    /// client hangs up: a live audit tail, and the acknowledgement the crash tests rely on.
    WatchEvents,
}

/// Answers a queue request from a store: the same code serves the admin socket (agent
/// running) and the CLI's direct access (agent stopped).
pub fn queue_reply(store: &crate::store::Store, request: &Request) -> Result<Value, String> {
    let reply = match request {
        Request::Status | Request::Metrics | Request::WatchEvents => return Err("not a queue request".into()),
        // `total` is how many there are in all, so a reader of a `limit`ed list can say how
        // many it did not show.
        Request::QueueList { limit } => {
            let entries = store.outbox_list(*limit).map_err(|e| chain(&e))?;
            let total = store.outbox_stats().map_err(|e| chain(&e))?.pending;
            json!({"ok": true, "total": total, "queued": entries.into_iter().map(|e| json!({"key": e.key, "call": e.value})).collect::<Vec<_>>()})
        }
        Request::QueueDead { limit } => {
            let entries = store.dead_list(*limit).map_err(|e| chain(&e))?;
            let total = store.outbox_stats().map_err(|e| chain(&e))?.dead;
            json!({"ok": true, "total": total, "dead": entries.into_iter().map(|e| json!({"key": e.key, "letter": e.value})).collect::<Vec<_>>()})
        }
        Request::RetryDead { id } => {
            let requeued = store.dead_retry(id.as_deref()).map_err(|e| chain(&e))?;
            // Asked for one letter that is not there: the caller's command did nothing.
            if let (Some(id), 0) = (id, requeued) {
                return Err(format!(
                    "no dead letter has the id or key `{id}` (`queue dead` lists them)"
                ));
            }
            json!({"ok": true, "requeued": requeued})
        }
        Request::PurgeDead => {
            let purged = store.dead_purge().map_err(|e| chain(&e))?;
            json!({"ok": true, "purged": purged})
        }
    };
    Ok(reply)
}

/// What the admin socket needs from a running agent (the agent implements it), so this module
/// never sees the agent itself.
pub trait RunningAgent: Send + Sync + 'static {
    /// The `status` report from live state.
    fn status(&self) -> StatusReport;
    /// Metrics in the Prometheus text format.
    fn metrics(&self) -> String;
    fn store(&self) -> Arc<Store>;
    /// Wakes the uplink after dead letters were requeued.
    fn kick_queue(&self);
    /// Every audit event once it is durable.
    fn audit_feed(&self) -> broadcast::Receiver<AuditEvent>;
}

/// The admin socket's bounds: requests are small, a handful of operators at a time.
pub const LIMITS: Limits = Limits {
    max_line: 64 * 1024,
    max_connections: 32,
    idle_timeout: Duration::from_secs(30),
    write_timeout: Duration::from_secs(10),
};

/// The admin socket could not be set up.
pub type BindError = line_server::BindError;

pub struct Server {
    socket: LineServer,
}

impl Server {
    /// Binds the socket (mode 0660), replacing a stale one left by a crash but refusing to steal
    /// the socket of an agent that still answers.
    pub async fn bind(path: &Path) -> Result<Server, BindError> {
        Ok(Server {
            socket: LineServer::bind("admin socket (`admin.socket`)", path, LIMITS).await?,
        })
    }

    /// Serves connections (each a task on `tasks`) until `stop` is cancelled; open connections
    /// end then too and the socket file is removed.
    pub async fn serve(self, agent: Arc<impl RunningAgent>, tasks: TaskTracker, stop: CancellationToken) {
        self.socket.serve(Arc::new(Admin { agent }), tasks, stop).await
    }
}

/// Answers admin requests for one running agent.
struct Admin<A> {
    agent: Arc<A>,
}

impl<A: RunningAgent> Handler for Admin<A> {
    async fn handle(&self, line: &[u8]) -> Reply {
        let agent = &self.agent;
        let reply = match serde_json::from_slice::<Request>(line) {
            Ok(Request::Status) => json!({"ok": true, "status": agent.status()}),
            Ok(Request::Metrics) => {
                let agent = Arc::clone(agent);
                match tokio::task::spawn_blocking(move || agent.metrics()).await {
                    Ok(text) => json!({"ok": true, "metrics": text}),
                    Err(error) => json!({"ok": false, "error": error.to_string()}),
                }
            }
            Ok(Request::WatchEvents) => {
                return Reply::Watch {
                    first: json!({"ok": true, "watching": "events"}),
                    // A client too slow to keep up is told how many events it missed, never
                    // blocked on.
                    feed: Box::new(BroadcastFeed {
                        receiver: agent.audit_feed(),
                        line: |event: Result<AuditEvent, u64>| match event {
                            Ok(event) => json!({"event": event}),
                            Err(missed) => json!({"lagged": missed}),
                        },
                    }),
                };
            }
            Ok(request) => {
                let store = agent.store();
                match tokio::task::spawn_blocking(move || queue_reply(&store, &request)).await {
                    Ok(Ok(reply)) => {
                        agent.kick_queue();
                        reply
                    }
                    Ok(Err(error)) => json!({"ok": false, "error": error}),
                    Err(error) => json!({"ok": false, "error": error.to_string()}),
                }
            }
            Err(error) => json!({"ok": false, "error": format!("bad request: {error}")}),
        };
        Reply::Line(reply)
    }
}

/// Why a client call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent listens: the caller may fall back to reading the store.
    #[error("no agent is listening on {0}")]
    NotRunning(PathBuf),
    #[error("admin socket {path}: {reason}")]
    Failed { path: PathBuf, reason: String },
}

/// Sends one request and returns the reply object (blocking; used by the CLI).
pub fn call(path: &Path, request: &Request) -> Result<Value, ClientError> {
    let failed = |reason: String| ClientError::Failed {
        path: path.to_path_buf(),
        reason,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(path.to_path_buf()))
        }
        Err(e) => return Err(failed(chain(&e))),
    };
    let timeout = Some(Duration::from_secs(10));
    stream.set_read_timeout(timeout).map_err(|e| failed(chain(&e)))?;
    stream.set_write_timeout(timeout).map_err(|e| failed(chain(&e)))?;
    let mut line = serde_json::to_string(request).map_err(|e| failed(chain(&e)))?;
    line.push('\n');
    // An agent that is stopping closes the socket mid-request: as good as not running.
    let gone = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
            ClientError::NotRunning(path.to_path_buf())
        }
        _ => failed(chain(&e)),
    };
    stream.write_all(line.as_bytes()).map_err(gone)?;
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply).map_err(gone)?;
    if read == 0 {
        return Err(ClientError::NotRunning(path.to_path_buf()));
    }
    let value: Value = serde_json::from_str(&reply).map_err(|e| failed(format!("unreadable reply: {e}")))?;
    if value.get("ok") != Some(&Value::Bool(true)) {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request refused");
        return Err(failed(message.to_string()));
    }
    Ok(value)
}
