//! The URLs the agent calls (DoorFlow's API root, and through it the token endpoint; the event
//! sink), parsed once, when the config is read, by the WHATWG URL parser that reqwest itself
//! uses (the `url` crate), and kept parsed. The https-or-loopback rule is applied to the parsed
//! host, and the client is handed the same parsed `Url`, so the host the rule checked is the host
//! reqwest connects to: a backslash, userinfo, percent-encoding, an IDNA name or an IPv4 address
//! written in hex, octal or short form cannot make them differ.
//!
//! Rules (WHATWG URL Standard, <https://url.spec.whatwg.org/>, for what the forms mean):
//! - scheme `https`; `http` only when the host is loopback: an IPv4 address in 127.0.0.0/8, the
//!   IPv6 address `::1`, or the name `localhost` exactly (which the client pins to 127.0.0.1
//!   and ::1 rather than asking a resolver). IPv4-mapped IPv6 (`::ffff:127.0.0.1`), `0.0.0.0`,
//!   `localhost.` and other look-alikes are refused: deny on doubt;
//! - no user name or password in the URL (the agent's credentials have their own keys; a URL is
//!   logged and shown in `check-config`);
//! - no query or fragment (paths are appended to the root), no port 0.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use url::{Host, Url};

/// A URL that passed the rules above. Serialises as its normalised text (e.g.
/// `https://api.doorflow.com/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceUrl(Url);

impl ServiceUrl {
    /// Parses `text` and applies the rules; the error names the host the URL really points at.
    pub fn parse(text: &str) -> Result<ServiceUrl, String> {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid absolute URL: {e}"))?;
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(format!("scheme `{scheme}` is not supported; use https"));
        }
        let host = url
            .host()
            .ok_or_else(|| format!("`{text}` has no host"))?
            .to_owned();
        // The URL text is not repeated here: it may hold a password.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "a user name or password in the URL (host `{host}`) is not allowed; credentials go in api.auth or uplink.events_token"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("`{url}` must not have a query or fragment"));
        }
        if url.port() == Some(0) {
            return Err(format!("`{url}`: port 0 cannot be connected to"));
        }
        if scheme == "http" && !is_loopback(&host) {
            return Err(format!(
                "`{url}` uses plain http to host `{host}`, which is non-loopback; use https (http is allowed only for 127.0.0.0/8, ::1 and localhost)"
            ));
        }
        Ok(ServiceUrl(url))
    }

    /// The parsed URL, exactly as the HTTP client uses it.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host the rule checked (and the client connects to).
    pub fn host(&self) -> Host<&str> {
        self.0.host().expect("a ServiceUrl always has a host")
    }

    /// Plain http to a loopback host (tests, the simulator).
    pub fn is_loopback_http(&self) -> bool {
        self.0.scheme() == "http"
    }

    /// Port, the scheme's default when the URL names none.
    pub fn port(&self) -> u16 {
        self.0
            .port_or_known_default()
            .expect("http and https have default ports")
    }

    /// Scheme, host and port: two URLs with the same origin are the same server.
    pub fn origin(&self) -> url::Origin {
        self.0.origin()
    }

    /// `host:port`, for a TCP connect (IPv6 in brackets).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host(), self.port())
    }

    /// The addresses `localhost` is pinned to (the name is not looked up: a resolver or a hosts
    /// file must not be able to send loopback-only plain http elsewhere). `None` for every other
    /// host.
    pub fn pinned_localhost(&self) -> Option<[SocketAddr; 2]> {
        match self.host() {
            Host::Domain("localhost") => Some([
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port()),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port()),
            ]),
            _ => None,
        }
    }

    /// This URL with `path` (starting with `/`) appended to its path, e.g. the root
    /// `https://proxy.example/doorflow/` and `/api/3/people` give
    /// `https://proxy.example/doorflow/api/3/people`.
    pub fn join_path(&self, path: &str) -> Url {
        let mut url = self.0.clone();
        let joined = format!("{}{}", self.0.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }
}

