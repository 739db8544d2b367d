//! A test agent speaking the real protocol (signed batches, seq, failover over node URLs),
//! built on the same `monsys-proto` helpers as `monsys agent`.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use monsys_proto::agent::{self as wire, IngestBatch, Sample};
use serde_json::{Value, json};

use super::{TOKEN, split};

/// Creates an enrollment token through node `url`.
pub async fn enrollment_token(http: &reqwest::Client, url: &str) -> String {
    let r = http
        .post(format!("{url}/api/v1/enrollment-tokens"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "tests" }))
        .send()
        .await
        .unwrap();
    let (status, body) = split(r).await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// An agent identity and its delivery state.
pub struct TestAgent {
    pub key: Option<SigningKey>,
    pub machine_id: String,
    pub id: String,
    pub token: String,
    pub next_seq: u64,
    pub http: reqwest::Client,
    /// Collection time of seq 0; batch `seq` is collected `seq × 15 s` later.
    pub base_ms: u64,
}

impl TestAgent {
    /// Registers through `url` (a signing key unless `unsigned`).
    pub async fn register(
        http: &reqwest::Client,
        url: &str,
        enrollment: &str,
        machine: &str,
        unsigned: bool,
    ) -> TestAgent {
        let key = (!unsigned).then(|| SigningKey::from_bytes(&rand_seed(machine)));
        let mut a = TestAgent {
            key,
            machine_id: machine.into(),
            id: String::new(),
            token: String::new(),
            next_seq: 1,
            http: http.clone(),
            base_ms: 1_700_000_000_000,
        };
        let (status, body) = a.try_register(url, enrollment).await;
        assert_eq!(status, 200, "{body}");
        a
    }

    /// One registration attempt; on success stores id and token.
    pub async fn try_register(&mut self, url: &str, enrollment: &str) -> (u16, Value) {
        let body = json!({
            "enrollment_token": enrollment, "hostname": format!("host-{}", self.machine_id),
            "machine_id": self.machine_id, "agent_version": "1.0.0", "os": "linux", "arch": "x86_64",
            "signing_pubkey": self.key.as_ref().map(|k| wire::encode_pubkey(&k.verifying_key())),
        });
        let (status, v) =
            split(self.http.post(format!("{url}/api/v1/agents/register")).json(&body).send().await.unwrap())
                .await;
        if status == 200 {
            self.id = v["agent_id"].as_str().unwrap().to_string();
            self.token = v["agent_token"].as_str().unwrap().to_string();
        }
        (status, v)
    }

    /// The body of batch `seq` with a CPU value.
    pub fn body(&self, seq: u64, cpu: f64) -> Vec<u8> {
        let batch = IngestBatch {
            agent_id: self.id.clone(),
            seq,
            collected_at_ms: self.base_ms + seq * 15_000,
            agent_version: "1.0.0".into(),
            metrics: vec![
                Sample::new(wire::metric::CPU_PERCENT, cpu),
                Sample::labelled(wire::metric::DISK_PERCENT, "mount", "/", 40.0),
            ],
            inventory: None,
            processes: None,
            alerts: vec![],
        };
        serde_json::to_vec(&batch).unwrap()
    }

    /// Posts `body` to one node with this agent's token and signature (or `signature`).
    pub async fn post(
        &self,
        url: &str,
        body: &[u8],
        signature: Option<String>,
    ) -> Result<(u16, Value), reqwest::Error> {
        Ok(split(self.post_raw(url, body, signature).await?).await)
    }

    /// [`TestAgent::post`], answering the response itself (headers included).
    pub async fn post_raw(
        &self,
        url: &str,
        body: &[u8],
        signature: Option<String>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut req = self
            .http
            .post(format!("{url}/api/v1/ingest"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(20))
            .body(body.to_vec());
        let sig = signature.or_else(|| self.key.as_ref().map(|k| wire::sign_body(k, body)));
        if let Some(s) = sig {
            req = req.header(wire::SIGNATURE_HEADER, s);
        }
        req.send().await
    }

    /// Sends batch `seq` until a final answer, failing over across `urls` on 5xx, 429 and
    /// connection errors (the same body every time). Returns the final status and body.
    pub async fn deliver(&self, urls: &[String], seq: u64, cpu: f64, deadline: Duration) -> (u16, Value) {
        let body = self.body(seq, cpu);
        let start = std::time::Instant::now();
        let mut i = seq as usize;
        loop {
            let url = &urls[i % urls.len()];
            match self.post(url, &body, None).await {
                Ok((s, v)) if s < 500 && s != 429 => return (s, v),
                _ if start.elapsed() > deadline => {
                    panic!("batch {seq} of {} not delivered in {deadline:?}", self.id)
                }
                _ => {
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn rand_seed(machine: &str) -> [u8; 32] {
    let mut seed = [7u8; 32];
    for (i, b) in machine.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed
}
