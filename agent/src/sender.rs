//! Delivery to the hubs: one signed body at a time, failing over between hub URLs, classifying
//! every answer (see the agent README's error table).
//!
//! Owner hint: the node that owns this agent names its own URL in `x-monsys-owner` (when its
//! operator set `agent_url`). The sender then sends there first, which saves the hub a
//! forwarding hop. An answer from the hinted URL counts only if it carries the header too (the
//! owner puts it on every answer it gives this agent) and is not a 401; otherwise, or when the
//! URL does not answer, the sender goes back to the configured list and ignores that hint for
//! [`HINT_QUARANTINE`]. A hint never switches `https` to `http`, and never points a
//! non-loopback hub list at a loopback address.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use monsys_proto::agent::{OWNER_HEADER, RegisterRequest, RegisterResponse, SIGNATURE_HEADER};

/// How long a hinted owner URL that failed is not followed again.
pub const HINT_QUARANTINE: Duration = Duration::from_secs(600);

/// What to do with a batch after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A hub took it (stored or duplicate): remove it from the buffer.
    Delivered,
    /// It can never succeed (seq conflict, replay, malformed): remove it and count it.
    Drop(String),
    /// The token is no longer valid: register again, then retry.
    Reregister,
    /// Keep it and try later (no hub answered, overloaded, signature problem, rate limited).
    Retry { after: Duration, reason: String },
}

/// Sends to a list of hubs, remembering which one answered last.
pub struct Sender {
    hubs: Vec<String>,
    current: usize,
    /// The owner node named by the last hint, tried before the list while it answers.
    owner: Option<String>,
    /// Hinted URLs that failed, and when.
    failed_hints: HashMap<String, Instant>,
    http: reqwest::Client,
}

impl Sender {
    /// A sender over `hubs` (base URLs) with a per-request timeout.
    pub fn new(hubs: Vec<String>, timeout: Duration) -> anyhow::Result<Sender> {
        anyhow::ensure!(!hubs.is_empty(), "at least one --hub URL is needed");
        for h in &hubs {
            anyhow::ensure!(
                reqwest::Url::parse(h).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()),
                "--hub must be a hub's URL like http://10.0.0.1:8080, got {h:?}"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .pool_max_idle_per_host(1)
            // below a hub's idle keep-alive deadline (20 s by default), so the agent does not
            // reuse a connection just as the hub closes it
            .pool_idle_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Sender {
            hubs: hubs.into_iter().map(|h| h.trim_end_matches('/').to_string()).collect(),
            current: 0,
            owner: None,
            failed_hints: HashMap::new(),
            http,
        })
    }

    /// The hub tried first.
    pub fn current(&self) -> &str {
        self.owner.as_deref().unwrap_or(&self.hubs[self.current])
    }

    /// One batch: tries the hinted owner, then each listed hub once, starting with the current one.
    pub async fn send(&mut self, token: &str, body: &[u8], signature: &str) -> Verdict {
        if let Some(owner) = self.owner.clone() {
            let (verdict, hint) = self.attempt(&owner, token, body, signature).await;
            // only a hub that still owns this agent answers with the hint; anything else
            // (another service, a node that lost the agent's token) is not trusted with it
            if hint.is_some() && verdict != Verdict::Reregister && !fails_over(&verdict) {
                self.follow(&owner, hint);
                return verdict;
            }
            tracing::info!(%owner, "hinted owner did not take the batch; back to the hub list");
            self.owner = None;
            self.failed_hints.insert(owner, Instant::now());
        }
        let mut last = Verdict::Retry { after: Duration::from_secs(5), reason: "no hub".into() };
        for _ in 0..self.hubs.len() {
            let base = self.hubs[self.current].clone();
            let (verdict, hint) = self.attempt(&base, token, body, signature).await;
            if !fails_over(&verdict) {
                self.follow(&base, hint);
                return verdict;
            }
            if let Verdict::Retry { reason, .. } = &verdict {
                tracing::warn!(hub = %base, %reason, "hub did not take the batch; failing over to the next one");
            }
            self.current = (self.current + 1) % self.hubs.len();
            last = verdict;
        }
        last
    }

    /// One delivery attempt to `base`: the verdict and the owner hint of the answer.
    async fn attempt(
        &self,
        base: &str,
        token: &str,
        body: &[u8],
        signature: &str,
    ) -> (Verdict, Option<String>) {
        let url = format!("{base}/api/v1/ingest");
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec())
            .send()
            .await;
        match resp {
            Err(e) => (Verdict::Retry { after: Duration::from_secs(1), reason: format!("{url}: {e}") }, None),
            Ok(r) => {
                let hint = r.headers().get(OWNER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
                (classify(r).await, hint)
            }
        }
    }

    /// Takes the hint of an answer from `base` when it is acceptable.
    fn follow(&mut self, base: &str, hint: Option<String>) {
        let Some(hint) = hint else { return };
        self.failed_hints.retain(|_, at| at.elapsed() < HINT_QUARANTINE);
        if !acceptable_hint(base, &hint) || self.failed_hints.contains_key(&hint) {
            return;
        }
        if self.owner.as_deref() != Some(hint.as_str()) {
            tracing::debug!(owner = %hint, "following the owner hint");
        }
        self.owner = (hint != self.hubs[self.current]).then_some(hint);
    }

