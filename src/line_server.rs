//! A small bounded JSON-lines server on a Unix socket: the one implementation behind the admin
//! socket and the mock GPIO control socket.
//!
//! One request per line, one reply per line (or, for a watch, a stream of lines). Whatever a
//! local client does, the server's cost stays bounded, so the doors, `status`, sync and the
//! uplink keep working:
//! - **line cap while reading**: a request is read into a buffer that never grows past
//!   `max_line`; a longer line is answered with an error and the connection closed, without
//!   reading the rest of it;
//! - **connection cap**: at most `max_connections` at once. A new connection beyond it evicts the
//!   connection that has been idle longest (watchers last), so a client holding many idle
//!   connections cannot lock out `status`; when every connection is busy answering a request,
//!   the new one is refused with an error line;
//! - **idle timeout**: a connection that does not complete a request line within
//!   `idle_timeout` is closed (a watch is exempt while it streams);
//! - **write timeout**: a client that stops reading is dropped after `write_timeout`.
//!
//! The socket file is created mode 0660 (owner and group), a stale one left by a crash is
//! replaced, a live one (another agent answers on it) is refused, and the file is removed when
//! the server stops.

use crate::mutex::lock;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::MAX_SOCKET_PATH;

/// What one socket allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, bytes (without the newline).
    pub max_line: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a complete request line, counted from the connection or the last reply.
    pub idle_timeout: Duration,
    /// Time allowed for one reply line to be taken by the client.
    pub write_timeout: Duration,
}

/// One answer to a request.
pub enum Reply {
    Line(Value),
    /// `first`, then one line per item of `feed` until it ends, the client hangs up or the
    /// server stops. The connection takes no more requests.
    Watch {
        first: Value,
        feed: Box<dyn Feed>,
    },
}

/// The lines a watch streams.
pub trait Feed: Send {
    /// The next line, or `None` when the stream has ended.
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<Value>> + Send + '_>>;
}

/// A watch over a broadcast channel: `line` turns each item, or the number of items a slow
/// client missed (`Err(missed)`), into a line.
pub struct BroadcastFeed<T, F> {
    pub receiver: broadcast::Receiver<T>,
    pub line: F,
}

