//! `[api]`: where DoorFlow is, how long to wait for it, and how the agent authenticates. The URL
//! is parsed and checked by `ServiceUrl` while the file is read.

use super::service_url::ServiceUrl;
use super::values::Ranged;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// DoorFlow API root, e.g. `https://api.doorflow.com`. Plain http only for loopback.
    pub base_url: ServiceUrl,
    /// TCP + TLS connect timeout, s.
    #[serde(default)]
    pub connect_timeout_s: Ranged<1, 120, 5>,
    /// Whole-request timeout, s.
    #[serde(default)]
    pub request_timeout_s: Ranged<1, 600, 20>,
    /// Requests per minute assumed before the server's rate-limit headers are seen.
    #[serde(default)]
    pub requests_per_minute: Ranged<1, 10_000, 120>,
    /// Most bytes read per list item: a page of `per_page` items may be at most
    /// `per_page × max_bytes_per_item` (plus a little for the brackets) long; a longer answer
    /// is refused as a sync error without being read.
    #[serde(default)]
    pub max_bytes_per_item: Ranged<256, { 1024 * 1024 }, 8192>,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// OAuth 2.0 refresh-token flow; the refresh token is rotated and written back.
    Oauth,
    /// A personal API key sent as HTTP Basic user name.
    ApiKey,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// OAuth client id (not a secret).
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    /// Where the refresh token lives. The agent rewrites it (mode 0600) when DoorFlow rotates
    /// it, so it must be a writable path, normally under the state directory.
    pub refresh_token_file: Option<PathBuf>,
    pub api_key: Option<SecretSource>,
}

impl AuthConfig {
    /// The cross-field rules: each method's required keys.
    pub(super) fn validate(&self, report: &mut impl FnMut(String, String)) {
        match self.method {
            AuthMethod::Oauth => {
                if self.client_id.as_deref().unwrap_or("").is_empty() {
                    report(
                        "api.auth.client_id".into(),
                        "required when method = \"oauth\"".into(),
                    );
                }
                if self.client_secret.is_none() {
                    report(
                        "api.auth.client_secret".into(),
                        "required when method = \"oauth\"".into(),
                    );
                }
                match &self.refresh_token_file {
                    None => report(
                        "api.auth.refresh_token_file".into(),
                        "required when method = \"oauth\"".into(),
                    ),
                    Some(path) if !path.is_absolute() => report(
                        "api.auth.refresh_token_file".into(),
                        format!("`{}` must be an absolute path", path.display()),
                    ),
                    Some(_) => {}
                }
            }
            AuthMethod::ApiKey => {
                if self.api_key.is_none() {
                    report(
                        "api.auth.api_key".into(),
                        "required when method = \"api_key\"".into(),
                    );
                }
            }
        }
        // A key of the other method is a half-finished switch: say so rather than ignore it.
        let (method, of_the_other_method) = match self.method {
            AuthMethod::ApiKey => (
                "api_key",
                vec![
                    ("client_id", self.client_id.is_some()),
                    ("client_secret", self.client_secret.is_some()),
                    ("refresh_token_file", self.refresh_token_file.is_some()),
                ],
            ),
            AuthMethod::Oauth => ("oauth", vec![("api_key", self.api_key.is_some())]),
        };
        for (key, set) in of_the_other_method {
            if set {
                report(
                    format!("api.auth.{key}"),
                    format!("is not used with method = \"{method}\"; remove it (or change `method`)"),
                );
            }
        }
    }
}

/// Where a secret is read from: a file path, or `systemd-credential:NAME`, which resolves to
/// `$CREDENTIALS_DIRECTORY/NAME` (systemd's `LoadCredential=`). Never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretSource {
    File(PathBuf),
    SystemdCredential(String),
}

impl TryFrom<String> for SecretSource {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if let Some(name) = value.strip_prefix("systemd-credential:") {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "`{value}`: a systemd credential name must be non-empty and contain no `/`"
                ));
            }
            return Ok(SecretSource::SystemdCredential(name.to_string()));
        }
        if !value.starts_with('/') {
            // The value is not echoed: someone may have pasted the secret itself.
            return Err(
                "must be an absolute file path or `systemd-credential:NAME`; secrets are never written inline"
                    .to_string(),
            );
        }
        Ok(SecretSource::File(PathBuf::from(value)))
    }
}

impl SecretSource {
    /// The file that holds the secret right now.
    pub fn path(&self) -> Result<PathBuf, String> {
        match self {
            SecretSource::File(path) => Ok(path.clone()),
            SecretSource::SystemdCredential(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|dir| Path::new(&dir).join(name))
                .ok_or_else(|| {
                    format!("systemd credential `{name}` requested but CREDENTIALS_DIRECTORY is not set")
                }),
        }
    }
}

impl From<SecretSource> for String {
    fn from(source: SecretSource) -> String {
        source.to_string()
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "{}", path.display()),
            SecretSource::SystemdCredential(name) => write!(f, "systemd-credential:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_sources_are_paths_or_credentials() {
        assert_eq!(
            SecretSource::try_from("/etc/doorflow-agent/key".to_string()),
            Ok(SecretSource::File("/etc/doorflow-agent/key".into()))
        );
        assert_eq!(
            SecretSource::try_from("systemd-credential:api_key".to_string()),
            Ok(SecretSource::SystemdCredential("api_key".into()))
        );
        assert!(SecretSource::try_from("dfk_live_secret".to_string()).is_err());
        assert!(SecretSource::try_from("systemd-credential:".to_string()).is_err());
    }
}
