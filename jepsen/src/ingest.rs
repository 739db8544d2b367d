//! The ingest workload and its checkers: simulated agents (real Ed25519 signatures, the agent
//! protocol of `monsys-proto`) send batches `seq = 1, 2, …` through random nodes, retrying the
//! byte-identical body on any non-final answer, exactly like `monsys agent` (at once on the next
//! node when the try certainly did not arrive: connection refused or `503`). Afterwards:
//! - **no lost acknowledged batch**: every acknowledged seq is stored (the agent's stored batch
//!   count and highest seq cover it);
//! - **nothing stored twice**: the stored batch count equals the number of distinct seqs;
//! - **no duplicate alert firing**: every batch breaches the `cpu_high` rule (for 1 sample), so
//!   each agent must have exactly one `cpu_high` alert however many owners it had.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use monsys_proto::agent::{self as wire, IngestBatch, Sample};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::{ENROLLMENT, TOKEN};
use crate::until::Until;

/// What one simulated agent did.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRun {
    /// Agent id.
    pub id: String,
    /// Highest acknowledged seq (all below were acknowledged too).
    pub acked: u64,
    /// Seqs still unacknowledged at the deadline (sent, outcome unknown).
    pub pending: u64,
    /// A final refusal of an unchanged batch (a retry must never be refused).
    pub refused: Option<String>,
    /// Every acknowledged batch's timing (for the unavailability report).
    #[serde(skip)]
    pub acks: Vec<Ack>,
}

/// One acknowledged batch.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// First try, µs since the start of the run.
    pub first_us: u64,
    /// Acknowledgement, µs since the start of the run.
    pub acked_us: u64,
    /// Tries it took.
    pub tries: u32,
}

/// The checkers' findings.
#[derive(Debug, Clone, Serialize)]
pub struct IngestVerdict {
    /// Acknowledged batches missing from the store.
    pub lost: Vec<String>,
    /// Agents with a batch stored twice.
    pub doubled: Vec<String>,
    /// Agents with more than one `cpu_high` alert.
    pub duplicate_alerts: Vec<String>,
    /// Retries refused as conflicts or replays.
    pub refused: Vec<String>,
    /// Batches acknowledged in all.
    pub acknowledged: u64,
}

impl IngestVerdict {
    /// Whether every property holds.
    pub fn valid(&self) -> bool {
        self.lost.is_empty()
            && self.doubled.is_empty()
            && self.duplicate_alerts.is_empty()
            && self.refused.is_empty()
    }
}

