//! Pulling one list: page after page until the server's totals say it is complete (or all at
//! once with `sync.skip_pagination`, paging as the fallback), each answer parsed as it arrives
//! and its records staged in the store as they come, so neither a page nor the list is held in
//! memory. A page that fails in a way that may pass (429, 408, 5xx, a broken connection, a
//! truncated or malformed answer) is asked again after the wait — the server's, or a backoff —
//! up to `PAGE_ATTEMPTS` times in a row; the pages already staged are kept, so a sync resumes
//! where it stopped instead of starting again at page 1.

use super::convert::ToRecord;
use super::plan;
use super::{SyncError, SyncTarget};
use crate::doorflow::body::{each_item, ItemConsumer, StreamError};
use crate::doorflow::client::{Client, UNPAGINATED_ITEMS};
use crate::doorflow::error::{ApiError, Operation};
use crate::doorflow::paging::{Next, PageTotals, Pager};
use crate::doorflow::ratelimit::parse_http_date;
use crate::mutex::lock;
use crate::snapshot::{Record, RecordKind, Snapshot};
use crate::status::SyncProgress;
use crate::store::{Staged, Store};
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
// tokio's, so a test on the paused clock measures the rate the way the sync waits.
use tokio::time::Instant;

/// Failures in a row after which a page, and so the sync, is given up (the previous snapshot
/// stays; the next sync starts again).
pub const PAGE_ATTEMPTS: u32 = 5;
/// Records per store transaction while staging.
const BATCH: usize = 1000;
/// Items a whole list answer (`skip_pagination`) may hold when the server gives no total: its
/// size limit is this many times `api.max_bytes_per_item`.
const UNCOUNTED_ITEMS: u64 = 500_000;
/// Journal lines about a running sync, at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// A whole list in one answer may take longer than a page.
const WHOLE_LIST_TIMEOUT: Duration = Duration::from_secs(600);

/// What a list is and how it is asked for.
#[derive(Debug, Clone)]
pub struct ListSpec {
    pub kind: RecordKind,
    pub operation: Operation,
    /// Items per page asked; 0 for a list the API does not paginate (groups, roles).
    pub per_page: u64,
    pub query: Vec<(&'static str, String)>,
}

/// What to do with a list's records.
#[derive(Clone)]
pub enum Collect {
    /// Stage every record (a list pulled in full).
    Stage,
    /// Stage only the records that differ from the doors' snapshot (a `since_utc` list).
    Changed(Arc<Snapshot>),
    /// Keep them in memory (a small list, compared with the snapshot before anything is
    /// written).
    Keep,
}

/// What a pull brought.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Items received (as the server listed them).
    pub received: u64,
    pub total: Option<u64>,
    /// Records staged.
    pub staged: u64,
    /// The records of a `Keep` pull.
    pub kept: Vec<Record>,
    /// A fingerprint of the last credential listed (credential lists only).
    pub last: Option<u32>,
    /// DoorFlow's time when the listing began (its first answer's `Date`).
    pub began: Option<Timestamp>,
    /// The newest `updated_at` among the people received.
    pub newest_updated: Option<Timestamp>,
}

/// Takes a list's records on the parser's thread: stages them in batches, or keeps them.
struct ItemSink {
    store: Arc<Store>,
    staged: Staged,
    collect: Collect,
    batch: Vec<Record>,
    kept: Vec<Record>,
    staged_records: u64,
    last: Option<u32>,
    newest_updated: Option<Timestamp>,
    /// Items of the answer being read (shown by `status` while a long answer streams).
    live: Arc<AtomicU64>,
}

impl ItemSink {
    fn flush(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store
            .stage_records(&self.staged, &self.batch)
            .map_err(|e| e.to_string())?;
        self.batch.clear();
        Ok(())
    }

