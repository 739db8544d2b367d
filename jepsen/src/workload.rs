//! The settings-register workload: concurrent clients doing linearizable reads, writes and
//! compare-and-sets against random nodes, each operation recorded with its outcome.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use crate::cluster::TOKEN;
use crate::history::{Op, Outcome, Record};

/// Runs `clients` clients against `urls` until `deadline`; returns the history.
pub async fn run(urls: Vec<String>, clients: usize, start: Instant, deadline: Instant) -> Vec<Record> {
    let history = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..clients)
        .map(|p| {
            let (urls, http, history) = (urls.clone(), http.clone(), history.clone());
            tokio::spawn(async move {
                let mut last_rev = 0u64;
                while Instant::now() < deadline {
                    let (node, op) = {
                        let mut rng = rand::thread_rng();
                        let node = rng.gen_range(0..urls.len());
                        let value = rng.gen_range(1..=3600u32);
                        let op = match rng.gen_range(0..10) {
                            0..=3 => Op::Read,
                            4..=6 => Op::Write { value },
                            _ => Op::Cas { expected: last_rev, value },
                        };
                        (node, op)
                    };
                    let invoke_us = start.elapsed().as_micros() as u64;
                    let (outcome, result, error) = call(&http, &urls[node], op).await;
                    let complete_us = start.elapsed().as_micros() as u64;
                    if let Some((rev, _)) = result {
                        last_rev = rev;
                    }
                    history.lock().expect("history").push(Record {
                        process: p,
                        node: node + 1,
                        op,
                        invoke_us,
                        complete_us,
                        outcome,
                        result,
                        error,
                    });
                    if outcome != Outcome::Ok {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let mut h = Arc::try_unwrap(history).map(|m| m.into_inner().expect("history")).unwrap_or_default();
    h.sort_by_key(|r| r.invoke_us);
    h
}

fn settings(value: u32) -> Value {
    json!({
        "refresh_interval_secs": value, "registration_enabled": false, "agent_offline_after_secs": 90,
        "integrity_check_interval_secs": 600,
        "retention": { "raw_hours": 48, "rollup_1m_days": 14, "rollup_5m_days": 90, "rollup_1h_days": 730 },
    })
}

type Answer = (Outcome, Option<(u64, u32)>, Option<String>);

async fn call(http: &reqwest::Client, url: &str, op: Op) -> Answer {
    let req = match op {
        Op::Read => http.get(format!("{url}/api/v1/settings")),
        Op::Write { value } => http.put(format!("{url}/api/v1/settings")).json(&settings(value)),
        Op::Cas { expected, value } => http
            .put(format!("{url}/api/v1/settings"))
            .header("if-match", format!("\"{expected}\""))
            .json(&settings(value)),
    };
    let unknown = |e: String| {
        if op == Op::Read { (Outcome::Fail, None, Some(e)) } else { (Outcome::Info, None, Some(e)) }
    };
    let resp = match req.bearer_auth(TOKEN).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return (Outcome::Fail, None, Some(format!("connect: {e}"))),
        Err(e) => return unknown(format!("request: {e}")),
    };
    let status = resp.status().as_u16();
    let body: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return unknown(format!("body: {e}")),
    };
    match status {
        200 => {
            let rev = body["revision"].as_u64();
            let val = body["settings"]["refresh_interval_secs"].as_u64().map(|v| v as u32);
            match (rev, val) {
                (Some(r), Some(v)) => (Outcome::Ok, Some((r, v)), None),
                _ => unknown(format!("unexpected body {body}")),
            }
        }
        412 => (Outcome::Fail, None, Some("revision_mismatch".into())),
        503 => (Outcome::Fail, None, Some(format!("503 {}", body["error"]))),
        504 => unknown(format!("504 {}", body["error"])),
        s if s >= 500 => unknown(format!("{s} {}", body["error"])),
        s => (Outcome::Fail, None, Some(format!("{s} {}", body["code"]))),
    }
}

/// Polls every node's local read until all agree (or `wait` passes); returns what each saw.
pub async fn converge(urls: &[String], wait: Duration) -> (bool, Vec<Option<(u64, u32)>>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let deadline = Instant::now() + wait;
    loop {
        let mut seen = Vec::new();
        for u in urls {
            let v = async {
                let r = http
                    .get(format!("{u}/api/v1/settings?consistency=local"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .ok()?;
                let b: Value = r.json().await.ok()?;
                Some((b["revision"].as_u64()?, b["settings"]["refresh_interval_secs"].as_u64()? as u32))
            }
            .await;
            seen.push(v);
        }
        let agree = seen.iter().all(|s| s.is_some() && *s == seen[0]);
        if agree || Instant::now() > deadline {
            return (agree, seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
