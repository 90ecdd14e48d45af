//! Test-only hooks in the store, compiled in only with the `testing` cargo feature (never in the
//! shipped build, where these are empty inline functions).
//!
//! - **Crash points.** `DOORFLOW_FAILPOINT=<name>` (or `<name>:<n>` for its n-th hit, 1-based)
//!   aborts the process at that write boundary, as a power cut or `kill -9` would stop it:
//!   nothing is flushed, no destructor runs. The names are listed in [`FAILPOINTS`].
//! - **Negative control.** `DOORFLOW_TEST_ACK_BEFORE_SYNC=1` opens the queue with
//!   `synchronous=OFF`: commits return before their data reaches stable storage, so a power-cut
//!   test must catch acknowledged records going missing.

/// Every crash point in the store, in the order a swipe and a sync reach them.
pub const FAILPOINTS: [&str; 9] = [
    "queue.before_commit",
    "queue.after_commit",
    "snapshot.records_written",
    "snapshot.before_flip",
    "snapshot.after_flip",
    "last_good.temporary_written",
    "last_good.renamed",
    "legacy.imported",
    "meta.written",
];

#[cfg(feature = "testing")]
mod hooks {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    fn armed() -> &'static Option<(String, u32)> {
        static ARMED: OnceLock<Option<(String, u32)>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let spec = std::env::var("DOORFLOW_FAILPOINT").ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some((name, nth.max(1)))
        })
    }

    pub fn failpoint(name: &str) {
        static HITS: AtomicU32 = AtomicU32::new(0);
        if let Some((armed, nth)) = armed() {
            if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
                eprintln!("failpoint {name}: aborting");
                std::process::abort();
            }
        }
    }

    pub fn queue_synchronous() -> &'static str {
        if std::env::var("DOORFLOW_TEST_ACK_BEFORE_SYNC").as_deref() == Ok("1") {
            eprintln!("DOORFLOW_TEST_ACK_BEFORE_SYNC=1: queue commits are NOT synced (negative control)");
            "OFF"
        } else {
            "FULL"
        }
    }
}

#[cfg(feature = "testing")]
pub use hooks::{failpoint, queue_synchronous};

#[cfg(not(feature = "testing"))]
#[inline(always)]
pub fn failpoint(_name: &str) {}

/// `synchronous=FULL`: in WAL mode, the WAL is fdatasync'ed at every commit.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub fn queue_synchronous() -> &'static str {
    "FULL"
}
