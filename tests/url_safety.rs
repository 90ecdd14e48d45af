//! Issue 11 item 2, one URL parser: for every form in which a URL can disguise its host, the host
//! the https-or-loopback rule checked is the host the HTTP client connects to.
//!
//! Accepted forms are sent through the agent's own client to listeners on 127.0.0.1, 127.0.0.2
//! and ::1, and the listener that is reached must be the host the rule checked (the old hand
//! split read `http://127.0.0.2:P\@127.0.0.1/` as 127.0.0.1; reqwest goes to 127.0.0.2).
//! Refused forms cannot be connected to from a test (they are remote hosts), so their refusal is
//! compared with reqwest's own parse of the same text: the message names the host reqwest would
//! have connected to. The binary's `check-config` refuses the example.

use doorflow_agent::config::ServiceUrl;
use doorflow_agent::doorflow::client::Client;
use doorflow_agent::doorflow::error::Operation;
use doorflow_agent::doorflow::ratelimit::RateBudget;
use doorflow_agent::testing::config::{demo, demo_config, write_config};
use futures_util::future::select_all;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Host;

/// The host reqwest itself finds in `text` (its request URL), if it parses it.
fn reqwest_host(text: &str) -> Option<String> {
    doorflow_agent::doorflow::client::install_crypto_provider();
    let request = reqwest::Client::new().post(text).build().ok()?;
    request.url().host_str().map(str::to_string)
}

struct Listeners {
    listeners: Vec<TcpListener>,
}

impl Listeners {
    async fn bind() -> Listeners {
        let mut listeners = vec![
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.2:0").await.unwrap(),
        ];
        // IPv6 loopback, where the machine has it.
        if let Ok(v6) = TcpListener::bind("[::1]:0").await {
            listeners.push(v6);
        }
        Listeners { listeners }
    }

    fn port(&self, index: usize) -> Option<u16> {
        self.listeners.get(index).map(|l| l.local_addr().unwrap().port())
    }

    /// The URL text with `{p1}`, `{p2}`, `{p6}` replaced by the listeners' ports; `None` when
    /// it needs IPv6 and there is none.
    fn fill(&self, template: &str) -> Option<String> {
        let mut text = template.replace("{p1}", &self.port(0)?.to_string());
        text = text.replace("{p2}", &self.port(1)?.to_string());
        if text.contains("{p6}") {
            text = text.replace("{p6}", &self.port(2)?.to_string());
        }
        Some(text)
    }

    /// Answers the first connection on any listener with 204 and returns its local address.
    async fn reached(&self) -> Option<SocketAddr> {
        let accepts = self.listeners.iter().map(|l| Box::pin(l.accept()));
        let accepted = tokio::time::timeout(Duration::from_secs(10), select_all(accepts)).await;
        let (mut stream, _) = accepted.ok()?.0.ok()?;
        let local = stream.local_addr().ok()?;
        let mut buffer = [0u8; 4096];
        let _ = stream.read(&mut buffer).await;
        let _ = stream
            .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .await;
        Some(local)
    }
}

fn sink_client(url: &ServiceUrl) -> Client {
    let mut api = demo().api;
    api.request_timeout_s = doorflow_agent::config::values::Ranged::new(5);
    let budget = Arc::new(Mutex::new(RateBudget::new(10_000)));
    Client::event_sink(&api, url, None, budget).unwrap()
}

