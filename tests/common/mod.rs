//! In-process test clusters: N real hub nodes on loopback ports in one test process.
//!
//! Each node gets its own data directory, HTTP listener (bound on port 0 before its config is
//! built) and UDP gossip port. Nodes can be crashed (stopped, data kept) and restarted on the same
//! addresses. Waits poll observable state with a deadline; nothing sleeps for a fixed time to
//! "let things settle".

#![allow(dead_code)]

pub mod agent;
pub mod faults;

use std::future::Future;
use std::time::{Duration, Instant};

use monsys::config::Config;
use monsys::node::NodeHandle;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Shared secret of test clusters.
pub const SECRET: &str = "test-cluster-secret-0123456789";
/// Admin token installed on test clusters.
pub const TOKEN: &str = "msa_test_admin_token";

/// One node of a test cluster.
pub struct TestNode {
    pub config: Config,
    pub handle: Option<NodeHandle>,
}

impl TestNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.config.api_addr)
    }
    pub fn id(&self) -> u64 {
        self.config.node_id.expect("test nodes have fixed ids")
    }
    pub fn hub(&self) -> &monsys::hub::Hub {
        &self.handle.as_ref().expect("node is running").hub
    }
}

/// Options of a test cluster.
#[derive(Clone)]
pub struct ClusterOpts {
    pub snapshot_every_entries: u64,
    pub keep_logs_behind_snapshot: u64,
    /// The nodes' HTTP header (and idle keep-alive) deadline.
    pub http_header_timeout_ms: u64,
    /// The nodes' longest pause in a request body.
    pub http_body_stall_ms: u64,
    /// The nodes' cap of open connections per client address.
    pub max_connections_per_ip: usize,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        let server = Config::default();
        ClusterOpts {
            snapshot_every_entries: 5000,
            keep_logs_behind_snapshot: 1000,
            http_header_timeout_ms: server.http_header_timeout_ms,
            http_body_stall_ms: server.http_body_stall_ms,
            max_connections_per_ip: server.max_connections_per_ip,
        }
    }
}

/// A cluster of in-process nodes.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    pub http: reqwest::Client,
    /// The links between the nodes (all up until a test cuts them).
    pub faults: faults::Faults,
    opts: ClusterOpts,
    dir: tempfile::TempDir,
}

