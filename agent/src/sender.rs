//! Delivery to the hubs: one signed body at a time, failing over between hub URLs, classifying
//! every answer (see the agent README's error table).

use std::time::Duration;

use monsys_proto::agent::{RegisterRequest, RegisterResponse, SIGNATURE_HEADER};

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
    http: reqwest::Client,
}

impl Sender {
    /// A sender over `hubs` (base URLs) with a per-request timeout.
    pub fn new(hubs: Vec<String>, timeout: Duration) -> anyhow::Result<Sender> {
        anyhow::ensure!(!hubs.is_empty(), "at least one --hub URL is needed");
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Sender {
            hubs: hubs.into_iter().map(|h| h.trim_end_matches('/').to_string()).collect(),
            current: 0,
            http,
        })
    }

    /// The hub tried first.
    pub fn current(&self) -> &str {
        &self.hubs[self.current]
    }

    /// One batch: tries each hub once, starting with the current one.
    pub async fn send(&mut self, token: &str, body: &[u8], signature: &str) -> Verdict {
        let mut last = Verdict::Retry { after: Duration::from_secs(5), reason: "no hub".into() };
        for _ in 0..self.hubs.len() {
            let url = format!("{}/api/v1/ingest", self.hubs[self.current]);
            let resp = self
                .http
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, signature)
                .body(body.to_vec())
                .send()
                .await;
            last = match resp {
                Err(e) => Verdict::Retry { after: Duration::from_secs(1), reason: format!("{url}: {e}") },
                Ok(r) => classify(r).await,
            };
            match &last {
                Verdict::Retry { reason, .. } if !reason.starts_with("rate") => {
                    tracing::debug!(%reason, "hub did not take the batch; failing over");
                    self.current = (self.current + 1) % self.hubs.len();
                }
                _ => return last,
            }
        }
        last
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
