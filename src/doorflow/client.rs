//! The HTTP client: one pooled reqwest client on rustls (ring provider), explicit timeouts,
//! `User-Agent: doorflow-agent/<version>`, authentication (personal API key or OAuth refresh
//! token with atomic rotation), the shared rate budget, and paginated lists.

use super::error::{ApiError, ErrorBody, Operation, TransportKind};
use super::models::TokenResponse;
use super::ratelimit::{RateBudget, RateInfo};
use crate::config::{ApiConfig, AuthMethod, SecretSource};
use crate::mutex::lock;
use crate::secrets::{self, Secret};
use jiff::{SignedDuration, Timestamp};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Refresh this long before the access token expires.
const REFRESH_AHEAD: SignedDuration = SignedDuration::from_secs(300);

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
}

struct AccessToken {
    token: Secret,
    expires_at: Timestamp,
}

pub struct Client {
    http: reqwest::Client,
    base_url: String,
    auth: Auth,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    budget: Arc<Mutex<RateBudget>>,
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
            }),
        };
        Client::build(config, &config.base_url, auth, budget)
    }

    /// A client for the event sink at `events_url`, with the API's timeouts. `budget` is the
    /// DoorFlow budget when the sink is on the same server, its own otherwise.
    pub fn event_sink(
        config: &ApiConfig,
        events_url: &str,
        token: Option<&SecretSource>,
        budget: Arc<Mutex<RateBudget>>,
    ) -> Result<Client, ClientSetupError> {
        let token = token.map(secrets::read).transpose()?;
        Client::build(config, events_url, Auth::Sink(token), budget)
    }

    fn build(
        config: &ApiConfig,
        base_url: &str,
        auth: Auth,
        budget: Arc<Mutex<RateBudget>>,
    ) -> Result<Client, ClientSetupError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("doorflow-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout_s.secs())
            .timeout(config.request_timeout_s.secs())
            .https_only(!is_loopback_http(base_url))
            .build()
            .map_err(|e| ClientSetupError::Http(e.to_string()))?;
        Ok(Client {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            auth,
            token: tokio::sync::Mutex::new(None),
            budget,
        })
    }

    /// The origin (`scheme://host:port`) requests go to, for sharing budgets per server.
    pub fn origin(&self) -> Option<String> {
        origin(&self.base_url)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Waits for a slot in the shared budget.
    async fn pace(&self) {
        let slot = lock(&self.budget).reserve(Timestamp::now());
        let wait = slot.duration_since(Timestamp::now());
        if wait.is_positive() {
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
    }

    async fn authorise(
        &self,
        request: RequestBuilder,
        operation: Operation,
    ) -> Result<RequestBuilder, ApiError> {
        match &self.auth {
            Auth::ApiKey(key) => Ok(request.basic_auth(key.expose(), Some("X"))),
            Auth::Sink(None) => Ok(request),
            Auth::Sink(Some(token)) => Ok(request.bearer_auth(token.expose())),
            Auth::OAuth(oauth) => {
                let mut token = self.token.lock().await;
                let fresh = token
                    .as_ref()
                    .is_some_and(|t| Timestamp::now() + REFRESH_AHEAD < t.expires_at);
                if !fresh {
                    *token = Some(self.refresh(oauth, operation).await?);
                }
                let token = token
                    .as_ref()
                    .map(|t| t.token.expose().to_string())
                    .unwrap_or_default();
                Ok(request.bearer_auth(token))
            }
        }
    }

    /// `POST /oauth/token` with the refresh token; a rotated refresh token is written (0600,
    /// atomically) before the new access token is used. On failure the old tokens stay.
    async fn refresh(&self, oauth: &OAuth, operation: Operation) -> Result<AccessToken, ApiError> {
        let OAuth {
            client_id,
            client_secret,
            refresh_token_file,
        } = oauth;
        let refresh_token = secrets::read_file(refresh_token_file).map_err(|e| ApiError::Transport {
            operation,
            kind: TransportKind::Other,
            detail: e.to_string(),
        })?;
        self.pace().await;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose()),
        ];
        let request = self
            .http
            .post(format!("{}/oauth/token", self.base_url))
            .form(&form);
        let response = self.execute(request, Operation::RefreshToken).await?;
        let token: TokenResponse = decode(response, Operation::RefreshToken).await?;
        if let Some(rotated) = token
            .refresh_token
            .as_deref()
            .filter(|r| *r != refresh_token.expose())
        {
            secrets::write_atomic(refresh_token_file, &Secret::new(rotated)).map_err(|e| {
                ApiError::Transport {
                    operation: Operation::RefreshToken,
                    kind: TransportKind::Other,
                    detail: format!("rotated refresh token could not be saved, keeping the old one: {e}"),
                }
            })?;
            tracing::info!("DoorFlow rotated the refresh token; saved");
        }
        let lifetime = SignedDuration::from_secs(token.expires_in.unwrap_or(3600) as i64);
        Ok(AccessToken {
            token: Secret::new(token.access_token),
            expires_at: Timestamp::now() + lifetime,
        })
    }

    /// Sends with the budget, parses rate headers, and turns non-2xx into `ApiError`.
    async fn execute(&self, request: RequestBuilder, operation: Operation) -> Result<Response, ApiError> {
        let response = request.send().await.map_err(|e| transport(operation, &e))?;
        let now = Timestamp::now();
        let info = RateInfo::from_headers(response.headers(), now);
        lock(&self.budget).observe(&info);
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let body = ErrorBody::parse(&response.bytes().await.unwrap_or_default());
        let retry_at = matches!(status, 408 | 429)
            .then(|| info.retry_at(body.retry_in, now))
            .flatten();
        if status == 429 {
            let until = retry_at.unwrap_or(now + SignedDuration::from_secs(60));
            lock(&self.budget).pause_until(until);
        }
        Err(ApiError::Status {
            operation,
            status,
            body,
            retry_at,
        })
    }

    /// One authorised request; a first 401 refreshes the token and retries once.
    pub async fn request(
        &self,
        operation: Operation,
        method: Method,
        url: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let send = || async {
            self.pace().await;
            let request = self
                .authorise(build(self.http.request(method.clone(), url)), operation)
                .await?;
            self.execute(request, operation).await
        };
        match send().await {
            Err(ApiError::Status { status: 401, .. }) if matches!(self.auth, Auth::OAuth(_)) => {
                tracing::info!(?operation, "access token refused; refreshing once");
                *self.token.lock().await = None;
                send().await
            }
            other => other,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A whole paginated list: `page` from 1, `per_page`, until a short page.
    pub async fn list<T: DeserializeOwned>(
        &self,
        operation: Operation,
        path: &str,
        per_page: u32,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, ApiError> {
        let mut all = Vec::new();
        for page in 1u32.. {
            let url = self.url(path);
            let response = self
                .request(operation, Method::GET, &url, |r| {
                    r.query(query)
                        .query(&[("page", page.to_string()), ("per_page", per_page.to_string())])
                })
                .await?;
            let items: Vec<T> = decode(response, operation).await?;
            let short = items.len() < per_page as usize;
            all.extend(items);
            if short {
                break;
            }
            tracing::debug!(?operation, page, fetched = all.len(), "page fetched");
        }
        Ok(all)
    }

    /// A list that is not paginated (groups, roles).
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        operation: Operation,
        path: &str,
    ) -> Result<Vec<T>, ApiError> {
        let response = self
            .request(operation, Method::GET, &self.url(path), |r| r)
            .await?;
        decode(response, operation).await
    }
}

async fn decode<T: DeserializeOwned>(response: Response, operation: Operation) -> Result<T, ApiError> {
    let bytes = response.bytes().await.map_err(|e| transport(operation, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
        operation,
        detail: e.to_string(),
    })
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
    let server = error.url().and_then(|u| origin(u.as_str())).unwrap_or_default();
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

/// `scheme://host:port` of a URL, with the scheme's default port filled in.
pub fn origin(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}:{}",
        parsed.scheme(),
        parsed.host_str()?,
        parsed.port_or_known_default()?
    ))
}

fn is_loopback_http(url: &str) -> bool {
    url.starts_with("http://") && crate::config::check_url(url).is_ok()
}
