//! The HTTP client: one pooled reqwest client on rustls (ring provider), explicit timeouts,
//! `User-Agent: doorflow-agent/<version>`, authentication (personal API key or OAuth refresh
//! token with atomic rotation), the shared rate budget, and the size limit of list answers (the
//! lists themselves are followed by `sync` with `paging` and read with `body::each_item`).
//!
//! Every request goes to a URL built from the config's parsed `ServiceUrl` (never from text),
//! redirects are followed only within the origin and only when they keep the method (307/308),
//! so credentials never leave the server they were configured for, and answers are read with a
//! size limit (`body`).

use super::body::{decode_json, read_prefix};
use super::error::{ApiError, ErrorBody, Operation, TransportKind};
use super::models::TokenResponse;
use super::ratelimit::{RateBudget, RateInfo};
use crate::clock::trusted::TimeKeeper;
use crate::clock::Now;
use crate::config::{ApiConfig, AuthMethod, SecretSource, ServiceUrl};
use crate::mutex::lock;
use crate::secrets::{self, Secret};
use reqwest::{redirect, Method, RequestBuilder, Response, StatusCode, Url};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Refresh at most this long before the access token expires (less for short-lived tokens:
/// see [`refresh_at`]).
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// A 429 that names no retry time holds every caller this long.
const RATE_LIMIT_HOLD: Duration = Duration::from_secs(60);
/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;
/// Items a list without pagination (groups, roles) may hold, for its size limit.
pub const UNPAGINATED_ITEMS: u64 = 2_000;
/// Room for a list's brackets and separators beyond its items.
const LIST_SLACK_BYTES: u64 = 16 * 1024;
/// Most bytes read of a token answer, and of an error body (the rest is not read).
const SMALL_BODY_BYTES: u64 = 64 * 1024;

enum Auth {
    ApiKey(Secret),
    OAuth(OAuth),
    /// The event sink: its own bearer token, or none. Never DoorFlow's credentials.
    Sink(Option<Secret>),
}

struct OAuth {
    client_id: String,
    client_secret: Secret,
    refresh_token_file: PathBuf,
    /// A rotated refresh token that could not be written to `refresh_token_file` (a read-only
    /// file or directory), with what the file held then: DoorFlow has retired the file's token,
    /// so the rotated one is used for the next refresh instead, or the agent would lock itself
    /// out at once, until someone puts another token in the file.
    unsaved: Mutex<Option<UnsavedToken>>,
}

struct UnsavedToken {
    /// The file's token when the rotated one could not replace it.
    in_file: Secret,
    rotated: Secret,
}

struct AccessToken {
    token: Secret,
    /// When to refresh it (monotonic: a wall clock step neither expires it early nor keeps it
    /// too long).
    refresh_at: Instant,
    /// Which token this is (1, 2, …), so a 401 clears only the token it was sent with.
    serial: u64,
}

/// Whether DoorFlow refuses the agent's credentials (a 401 after a refresh, or a refused
/// token call), shared by the client and `status`. Cleared by the next answered request.
#[derive(Debug, Default)]
pub struct AuthHealth {
    refused: Mutex<Option<String>>,
    unsaved: Mutex<Option<String>>,
}

impl AuthHealth {
    /// Why DoorFlow refused the credentials, while it does.
    pub fn refused(&self) -> Option<String> {
        lock(&self.refused).clone()
    }

    /// Why the current refresh token lives only in memory (it could not be saved), while it
    /// does: a restart would lose access to DoorFlow.
    pub fn refresh_token_unsaved(&self) -> Option<String> {
        lock(&self.unsaved).clone()
    }

    fn set(&self, refused: Option<String>) {
        let mut current = lock(&self.refused);
        if current.is_some() && refused.is_none() {
            tracing::info!("DoorFlow accepts the credentials again");
        }
        *current = refused;
    }
}

pub struct Client {
    http: reqwest::Client,
    base_url: ServiceUrl,
    max_bytes_per_item: u64,
    auth: Auth,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    /// Access tokens issued to this client so far.
    tokens_issued: std::sync::atomic::AtomicU64,
    auth_health: Arc<AuthHealth>,
    /// Set when DoorFlow answers a call with a success (`status.online`), whichever caller
    /// made it: a long first sync is online from its first page, not from its end.
    answered: Option<Arc<std::sync::atomic::AtomicBool>>,
    budget: Arc<Mutex<RateBudget>>,
    /// Fed with DoorFlow's `Date` headers (not the event sink's).
    clock: Arc<TimeKeeper>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// Installs ring as rustls's process-wide provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    /// The DoorFlow API client.
    pub fn new(config: &ApiConfig, budget: Arc<Mutex<RateBudget>>) -> Result<Client, ClientSetupError> {
        let auth = match config.auth.method {
            AuthMethod::ApiKey => {
                let source = config
                    .auth
                    .api_key
                    .as_ref()
                    .ok_or_else(|| ClientSetupError::Http("api_key missing".into()))?;
                Auth::ApiKey(secrets::read(source)?)
            }
            AuthMethod::Oauth => Auth::OAuth(OAuth {
                client_id: config.auth.client_id.clone().unwrap_or_default(),
                client_secret: secrets::read(
                    config
                        .auth
                        .client_secret
                        .as_ref()
                        .ok_or_else(|| ClientSetupError::Http("client_secret missing".into()))?,
                )?,
                refresh_token_file: config.auth.refresh_token_file.clone().unwrap_or_default(),
                unsaved: Mutex::new(None),
            }),
        };
        Client::build(config, &config.base_url, auth, budget)
    }

    /// A client for the event sink at `events_url`, with the API's timeouts. `budget` is the
    /// DoorFlow budget when the sink is on the same server, its own otherwise.
    pub fn event_sink(
        config: &ApiConfig,
        events_url: &ServiceUrl,
        token: Option<&SecretSource>,
        budget: Arc<Mutex<RateBudget>>,
    ) -> Result<Client, ClientSetupError> {
        let token = token.map(secrets::read).transpose()?;
        Client::build(config, events_url, Auth::Sink(token), budget)
    }

    fn build(
        config: &ApiConfig,
        base_url: &ServiceUrl,
        auth: Auth,
        budget: Arc<Mutex<RateBudget>>,
    ) -> Result<Client, ClientSetupError> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("doorflow-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout_s.secs())
            .timeout(config.request_timeout_s.secs())
            .https_only(!base_url.is_loopback_http())
            .redirect(redirect::Policy::custom(|attempt| {
                if redirect_allowed(attempt.status(), attempt.url(), attempt.previous()) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }));
        if let Some(addresses) = base_url.pinned_localhost() {
            builder = builder.resolve_to_addrs("localhost", &addresses);
        }
        let http = builder
            .build()
            .map_err(|e| ClientSetupError::Http(crate::error_chain::chain(&e)))?;
        Ok(Client {
            http,
            base_url: base_url.clone(),
            max_bytes_per_item: config.max_bytes_per_item.get(),
            auth,
            token: tokio::sync::Mutex::new(None),
            tokens_issued: Default::default(),
            auth_health: Arc::default(),
            answered: None,
            budget,
            clock: Arc::default(),
        })
    }

    /// Shares the agent's time keeper: DoorFlow's `Date` headers set its trusted-time floor.
    pub fn with_clock(mut self, clock: Arc<TimeKeeper>) -> Client {
        self.clock = clock;
        self
    }

    /// Reports refused credentials to `health` (the agent's, shown by `status`).
    pub fn with_auth_health(mut self, health: Arc<AuthHealth>) -> Client {
        self.auth_health = health;
        self
    }

    /// Sets `online` whenever DoorFlow answers a call with a success (the agent's flag).
    pub fn with_online(mut self, online: Arc<std::sync::atomic::AtomicBool>) -> Client {
        self.answered = Some(online);
        self
    }

    /// The configured URL: the API root, or the event sink itself.
    pub fn base_url(&self) -> &ServiceUrl {
        &self.base_url
    }

    /// Waits for a slot in the shared budget (monotonic).
    async fn pace(&self) {
        let slot = lock(&self.budget).reserve(Instant::now());
        let wait = slot.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The request with its credentials, and the serial of the access token used (OAuth).
    /// Callers waiting while one refreshes use the token it gets: one refresh per token.
    async fn authorise(
        &self,
        request: RequestBuilder,
        operation: Operation,
    ) -> Result<(RequestBuilder, Option<u64>), ApiError> {
        match &self.auth {
            Auth::ApiKey(key) => Ok((request.basic_auth(key.expose(), Some("X")), None)),
            Auth::Sink(None) => Ok((request, None)),
            Auth::Sink(Some(token)) => Ok((request.bearer_auth(token.expose()), None)),
            Auth::OAuth(oauth) => {
                let mut token = self.token.lock().await;
                let fresh = token.as_ref().is_some_and(|t| Instant::now() < t.refresh_at);
                if !fresh {
                    *token = Some(self.refresh(oauth, operation).await?);
                }
                let token = token.as_ref().expect("set above");
                Ok((request.bearer_auth(token.token.expose()), Some(token.serial)))
            }
        }
    }

    /// Forgets access token `serial` after DoorFlow refused it (unless another caller has
    /// already replaced it), so the next request refreshes.
    async fn forget_token(&self, serial: Option<u64>) {
        let mut token = self.token.lock().await;
        if token.as_ref().map(|t| t.serial) == serial {
            *token = None;
        }
    }

    /// `POST /oauth/token` with the refresh token; a rotated refresh token is written (0600,
    /// atomically) before the new access token is used. A failed call keeps the old tokens; a
    /// rotated token that cannot be written is kept in memory and used for the next refresh
    /// (`AuthHealth::refresh_token_unsaved` says so).
    async fn refresh(&self, oauth: &OAuth, operation: Operation) -> Result<AccessToken, ApiError> {
        let OAuth {
            client_id,
            client_secret,
            refresh_token_file,
            unsaved: _,
        } = oauth;
        let in_file = secrets::read_file(refresh_token_file);
        let refresh_token = {
            let mut unsaved = lock(&oauth.unsaved);
            match (&in_file, unsaved.as_ref()) {
                // The file still holds the retired token (or cannot be read): the rotated one.
                (Ok(file), Some(kept)) if *file == kept.in_file => kept.rotated.clone(),
                (Err(_), Some(kept)) => kept.rotated.clone(),
                // A token put in the file since (the operator's fix) wins.
                (Ok(file), _) => {
                    if unsaved.take().is_some() {
                        *lock(&self.auth_health.unsaved) = None;
                    }
                    file.clone()
                }
                (Err(error), None) => {
                    return Err(ApiError::Transport {
                        operation,
                        kind: TransportKind::Other,
                        detail: error.to_string(),
                    })
                }
            }
        };
        self.pace().await;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose()),
        ];
        let request = self
            .http
            .post(self.url(&Operation::RefreshToken.path(None)))
            .form(&form);
        let asked = Instant::now();
        let response = self.execute(request, Operation::RefreshToken).await?;
        let token: TokenResponse = decode_json(response, Operation::RefreshToken, SMALL_BODY_BYTES).await?;
        if let Some(rotated) = token
            .refresh_token
            .as_deref()
            .filter(|r| *r != refresh_token.expose())
        {
            let rotated = Secret::new(rotated);
            match secrets::write_atomic(refresh_token_file, &rotated) {
                Ok(()) => {
                    tracing::info!("DoorFlow rotated the refresh token; saved");
                    *lock(&oauth.unsaved) = None;
                    *lock(&self.auth_health.unsaved) = None;
                }
                Err(error) => {
                    // DoorFlow has retired the old token: keep the new one in memory so this
                    // run keeps its access, and say loudly that a restart would lose it.
                    let why = format!(
                        "DoorFlow rotated the refresh token but it could not be saved ({error}); \
                         it is kept in memory, so a restart would lose access to DoorFlow: make \
                         {} writable by the agent (its directory too)",
                        refresh_token_file.display()
                    );
                    tracing::error!("{why}");
                    *lock(&oauth.unsaved) = Some(UnsavedToken {
                        in_file: in_file.unwrap_or_else(|_| refresh_token.clone()),
                        rotated,
                    });
                    *lock(&self.auth_health.unsaved) = Some(why);
                }
            }
        }
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        let serial = 1 + self
            .tokens_issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(lifetime_s = lifetime.as_secs(), serial, "access token refreshed");
        Ok(AccessToken {
            token: Secret::new(token.access_token),
            // From when it was asked for: the lifetime started no later than that.
            refresh_at: refresh_at(asked, lifetime),
            serial,
        })
    }

    /// Sends with the budget, parses rate headers, and turns non-2xx into `ApiError`.
    async fn execute(&self, request: RequestBuilder, operation: Operation) -> Result<Response, ApiError> {
        let response = request.send().await.map_err(|e| transport(operation, &e))?;
        let received = Now::read_raw();
        let info = RateInfo::from_headers(response.headers(), received.mono, received.wall);
        if let (Some(date), false) = (info.date, matches!(self.auth, Auth::Sink(_))) {
            self.clock.observe_doorflow_date(date, received.boot);
        }
        lock(&self.budget).observe(&info);
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            if let Some(online) = &self.answered {
                online.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return Ok(response);
        }
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(200).collect());
            return Err(ApiError::Redirect {
                operation,
                status,
                location,
            });
        }
        let body = ErrorBody::parse(&read_prefix(response, SMALL_BODY_BYTES as usize).await);
        // `Retry-After` on any status is the least the server asked everyone to wait; a 429
        // without it still holds everyone (its reset, `retry_in`, or a minute).
        let retry_at = match status {
            408 | 429 => info.retry_at(body.retry_in, received.mono),
            _ => info.retry_after,
        };
        let pause = match status {
            429 => Some(retry_at.unwrap_or(received.mono + RATE_LIMIT_HOLD)),
            _ => info.retry_after,
        };
        if let Some(until) = pause {
            let mut budget = lock(&self.budget);
            budget.pause_until(until);
            if status == 429 {
                budget.count_rate_limited();
            }
        }
        Err(ApiError::Status {
            operation,
            status,
            body,
            retry_at,
        })
    }

    /// One authorised request; a first 401 refreshes the token and retries once. A refusal
    /// of the credentials (see [`ApiError::is_auth_refused`]) is kept in the client's
    /// [`AuthHealth`] until a request is answered.
    pub async fn request(
        &self,
        operation: Operation,
        method: Method,
        url: &Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let send = || async {
            self.pace().await;
            let request = build(self.http.request(method.clone(), url.clone()));
            match self.authorise(request, operation).await {
                Ok((request, serial)) => (self.execute(request, operation).await, serial),
                Err(error) => (Err(error), None),
            }
        };
        let result = match send().await {
            (Err(ApiError::Status { status: 401, .. }), serial) if matches!(self.auth, Auth::OAuth(_)) => {
                tracing::info!(?operation, "access token refused; refreshing once");
                self.forget_token(serial).await;
                send().await.0
            }
            (other, _) => other,
        };
        if !matches!(self.auth, Auth::Sink(_)) {
            match &result {
                Ok(_) => self.auth_health.set(None),
                Err(error) if error.is_auth_refused() => self.auth_health.set(Some(error.to_string())),
                Err(_) => {}
            }
        }
        result
    }

    /// `path` (from `Operation::path`) under the configured root.
    pub fn url(&self, path: &str) -> Url {
        self.base_url.join_path(path)
    }

    /// The most bytes a list answer of `items` items may have (`api.max_bytes_per_item` each,
    /// and a little for the brackets); for a list the API does not paginate, `items` is
    /// [`UNPAGINATED_ITEMS`].
    pub fn list_limit(&self, items: u64) -> u64 {
        items.saturating_mul(self.max_bytes_per_item) + LIST_SLACK_BYTES
    }
}