/// Whether the address the connection arrived on is the host the rule checked.
fn is_host(reached: IpAddr, host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => reached == IpAddr::V4(*ip),
        Host::Ipv6(ip) => reached == IpAddr::V6(*ip),
        Host::Domain("localhost") => reached.is_loopback(),
        Host::Domain(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_the_rule_checks_is_the_host_reqwest_connects_to() {
    let listeners = Listeners::bind().await;
    let accepted = [
        // The attack with a loopback "remote": a backslash ends the authority.
        "http://127.0.0.2:{p2}\\@127.0.0.1:{p1}/",
        "http://127.0.0.2:{p2}\\\\@127.0.0.1:{p1}/",
        // IPv4 written every way the WHATWG parser reads it.
        "http://2130706434:{p2}/",
        "http://0x7f.0.0.2:{p2}/",
        "http://0x7f000002:{p2}/",
        "http://0177.0.0.2:{p2}/",
        "http://127.2:{p2}/",
        "http://127.0.0.2.:{p2}/",
        "http://127.000.000.002:{p2}/",
        "http://%31%32%37.0.0.2:{p2}/",
        "HTTP://127.0.0.2:{p2}/",
        "http:/127.0.0.2:{p2}",
        "http:///127.0.0.2:{p2}/",
        // localhost in the forms that map to it, pinned to loopback by the client.
        "http://localhost:{p1}/",
        "http://LOCALHOST:{p1}/",
        "http://ｌｏｃａｌｈｏｓｔ:{p1}/",
        "http://%6c%6f%63%61%6c%68%6f%73%74:{p1}/",
        "http://127.0.0.1:{p1}/",
        "http://[::1]:{p6}/",
        "http://[0:0:0:0:0:0:0:1]:{p6}/",
    ];
    let mut checked = 0;
    for template in accepted {
        let Some(text) = listeners.fill(template) else {
            continue; // no IPv6 loopback on this machine
        };
        let url = ServiceUrl::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        // The same parse as reqwest's own.
        assert_eq!(
            reqwest_host(&text).as_deref(),
            Some(url.host().to_string().as_str()),
            "{text:?}"
        );
        let client = sink_client(&url);
        let request = tokio::spawn({
            let target = url.url().clone();
            async move {
                client
                    .request(Operation::PostEvent, reqwest::Method::POST, &target, |r| {
                        r.body("{}")
                    })
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        let reached = listeners
            .reached()
            .await
            .unwrap_or_else(|| panic!("{text:?}: no listener was reached"));
        assert!(
            is_host(reached.ip(), &url.host()),
            "{text:?}: the rule checked {}, the client connected to {reached}",
            url.host()
        );
        assert_eq!(request.await.unwrap().ok(), Some(204), "{text:?}");
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} forms were tried");
}

#[test]
fn a_refusal_names_the_host_reqwest_would_have_connected_to() {
    let refused = [
        "http://203.0.113.7:8080\\@127.0.0.1/",
        "http://evil.example\\.127.0.0.1/",
        "http://127.0.0.1:80@evil.example/",
        "http://127.0.0.1%2f@x.example/",
        "http://localhost./",
        "http://localhost.evil.example/",
        "http://locaIhost/",
        "http://lоcalhost/",
        "http://127.0.0.1.nip.io/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://0/",
        "http://[::]/",
        "http://10.0.0.1/",
        "http://api.doorflow.com/",
    ];
    for text in refused {
        let error = ServiceUrl::parse(text).expect_err(text);
        let host = reqwest_host(text).unwrap_or_else(|| panic!("reqwest parses {text:?}"));
        assert!(
            error.contains(&format!("host `{host}`")),
            "{text:?}: reqwest would connect to {host}; the refusal says: {error}"
        );
    }
    // Texts that reqwest cannot send either are refused too.
    for text in [
        "https://",
        "http://",
        "https:///",
        "api.doorflow.com",
        "http://1.2.3.4.5/",
    ] {
        assert!(ServiceUrl::parse(text).is_err(), "{text:?}");
        assert!(reqwest_host(text).is_none(), "{text:?}");
    }
}

/// The example through the real binary: `check-config` exits 2 naming the key and the
/// host the URL really points at.
#[test]
fn check_config_refuses_a_backslash_that_hides_a_remote_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), "http://127.0.0.1:18080");
    let path = write_config(&config, dir.path());
    // The bad value is set as a field of the TOML document (a `ServiceUrl` cannot hold it).
    let mut document: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    document["api"]["base_url"] = toml::Value::String("http://203.0.113.7:8080\\@127.0.0.1/".into());
    std::fs::write(&path, toml::to_string(&document).unwrap()).unwrap();
    let output = doorflow_agent::testing::agent_command(env!("CARGO_BIN_EXE_doorflow-agent"))
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("api.base_url") && stderr.contains("host `203.0.113.7`"),
        "{stderr}"
    );
}
