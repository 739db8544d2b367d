//! `cargo bench --bench ingest`: signed ingest against a local 3-node cluster of real
//! `monsys hub` processes (release build), printing throughput, ack latency and hub memory per
//! connected agent next to the targets.
//!
//! Knobs (environment): `INGEST_AGENTS` (default 1000), `INGEST_BATCHES` per agent (default 30,
//! at most 60: the per-agent rate limit's burst), `INGEST_SAMPLES` per batch (default 50),
//! `INGEST_SOCKETS` idle WebSockets for the memory figure (default 1000), `INGEST_FOLLOW_OWNER`
//! (default 1: like the real agent, each simulated agent sends to the node named by the
//! `x-monsys-owner` hint once it has one; 0: every batch goes to the next node in turn, so about
//! two in three are forwarded, the worst case of "any node"), `INGEST_PEER` (default `floor`:
//! afterwards the same agents and batches drive the floor peer, three processes doing only the
//! per-batch front end — HTTP, token lookup, JSON, SHA-256, Ed25519, the seq check — with no
//! Raft and no storage, and the ratio of the two is printed; `none` skips it). Every phase is
//! bounded in count and time; the cluster runs on 127.0.0.1 in a temp dir and is killed at the
//! end.
//!
//! Bodies are built and signed before the timed phase, so the figures measure the hub (plus the
//! HTTP client sharing the machine), not the client's signing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use monsys_proto::agent::{self as wire, IngestBatch, Sample};
use serde_json::{Value, json};

mod common;
#[path = "ingest/floor.rs"]
mod floor;

use common::{TOKEN, cpu_secs, env, monsys_cluster, pct, rss_kib};

fn batch_body(agent_id: &str, seq: u64, samples: usize) -> Vec<u8> {
    let cores = samples.saturating_sub(10).max(1);
    let mut metrics = vec![
        Sample::new(wire::metric::CPU_PERCENT, 12.5 + (seq % 7) as f64),
        Sample::new(wire::metric::LOAD1, 0.42),
        Sample::new(wire::metric::LOAD5, 0.40),
        Sample::new(wire::metric::LOAD15, 0.38),
        Sample::new(wire::metric::MEM_PERCENT, 41.0),
        Sample::new(wire::metric::MEM_USED_BYTES, 6.8e9),
        Sample::new(wire::metric::MEM_TOTAL_BYTES, 16.0e9),
        Sample::labelled(wire::metric::DISK_PERCENT, "mount", "/", 55.0),
        Sample::labelled(wire::metric::NET_RX_BPS, "iface", "eth0", 12_345.0),
        Sample::new(wire::metric::UPTIME_SECS, 86_400.0 + seq as f64 * 15.0),
    ];
    metrics.extend(
        (0..cores).map(|c| {
            Sample::labelled(wire::metric::CPU_CORE_PERCENT, "core", &c.to_string(), 10.0 + c as f64)
        }),
    );
    metrics.truncate(samples);
    let b = IngestBatch {
        agent_id: agent_id.into(),
        seq,
        collected_at_ms: 1_760_000_000_000 + seq * 15_000,
        agent_version: "1.0.0".into(),
        metrics,
        inventory: None,
        processes: None,
        alerts: vec![],
    };
    serde_json::to_vec(&b).unwrap()
}

/// How long one batch may take, retries and waits included, before the bench gives up.
const BATCH_DEADLINE: Duration = Duration::from_secs(120);
/// Longest wait a `Retry-After` gets (the hub says 1–2 s).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the simulated agents met besides acknowledgements.
#[derive(Default)]
struct Tally {
    retries: u32,
    timeouts: u32,
    shed: u32,
    /// Why agents stopped early (the last answer or error).
    gave_up: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.retries += other.retries;
        self.timeouts += other.timeouts;
        self.shed += other.shed;
        self.gave_up.extend(other.gave_up.iter().cloned());
    }
}

/// The `Retry-After` of a 429 or 503 answer.
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    if !matches!(r.status().as_u16(), 429 | 503) {
        return None;
    }
    let secs = r.headers().get("retry-after")?.to_str().ok()?.parse::<u64>().ok()?;
    Some(Duration::from_secs(secs))
}

/// One agent's token and its pre-signed `(body, signature)` batches (bodies as `Bytes`, so a
/// send copies none).
type AgentWork = Arc<(String, Vec<(axum::body::Bytes, String)>)>;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("ingest: bench");
        return;
    }
    if floor::serve_if_asked() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(bench());
}

