//! `cargo bench --bench cluster`: a 3-node monsys cluster against a 3-node etcd (Debian's
//! `etcd-server`, installed by `scripts/bench-etcd.sh`) on loopback, same value size, same
//! client concurrency, in the same run: replicated write throughput and p50/p99 at 16 and 64
//! clients, linearizable read throughput, and the unavailability window after killing the
//! leader. Every figure is printed with the ratio monsys/etcd.
//!
//! monsys writes are `PUT /api/v1/settings` (a replicated compare-free write of a ~230-byte
//! document), reads are linearizable `GET /api/v1/settings`; etcd writes are `/v3/kv/put` of a
//! value of the same size, reads `/v3/kv/range` (linearizable by default). Clients spread over
//! all three nodes in both systems. Knobs: `CLUSTER_SECS` per phase (default 8);
//! `CLUSTER_STEADY_SECS` (default 0: skipped) runs a steady 16-client write load on monsys for
//! that long and prints the leader changes seen during it (should be none). Diagnostics:
//! `CLUSTER_LEADER_ONLY=1` sends the load phases to the leader only (no forwarding hop);
//! `CLUSTER_SINGLE_NODE=1` runs monsys as one node (no replication).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, TOKEN, env, free_port, monsys_cluster, pct, wait_until};
use serde_json::{Value, json};

fn b64(s: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

const SETTINGS: &str = r#"{"refresh_interval_secs":15,"registration_enabled":false,"agent_offline_after_secs":90,"integrity_check_interval_secs":600,"retention":{"raw_hours":48,"rollup_1m_days":14,"rollup_5m_days":90,"rollup_1h_days":730}}"#;

#[derive(Clone, Copy, PartialEq)]
enum System {
    Monsys,
    Etcd,
}

struct Cluster {
    system: System,
    procs: Vec<Option<Proc>>,
    urls: Vec<String>,
}

fn etcd_cluster(dir: &std::path::Path) -> Cluster {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}")).collect();
    let procs = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| {
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .args(["--data-dir", dir.join(format!("e{i}")).to_str().unwrap()])
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{p}")])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new", "--log-level", "error", "--logger", "zap"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd (install with scripts/bench-etcd.sh)");
            Some(Proc { child, url: format!("http://127.0.0.1:{c}") })
        })
        .collect::<Vec<_>>();
    let urls = procs.iter().map(|p| p.as_ref().unwrap().url.clone()).collect();
    Cluster { system: System::Etcd, procs, urls }
}