impl<T, F> Feed for BroadcastFeed<T, F>
where
    T: Clone + Send + 'static,
    F: FnMut(Result<T, u64>) -> Value + Send,
{
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<Value>> + Send + '_>> {
        Box::pin(async move {
            match self.receiver.recv().await {
                Ok(item) => Some((self.line)(Ok(item))),
                Err(broadcast::error::RecvError::Lagged(missed)) => Some((self.line)(Err(missed))),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}

/// Answers the requests of one socket.
pub trait Handler: Send + Sync + 'static {
    /// The reply to one request line (without its newline; at most `Limits::max_line` bytes).
    fn handle(&self, request: &[u8]) -> impl Future<Output = Reply> + Send;
}

/// The socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct BindError {
    pub what: &'static str,
    pub path: String,
    pub reason: String,
}

/// A bound socket, ready to serve.
pub struct LineServer {
    what: &'static str,
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's inode, so only our own file is removed at the end.
    inode: u64,
    limits: Limits,
}

/// Why a socket may not be bound at `path`: something other than a socket is there. Only a
/// socket is ever replaced; a path that names anything else (a typo pointing at the queue
/// database or the refresh token) is left alone and the start refused. `check-config` asks the
/// same before `run` does.
pub fn not_a_socket(path: &Path) -> Option<String> {
    let kind = std::fs::symlink_metadata(path).ok()?.file_type();
    (!kind.is_socket()).then(|| {
        format!(
            "{} is there, not a socket; it is left alone (does the config name the wrong path?)",
            crate::small_file::describe(&kind)
        )
    })
}

/// Binds a Unix socket that is never reachable with a wider mode than 0660: bound under a
/// temporary name beside `path`, given its mode, then renamed into place (a rename is atomic,
/// so `path` never shows the umask's mode). Where the temporary name would not fit in
/// `sun_path`, the socket is bound at `path` and its mode set at once.
fn bind_private(path: &Path) -> Result<UnixListener, String> {
    let private = std::fs::Permissions::from_mode(0o660);
    let staging = path.with_file_name(format!(".{}.sock~", std::process::id()));
    if staging.as_os_str().len() > MAX_SOCKET_PATH {
        let listener = UnixListener::bind(path).map_err(|e| e.to_string())?;
        std::fs::set_permissions(path, private).map_err(|e| format!("cannot set mode 0660: {e}"))?;
        return Ok(listener);
    }
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).map_err(|e| e.to_string())?;
    let placed = std::fs::set_permissions(&staging, private)
        .map_err(|e| format!("cannot set mode 0660: {e}"))
        .and_then(|()| {
            std::fs::rename(&staging, path).map_err(|e| format!("cannot move it into place: {e}"))
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    placed.map(|()| listener)
}

impl LineServer {
    /// Binds `path` (mode 0660), creating its directory, replacing a stale socket left by a
    /// crash but refusing one another process still answers on. `what` names the socket in
    /// messages (`admin socket`).
    pub async fn bind(what: &'static str, path: &Path, limits: Limits) -> Result<LineServer, BindError> {
        let fail = |reason: String| BindError {
            what,
            path: path.display().to_string(),
            reason,
        };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(fail(format!(
                "the path is {} bytes; a Unix socket path can have at most {MAX_SOCKET_PATH}",
                path.as_os_str().len()
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create its directory: {e}")))?;
        }
        if let Some(problem) = not_a_socket(path) {
            return Err(fail(problem));
        }
        if std::fs::symlink_metadata(path).is_ok() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(fail("another process is already answering on it".into()));
            }
            std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        let listener = bind_private(path).map_err(fail)?;
        let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        Ok(LineServer {
            what,
            listener,
            path: path.to_path_buf(),
            inode,
            limits,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections (each a task on `tasks`) until `stop` is cancelled; open connections
    /// end then too, and the socket file is removed.
    pub async fn serve<H: Handler>(self, handler: Arc<H>, tasks: TaskTracker, stop: CancellationToken) {
        let connections = Arc::new(Mutex::new(Registry::default()));
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors (EMFILE) or a transient error: never spin on it.
                    tracing::warn!(%error, socket = %self.path.display(), "{}: accept failed ({error})", self.what);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admitted = lock(&connections).admit(self.limits.max_connections, &stop);
            let Some((id, own_stop)) = admitted.connection else {
                // Every slot is answering a request right now: say so without waiting.
                let _ = stream.try_write(
                    format!(
                        "{}\n",
                        json!({"ok": false, "error": "too many connections; try again"})
                    )
                    .as_bytes(),
                );
                self.warn_full(&connections);
                continue;
            };
            if admitted.evicted {
                self.warn_full(&connections);
            }
            let registration = Registration {
                registry: Arc::clone(&connections),
                id,
            };
            let (handler, limits) = (Arc::clone(&handler), self.limits);
            tasks.spawn(async move {
                connection(stream, handler.as_ref(), &registration, limits, own_stop).await;
            });
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Logs that the cap was reached, at most once a minute.
    fn warn_full(&self, connections: &Mutex<Registry>) {
        let mut registry = lock(connections);
        if registry
            .warned
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        registry.warned = Some(Instant::now());
        tracing::warn!(
            socket = %self.path.display(),
            max_connections = self.limits.max_connections,
            "{}: too many connections; closing the longest idle ones",
            self.what
        );
    }
}

/// The open connections of one socket, for the connection cap.
#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Slot>,
    warned: Option<Instant>,
}

struct Slot {
    last_active: Instant,
    busy: bool,
    watching: bool,
    stop: CancellationToken,
}

struct Admitted {
    connection: Option<(u64, CancellationToken)>,
    evicted: bool,
}

impl Registry {
    /// Makes room (evicting the longest idle connection, watchers last) and registers a new one;
    /// `None` when every connection is busy answering.
    fn admit(&mut self, max: usize, stop: &CancellationToken) -> Admitted {
        let mut evicted = false;
        while self.open.len() >= max.max(1) {
            let victim = self
                .open
                .iter()
                .filter(|(_, slot)| !slot.busy)
                .min_by_key(|(_, slot)| (slot.watching, slot.last_active))
                .map(|(id, _)| *id);
            match victim.and_then(|id| self.open.remove(&id)) {
                Some(slot) => {
                    slot.stop.cancel();
                    evicted = true;
                }
                None => {
                    return Admitted {
                        connection: None,
                        evicted,
                    }
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let own_stop = stop.child_token();
        self.open.insert(
            id,
            Slot {
                last_active: Instant::now(),
                busy: false,
                watching: false,
                stop: own_stop.clone(),
            },
        );
        Admitted {
            connection: Some((id, own_stop)),
            evicted,
        }
    }
}

/// A connection's place in the registry; leaving it (the task ends) frees the slot.
struct Registration {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Registration {
    fn update(&self, change: impl FnOnce(&mut Slot)) {
        if let Some(slot) = lock(&self.registry).open.get_mut(&self.id) {
            slot.last_active = Instant::now();
            change(slot);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry).open.remove(&self.id);
    }
}

/// How reading one request line ended.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A line is in the buffer (the last one may lack its newline).
    Line,
    /// The client hung up.
    End,
    /// The line is longer than the cap; the rest of it was not read.
    TooLong,
}

/// Reads one line into `line` without letting it grow past `max` bytes.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::End
            } else {
                LineRead::Line
            });
        }
        let (take, complete) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (end, true),
            None => (available.len(), false),
        };
        if line.len() + take > max {
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(&available[..take]);
        reader.consume(take + usize::from(complete));
        if complete {
            return Ok(LineRead::Line);
        }
    }
}

async fn write_line(write: &mut OwnedWriteHalf, value: &Value, limits: Limits) -> bool {
    let mut text = value.to_string();
    text.push('\n');
    matches!(
        tokio::time::timeout(limits.write_timeout, write.write_all(text.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// Serves one connection until the client hangs up, misbehaves, idles, is evicted or the server
/// stops (`stop`).
async fn connection(
    stream: UnixStream,
    handler: &impl Handler,
    registration: &Registration,
    limits: Limits,
    stop: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(4096, read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = tokio::time::timeout(limits.idle_timeout, read_line(&mut reader, &mut line, limits.max_line)) => read,
        };
        match read {
            Ok(Ok(LineRead::Line)) => {}
            Ok(Ok(LineRead::TooLong)) => {
                let error = format!("request longer than {} bytes", limits.max_line);
                write_line(&mut write, &json!({"ok": false, "error": error}), limits).await;
                return;
            }
            // Hung up, a read error, or idle too long.
            Ok(Ok(LineRead::End)) | Ok(Err(_)) | Err(_) => return,
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        registration.update(|slot| slot.busy = true);
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            reply = handler.handle(&line) => reply,
        };
        registration.update(|slot| slot.busy = false);
        match reply {
            Reply::Line(value) => {
                if !write_line(&mut write, &value, limits).await {
                    return;
                }
            }
            Reply::Watch { first, feed } => {
                registration.update(|slot| slot.watching = true);
                watch(&mut reader, &mut write, first, feed, limits, &stop).await;
                return;
            }
        }
    }
}

/// Streams a watch until its feed ends, the client hangs up or `stop` is cancelled. Anything
/// the client sends meanwhile is read and dropped, so a hang-up is noticed at once.
async fn watch(
    reader: &mut (impl AsyncBufRead + Unpin),
    write: &mut OwnedWriteHalf,
    first: Value,
    mut feed: Box<dyn Feed>,
    limits: Limits,
    stop: &CancellationToken,
) {
    if !write_line(write, &first, limits).await {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            input = reader.fill_buf() => match input {
                Ok([]) | Err(_) => return,
                Ok(bytes) => {
                    let n = bytes.len();
                    reader.consume(n);
                }
            },
            item = feed.next() => match item {
                Some(value) => {
                    if !write_line(write, &value, limits).await {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};

    const LIMITS: Limits = Limits {
        max_line: 64,
        max_connections: 4,
        idle_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(5),
    };

    /// Echoes each request; `watch` streams the numbers sent on `feed`.
    struct Echo {
        feed: broadcast::Sender<u64>,
    }

    impl Handler for Echo {
        async fn handle(&self, request: &[u8]) -> Reply {
            if request == b"watch" {
                return Reply::Watch {
                    first: json!({"ok": true, "watching": true}),
                    feed: Box::new(BroadcastFeed {
                        receiver: self.feed.subscribe(),
                        line: |item: Result<u64, u64>| json!({"item": item.ok()}),
                    }),
                };
            }
            Reply::Line(json!({"ok": true, "echo": String::from_utf8_lossy(request)}))
        }
    }

    struct Running {
        _dir: tempfile::TempDir,
        path: PathBuf,
        feed: broadcast::Sender<u64>,
        stop: CancellationToken,
        tasks: TaskTracker,
    }

    async fn start(limits: Limits) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.sock");
        let server = LineServer::bind("test socket", &path, limits).await.unwrap();
        let feed = broadcast::channel(16).0;
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let handler = Arc::new(Echo { feed: feed.clone() });
        tasks.spawn(server.serve(handler, tasks.clone(), stop.clone()));
        Running {
            _dir: dir,
            path,
            feed,
            stop,
            tasks,
        }
    }

    /// A blocking client (run inside `spawn_blocking`): sends `request`, returns the reply line.
    fn ask(path: &Path, request: &[u8]) -> String {
        let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut reply = String::new();
        std::io::BufReader::new(&stream).read_line(&mut reply).unwrap();
        reply
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[tokio::test]
    async fn answers_each_line_and_removes_the_socket_when_stopped() {
        let running = start(LIMITS).await;
        let mode = std::fs::metadata(&running.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let path = running.path.clone();
        let reply = blocking(move || ask(&path, b"hello\n")).await;
        assert_eq!(reply, "{\"echo\":\"hello\",\"ok\":true}\n");
        running.stop.cancel();
        running.tasks.close();
        running.tasks.wait().await;
        assert!(!running.path.exists(), "socket file left behind");
    }

    #[tokio::test]
    async fn a_line_over_the_cap_is_refused_without_reading_it_whole() {
        let running = start(LIMITS).await;
        let path = running.path.clone();
        let (reply, sent) = blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
            stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            // 64 MB with no newline: the server must answer after 64 bytes and hang up, so
            // most of it is never taken.
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            for _ in 0..64 {
                match stream.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            (reply, sent)
        })
        .await;
        assert!(reply.contains("request longer than 64 bytes"), "{reply}");
        assert!(
            sent < 32 << 20,
            "the server read {sent} bytes of an over-long line"
        );
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_cap_are_evicted_oldest_first() {
        let running = start(LIMITS).await;
        let path = running.path.clone();
        let held = blocking(move || {
            (0..10)
                .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
                .collect::<Vec<_>>()
        })
        .await;
        let path = running.path.clone();
        // Many idle connections cannot keep a real client out.
        let reply = blocking(move || ask(&path, b"status\n")).await;
        assert!(reply.contains("\"echo\":\"status\""), "{reply}");
        // The oldest idle ones were closed (the server hung up on them).
        let mut first = held.into_iter().next().unwrap();
        first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            first.read_to_end(&mut rest).unwrap(),
            0,
            "evicted connection still open"
        );
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
        let running = start(Limits {
            idle_timeout: Duration::from_millis(200),
            ..LIMITS
        })
        .await;
        let path = running.path.clone();
        let read = blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).map(|_| rest.len())
        })
        .await;
        assert_eq!(read.unwrap(), 0, "the server should hang up an idle client");
    }

    #[tokio::test]
    async fn a_watch_streams_until_the_client_hangs_up_and_frees_its_slot() {
        let running = start(Limits {
            max_connections: 1,
            ..LIMITS
        })
        .await;
        let path = running.path.clone();
        let watcher = blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
            stream.write_all(b"watch\n").unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            assert!(first.contains("watching"), "{first}");
            (stream, reader)
        })
        .await;
        running.feed.send(7).unwrap();
        let (stream, mut reader) = watcher;
        let line = blocking(move || {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line
        })
        .await;
        assert_eq!(line, "{\"item\":7}\n");
        drop(stream);
        // With one slot, a new client is served once the watcher has gone (or evicted it).
        let path = running.path.clone();
        let reply = blocking(move || ask(&path, b"after\n")).await;
        assert!(reply.contains("after"), "{reply}");
    }

    #[tokio::test]
    async fn a_live_socket_is_not_taken_over_and_long_paths_are_refused() {
        let running = start(LIMITS).await;
        let error = LineServer::bind("test socket", &running.path, LIMITS)
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("already answering"), "{error}");
        let long = PathBuf::from(format!("/tmp/{}/s.sock", "d".repeat(110)));
        let error = LineServer::bind("test socket", &long, LIMITS)
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("at most 107"), "{error}");
    }

    /// A socket path that names anything but a socket (a typo pointing at the queue database)
    /// is refused and left as it was; only a stale socket is replaced.
    #[tokio::test]
    async fn only_a_stale_socket_is_replaced_never_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("queue.sqlite");
        std::fs::write(&file, b"acknowledged records").unwrap();
        let directory = dir.path().join("a-directory");
        std::fs::create_dir(&directory).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = dir.path().join("fifo");
        crate::small_file::make_fifo(&fifo);
        for (path, kind) in [
            (&file, "a regular file"),
            (&directory, "a directory"),
            (&link, "a symbolic link"),
            (&fifo, "a FIFO"),
        ] {
            let error = LineServer::bind("test socket", path, LIMITS).await.err().unwrap();
            assert!(
                error
                    .to_string()
                    .contains(&format!("{kind} is there, not a socket")),
                "{error}"
            );
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"acknowledged records");
        assert!(directory.is_dir() && link.is_symlink());
        // A stale socket (nobody answers) is replaced.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(LineServer::bind("test socket", &stale, LIMITS).await.is_ok());
    }

    #[tokio::test]
    async fn read_line_stops_at_the_cap() {
        let mut input: &[u8] = b"short\nthis line is far too long\nnext\n";
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut input, &mut line, 10).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"short");
        line.clear();
        assert_eq!(
            read_line(&mut input, &mut line, 10).await.unwrap(),
            LineRead::TooLong
        );
        let mut input: &[u8] = b"last-without-newline";
        line.clear();
        assert_eq!(
            read_line(&mut input, &mut line, 64).await.unwrap(),
            LineRead::Line
        );
        line.clear();
        assert_eq!(read_line(&mut input, &mut line, 64).await.unwrap(), LineRead::End);
    }
}