    fn take(&mut self, record: Record) -> Result<(), String> {
        self.live.fetch_add(1, Ordering::Relaxed);
        if let Record::Credential(c) = &record {
            self.last = Some(plan::fingerprint(
                &c.id,
                c.person_id,
                c.credential_type_id,
                &c.value,
                c.status.as_deref(),
            ));
        }
        let stage = match &self.collect {
            Collect::Keep => {
                self.kept.push(record);
                return Ok(());
            }
            Collect::Stage => true,
            Collect::Changed(snapshot) => differs(snapshot, &record),
        };
        if stage {
            self.staged_records += 1;
            self.batch.push(record);
            if self.batch.len() >= BATCH {
                self.flush()?;
            }
        }
        Ok(())
    }
}

impl<T: ToRecord> ItemConsumer<T> for ItemSink {
    fn item(&mut self, item: T) -> Result<(), String> {
        if let Some(updated) = item.updated_at() {
            self.newest_updated = Some(self.newest_updated.map_or(updated, |n| n.max(updated)));
        }
        self.take(item.to_record())
    }

    fn end(&mut self) -> Result<(), String> {
        self.flush()
    }
}

/// Whether `record` changes what the doors' snapshot holds for its id.
fn differs(snapshot: &Snapshot, record: &Record) -> bool {
    match record {
        Record::Person(person) => snapshot
            .person(person.id)
            .is_none_or(|held| !held.same_as(person)),
        Record::GroupReservation(reservation) => !snapshot
            .group_reservations_of(reservation.person_id)
            .iter()
            .any(|held| held == reservation),
        _ => true,
    }
}

/// Why a page failed, and whether it may pass if asked again.
enum PageError {
    Again {
        error: ApiError,
        /// When the server said to come back (monotonic).
        wait: Option<std::time::Instant>,
    },
    Fatal(SyncError),
}

fn classify(error: StreamError) -> PageError {
    let error = match error {
        StreamError::Consumer(detail) => return PageError::Fatal(SyncError::Staging(detail)),
        StreamError::Api(error) => error,
    };
    match &error {
        ApiError::Status {
            status: 408 | 429 | 500..=599,
            retry_at,
            ..
        } => PageError::Again {
            wait: *retry_at,
            error,
        },
        ApiError::Transport { .. } | ApiError::Decode { .. } => PageError::Again { error, wait: None },
        // Another answer will not be smaller, nor a redirect go elsewhere.
        ApiError::Status { .. } | ApiError::TooLarge { .. } | ApiError::Redirect { .. } => {
            PageError::Fatal(SyncError::Api(error))
        }
    }
}

/// A pull in progress: the client, where records go, and where progress is shown.
pub struct Puller<'a> {
    pub target: &'a SyncTarget,
    pub client: &'a Client,
    pub staged: &'a Staged,
    /// When the sync started, on the monotonic clock (its rate so far is measured from here).
    pub started: Instant,
    /// When the journal last said how far the sync had got (monotonic).
    pub logged: Instant,
}