/// One operation; true if acknowledged.
async fn op(http: &reqwest::Client, system: System, url: &str, write: bool) -> bool {
    let req = match (system, write) {
        (System::Monsys, true) => http
            .put(format!("{url}/api/v1/settings"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(SETTINGS),
        (System::Monsys, false) => http.get(format!("{url}/api/v1/settings")).bearer_auth(TOKEN),
        (System::Etcd, true) => http
            .post(format!("{url}/v3/kv/put"))
            .json(&json!({ "key": b64(b"settings"), "value": b64(SETTINGS.as_bytes()) })),
        (System::Etcd, false) => {
            http.post(format!("{url}/v3/kv/range")).json(&json!({ "key": b64(b"settings") }))
        }
    };
    req.send().await.is_ok_and(|r| r.status().is_success())
}

/// `clients` clients for `secs`: ops/s and latencies (ms) of acknowledged operations.
async fn load(
    http: &reqwest::Client,
    c: &Cluster,
    clients: usize,
    write: bool,
    secs: u64,
) -> (f64, Vec<f64>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let urls = match leader(http, c).await {
        Some(l) if env("CLUSTER_LEADER_ONLY", 0) == 1 => vec![c.urls[l].clone()],
        _ => c.urls.clone(),
    };
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (http, urls, system) = (http.clone(), urls.clone(), c.system);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut k = i;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if op(&http, system, &urls[k % urls.len()], write).await {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    k += 1;
                }
                lat
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (rate, all)
}

async fn leader(http: &reqwest::Client, c: &Cluster) -> Option<usize> {
    match c.system {
        System::Monsys => {
            for u in &c.urls {
                if let Ok(r) = http.get(format!("{u}/api/v1/cluster")).bearer_auth(TOKEN).send().await
                    && let Ok(v) = r.json::<Value>().await
                    && let Some(l) = v["leader"].as_u64()
                {
                    return Some(l as usize - 1);
                }
            }
            None
        }
        System::Etcd => {
            for (i, u) in c.urls.iter().enumerate() {
                if let Ok(r) = http.post(format!("{u}/v3/maintenance/status")).json(&json!({})).send().await
                    && let Ok(v) = r.json::<Value>().await
                    && v["leader"].is_string()
                    && v["leader"] == v["header"]["member_id"]
                {
                    return Some(i);
                }
            }
            None
        }
    }
}

/// Kills the leader under a write load; the longest time without any acknowledged write.
async fn unavailability(http: &reqwest::Client, c: &mut Cluster) -> f64 {
    let start = Instant::now();
    let last_ok = Arc::new(AtomicU64::new(0));
    let max_gap = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let leader_idx = leader(http, c).await.expect("a leader");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (http, urls, system) = (http.clone(), c.urls.clone(), c.system);
            let (last_ok, max_gap, stop) = (last_ok.clone(), max_gap.clone(), stop.clone());
            tokio::spawn(async move {
                let mut k = i;
                while !stop.load(Ordering::Relaxed) {
                    let url = &urls[k % urls.len()];
                    k += 1;
                    if k % urls.len() == leader_idx && k > 16 {
                        continue; // after the kill, clients go to the survivors as a real client would
                    }
                    if op(&http, system, url, true).await {
                        let now = start.elapsed().as_micros() as u64;
                        let prev = last_ok.swap(now, Ordering::AcqRel);
                        max_gap.fetch_max(now.saturating_sub(prev), Ordering::AcqRel);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    max_gap.store(0, Ordering::Release);
    if let Some(mut p) = c.procs[leader_idx].take() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        let _ = t.await;
    }
    max_gap.load(Ordering::Acquire) as f64 / 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cluster: bench");
        return;
    }
    let secs = env("CLUSTER_SECS", 8) as u64;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut rows: Vec<(String, f64, f64, bool)> = Vec::new(); // name, monsys, etcd, higher is better

    let mut results = Vec::new();
    for system in [System::Monsys, System::Etcd] {
        let mut c = match system {
            System::Monsys => {
                let hubs = if env("CLUSTER_SINGLE_NODE", 0) == 1 {
                    let hub = common::start_hub(&dir.path().join("m"), 1, None);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    vec![hub]
                } else {
                    monsys_cluster(&dir.path().join("m"), &http).await
                };
                let urls = hubs.iter().map(|h| h.url.clone()).collect();
                Cluster { system, procs: hubs.into_iter().map(Some).collect(), urls }
            }
            System::Etcd => {
                let c = etcd_cluster(&dir.path().join("e"));
                wait_until("etcd leader", Duration::from_secs(30), async || {
                    leader(&http, &c).await.is_some()
                })
                .await;
                c
            }
        };
        op(&http, system, &c.urls[0], true).await;
        let (w16, l16) = load(&http, &c, 16, true, secs).await;
        let (w64, l64) = load(&http, &c, 64, true, secs).await;
        let (r16, _) = load(&http, &c, 16, false, secs).await;
        let steady = env("CLUSTER_STEADY_SECS", 0) as u64;
        if system == System::Monsys && steady > 0 {
            let before = common::leader_changes(&http, &c.urls).await;
            let (rate, _) = load(&http, &c, 16, true, steady).await;
            let after = common::leader_changes(&http, &c.urls).await;
            println!(
                "steady load: {steady} s of 16-client writes at {rate:.0}/s; leader changes seen by the nodes: {}",
                after - before
            );
        }
        // short client timeouts so a request stuck on the dead leader does not stretch the gap
        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
        let gap = if c.urls.len() > 1 { unavailability(&impatient, &mut c).await } else { f64::NAN };
        results.push((w16, pct(&l16, 0.5), pct(&l16, 0.99), w64, pct(&l64, 0.5), pct(&l64, 0.99), r16, gap));
    }
    let (m, e) = (results[0], results[1]);
    rows.push(("writes/s, 16 clients".into(), m.0, e.0, true));
    rows.push(("write p50 ms, 16 clients".into(), m.1, e.1, false));
    rows.push(("write p99 ms, 16 clients".into(), m.2, e.2, false));
    rows.push(("writes/s, 64 clients".into(), m.3, e.3, true));
    rows.push(("write p50 ms, 64 clients".into(), m.4, e.4, false));
    rows.push(("write p99 ms, 64 clients".into(), m.5, e.5, false));
    rows.push(("linearizable reads/s, 16 clients".into(), m.6, e.6, true));
    rows.push(("unavailability after leader kill, s".into(), m.7, e.7, false));
    println!("\ncluster bench: 3 × monsys vs 3 × etcd {} on 127.0.0.1, {secs} s per phase", etcd_version());
    println!("{:<40} {:>12} {:>12} {:>14}", "figure", "monsys", "etcd", "monsys/etcd");
    for (name, mv, ev, _) in &rows {
        println!("{name:<40} {mv:>12.2} {ev:>12.2} {:>14.2}", mv / ev.max(1e-9));
    }
    println!(
        "targets: writes ≥ 1.0× at 16 and 64 clients with p99 ≤ etcd's; reads ≥ 1.0×; unavailability ≤ 0.5×"
    );
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim_start_matches("etcd Version: ").to_string()))
        .unwrap_or_default()
}