    /// Registers (or re-registers) with the first hub that answers.
    pub async fn register(&mut self, req: &RegisterRequest) -> anyhow::Result<RegisterResponse> {
        let mut last_err = anyhow::anyhow!("no hub");
        for _ in 0..self.hubs.len() {
            let url = format!("{}/api/v1/agents/register", self.hubs[self.current]);
            match self.http.post(&url).json(req).send().await {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    anyhow::bail!(
                        "registration refused by {url}: {status} {}",
                        r.text().await.unwrap_or_default()
                    );
                }
                Ok(r) => last_err = anyhow::anyhow!("{url}: {}", r.status()),
                Err(e) => last_err = anyhow::anyhow!("{url}: {e}"),
            }
            self.current = (self.current + 1) % self.hubs.len();
        }
        Err(last_err)
    }
}

/// Whether a verdict moves delivery on to the next hub (a rate limit is the agent's own, so
/// another hub would say the same).
fn fails_over(v: &Verdict) -> bool {
    matches!(v, Verdict::Retry { reason, .. } if !reason.starts_with("rate"))
}

/// Whether an owner hint received from `base` may be followed: an http(s) base URL without
/// path, never a downgrade from https to http, and loopback only from a loopback hub.
fn acceptable_hint(base: &str, hint: &str) -> bool {
    use monsys_proto::agent::base_url_scheme;
    let Some(scheme) = base_url_scheme(hint) else { return false };
    let base_https = base.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let scheme_ok = scheme == "https" || !base_https;
    scheme_ok && (!is_loopback(hint) || is_loopback(base))
}

/// Whether a URL's host is `localhost` or a loopback address.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn classify(r: reqwest::Response) -> Verdict {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let code = body["code"].as_str().unwrap_or_default().to_string();
    match status {
        200..=299 => Verdict::Delivered,
        401 => Verdict::Reregister,
        409 | 400 | 413 | 422 => Verdict::Drop(format!("{status} {code}: {}", body["error"])),
        403 if code == "replay_rejected" || code == "forbidden" => Verdict::Drop(format!("{status} {code}")),
        403 => Verdict::Retry {
            after: Duration::from_secs(60),
            reason: format!("signature problem ({code}): an operator must check the pinned key"),
        },
        429 => Verdict::Retry {
            after: retry_after.unwrap_or(Duration::from_secs(5)),
            reason: "rate limited".into(),
        },
        _ => Verdict::Retry {
            after: retry_after.unwrap_or(Duration::from_secs(1)),
            reason: format!("{status} {code}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_base_urls_and_never_downgrade_tls() {
        assert!(acceptable_hint("http://10.0.0.1:8080", "http://10.0.0.2:8080"));
        assert!(acceptable_hint("http://10.0.0.1:8080", "https://hub2.example.com"));
        assert!(acceptable_hint("https://hub1.example.com", "https://hub2.example.com"));
        assert!(acceptable_hint("https://hub1.example.com", "HTTPS://hub2.example.com"));
        assert!(!acceptable_hint("https://hub1.example.com", "http://hub2.example.com"));
        assert!(!acceptable_hint("HTTPS://hub1.example.com", "http://hub2.example.com"), "scheme case");
        assert!(!acceptable_hint("http://10.0.0.1:8080", "http://127.0.0.1:8080"), "loopback from afar");
        assert!(!acceptable_hint("http://hub1:8080", "http://localhost:8080"));
        assert!(!acceptable_hint("http://hub1:8080", "http://[::1]:8080"));
        assert!(acceptable_hint("http://127.0.0.1:8081", "http://127.0.0.1:8082"), "a local cluster");
        for bad in ["hub2:8080", "ftp://hub2", "http://", "http://hub2/api", "http://user@hub2", "http://a b"]
        {
            assert!(!acceptable_hint("http://hub1:8080", bad), "{bad} accepted");
        }
    }

    #[test]
    fn a_hint_is_followed_unless_it_failed_recently_or_names_the_current_hub() {
        let mut s =
            Sender::new(vec!["http://a:1".into(), "http://b:1".into()], Duration::from_secs(1)).unwrap();
        s.follow("http://a:1", Some("http://c:1".into()));
        assert_eq!(s.current(), "http://c:1");
        s.follow("http://c:1", Some("http://a:1".into()));
        assert_eq!((s.owner.as_deref(), s.current()), (None, "http://a:1"), "the listed hub is the owner");
        s.failed_hints.insert("http://c:1".into(), Instant::now());
        s.follow("http://a:1", Some("http://c:1".into()));
        assert_eq!(s.current(), "http://a:1", "a hint that failed is quarantined");
        s.failed_hints.insert("http://c:1".into(), Instant::now() - HINT_QUARANTINE);
        s.follow("http://a:1", Some("http://c:1".into()));
        assert_eq!(s.current(), "http://c:1", "the quarantine ends");
    }
}