impl Puller<'_> {
    /// Starts a pull for `target` now.
    pub fn new<'a>(target: &'a SyncTarget, client: &'a Client, staged: &'a Staged) -> Puller<'a> {
        let now = Instant::now();
        Puller {
            target,
            client,
            staged,
            started: now,
            logged: now,
        }
    }

    /// DoorFlow's time now (the trusted wall time until DoorFlow has answered in this boot):
    /// the clock of the sync's `started_at`, so its progress times compare with each other.
    fn doorflow_now(&self) -> Timestamp {
        self.target.clock.doorflow_time(&self.target.clock.now())
    }

    /// Updates the sync's progress (shown by `status`) under its lock.
    pub fn progress(&self, update: impl FnOnce(&mut SyncProgress)) {
        let now = self.doorflow_now();
        let mut status = lock(&self.target.status);
        if let Some(progress) = status.progress.as_mut() {
            update(progress);
            progress.estimate(now, self.started.elapsed(), self.target.requests_per_minute);
        }
    }

    /// Pulls `spec` in full (`later` requests are expected after it, for the estimate).
    pub async fn pull<T: ToRecord>(
        &mut self,
        spec: &ListSpec,
        collect: Collect,
        later: u64,
    ) -> Result<Pulled, SyncError> {
        let paged = spec.per_page > 0;
        let mut pager = Pager::new(spec.per_page.max(1));
        let mut whole = paged && self.target.skip_pagination;
        let live = Arc::new(AtomicU64::new(0));
        let mut sink = ItemSink {
            store: Arc::clone(&self.target.store),
            staged: self.staged.clone(),
            collect,
            batch: Vec::with_capacity(BATCH),
            kept: Vec::new(),
            staged_records: 0,
            last: None,
            newest_updated: None,
            live: Arc::clone(&live),
        };
        let mut began = None;
        self.progress(|p| {
            p.list = spec.kind.as_str().to_string();
            p.fetched = 0;
            p.total = None;
            p.pages_left = None;
            p.later_requests = later;
        });
        let mut failures = 0;
        while let Next::Page { page, per_page } = pager.next() {
            let mut query = spec.query.clone();
            if paged {
                if whole {
                    query.push(("skip_pagination", "true".into()));
                } else {
                    query.push(("page", page.to_string()));
                }
                query.push(("per_page", per_page.to_string()));
            }
            live.store(pager.received(), Ordering::Relaxed);
            let answer = self.fetch::<T>(spec, &query, whole, per_page, sink).await;
            sink = answer.0;
            self.progress(|p| p.requests += 1);
            let (items, totals, date) = match answer.1 {
                Ok(answered) => answered,
                Err(error) => {
                    failures += 1;
                    self.wait_to_retry(spec, error, failures).await?;
                    // A server that cannot send the whole list at once is paged instead.
                    whole = false;
                    continue;
                }
            };
            failures = 0;
            if pager.pages() == 0 {
                began = date;
            }
            if paged {
                pager.answered(items, totals).map_err(|e| SyncError::Incomplete {
                    list: spec.kind.as_str(),
                    detail: e.to_string(),
                })?;
            } else {
                break;
            }
            whole = false;
            self.progress(|p| {
                p.fetched = pager.received();
                p.total = pager.total();
                p.pages_left = pager.pages_left();
            });
            self.log_progress(false);
        }
        let received = if paged {
            pager.received()
        } else {
            sink.kept.len() as u64 + sink.staged_records
        };
        let pulled = Pulled {
            received,
            total: pager.total(),
            staged: sink.staged_records,
            kept: sink.kept,
            last: sink.last,
            began,
            newest_updated: sink.newest_updated,
        };
        self.progress(|p| {
            p.fetched = received;
            p.pages_left = Some(0);
        });
        tracing::info!(
            list = spec.kind.as_str(),
            received,
            total = ?pulled.total,
            staged = pulled.staged,
            pages = pager.pages(),
            "sync: list pulled"
        );
        Ok(pulled)
    }

    /// One answer, parsed into `sink` as it arrives: how many items, the totals its headers
    /// gave, and its `Date`.
    async fn fetch<T: ToRecord>(
        &self,
        spec: &ListSpec,
        query: &[(&'static str, String)],
        whole: bool,
        per_page: u64,
        sink: ItemSink,
    ) -> (
        ItemSink,
        Result<(u64, PageTotals, Option<Timestamp>), StreamError>,
    ) {
        let url = self.client.url(&spec.operation.path(None));
        let response = self
            .client
            .request(spec.operation, Method::GET, &url, |r| {
                let r = r.query(query);
                if whole {
                    r.timeout(WHOLE_LIST_TIMEOUT)
                } else {
                    r
                }
            })
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return (sink, Err(StreamError::Api(error))),
        };
        let totals = PageTotals::from_headers(response.headers());
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let items = match (whole, totals.total) {
            (true, Some(total)) => total.max(per_page),
            (true, None) => UNCOUNTED_ITEMS,
            (false, _) if spec.per_page == 0 => UNPAGINATED_ITEMS,
            (false, _) => per_page,
        };
        let limit = self.client.list_limit(items);
        let (sink, items) = each_item::<T, _>(response, spec.operation, limit, sink).await;
        (sink, items.map(|items| (items, totals, date)))
    }

    /// Waits before a page is asked again, or gives up: not a failure that may pass, or
    /// `PAGE_ATTEMPTS` in a row. 429s hold every caller in the client's budget as well.
    async fn wait_to_retry(
        &self,
        spec: &ListSpec,
        error: StreamError,
        failures: u32,
    ) -> Result<(), SyncError> {
        let (error, server_wait) = match classify(error) {
            PageError::Fatal(error) => return Err(error),
            PageError::Again { error, wait } => (error, wait),
        };
        if failures >= PAGE_ATTEMPTS {
            tracing::warn!(list = spec.kind.as_str(), failures, %error, "sync: giving up on the page");
            return Err(SyncError::Api(error));
        }
        let backoff = self.target.backoff(failures).unsigned_abs();
        let server = server_wait.map_or(std::time::Duration::ZERO, |at| {
            at.saturating_duration_since(std::time::Instant::now())
        });
        let wait = backoff.max(server);
        let until = self.doorflow_now() + wait;
        tracing::info!(
            list = spec.kind.as_str(),
            attempt = failures + 1,
            until = %until,
            %error,
            "sync: page failed; asking again after the wait, pages already fetched are kept"
        );
        let why = error.to_string();
        self.progress(|p| {
            p.waiting_until = Some(until);
            p.waiting_for = Some(why);
        });
        tokio::time::sleep(wait).await;
        self.progress(|p| {
            p.waiting_until = None;
            p.waiting_for = None;
        });
        Ok(())
    }

    /// Logs how far the sync has got, at most every `LOG_EVERY` (or now when `force`).
    pub fn log_progress(&mut self, force: bool) {
        if !force && self.logged.elapsed() < LOG_EVERY {
            return;
        }
        self.logged = Instant::now();
        let progress = lock(&self.target.status).progress.clone();
        if let Some(progress) = progress {
            tracing::info!(
                list = %progress.list,
                fetched = progress.fetched,
                total = ?progress.total,
                requests_left = ?progress.pages_left.map(|p| p + progress.later_requests),
                expected_finish = ?progress.expected_finish.map(|t| t.to_string()),
                "{}",
                progress.summary()
            );
        }
    }
}

