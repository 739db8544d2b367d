//! The real agent (`monsys-agent`, and the `monsys agent` binary) against real in-process hub
//! clusters: registration, failover when the owner node dies mid-stream, buffering while every
//! hub is down and in-order replay, and the binary as a separate process.

mod common;

use std::time::Duration;

use common::TestCluster;
use common::agent::enrollment_token;
use monsys_agent::{Agent, AgentArgs};
use serde_json::Value;

fn args(c: &TestCluster, enrollment: &str, dir: &std::path::Path) -> AgentArgs {
    AgentArgs {
        hubs: c.nodes.iter().map(|n| n.url()).collect(),
        enrollment_token: Some(enrollment.to_string()),
        state_dir: dir.to_path_buf(),
        interval_secs: 1,
        buffer_max_bytes: 10 * 1024 * 1024,
        timeout_ms: 3000,
        once: false,
        dry_run: false,
    }
}

/// A 3-node cluster with a leader whose gossip sees every voter (placement views agree).
async fn three_nodes() -> TestCluster {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    c.wait_for("gossip", Duration::from_secs(20), |c| async move {
        c.running().all(|(_, n)| n.hub().replica.live_voters().len() == 3)
    })
    .await;
    c
}

/// Index in `c.nodes` of the node that owns agent `id`.
async fn owner_index(c: &TestCluster, id: &str) -> usize {
    let (_, placed) = c.get(0, &format!("/api/v1/cluster/placement/agent/{id}")).await;
    c.nodes.iter().position(|n| Some(n.id()) == placed["owner"].as_u64()).unwrap()
}

async fn agent_doc(c: &TestCluster, node: usize, id: &str) -> Value {
    let (s, v) = c.get(node, &format!("/api/v1/agents/{id}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_fails_over_when_its_owner_dies_and_nothing_is_lost_or_doubled() {
    let mut c = three_nodes().await;
    let enrollment = enrollment_token(&c.http, &c.nodes[0].url()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::open(args(&c, &enrollment, dir.path())).unwrap();
    agent.register().await.unwrap();
    let id = agent.agent_id().unwrap().to_string();
    // the node running the agent's actor dies mid-stream (and, if it is the first hub URL, the
    // agent's connection with it)
    let owner = owner_index(&c, &id).await;

    const N: u64 = 12;
    for i in 1..=N {
        agent.collect_and_enqueue().await.unwrap();
        if i == N / 2 {
            c.crash(owner).await;
        }
        // keep sending until this batch is through (the agent retries on its own schedule)
        for _ in 0..100 {
            let d = agent.drain().await.unwrap();
            if d.waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(agent.waiting(), 0, "batch {i} not delivered");
    }
    let survivor = (0..3).find(|i| *i != owner).unwrap();
    let doc = agent_doc(&c, survivor, &id).await;
    assert_eq!((doc["last_seq"].as_u64(), doc["batches"].as_u64()), (Some(N), Some(N)), "{doc}");
    // real host data arrived: memory and processes
    let (_, m) =
        c.get(survivor, &format!("/api/v1/agents/{id}/metrics?metric=mem_percent&interval=raw")).await;
    assert_eq!(m["series"][0]["points"].as_array().map(|p| p.len()), Some(N as usize), "{m}");
    let (s, p) = c.get(survivor, &format!("/api/v1/agents/{id}/processes")).await;
    assert_eq!(s, 200, "{p}");
    assert!(!p["processes"].as_array().unwrap().is_empty());
    let (s, inv) = c.get(survivor, &format!("/api/v1/agents/{id}/inventory")).await;
    assert_eq!(s, 200, "{inv}");
    assert!(inv["inventory"]["cpu_cores"].as_u64().unwrap() >= 1);
}

/// `monsys_forwarded_requests_total{target="owner",outcome="ok"}` of node `i`.
async fn owner_forwards(c: &TestCluster, i: usize) -> u64 {
    let text =
        c.http.get(format!("{}/metrics", c.nodes[i].url())).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("monsys_forwarded_requests_total")
                && l.contains("target=\"owner\"")
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_follows_the_owner_hint_and_stops_needing_a_forward() {
    let c = three_nodes().await;
    let enrollment = enrollment_token(&c.http, &c.nodes[0].url()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&c, &enrollment, dir.path());
    // register anywhere, then configure only a node that does not own the agent
    let mut agent = Agent::open(a.clone()).unwrap();
    agent.register().await.unwrap();
    let id = agent.agent_id().unwrap().to_string();
    drop(agent);
    let owner = owner_index(&c, &id).await;
    let listed = (0..3).find(|i| *i != owner).unwrap();
    a.hubs = vec![c.nodes[listed].url()];
    let mut agent = Agent::open(a).unwrap();

    let before = owner_forwards(&c, listed).await;
    const N: u64 = 5;
    for i in 1..=N {
        agent.collect_and_enqueue().await.unwrap();
        let d = agent.drain().await.unwrap();
        assert_eq!(d.waiting, 0, "batch {i} not delivered");
    }
    assert_eq!(owner_forwards(&c, listed).await - before, 1, "only the first batch was forwarded");
    let doc = agent_doc(&c, owner, &id).await;
    assert_eq!(doc["batches"].as_u64(), Some(N), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_wait_on_disk_while_no_hub_answers_and_replay_in_order() {
    let mut c = TestCluster::start(1).await;
    c.wait_leader().await;
    let enrollment = enrollment_token(&c.http, &c.nodes[0].url()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::open(args(&c, &enrollment, dir.path())).unwrap();
    agent.register().await.unwrap();
    let id = agent.agent_id().unwrap().to_string();
    agent.collect_and_enqueue().await.unwrap();
    assert_eq!(agent.drain().await.unwrap().delivered, 1);

    c.crash(0).await;
    for _ in 0..3 {
        agent.collect_and_enqueue().await.unwrap();
        agent.drain().await.unwrap();
    }
    assert_eq!(agent.waiting(), 3);
    // the agent restarts too: the buffer and the seq survive
    drop(agent);
    let mut agent = Agent::open(args(&c, &enrollment, dir.path())).unwrap();
    assert_eq!(agent.waiting(), 3);
    c.restart(0).await;
    c.wait_leader().await;
    let mut delivered = 0;
    for _ in 0..100 {
        delivered += agent.drain().await.unwrap().delivered;
        if agent.waiting() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(delivered, 3);
    let doc = agent_doc(&c, 0, &id).await;
    assert_eq!((doc["last_seq"].as_u64(), doc["batches"].as_u64()), (Some(4), Some(4)), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monsys_agent_binary_registers_and_reports() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    let enrollment = enrollment_token(&c.http, &c.nodes[1].url()).await;
    let dir = tempfile::tempdir().unwrap();
    let hubs: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_monsys"))
        .args(["agent", "--hub", &hubs.join(","), "--enrollment-token", &enrollment, "--interval-secs", "1"])
        .arg("--state-dir")
        .arg(dir.path())
        .env("MONSYS_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    c.wait_for("three batches from the agent process", Duration::from_secs(30), |c| async move {
        let (_, list) = c.get(0, "/api/v1/agents").await;
        list["agents"].as_array().is_some_and(|a| a.iter().any(|x| x["batches"].as_u64() >= Some(3)))
    })
    .await;
    child.kill().await.unwrap();
    let (_, list) = c.get(2, "/api/v1/agents").await;
    let a = &list["agents"][0];
    assert_eq!(a["signing_key_pinned"], true, "{a}");
    assert_eq!(a["status"], "online");
    let key_mode = std::fs::metadata(dir.path().join("agent.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key_mode.permissions().mode() & 0o777, 0o600);
}
