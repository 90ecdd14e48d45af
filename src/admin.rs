//! The local admin socket: how `status` and `queue` talk to a running agent, since sled lets
//! only one process open the store.
//!
//! Protocol: JSON lines. One request object per line (`{"op":"status"}`), one reply per line
//! with `"ok": true|false`. The socket is mode 0660 (owner and group), never world-writable.

use crate::audit::AuditEvent;
use crate::status::StatusReport;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest request line accepted; anything longer is a misbehaving client.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
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
        Request::Status | Request::WatchEvents => return Err("not a queue request".into()),
        Request::QueueList { limit } => {
            let entries = store.outbox_list(*limit).map_err(|e| e.to_string())?;
            json!({"ok": true, "queued": entries.into_iter().map(|e| json!({"key": e.key, "call": e.value})).collect::<Vec<_>>()})
        }
        Request::QueueDead { limit } => {
            let entries = store.dead_list(*limit).map_err(|e| e.to_string())?;
            json!({"ok": true, "dead": entries.into_iter().map(|e| json!({"key": e.key, "letter": e.value})).collect::<Vec<_>>()})
        }
        Request::RetryDead { id } => {
            let requeued = store.dead_retry(id.as_deref()).map_err(|e| e.to_string())?;
            json!({"ok": true, "requeued": requeued})
        }
        Request::PurgeDead => {
            let purged = store.dead_purge().map_err(|e| e.to_string())?;
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
    fn store(&self) -> Arc<Store>;
    /// Wakes the uplink after dead letters were requeued.
    fn kick_queue(&self);
    /// Every audit event once it is durable.
    fn audit_feed(&self) -> broadcast::Receiver<AuditEvent>;
}

/// The admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("admin socket {path}: {reason}")]
pub struct BindError {
    pub path: String,
    pub reason: String,
}

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds the socket, replacing a stale one left by a crash but refusing to steal the
    /// socket of an agent that still answers.
    pub async fn bind(path: &Path) -> Result<Server, BindError> {
        let fail = |reason: String| BindError {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(fail("another agent is already answering on it".into()));
            }
            std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| fail(format!("cannot set mode 0660: {e}")))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves connections (each a task on `tasks`) until `stop` is cancelled; open connections
    /// end then too.
    pub async fn serve(self, agent: Arc<impl RunningAgent>, tasks: TaskTracker, stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let (agent, stop) = (Arc::clone(&agent), stop.clone());
                    tasks.spawn(async move { stop.run_until_cancelled(handle(stream, agent)).await });
                }
                Err(error) => {
                    tracing::warn!(%error, socket = %self.path.display(), "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn handle(stream: UnixStream, agent: Arc<impl RunningAgent>) {
    use tokio::io::AsyncReadExt;
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_REQUEST as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let too_long = !line.ends_with(b"\n") && line.len() >= MAX_REQUEST;
        let reply = if too_long {
            json!({"ok": false, "error": format!("request longer than {MAX_REQUEST} bytes")})
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(Request::Status) => json!({"ok": true, "status": agent.status()}),
                Ok(Request::WatchEvents) => {
                    watch_events(agent.audit_feed(), &mut write).await;
                    break;
                }
                Ok(request) => {
                    let store = agent.store();
                    let answer = tokio::task::spawn_blocking(move || queue_reply(&store, &request)).await;
                    match answer {
                        Ok(Ok(reply)) => {
                            agent.kick_queue();
                            reply
                        }
                        Ok(Err(error)) => json!({"ok": false, "error": error}),
                        Err(error) => json!({"ok": false, "error": error.to_string()}),
                    }
                }
                Err(error) => json!({"ok": false, "error": format!("bad request: {error}")}),
            }
        };
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() || too_long {
            break;
        }
    }
}

/// Streams durable audit events to one client until it hangs up or the agent stops. A client
/// too slow to keep up is told how many events it missed (`{"lagged": n}`), never blocked on.
async fn watch_events(
    mut feed: broadcast::Receiver<AuditEvent>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) {
    use tokio::sync::broadcast::error::RecvError;
    let send = |value: Value| {
        let mut text = value.to_string();
        text.push('\n');
        text
    };
    if write
        .write_all(send(json!({"ok": true, "watching": "events"})).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    loop {
        let line = match feed.recv().await {
            Ok(event) => send(json!({"event": event})),
            Err(RecvError::Lagged(missed)) => send(json!({"lagged": missed})),
            Err(RecvError::Closed) => return,
        };
        if write.write_all(line.as_bytes()).await.is_err() {
            return;
        }
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
        Err(e) => return Err(failed(e.to_string())),
    };
    let timeout = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| failed(e.to_string()))?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| failed(e.to_string()))?;
    let mut line = serde_json::to_string(request).map_err(|e| failed(e.to_string()))?;
    line.push('\n');
    // An agent that is stopping closes the socket mid-request: as good as not running.
    let gone = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
            ClientError::NotRunning(path.to_path_buf())
        }
        _ => failed(e.to_string()),
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