/// Sets a one-sample `cpu_high` rule so every batch (CPU 95 %) breaches it.
pub async fn prepare(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let rules = json!({ "rules": [{ "id": "cpu_high", "metric": "cpu_percent", "threshold": 90.0, "for_samples": 1, "severity": "warning", "enabled": true }] });
    for _ in 0..30 {
        if http
            .put(format!("{url}/api/v1/alert-rules"))
            .bearer_auth(TOKEN)
            .json(&rules)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("could not set the alert rule")
}

async fn register(
    http: &reqwest::Client,
    urls: &[String],
    i: usize,
    key: &SigningKey,
) -> anyhow::Result<(String, String)> {
    let body = json!({
        "enrollment_token": ENROLLMENT, "hostname": format!("sim-{i}"), "machine_id": format!("sim-{i}"),
        "signing_pubkey": wire::encode_pubkey(&key.verifying_key()), "agent_version": "1.0.0", "os": "linux", "arch": "x86_64",
    });
    for k in 0..60 {
        if let Ok(r) = http
            .post(format!("{}/api/v1/agents/register", urls[(i + k) % urls.len()]))
            .json(&body)
            .send()
            .await
            && r.status().is_success()
        {
            let v: Value = r.json().await?;
            return Ok((
                v["agent_id"].as_str().unwrap_or_default().into(),
                v["agent_token"].as_str().unwrap_or_default().into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("agent {i} could not register")
}

/// Runs `agents` simulated agents until `until` passes, one batch every `every` per agent;
/// times are recorded relative to `start`.
pub async fn run(
    urls: Vec<String>,
    agents: usize,
    start: Instant,
    until: Until,
    every: Duration,
) -> anyhow::Result<Vec<AgentRun>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()?;
    let mut tasks = Vec::new();
    for i in 0..agents {
        let key = SigningKey::from_bytes(&[(i as u8).wrapping_add(11); 32]);
        let (id, token) = register(&http, &urls, i, &key).await?;
        let (http, urls, until) = (http.clone(), urls.clone(), until.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = 0u64;
            let mut refused = None;
            let mut acks = Vec::new();
            let mut k = i;
            'batches: while !until.passed() {
                let seq = acked + 1;
                let batch = IngestBatch {
                    agent_id: id.clone(),
                    seq,
                    collected_at_ms: 1_760_000_000_000 + seq * 15_000,
                    agent_version: "1.0.0".into(),
                    metrics: vec![
                        Sample::new(wire::metric::CPU_PERCENT, 95.0),
                        Sample::new(wire::metric::LOAD1, 1.0),
                    ],
                    inventory: None,
                    processes: None,
                    alerts: vec![],
                };
                let body = serde_json::to_vec(&batch).expect("json");
                let sig = wire::sign_body(&key, &body);
                let first_us = start.elapsed().as_micros() as u64;
                let mut tries = 0u32;
                loop {
                    if until.passed() {
                        break 'batches;
                    }
                    k += 1;
                    tries += 1;
                    let r = http
                        .post(format!("{}/api/v1/ingest", urls[k % urls.len()]))
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .header(wire::SIGNATURE_HEADER, &sig)
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            acked = seq;
                            acks.push(Ack { first_us, acked_us: start.elapsed().as_micros() as u64, tries });
                            break;
                        }
                        Ok(r) if r.status().as_u16() == 409 || r.status().as_u16() == 403 => {
                            // a final refusal of a batch this agent never changed is itself a bug
                            refused = Some(format!(
                                "seq {seq}: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            ));
                            break 'batches;
                        }
                        // not delivered: the next node at once (a short pause after a full round)
                        Ok(r) if r.status().as_u16() == 503 => {
                            if (tries as usize).is_multiple_of(urls.len()) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        Err(e) if e.is_connect() => {
                            if (tries as usize).is_multiple_of(urls.len()) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                tokio::time::sleep(every).await;
            }
            let pending = u64::from(until.passed());
            AgentRun { id, acked, pending, refused, acks }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await?);
    }
    Ok(out)
}

/// Checks the store (linearizable reads through any reachable node) against what agents saw.
pub async fn check(urls: &[String], runs: &[AgentRun]) -> IngestVerdict {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let get = async |path: String| -> Option<Value> {
        for u in urls {
            if let Ok(r) = http.get(format!("{u}{path}")).bearer_auth(TOKEN).send().await
                && r.status().is_success()
            {
                return r.json().await.ok();
            }
        }
        None
    };
    let mut v = IngestVerdict {
        lost: vec![],
        doubled: vec![],
        duplicate_alerts: vec![],
        refused: vec![],
        acknowledged: 0,
    };
    for a in runs {
        v.acknowledged += a.acked;
        if let Some(r) = &a.refused {
            v.refused.push(format!("{}: {r}", a.id));
        }
        let Some(doc) = get(format!("/api/v1/agents/{}", a.id)).await else {
            v.lost.push(format!("{}: agent unreadable", a.id));
            continue;
        };
        let (stored, last) = (doc["batches"].as_u64().unwrap_or(0), doc["last_seq"].as_u64().unwrap_or(0));
        // seqs are sent in order, so stored seqs are exactly 1..=last
        if last < a.acked {
            v.lost.push(format!("{}: acknowledged up to {} but stored up to {last}", a.id, a.acked));
        }
        if stored != last || last > a.acked + a.pending {
            v.doubled
                .push(format!("{}: {stored} batches stored for seqs 1..={last} (acked {})", a.id, a.acked));
        }
        let alerts = get(format!("/api/v1/alerts?state=all&agent_id={}", a.id)).await.unwrap_or_default();
        let cpu =
            alerts["alerts"].as_array().map_or(0, |l| l.iter().filter(|x| x["key"] == "cpu_high").count());
        if a.acked > 0 && cpu != 1 {
            v.duplicate_alerts.push(format!("{}: {cpu} cpu_high alerts", a.id));
        }
    }
    v
}