/// Loopback as the rule reads it: 127.0.0.0/8, ::1, or the name `localhost` (already
/// lower-cased and IDNA-mapped by the parser, so `LOCALHOST` and full-width forms arrive here as
/// `localhost`).
fn is_loopback(host: &Host<String>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => *ip == Ipv6Addr::LOCALHOST,
        Host::Domain(name) => name == "localhost",
    }
}

impl TryFrom<String> for ServiceUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        ServiceUrl::parse(&text)
    }
}

impl From<ServiceUrl> for String {
    fn from(url: ServiceUrl) -> String {
        url.0.into()
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host the rule accepted, as text.
    fn accepted(text: &str) -> String {
        match ServiceUrl::parse(text) {
            Ok(url) => url.host().to_string(),
            Err(error) => panic!("{text:?} refused: {error}"),
        }
    }

    fn refused(text: &str) -> String {
        match ServiceUrl::parse(text) {
            Ok(url) => panic!("{text:?} accepted as {url}"),
            Err(error) => error,
        }
    }

    /// Every form in which a URL can hide or disguise its host. Each row: the text, and either
    /// the host the rule accepted or a fragment of the refusal (which names the real host). The
    /// integration test `tests/url_safety.rs` checks the same kind against where reqwest really
    /// connects.
    #[test]
    fn the_rule_applies_to_the_host_the_parser_finds() {
        let accepted_rows = [
            ("https://api.doorflow.com", "api.doorflow.com"),
            ("HTTPS://API.DoorFlow.com/", "api.doorflow.com"),
            ("http://127.0.0.1:8080/api", "127.0.0.1"),
            ("HTTP://127.9.9.9", "127.9.9.9"),
            ("http://[::1]:9000", "[::1]"),
            ("http://[0:0:0:0:0:0:0:1]/", "[::1]"),
            ("http://localhost:9000", "localhost"),
            ("http://LOCALHOST/", "localhost"),
            ("http://ｌｏｃａｌｈｏｓｔ/", "localhost"),
            ("http://%6c%6f%63%61%6c%68%6f%73%74/", "localhost"),
            // The attack of issue 11: a backslash ends the authority, so the host is the part
            // before it, not the part after `@`.
            ("http://127.0.0.2:81\\@127.0.0.1/", "127.0.0.2"),
            ("http:\\\\127.0.0.1\\x", "127.0.0.1"),
            // IPv4 in decimal, hex, octal, short and padded forms, with a trailing dot.
            ("http://2130706434/", "127.0.0.2"),
            ("http://0x7f000001/", "127.0.0.1"),
            ("http://0x7f.0.0.2/", "127.0.0.2"),
            ("http://0177.0.0.2/", "127.0.0.2"),
            ("http://017700000001/", "127.0.0.1"),
            ("http://127.2/", "127.0.0.2"),
            ("http://127.000.000.001/", "127.0.0.1"),
            ("http://127.0.0.2./", "127.0.0.2"),
            ("http://%31%32%37.0.0.2/", "127.0.0.2"),
            // Missing slashes: a special scheme's authority starts anyway.
            ("http:/127.0.0.1", "127.0.0.1"),
            ("http:///127.0.0.1/", "127.0.0.1"),
        ];
        for (text, host) in accepted_rows {
            assert_eq!(accepted(text), host, "{text:?}");
        }

        let refused_rows = [
            (
                "http://api.doorflow.com",
                "host `api.doorflow.com`, which is non-loopback",
            ),
            ("http://evil.example\\.127.0.0.1/", "host `evil.example`"),
            ("http://203.0.113.7:8080\\@127.0.0.1/", "host `203.0.113.7`"),
            (
                "http://127.0.0.1:80@evil.example/",
                "user name or password in the URL (host `evil.example`)",
            ),
            ("http://127.0.0.1%2f@x/", "host `x`"),
            ("https://user:secret@api.doorflow.com/", "user name or password"),
            ("http://user@localhost:9000", "user name or password"),
            ("http://localhost./", "host `localhost.`"),
            ("http://localhost.evil.example/", "host `localhost.evil.example`"),
            ("http://locaIhost/", "host `locaihost`"),
            ("http://lоcalhost/", "host `xn--lcalhost-nbh`"),
            ("http://127.0.0.1.nip.io/", "host `127.0.0.1.nip.io`"),
            ("http://[::ffff:127.0.0.1]/", "host `[::ffff:7f00:1]`"),
            ("http://[::127.0.0.1]/", "non-loopback"),
            ("http://0.0.0.0/", "host `0.0.0.0`"),
            ("http://0/", "host `0.0.0.0`"),
            ("http://[::]/", "host `[::]`"),
            ("http://10.0.0.1", "non-loopback"),
            ("https://", "empty host"),
            ("http://", "empty host"),
            ("https:///", "empty host"),
            ("api.doorflow.com", "not a valid absolute URL"),
            ("ftp://127.0.0.1/", "scheme `ftp`"),
            ("file:///etc/passwd", "scheme `file`"),
            ("https://xn--localhost-/", "invalid international domain name"),
            ("http://1.2.3.4.5/", "invalid IPv4 address"),
            ("http://127.0.0.1:65536/", "invalid port"),
            ("http://[::1]:0/", "port 0"),
            ("https://api.doorflow.com/?debug=1", "query or fragment"),
            ("https://api.doorflow.com/#x", "query or fragment"),
        ];
        for (text, fragment) in refused_rows {
            let error = refused(text);
            assert!(error.contains(fragment), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_never_repeated() {
        let error = refused("https://key:dfk_live_secret@api.doorflow.com/");
        assert!(!error.contains("dfk_live_secret"), "{error}");
    }

    #[test]
    fn paths_are_appended_to_the_root() {
        let root = ServiceUrl::parse("https://proxy.example/doorflow/").unwrap();
        assert_eq!(
            root.join_path("/api/3/people").as_str(),
            "https://proxy.example/doorflow/api/3/people"
        );
        let bare = ServiceUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            bare.join_path("/oauth/token").as_str(),
            "http://127.0.0.1:8080/oauth/token"
        );
        assert_eq!(
            ServiceUrl::parse("https://api.doorflow.com").unwrap().host_port(),
            "api.doorflow.com:443"
        );
        assert_eq!(
            ServiceUrl::parse("http://[::1]:9/").unwrap().host_port(),
            "[::1]:9"
        );
    }

    #[test]
    fn only_the_name_localhost_is_pinned() {
        let pinned = ServiceUrl::parse("http://LocalHost:7000/")
            .unwrap()
            .pinned_localhost();
        assert_eq!(
            pinned.map(|a| a.map(|s| s.to_string())),
            Some(["127.0.0.1:7000".to_string(), "[::1]:7000".to_string()])
        );
        assert!(ServiceUrl::parse("http://127.0.0.1/")
            .unwrap()
            .pinned_localhost()
            .is_none());
    }

    #[test]
    fn it_reads_and_writes_as_text() {
        #[derive(Deserialize, Serialize)]
        struct T {
            url: ServiceUrl,
        }
        let t: T = toml::from_str("url = \"HTTPS://API.doorflow.com\"").unwrap();
        assert_eq!(t.url.to_string(), "https://api.doorflow.com/");
        assert_eq!(
            toml::to_string(&t).unwrap().trim(),
            "url = \"https://api.doorflow.com/\""
        );
        let error = toml::from_str::<T>("url = \"http://x\\\\@127.0.0.1\"")
            .err()
            .unwrap();
        assert!(error.to_string().contains("host `x`"), "{error}");
    }
}
