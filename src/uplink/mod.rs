//! The uplink: drains the outbox to DoorFlow (admits) and to the event sink (events), one task
//! per lane, oldest record first, applying the retry policy (`policy`).
//!
//! - Only the head of a lane is ever in flight, so order is kept and a crash can duplicate at
//!   most that one record (delivery is at-least-once; every call carries `Idempotency-Key`).
//! - A failed attempt's count, next time and error are written before the lane waits, so a
//!   backoff or a rate-limit hold survives a restart.
//! - Requests go through the client's shared rate budget, so sync and uplink together stay
//!   under the server's limit.
//! - While the server is unreachable the lane probes it with a plain TCP connect every couple
//!   of seconds (no request, no budget) and resumes as soon as it answers, instead of sleeping
//!   out a long backoff. A successful sync wakes it too.
//! - Every wait (backoff, holds, the admit TTL) runs on the monotonic clock (`policy`): a wall
//!   clock step neither stalls the lane nor expires a fresh admit.

pub mod policy;

use crate::clock::trusted::TimeKeeper;
use crate::clock::Now;
use crate::doorflow::client::Client;
use crate::doorflow::error::{ApiError, Operation};
use crate::mutex::lock;
use crate::store::{Call, DeadLetter, Entry, Lane, QueuedCall, Store, StoreError};
use crate::supervisor::Heartbeat;
use jiff::Timestamp;
use policy::{Action, Hold, RetryPolicy};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often an unreachable server is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a store error before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// What a lane is doing, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneState {
    /// Nothing queued.
    #[default]
    Idle,
    /// Sending; the last attempt succeeded.
    Online,
    /// Held by the server's rate limit until `until`.
    Paused,
    /// Backing off after server errors or an unreachable server.
    BackingOff,
    /// Credentials refused; queue kept.
    AuthRefused,
    /// No client for this lane (no event sink configured, or DoorFlow credentials missing).
    Disabled,
    /// The store could not be read or written.
    StoreError,
}

