//! Telemetry storage on a real in-process cluster: a node killed mid-ingest and brought back
//! through a snapshot holds byte-identical series blocks; history, top-N and storage reads.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::agent::{TestAgent, enrollment_token};
use common::{ClusterOpts, TestCluster};
use serde_json::Value;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn urls(c: &TestCluster) -> Vec<String> {
    c.nodes.iter().map(|n| n.url()).collect()
}

/// Every telemetry key and value of `agents` on node `i`, and its byte counters.
/// A node's telemetry values and byte counters.
type Dump = (Vec<monsys_tsdb::series::Kv>, Vec<(String, [i64; 4])>);

fn dump(c: &TestCluster, i: usize, agents: &[String]) -> Dump {
    let fleet = c.nodes[i].hub().replica.reader().fleet();
    let mut all = Vec::new();
    for a in agents {
        all.extend(fleet.telemetry_dump("default", a).unwrap());
    }
    (all, fleet.telemetry_bytes().unwrap().into_iter().collect())
}

fn applied(c: &TestCluster, i: usize) -> u64 {
    c.nodes[i].hub().replica.raft_metrics().last_applied.map_or(0, |l| l.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_ingest_comes_back_from_a_snapshot_with_identical_series() {
    // small snapshots and log tails, so the restarted node must be sent a snapshot
    let opts = ClusterOpts { snapshot_every_entries: 40, keep_logs_behind_snapshot: 5, ..Default::default() };
    let mut c = TestCluster::start_with(3, opts).await;
    let leader = c.wait_leader().await;
    let all = urls(&c);
    let enrollment = enrollment_token(&c.http, &all[0]).await;
    let base = now_ms() - 3 * 3_600_000;
    let mut agents = Vec::new();
    for (i, url) in all.iter().enumerate() {
        let mut a = TestAgent::register(&c.http, url, &enrollment, &format!("ts{i}"), false).await;
        a.base_ms = base;
        agents.push(a);
    }
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let survivors: Vec<String> = (0..3).filter(|i| *i != victim).map(|i| all[i].clone()).collect();

    // 80 batches per agent at 15 s: 20 minutes of samples, three 10-minute windows
    const N: u64 = 80;
    let deliver = |a: &TestAgent, urls: &[String], from: u64, to: u64| {
        let (a_id, urls) = (a.id.clone(), urls.to_vec());
        let a = TestAgent {
            key: a.key.clone(),
            machine_id: a.machine_id.clone(),
            id: a.id.clone(),
            token: a.token.clone(),
            next_seq: from,
            http: a.http.clone(),
            base_ms: a.base_ms,
        };
        tokio::spawn(async move {
            for seq in from..to {
                let (s, body) = a.deliver(&urls, seq, (seq % 17) as f64 * 1.5, Duration::from_secs(60)).await;
                assert_eq!(s, 200, "agent {a_id} seq {seq}: {body}");
            }
        })
    };
    let first: Vec<_> = agents.iter().map(|a| deliver(a, &all, 1, N / 2)).collect();
    for t in first {
        t.await.unwrap();
    }
    c.crash(victim).await;
    let at_crash = applied(&c, leader);
    let second: Vec<_> = agents.iter().map(|a| deliver(a, &survivors, N / 2, N + 1)).collect();
    for t in second {
        t.await.unwrap();
    }
    c.wait_for("the leader snapshots past the crash", Duration::from_secs(60), |c| async move {
        c.nodes[leader].hub().replica.raft_metrics().snapshot.is_some_and(|s| s.index > at_crash + 10)
    })
    .await;

    c.restart(victim).await;
    let target = applied(&c, leader);
    c.wait_for("the restarted node catches up", Duration::from_secs(60), |c| async move {
        applied(c, victim) >= target
    })
    .await;
    let snap = c.nodes[victim].hub().replica.raft_metrics().snapshot.map_or(0, |s| s.index);
    assert!(snap > at_crash, "the node caught up through a snapshot ({snap} > {at_crash})");

    let reference = dump(&c, leader, &ids);
    assert!(!reference.0.is_empty());
    for i in 0..3 {
        c.wait_for("same applied index", Duration::from_secs(30), |c| async move { applied(c, i) >= target })
            .await;
        let d = dump(&c, i, &ids);
        assert_eq!(d.0.len(), reference.0.len(), "node {i}: number of telemetry values");
        assert!(d.0 == reference.0, "node {i}: telemetry blocks differ from the leader's");
        assert_eq!(d.1, reference.1, "node {i}: byte counters");
    }

    // every batch is in the history once, through the restarted node
    for a in &ids {
        let path = format!(
            "/api/v1/agents/{a}/metrics?from={}&to={}&interval=raw&metric=cpu_percent&consistency=local",
            base,
            base + (N + 1) * 15_000
        );
        let (s, m) = c.get(victim, &path).await;
        assert_eq!(s, 200, "{m}");
        let points = m["series"][0]["points"].as_array().unwrap();
        let times: Vec<u64> = points.iter().map(|p| p["t"].as_u64().unwrap()).collect();
        let want: Vec<u64> = (1..=N).map(|s| base + s * 15_000).collect();
        assert_eq!(times, want, "raw history of {a}");
        let (_, m) = c.get(victim, &path.replace("interval=raw", "interval=5m")).await;
        let count: u64 =
            m["series"][0]["points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
        assert_eq!(count, N, "5m rollups count every sample once: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_top_ranks_agents_from_rollups_and_storage_is_reported() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let base = now_ms() - 26 * 3_600_000;
    let mut ids = Vec::new();
    for (i, level) in [20.0, 80.0, 50.0].into_iter().enumerate() {
        let mut a = TestAgent::register(&c.http, &url, &enrollment, &format!("top{i}"), false).await;
        a.base_ms = base;
        for seq in 1..=60u64 {
            let (s, body) = a
                .deliver(std::slice::from_ref(&url), seq, level + (seq % 3) as f64, Duration::from_secs(20))
                .await;
            assert_eq!(s, 200, "{body}");
        }
        ids.push(a.id);
    }
    let (s, top) = c
        .get(0, &format!("/api/v1/fleet/top?metric=cpu_percent&from={base}&to={}&n=2", base + 86_400_000))
        .await;
    assert_eq!(s, 200, "{top}");
    assert_eq!(top["interval"], "1h");
    let ranked: Vec<&str> =
        top["agents"].as_array().unwrap().iter().map(|a| a["agent_id"].as_str().unwrap()).collect();
    assert_eq!(ranked, vec![ids[1].as_str(), ids[2].as_str()], "{top}");
    assert_eq!(top["agents"][0]["count"], 60);
    assert_eq!(top["agents"][0]["max"], 82.0);

    let (s, max) = c.get(0, &format!("/api/v1/fleet/top?metric=disk_percent&stat=max&from={base}")).await;
    assert_eq!(s, 200, "{max}");
    assert_eq!(max["agents"][0]["series"], "disk_percent{mount=\"/\"}");

    for bad in ["metric=cpu_percent&n=0", "metric=cpu_percent&stat=median", "from=5&to=4&metric=x", "n=3"] {
        let (s, body) = c.get(0, &format!("/api/v1/fleet/top?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body["error"].is_string() && body["code"].is_string(), "{body}");
    }

    let (s, st) = c.get(0, "/api/v1/fleet/storage").await;
    assert_eq!(s, 200, "{st}");
    let raw = st["bytes"]["raw"].as_i64().unwrap();
    assert!(raw > 0 && st["total_bytes"].as_i64().unwrap() >= raw, "{st}");
    let metrics = c.http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("monsys_telemetry_bytes{") && l.contains("resolution=\"raw\""))
        .unwrap_or_else(|| panic!("no raw telemetry gauge in\n{metrics}"));
    assert_eq!(line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as i64, raw, "{line}");
    let _: Value = st;
}