/// When to refresh an access token issued at `issued` for `lifetime` (monotonic): ahead of its
/// expiry by five minutes or half its lifetime, whichever is shorter, so a token of an hour is
/// used for 55 minutes and one of 5 minutes for 2.5 (issue 16: refreshing before every request
/// spent the budget twice and rotated the refresh token each time).
pub fn refresh_at(issued: Instant, lifetime: Duration) -> Instant {
    issued + lifetime - REFRESH_AHEAD.min(lifetime / 2)
}

/// Whether to follow a redirect to `next` (reqwest's policy callback): only within the origin
/// the request was made to (scheme, host and port, so never https to http and never to another
/// server, and the credentials stay where they were configured), only when the method and body
/// are kept (307, 308: a POST stays a POST), and at most `MAX_REDIRECTS` times.
pub fn redirect_allowed(status: StatusCode, next: &Url, previous: &[Url]) -> bool {
    let Some(first) = previous.first() else {
        return false;
    };
    let keeps_method = matches!(
        status,
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
    );
    keeps_method && previous.len() <= MAX_REDIRECTS && next.origin() == first.origin()
}

pub(super) fn transport(operation: Operation, error: &reqwest::Error) -> ApiError {
    let text = format!("{error:?}");
    let kind = if error.is_timeout() {
        TransportKind::Timeout
    } else if text.contains("certificate") || text.contains("Tls") || text.contains("tls") {
        TransportKind::Tls
    } else if error.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    // reqwest's own message only says a request failed; the root cause says why.
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let server = error
        .url()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let detail = if std::error::Error::source(error).is_none() {
        error.to_string()
    } else {
        format!("{cause} ({server})")
    };
    ApiError::Transport {
        operation,
        kind,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn tokens_are_refreshed_ahead_by_five_minutes_or_half_their_lifetime() {
        let issued = Instant::now();
        let secs = Duration::from_secs;
        assert_eq!(refresh_at(issued, secs(3600)), issued + secs(3300));
        assert_eq!(refresh_at(issued, secs(600)), issued + secs(300));
        assert_eq!(refresh_at(issued, secs(300)), issued + secs(150));
        assert_eq!(refresh_at(issued, secs(4)), issued + secs(2));
        assert_eq!(refresh_at(issued, secs(0)), issued, "an expired token: at once");
    }

    #[test]
    fn redirects_stay_within_the_origin_and_keep_the_method() {
        let from = [url("https://api.doorflow.com/api/3/people")];
        let follow =
            |status: u16, to: &str| redirect_allowed(StatusCode::from_u16(status).unwrap(), &url(to), &from);
        assert!(follow(307, "https://api.doorflow.com/api/3/people?page=1"));
        assert!(follow(308, "https://API.doorflow.com:443/v3/people"));
        // Another server, another port, or down to http: never (credentials would follow).
        assert!(!follow(307, "https://evil.example/api/3/people"));
        assert!(!follow(307, "https://api.doorflow.com:8443/api/3/people"));
        assert!(!follow(308, "http://api.doorflow.com/api/3/people"));
        assert!(!follow(307, "https://api.doorflow.com.evil.example/"));
        // Redirects that turn a POST into a GET are not followed, even within the origin.
        for status in [301, 302, 303] {
            assert!(
                !follow(status, "https://api.doorflow.com/api/3/people"),
                "{status}"
            );
        }
        // Every hop is compared with the first URL, and the chain is bounded.
        let chain: Vec<Url> = (0..=MAX_REDIRECTS)
            .map(|n| url(&format!("https://api.doorflow.com/{n}")))
            .collect();
        assert!(!redirect_allowed(
            StatusCode::TEMPORARY_REDIRECT,
            &url("https://api.doorflow.com/x"),
            &chain
        ));
        assert!(!redirect_allowed(StatusCode::TEMPORARY_REDIRECT, &from[0], &[]));
    }
}
