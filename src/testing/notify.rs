//! A stand-in for systemd's notify socket: a Unix datagram socket a test binds and passes to
//! the agent as `NOTIFY_SOCKET`, recording every message (`READY=1`, `STATUS=…`, `WATCHDOG=1`)
//! with the monotonic time it arrived.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One datagram from the agent.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    /// `KEY=value` lines.
    pub text: String,
}

pub struct NotifySocket {
    path: PathBuf,
    received: Arc<Mutex<Vec<Notification>>>,
}

impl NotifySocket {
    /// Binds `dir/notify.sock` and starts recording (a thread that ends with the process).
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let mut received = sink.lock().unwrap_or_else(|e| e.into_inner());
                received.push(Notification {
                    at: Instant::now(),
                    text,
                });
            }
        });
        NotifySocket { path, received }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn received(&self) -> Vec<Notification> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The values of `KEY=` in arrival order.
    pub fn values(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key}=");
        self.received()
            .iter()
            .flat_map(|n| {
                n.text
                    .lines()
                    .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// When each `WATCHDOG=1` arrived.
    pub fn watchdog_pings(&self) -> Vec<Instant> {
        self.received()
            .iter()
            .filter(|n| n.text.lines().any(|l| l == "WATCHDOG=1"))
            .map(|n| n.at)
            .collect()
    }

    /// Waits (up to `limit`) until the latest `KEY=value` (the current state: the status line
    /// is replaced by each one) satisfies `matches`; returns it.
    pub fn wait_for(&self, key: &str, limit: Duration, matches: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            if let Some(value) = self.values(key).pop().filter(|v| matches(v)) {
                return Some(value);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