/// The one credential at `position` of the list (`per_page=1`): the server's total and that
/// credential's fingerprint (`None` when the list is shorter).
pub async fn probe_credentials(
    puller: &mut Puller<'_>,
    position: u64,
) -> Result<(Option<u64>, Option<u32>), SyncError> {
    let spec = ListSpec {
        kind: RecordKind::Credentials,
        operation: Operation::ListCredentials,
        per_page: 1,
        query: Vec::new(),
    };
    let query = vec![("page", position.to_string()), ("per_page", "1".to_string())];
    let mut failures = 0;
    let mut sink = ItemSink {
        store: Arc::clone(&puller.target.store),
        staged: puller.staged.clone(),
        collect: Collect::Keep,
        batch: Vec::new(),
        kept: Vec::new(),
        staged_records: 0,
        last: None,
        newest_updated: None,
        live: Arc::new(AtomicU64::new(0)),
    };
    loop {
        sink.last = None;
        sink.kept.clear();
        let answer = puller
            .fetch::<crate::doorflow::models::Credential>(&spec, &query, false, 1, sink)
            .await;
        sink = answer.0;
        puller.progress(|p| p.requests += 1);
        match answer.1 {
            Ok((_, totals, _)) => return Ok((totals.total, sink.last)),
            Err(error) => {
                failures += 1;
                puller.wait_to_retry(&spec, error, failures).await?;
            }
        }
    }
}

impl SyncTarget {
    /// The wait before the `failures`th retry of a page: `retry_base` doubling up to
    /// `retry_cap`, the upper half of it at random (so boards sharing an account spread out).
    pub fn backoff(&self, failures: u32) -> SignedDuration {
        let ceiling = self
            .retry_base
            .saturating_mul(1i32 << failures.min(20).saturating_sub(1))
            .min(self.retry_cap);
        let half = ceiling.as_secs_f64() / 2.0;
        SignedDuration::from_secs_f64(half + half * fastrand::f64())
    }
}