/// Registers `agents` simulated agents concurrently, spread over `urls` (`enrollment`: the
/// enrollment token; the floor peer takes any). Returns id, token and signing key of each.
async fn register_agents(
    http: &reqwest::Client,
    urls: &[String],
    enrollment: &str,
    agents: usize,
) -> Vec<(String, String, SigningKey)> {
    futures::future::join_all((0..agents).map(|i| {
        let (http, url, enrollment) = (http.clone(), urls[i % urls.len()].clone(), enrollment.to_string());
        async move {
            let key = SigningKey::from_bytes(&[(i % 251) as u8 + 1; 32]);
            let body = json!({
                "enrollment_token": enrollment, "hostname": format!("bench-{i}"), "machine_id": format!("bench-{i}"),
                "signing_pubkey": wire::encode_pubkey(&key.verifying_key()), "agent_version": "1.0.0", "os": "linux", "arch": "x86_64",
            });
            for _ in 0..50 {
                if let Ok(r) = http.post(format!("{url}/api/v1/agents/register")).json(&body).send().await
                    && r.status().is_success()
                {
                    let v: Value = r.json().await.unwrap();
                    return (v["agent_id"].as_str().unwrap().to_string(), v["agent_token"].as_str().unwrap().to_string(), key);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("agent {i} could not register");
        }
    }))
    .await
}

/// Builds and signs every body of every agent (before the timed phase).
fn sign_all(registered: &[(String, String, SigningKey)], batches: usize, samples: usize) -> Vec<AgentWork> {
    registered
        .iter()
        .map(|(id, token, key)| {
            let bodies = (1..=batches as u64)
                .map(|seq| {
                    let body = batch_body(id, seq, samples);
                    let sig = wire::sign_body(key, &body);
                    (axum::body::Bytes::from(body), sig)
                })
                .collect();
            Arc::new((token.clone(), bodies))
        })
        .collect()
}

/// What one timed phase measured.
struct Load {
    /// Ack latencies, µs, sorted.
    lat: Vec<u32>,
    tally: Tally,
    secs: f64,
    /// CPU seconds the servers and this client used during the phase.
    server_cpu: f64,
    client_cpu: f64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.secs
    }

    /// CPU µs per acknowledged batch: servers, client.
    fn cpu_per_batch(&self) -> (f64, f64) {
        let n = self.lat.len().max(1) as f64;
        (self.server_cpu * 1e6 / n, self.client_cpu * 1e6 / n)
    }
}

/// CPU seconds used so far by `servers` and by this process.
fn cpu_now(servers: &[common::Proc]) -> (f64, f64) {
    (servers.iter().map(|p| cpu_secs(p.child.id())).sum(), cpu_secs(std::process::id()))
}

/// The timed phase: every agent sends its batches in order, as fast as acks come back (URLs
/// parsed once, like a real client's).
async fn drive(
    http: &reqwest::Client,
    servers: &[common::Proc],
    work: &[AgentWork],
    follow_owner: bool,
) -> Load {
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let cpu_before = cpu_now(servers);
    let ingest_urls: Vec<reqwest::Url> =
        urls.iter().map(|u| format!("{u}/api/v1/ingest").parse().unwrap()).collect();
    let started = Instant::now();
    let tasks: Vec<_> = work
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let (http, urls, w) = (http.clone(), ingest_urls.clone(), w.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(w.1.len());
                let mut tally = Tally::default();
                // the owner hint as received, and its ingest URL
                let mut owner: Option<(String, reqwest::Url)> = None;
                'batches: for (n, (body, sig)) in w.1.iter().enumerate() {
                    let mut attempt = 0;
                    let deadline = Instant::now() + BATCH_DEADLINE;
                    loop {
                        let url = owner.as_ref().map_or(&urls[(i + n + attempt) % urls.len()], |(_, u)| u);
                        let t = Instant::now();
                        let r = http
                            .post(url.clone())
                            .bearer_auth(&w.0)
                            .header("content-type", "application/json")
                            .header(wire::SIGNATURE_HEADER, sig)
                            .body(body.clone())
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                lat.push(t.elapsed().as_micros() as u32);
                                if follow_owner {
                                    let hint =
                                        r.headers().get(wire::OWNER_HEADER).and_then(|v| v.to_str().ok());
                                    if hint != owner.as_ref().map(|(h, _)| h.as_str()) {
                                        owner = hint.and_then(|h| {
                                            Some((h.to_string(), format!("{h}/api/v1/ingest").parse().ok()?))
                                        });
                                    }
                                }
                                // read the answer to its end, or the connection is not reused
                                let _ = r.bytes().await;
                                break;
                            }
                            // shed by an overloaded hub: wait as told (bounded), like the agent
                            Ok(r) if retry_after(&r).is_some() && Instant::now() < deadline => {
                                tally.shed += 1;
                                let wait = retry_after(&r).unwrap_or_default().min(MAX_RETRY_AFTER);
                                let _ = r.bytes().await;
                                tokio::time::sleep(wait).await;
                            }
                            _ if attempt < 20 => {
                                if matches!(&r, Err(e) if e.is_timeout()) {
                                    tally.timeouts += 1;
                                }
                                owner = None;
                                attempt += 1;
                                tally.retries += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            // out of retries or past the deadline: this agent stops, counted
                            Ok(r) => {
                                tally.gave_up.push(format!(
                                    "{} {}",
                                    r.status(),
                                    r.text().await.unwrap_or_default()
                                ));
                                break 'batches;
                            }
                            Err(e) => {
                                tally.gave_up.push(e.to_string());
                                break 'batches;
                            }
                        }
                    }
                }
                (lat, tally)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut tally = Tally::default();
    for t in tasks {
        let (l, t) = t.await.unwrap();
        lat.extend(l);
        tally.add(&t);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_now(servers);
    lat.sort_unstable();
    Load { lat, tally, secs, server_cpu: cpu_after.0 - cpu_before.0, client_cpu: cpu_after.1 - cpu_before.1 }
}

/// The same agents and batches against the floor peer (see `floor`), after the cluster is
/// gone.
async fn floor_run(
    http: &reqwest::Client,
    agents: usize,
    batches: usize,
    samples: usize,
    follow_owner: bool,
) -> Load {
    let servers = floor::start(http).await;
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let registered = register_agents(http, &urls, "", agents).await;
    let work = sign_all(&registered, batches, samples);
    drive(http, &servers, &work, follow_owner).await
}

async fn bench() {
    let (agents, batches, samples, sockets) = (
        env("INGEST_AGENTS", 1000),
        env("INGEST_BATCHES", 30).min(60),
        env("INGEST_SAMPLES", 50),
        env("INGEST_SOCKETS", 1000),
    );
    let follow_owner = env("INGEST_FOLLOW_OWNER", 1) == 1;
    let with_floor = std::env::var("INGEST_PEER").map_or(true, |p| p == "floor");
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let hubs = monsys_cluster(dir.path(), &http).await;
    let urls: Vec<String> = hubs.iter().map(|h| h.url.clone()).collect();
    let rss_idle: Vec<u64> = hubs.iter().map(|h| rss_kib(h.child.id())).collect();

    let r = http
        .post(format!("{}/api/v1/enrollment-tokens", urls[0]))
        .bearer_auth(TOKEN)
        .json(&json!({"name":"bench"}))
        .send()
        .await
        .unwrap();
    let enrollment = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let started = Instant::now();
    let registered = register_agents(&http, &urls, &enrollment, agents).await;
    let register_secs = started.elapsed().as_secs_f64();
    let work = sign_all(&registered, batches, samples);
    let body_bytes = work[0].1[0].0.len();

    let changes_before = common::leader_changes(&http, &urls).await;
    let load = drive(&http, &hubs, &work, follow_owner).await;
    let rss_loaded: Vec<u64> = hubs.iter().map(|h| rss_kib(h.child.id())).collect();
    let leader_changes = common::leader_changes(&http, &urls).await - changes_before;

    // idle WebSockets on node 1, once the followers have applied the tail of the load and the
    // allocator has returned what the load freed (RSS steady within 256 KiB for a second)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut before = rss_kib(hubs[0].child.id());
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(hubs[0].child.id());
        let steady = now.abs_diff(before) < 256;
        before = now;
        if steady {
            break;
        }
    }
    let mut open = Vec::new();
    for (id, token, _) in registered.iter().cycle().take(sockets) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req =
            format!("{}/ws/agents/{id}", urls[0].replace("http://", "ws://")).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(req).await {
            open.push(ws);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(hubs[0].child.id());
    let per_socket = (after.saturating_sub(before)) as f64 * 1024.0 / open.len().max(1) as f64;
    let per_actor = rss_loaded.iter().zip(&rss_idle).map(|(l, i)| l.saturating_sub(*i)).sum::<u64>() as f64
        * 1024.0
        / agents as f64;
    let open_sockets = open.len();
    drop(open);
    drop(hubs);

    let floor =
        if with_floor { Some(floor_run(&http, agents, batches, samples, follow_owner).await) } else { None };

    let (lat, tally, rate) = (&load.lat, &load.tally, load.rate());
    println!(
        "\ningest bench: 3 hubs (release) on 127.0.0.1, {agents} agents × {batches} signed batches, {samples} samples ({body_bytes} B body), {}",
        if follow_owner { "agents follow the owner hint" } else { "every batch to the next node in turn" }
    );
    println!("{:<44} {:>14} {:>14}", "figure", "measured", "target");
    println!("{:<44} {:>14.1} {:>14}", "registration, agents/s", agents as f64 / register_secs, "-");
    println!("{:<44} {:>14.0} {:>14}", "batches/s acknowledged after commit", rate, "≥ 10000");
    println!("{:<44} {:>14.0} {:>14}", "samples/s", rate * samples as f64, "≥ 500000");
    println!("{:<44} {:>14.2} {:>14}", "ack latency p50, ms", pct(lat, 0.50) / 1000.0, "-");
    println!("{:<44} {:>14.2} {:>14}", "ack latency p99, ms", pct(lat, 0.99) / 1000.0, "-");
    println!("{:<44} {:>14} {:>14}", "client retries (other 5xx, connection)", tally.retries, "-");
    println!("{:<44} {:>14} {:>14}", "  of which client timeouts (30 s)", tally.timeouts, "-");
    println!("{:<44} {:>14} {:>14}", "answers shed with Retry-After (429/503)", tally.shed, "-");
    println!("{:<44} {:>14} {:>14}", "agents that gave up (20 retries or 120 s)", tally.gave_up.len(), "0");
    for why in tally.gave_up.iter().take(3) {
        println!("  gave up: {why}");
    }
    println!("{:<44} {:>14} {:>14}", "leader changes during the load", leader_changes, "0");
    println!("{:<44} {:>14.0} {:>14}", "hub RSS per idle WebSocket, bytes", per_socket, "≤ 16384");
    println!("{:<44} {:>14.0} {:>14}", "hub RSS per agent after load (3 hubs), bytes", per_actor, "-");
    let (hub_cpu, client_cpu) = load.cpu_per_batch();
    println!("{:<44} {:>14.0} {:>14}", "CPU per batch, 3 hubs, µs", hub_cpu, "-");
    println!("{:<44} {:>14.0} {:>14}", "CPU per batch, bench client, µs", client_cpu, "-");
    println!("{:<44} {:>14.0} {:>14}", "CPU per batch, all, µs", hub_cpu + client_cpu, "≤ 200 (2 cores)");
    println!("{:<44} {:>14} {:>14}", "ratio batches/s ÷ target", format!("{:.2}", rate / 10_000.0), "≥ 1.00");
    println!(
        "RSS KiB idle {rss_idle:?} → loaded {rss_loaded:?}; node 1 with {open_sockets} sockets: {before} → {after}"
    );
    if let Some(f) = floor {
        println!(
            "\nfloor peer, same agents and batches: 3 processes that only read, authenticate, parse, hash and verify each batch and answer from memory (no Raft, no storage)"
        );
        println!("{:<44} {:>14.0} {:>14}", "floor batches/s", f.rate(), "-");
        println!("{:<44} {:>14.2} {:>14}", "floor ack latency p50, ms", pct(&f.lat, 0.50) / 1000.0, "-");
        println!("{:<44} {:>14.2} {:>14}", "floor ack latency p99, ms", pct(&f.lat, 0.99) / 1000.0, "-");
        println!("{:<44} {:>14} {:>14}", "floor agents that gave up", f.tally.gave_up.len(), "0");
        let (server_cpu, client_cpu) = f.cpu_per_batch();
        println!("{:<44} {:>14.0} {:>14}", "floor CPU per batch, 3 servers, µs", server_cpu, "-");
        println!("{:<44} {:>14.0} {:>14}", "floor CPU per batch, bench client, µs", client_cpu, "-");
        println!("{:<44} {:>14} {:>14}", "ratio cluster ÷ floor", format!("{:.2}", rate / f.rate()), "-");
        println!("{:<44} {:>14} {:>14}", "ratio floor ÷ target", format!("{:.2}", f.rate() / 10_000.0), "-");
    }
}