impl LaneState {
    pub fn as_str(self) -> &'static str {
        match self {
            LaneState::Idle => "idle",
            LaneState::Online => "online",
            LaneState::Paused => "paused",
            LaneState::BackingOff => "backing_off",
            LaneState::AuthRefused => "auth_refused",
            LaneState::Disabled => "disabled",
            LaneState::StoreError => "store_error",
        }
    }

    /// Which state `status` shows when lanes differ: the one an operator must look at.
    fn severity(self) -> u8 {
        match self {
            LaneState::Disabled => 0,
            LaneState::Idle => 1,
            LaneState::Online => 2,
            LaneState::BackingOff => 3,
            LaneState::Paused => 4,
            LaneState::AuthRefused => 5,
            LaneState::StoreError => 6,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneStatus {
    pub state: LaneState,
    /// When the lane tries again (paused or backing off), as a wall time for display (the
    /// wait itself runs on the monotonic clock).
    pub until: Option<Timestamp>,
    pub last_error: Option<String>,
    /// Calls delivered since the agent started.
    pub delivered: u64,
    /// Calls moved to the dead letters since the agent started.
    pub dead_lettered: u64,
    /// Failed attempts that will be retried, since the agent started.
    #[serde(default)]
    pub retries: u64,
}

/// Both lanes' status, shared with `status`.
#[derive(Debug, Default)]
pub struct UplinkStatus {
    lanes: Mutex<[LaneStatus; 2]>,
}

impl UplinkStatus {
    pub fn lane(&self, lane: Lane) -> LaneStatus {
        lock(&self.lanes)[lane as usize].clone()
    }

    fn update(&self, lane: Lane, change: impl FnOnce(&mut LaneStatus)) {
        change(&mut lock(&self.lanes)[lane as usize]);
    }

    /// The lane that matters most to an operator (its state, time and error).
    pub fn summary(&self) -> LaneStatus {
        let lanes = lock(&self.lanes);
        lanes
            .iter()
            .max_by_key(|l| l.state.severity())
            .cloned()
            .unwrap_or_default()
    }
}

/// Signals a lane waits on besides its own timers.
#[derive(Clone)]
pub struct Wakeups {
    /// Bumped when calls are queued or dead letters are requeued.
    pub queued: watch::Receiver<u64>,
    /// Bumped when DoorFlow answered (a sync succeeded): retry a backing-off head now.
    pub reachable: watch::Receiver<u64>,
}

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    /// Its time came (or the head admit expired).
    Due,
    /// The unreachable server answers again.
    ServerBack,
}

/// One lane's drain task.
pub struct LaneDrain {
    pub lane: Lane,
    pub store: Arc<Store>,
    /// `None`: nothing can be sent on this lane; admits still expire on time.
    pub client: Option<Arc<Client>>,
    pub policy: RetryPolicy,
    pub status: Arc<UplinkStatus>,
    pub wakeups: Wakeups,
    pub heartbeat: Heartbeat,
    /// Set when the server answers or stops answering (for `status.online`).
    pub online: Arc<std::sync::atomic::AtomicBool>,
    /// The clocks, with the wall time never below DoorFlow's last `Date`.
    pub clock: Arc<TimeKeeper>,
}

impl LaneDrain {
    /// Runs until `stop` is cancelled. It stops while it waits or sends (a request cut off is
    /// sent again after the restart: at-least-once), never inside a store write.
    pub async fn run(mut self, stop: CancellationToken) {
        if self.client.is_none() {
            self.set_state(LaneState::Disabled, None, None);
        }
        while !stop.is_cancelled() {
            self.beat();
            let head = match self.blocking(move |store, lane| store.outbox_head(lane)).await {
                Ok(head) => head,
                Err(error) => {
                    self.store_failed(&error).await;
                    continue;
                }
            };
            let Some(entry) = head else {
                if self.client.is_some() {
                    self.set_state(LaneState::Idle, None, None);
                }
                if stop.run_until_cancelled(self.wait_for_work()).await.is_none() {
                    return;
                }
                continue;
            };
            let now = self.clock.now();
            if policy::is_expired(&entry.value, &now, &self.policy) {
                self.expire(entry, &now).await;
                continue;
            }
            let wait = policy::wait_left(&entry.value, &now, &self.policy);
            if !wait.is_zero() {
                match stop
                    .run_until_cancelled(self.wait_for(wait, &entry.value, &now))
                    .await
                {
                    None => return,
                    Some(Woke::ServerBack) => self.clear_wait(&entry).await,
                    Some(Woke::Due) => {}
                }
                continue;
            }
            let Some(client) = self.client.clone() else {
                // Nothing to send with: wait for the admit to expire (or new work).
                if stop
                    .run_until_cancelled(self.wait_for(Duration::MAX, &entry.value, &now))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            };
            let Some(result) = stop.run_until_cancelled(self.send(&client, &entry.value)).await else {
                return;
            };
            self.settle(entry, result).await;
        }
    }

    fn beat(&self) {
        self.heartbeat.beat();
    }

    fn set_state(&self, state: LaneState, until: Option<Timestamp>, error: Option<String>) {
        self.status.update(self.lane, |s| {
            s.state = state;
            s.until = until;
            if error.is_some() || state == LaneState::Online || state == LaneState::Idle {
                s.last_error = error;
            }
        });
    }

    /// Runs a store operation off the async workers (a queue commit waits for its fsync).
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store, Lane) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        let lane = self.lane;
        match tokio::task::spawn_blocking(move || op(&store, lane)).await {
            Ok(result) => result,
            Err(error) => Err(StoreError::Task(error.to_string())),
        }
    }

    async fn store_failed(&self, error: &StoreError) {
        tracing::error!(lane = self.lane.as_str(), %error, "outbox unreadable or unwritable; retrying");
        self.set_state(LaneState::StoreError, None, Some(error.to_string()));
        self.sleep_beating(STORE_RETRY).await;
    }

    /// Sends one call. The request future keeps the heartbeat going: the budget may hold it
    /// for a minute after a 429, which is waiting, not being stuck.
    async fn send(&self, client: &Client, call: &QueuedCall) -> Result<(), ApiError> {
        let request = async {
            match &call.call {
                Call::Admit {
                    channel_id,
                    person_id,
                } => {
                    let url = client.url(&Operation::AdmitPerson.path(Some(*channel_id)));
                    let body = serde_json::json!({ "person_id": person_id });
                    client
                        .request(Operation::AdmitPerson, reqwest::Method::POST, &url, |r| {
                            r.header("Idempotency-Key", &call.id).json(&body)
                        })
                        .await
                }
                Call::Event { event } => {
                    let body = event.to_doorflow();
                    client
                        .request(
                            Operation::PostEvent,
                            reqwest::Method::POST,
                            client.base_url().url(),
                            |r| r.header("Idempotency-Key", &call.id).json(&body),
                        )
                        .await
                }
            }
        };
        tokio::pin!(request);
        let mut ticks = tokio::time::interval(self.heartbeat.period());
        loop {
            tokio::select! {
                result = &mut request => return result.map(|_| ()),
                _ = ticks.tick() => self.beat(),
            }
        }
    }

    /// Applies the policy's verdict: written to the store first, then the lane's status.
    async fn settle(&self, entry: Entry<QueuedCall>, result: Result<(), ApiError>) {
        let now = self.clock.now();
        let action = policy::after_attempt(
            &entry.value,
            result.as_ref().map(|_| ()),
            &now,
            fastrand::f64(),
            &self.policy,
        );
        let key = entry.key;
        let lane = self.lane.as_str();
        let call_id = entry.value.id.clone();
        match action {
            Action::Remove => {
                self.mark_online(true);
                if let Err(error) = self
                    .blocking(move |store, lane| store.outbox_remove(lane, key))
                    .await
                {
                    return self.store_failed(&error).await;
                }
                self.set_state(LaneState::Online, None, None);
                self.status.update(self.lane, |s| s.delivered += 1);
            }
            Action::DeadLetter {
                status,
                reason,
                detail,
            } => {
                self.mark_online(true);
                tracing::error!(
                    lane,
                    call_id,
                    http_status = status,
                    queue_pending = self.store.pending_count(),
                    reason = %reason,
                    "DoorFlow refused a queued call; moved to the dead letters: {detail}"
                );
                let dead = DeadLetter {
                    queued: entry.value,
                    status,
                    reason,
                    detail,
                    dead_at: now.wall,
                };
                if let Err(error) = self.blocking(move |store, _| store.outbox_kill(key, &dead)).await {
                    return self.store_failed(&error).await;
                }
                self.status.update(self.lane, |s| s.dead_lettered += 1);
            }
            Action::Retry {
                hold,
                attempts,
                wait,
                error,
            } => {
                if hold == Hold::Unreachable {
                    self.mark_online(false);
                }
                let at = now.wall + wait;
                let mut updated = entry.value;
                updated.attempts = attempts;
                updated.next_attempt_at = Some(at);
                updated.next_attempt_boot = Some(now.boot + wait);
                updated.last_error = Some(error.clone());
                updated.hold = Some(hold);
                if let Err(error) = self
                    .blocking(move |store, _| store.outbox_update(key, &updated))
                    .await
                {
                    return self.store_failed(&error).await;
                }
                let state = match hold {
                    Hold::RateLimited => LaneState::Paused,
                    Hold::AuthRefused => LaneState::AuthRefused,
                    Hold::ServerError | Hold::Unreachable => LaneState::BackingOff,
                };
                let http_status = result.as_ref().err().and_then(ApiError::status);
                let wait_s = wait.as_secs_f64();
                let queue_pending = self.store.pending_count();
                if hold == Hold::AuthRefused {
                    tracing::error!(lane, call_id, http_status, queue_pending, %error, "credentials refused; uplink held, queue kept. Check the API key or refresh token");
                } else {
                    tracing::warn!(lane, call_id, http_status, attempts, wait_s, queue_pending, state = state.as_str(), %error, "queued call not delivered; will retry");
                }
                self.set_state(state, Some(at), Some(error));
                self.status.update(self.lane, |s| s.retries += 1);
            }
        }
    }

    fn mark_online(&self, online: bool) {
        self.online.store(online, std::sync::atomic::Ordering::Relaxed);
    }

    async fn expire(&self, entry: Entry<QueuedCall>, now: &Now) {
        let key = entry.key;
        let age_s = policy::age(&entry.value, now).map(|age| age.as_secs());
        tracing::warn!(lane = self.lane.as_str(), call_id = %entry.value.id, age_s, "queued admit expired; not sent (a late admit could open a door for nobody)");
        let dead = DeadLetter {
            status: None,
            reason: "expired".into(),
            detail: format!(
                "not delivered within uplink.admit_ttl_s ({} s); last error: {}",
                self.policy.admit_ttl.as_secs(),
                entry.value.last_error.as_deref().unwrap_or("none")
            ),
            dead_at: now.wall,
            queued: entry.value,
        };
        match self.blocking(move |store, _| store.outbox_kill(key, &dead)).await {
            Ok(()) => self.status.update(self.lane, |s| s.dead_lettered += 1),
            Err(error) => self.store_failed(&error).await,
        }
    }

    /// The head's wait ended early because the server answers again: make it due now,
    /// durably. Its hold stays, so the policy sees the next answer follows an outage.
    async fn clear_wait(&self, entry: &Entry<QueuedCall>) {
        let key = entry.key;
        let mut due = entry.value.clone();
        due.next_attempt_at = None;
        due.next_attempt_boot = None;
        if let Err(error) = self
            .blocking(move |store, _| store.outbox_update(key, &due))
            .await
        {
            self.store_failed(&error).await;
        }
    }

    /// Waits until new work is queued, beating the heartbeat.
    async fn wait_for_work(&mut self) {
        let mut ticks = tokio::time::interval(self.heartbeat.period());
        ticks.tick().await;
        loop {
            tokio::select! {
                changed = self.wakeups.queued.changed() => {
                    if changed.is_err() {
                        // The agent is stopping; keep beating until the lane is stopped.
                        std::future::pending::<()>().await;
                    }
                    return;
                }
                _ = ticks.tick() => self.beat(),
            }
        }
    }

    /// Waits `wait` (or until an admit's expiry, whichever is first), on the monotonic clock.
    /// When the server did not answer at all, the wait ends early as soon as it does again: a
    /// TCP probe connects, or a sync succeeds. Other holds (rate limit, server errors, refused
    /// credentials) are waited out, also across restarts.
    async fn wait_for(&mut self, wait: Duration, head: &QueuedCall, now: &Now) -> Woke {
        // Just past the expiry, so the next pass finds the admit expired.
        let expiry =
            policy::time_to_expiry(head, now, &self.policy).map(|left| left + Duration::from_millis(1));
        let wait = expiry.map_or(wait, |expiry| wait.min(expiry));
        let deadline = now.mono.checked_add(wait);
        let early_wake = head.hold == Some(Hold::Unreachable);
        let probe_target = match &self.client {
            Some(client) if early_wake => Some(client.base_url().host_port()),
            _ => None,
        };
        self.wakeups.reachable.mark_unchanged();
        let mut ticks = tokio::time::interval(self.heartbeat.period());
        let mut probes = tokio::time::interval(PROBE_INTERVAL);
        probes.tick().await;
        loop {
            // `None`: nothing to wait for but new work or the server.
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Woke::Due;
            }
            tokio::select! {
                _ = sleep_for(left) => return Woke::Due,
                _ = ticks.tick() => self.beat(),
                changed = self.wakeups.reachable.changed(), if early_wake => {
                    if changed.is_ok() {
                        tracing::info!(lane = self.lane.as_str(), "DoorFlow answered again; retrying now");
                        return Woke::ServerBack;
                    }
                }
                _ = probes.tick(), if probe_target.is_some() => {
                    if let Some(target) = &probe_target {
                        if reachable(target).await {
                            tracing::info!(lane = self.lane.as_str(), server = %target, "server reachable again; retrying now");
                            return Woke::ServerBack;
                        }
                    }
                }
            }
        }
    }

    async fn sleep_beating(&self, duration: Duration) {
        let end = tokio::time::Instant::now() + duration;
        while tokio::time::Instant::now() < end {
            self.beat();
            tokio::time::sleep_until(end.min(tokio::time::Instant::now() + self.heartbeat.period())).await;
        }
    }
}

/// Sleeps `left`, or forever for `None`.
async fn sleep_for(left: Option<Duration>) {
    match left {
        Some(left) => tokio::time::sleep(left).await,
        None => std::future::pending().await,
    }
}

/// Whether a TCP connection to `host:port` opens (the cheapest sign the server is back).
async fn reachable(target: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
}