/// Polls `probe` every 50 ms until it yields `Some`, and returns that; panics after `timeout`
/// with `what` and the last value `describe`d. The one way tests wait for the cluster:
/// nothing sleeps a fixed time to "let things settle".
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MONSYS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .with_test_writer()
        .try_init();
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestCluster {
    /// Starts `n` nodes: the first bootstraps, the others join through it; waits until all are voters.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, ClusterOpts::default()).await
    }

    pub async fn start_with(n: usize, opts: ClusterOpts) -> TestCluster {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut c = TestCluster { nodes: Vec::new(), http, faults: Default::default(), opts, dir };
        for i in 0..n {
            c.add_node(if i == 0 { None } else { Some(c.nodes[0].url()) }).await;
        }
        let ids: Vec<u64> = c.nodes.iter().map(|n| n.id()).collect();
        c.wait_for("all nodes voters", Duration::from_secs(60), |c| {
            let ids = ids.clone();
            async move { c.voters_seen_by_all().await == Some(ids) }
        })
        .await;
        c
    }

    /// Starts one more node; with `join`, it joins the cluster at that URL.
    pub async fn add_node(&mut self, join: Option<String>) -> usize {
        let index = self.nodes.len();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = Config {
            node_id: Some(index as u64 + 1),
            api_addr: listener.local_addr().unwrap(),
            agent_url: Some(format!("http://{}", listener.local_addr().unwrap())),
            gossip_addr: format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
            gossip_interval_ms: 100,
            data_dir: self.dir.path().join(format!("node{}", index + 1)),
            cluster_secret: Some(SECRET.into()),
            admin_token: Some(TOKEN.into()),
            join,
            max_body_bytes: 64 * 1024,
            raft: monsys_raft::Options {
                heartbeat_ms: 50,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
                snapshot_every_entries: self.opts.snapshot_every_entries,
                keep_logs_behind_snapshot: self.opts.keep_logs_behind_snapshot,
                ..Default::default()
            },
            http_header_timeout_ms: self.opts.http_header_timeout_ms,
            http_body_stall_ms: self.opts.http_body_stall_ms,
            max_connections_per_ip: self.opts.max_connections_per_ip,
            ..Config::default()
        };
        let handle = monsys::node::start_wired(config.clone(), listener, self.wiring(&config)).await.unwrap();
        self.nodes.push(TestNode { config, handle: Some(handle) });
        index
    }

    /// Stops node `i` (its data stays).
    pub async fn crash(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].handle.take() {
            h.shutdown().await;
        }
    }

    /// Drains node `i` as a SIGTERM would, then stops it (its data stays); how long the drain took.
    pub async fn drain_and_stop(&mut self, i: usize) -> Duration {
        let h = self.nodes[i].handle.take().expect("node is running");
        let took = h.drain().await;
        h.shutdown().await;
        took
    }

    /// Restarts node `i` on its addresses and data dir (its `shutdown` released the data
    /// directory, so it opens at once).
    pub async fn restart(&mut self, i: usize) {
        let config = self.nodes[i].config.clone();
        let listener = bind_retry(config.api_addr).await;
        let wiring = self.wiring(&config);
        let handle = monsys::node::start_wired(config, listener, wiring)
            .await
            .unwrap_or_else(|e| panic!("restart of node {}: {e:#}", i + 1));
        self.nodes[i].handle = Some(handle);
    }

    /// The wiring of a node: its links go through the cluster's fault table.
    fn wiring(&self, config: &Config) -> monsys::node::Wiring {
        let links = self.faults.links_of(&config.api_addr.to_string());
        monsys::node::Wiring { links: monsys::cluster::links::LinkPolicy::new(links) }
    }

    /// API addresses (`host:port`) of the nodes with these indexes, as the fault table names them.
    pub fn addrs(&self, nodes: &[usize]) -> Vec<String> {
        nodes.iter().map(|i| self.nodes[*i].config.api_addr.to_string()).collect()
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &TestNode)> {
        self.nodes.iter().enumerate().filter(|(_, n)| n.handle.is_some())
    }

    /// Index of the node every running node agrees is leader, if any.
    pub fn leader(&self) -> Option<usize> {
        let mut leaders = self.running().map(|(_, n)| n.hub().replica.raft_metrics().current_leader);
        let first = leaders.next()??;
        if leaders.all(|l| l == Some(first)) {
            let i = self.nodes.iter().position(|n| n.id() == first)?;
            self.nodes[i].handle.as_ref().map(|_| i)
        } else {
            None
        }
    }

    pub async fn wait_leader(&self) -> usize {
        self.wait_for("an agreed leader", Duration::from_secs(30), |c| async move { c.leader().is_some() })
            .await;
        self.leader().unwrap()
    }

    /// A running node that is not the leader.
    pub async fn follower(&self) -> usize {
        let leader = self.wait_leader().await;
        self.running().map(|(i, _)| i).find(|&i| i != leader).expect("a running follower")
    }

    async fn voters_seen_by_all(&self) -> Option<Vec<u64>> {
        let mut seen = None;
        for (_, n) in self.running() {
            let m = n.hub().replica.raft_metrics();
            let mut voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            voters.sort();
            if seen.as_ref().is_some_and(|s| s != &voters) {
                return None;
            }
            seen = Some(voters);
        }
        seen
    }

    /// Polls `cond` until true or panics after `timeout` with `what` and every node's status.
    pub async fn wait_for<'a, F, Fut>(&'a self, what: &str, timeout: Duration, cond: F)
    where
        F: Fn(&'a TestCluster) -> Fut,
        Fut: Future<Output = bool> + 'a,
    {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status: Vec<_> =
            self.running().map(|(i, n)| (i, monsys::cluster::status::status(&n.hub().replica))).collect();
        panic!("timed out waiting for {what}; cluster: {status:#?}");
    }

    // ---- HTTP helpers -------------------------------------------------------------------

    pub async fn get(&self, i: usize, path: &str) -> (u16, Value) {
        let r =
            self.http.get(format!("{}{path}", self.nodes[i].url())).bearer_auth(TOKEN).send().await.unwrap();
        split(r).await
    }

    pub async fn put_settings(&self, i: usize, body: &Value, if_match: Option<u64>) -> (u16, Value) {
        let mut req =
            self.http.put(format!("{}/api/v1/settings", self.nodes[i].url())).bearer_auth(TOKEN).json(body);
        if let Some(rev) = if_match {
            req = req.header("if-match", format!("\"{rev}\""));
        }
        split(req.send().await.unwrap()).await
    }

    /// PUTs settings with `refresh_interval_secs = value`, retrying 503s (never-applied) briefly.
    pub async fn put_refresh(&self, i: usize, value: u32) -> (u16, Value) {
        let body = settings_with_refresh(value);
        eventually(&format!("node {i} to answer other than 503"), Duration::from_secs(10), || async {
            let (status, v) = self.put_settings(i, &body, None).await;
            (status != 503).then_some((status, v))
        })
        .await
    }
}

async fn bind_retry(addr: std::net::SocketAddr) -> TcpListener {
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot rebind {addr}");
}

/// Polls node `i`'s audit log (up to 20 s) until `found` holds for its events, which
/// events written just after an answer need; returns the last log read either way.
pub async fn wait_audit(c: &TestCluster, i: usize, found: impl Fn(&[Value]) -> bool) -> Value {
    poll_until(Duration::from_secs(20), || async {
        let audit = c.get(i, "/api/v1/audit?limit=1000").await.1;
        (audit["events"].as_array().is_some_and(|events| found(events)), audit)
    })
    .await
}

/// Polls `probe` every 50 ms until it says done or `timeout` passes, and returns its last value
/// either way (for callers that assert on what they got, with the value in the message).
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, T)>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let (done, value) = probe().await;
        if done || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn split(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A full settings document with a chosen refresh interval.
pub fn settings_with_refresh(value: u32) -> Value {
    let mut s = serde_json::to_value(monsys_proto::Settings::default()).unwrap();
    s["refresh_interval_secs"] = json!(value);
    s
}
