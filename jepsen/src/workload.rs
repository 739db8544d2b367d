//! The settings-register workload: concurrent clients doing linearizable reads, writes and
//! compare-and-sets against random nodes, each operation recorded with its outcome.
//!
//! Clients fail over like a real one behind several addresses: a try that certainly did not
//! take effect (connection refused or not established, `503`; for reads, which change nothing,
//! any error) is repeated at once on the next node, for at most [`RETRY_FOR`]. A try whose
//! outcome is unknown (timeout, connection lost mid-request, `504`) ends the operation as
//! unknown: repeating it would hide from the checker that it may have applied. The record spans
//! from the first try to the final answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use crate::cluster::TOKEN;
use crate::history::{Op, Outcome, Record};
use crate::until::Until;

/// How long one operation keeps failing over before it is recorded as failed.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// Runs `clients` clients against `urls` until `until` passes; returns the history.
pub async fn run(urls: Vec<String>, clients: usize, start: Instant, until: Until) -> Vec<Record> {
    let history = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..clients)
        .map(|p| {
            let (urls, http, history, until) = (urls.clone(), http.clone(), history.clone(), until.clone());
            tokio::spawn(async move {
                let mut last_rev = 0u64;
                while !until.passed() {
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
                    let give_up = (Instant::now() + RETRY_FOR).min(until.get());
                    let (mut node, mut attempts) = (node, 0u32);
                    let (outcome, result, error) = loop {
                        attempts += 1;
                        let answer = call(&http, &urls[node], op).await;
                        if !answer.retry || Instant::now() >= give_up {
                            break (answer.outcome, answer.result, answer.error);
                        }
                        node = (node + 1) % urls.len();
                        if (attempts as usize).is_multiple_of(urls.len()) {
                            // every node refused: no leader yet, or all restarting
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    let complete_us = start.elapsed().as_micros() as u64;
                    if let Some((rev, _)) = result {
                        last_rev = rev;
                    }
                    history.lock().expect("history").push(Record {
                        process: p,
                        node: node + 1,
                        attempts,
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

/// One try's answer.
struct Answer {
    outcome: Outcome,
    result: Option<(u64, u32)>,
    error: Option<String>,
    /// Certainly not applied and worth trying on another node.
    retry: bool,
}

impl Answer {
    fn ok(result: (u64, u32)) -> Answer {
        Answer { outcome: Outcome::Ok, result: Some(result), error: None, retry: false }
    }

    /// Certainly not applied; `retry`: another node may do better.
    fn fail(error: String, retry: bool) -> Answer {
        Answer { outcome: Outcome::Fail, result: None, error: Some(error), retry }
    }

    /// Outcome unknown for writes; a read changed nothing, so it failed and may be retried.
    fn unknown(op: Op, error: String) -> Answer {
        if op == Op::Read {
            Answer::fail(error, true)
        } else {
            Answer { outcome: Outcome::Info, result: None, error: Some(error), retry: false }
        }
    }
}

async fn call(http: &reqwest::Client, url: &str, op: Op) -> Answer {
    let req = match op {
        Op::Read => http.get(format!("{url}/api/v1/settings")),
        Op::Write { value } => http.put(format!("{url}/api/v1/settings")).json(&settings(value)),
        Op::Cas { expected, value } => http
            .put(format!("{url}/api/v1/settings"))
            .header("if-match", format!("\"{expected}\""))
            .json(&settings(value)),
    };
    let resp = match req.bearer_auth(TOKEN).send().await {
        Ok(r) => r,
        // no connection was made, so nothing was sent
        Err(e) if e.is_connect() => return Answer::fail(format!("connect: {e}"), true),
        Err(e) => return Answer::unknown(op, format!("request: {e}")),
    };
    let status = resp.status().as_u16();
    if status == 503 {
        // the server's promise: a 503 was not applied (no leader, stopping, over a limit)
        let body: Value = resp.json().await.unwrap_or_default();
        return Answer::fail(format!("503 {}", body["error"]), true);
    }
    let body: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return Answer::unknown(op, format!("body: {e}")),
    };
    match status {
        200 => {
            let rev = body["revision"].as_u64();
            let val = body["settings"]["refresh_interval_secs"].as_u64().map(|v| v as u32);
            match (rev, val) {
                (Some(r), Some(v)) => Answer::ok((r, v)),
                _ => Answer::unknown(op, format!("unexpected body {body}")),
            }
        }
        412 => Answer::fail("revision_mismatch".into(), false),
        s if s >= 500 => Answer::unknown(op, format!("{s} {}", body["error"])),
        s => Answer::fail(format!("{s} {}", body["code"]), false),
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
