//! Helpers shared by the benchmarks: free ports, real `monsys hub` processes, RSS, percentiles.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Cluster secret of benchmark clusters.
pub const SECRET: &str = "bench-cluster-secret-0123456789";
/// Admin token of benchmark clusters.
pub const TOKEN: &str = "msa_bench_admin_token";

/// An unused local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An environment knob with a default.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A child process killed on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its client URL.
    pub url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time a process has used (user + system), seconds: `/proc/<pid>/stat` counts it in
/// USER_HZ ticks, which are 1/100 s on every Linux.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name (which may hold spaces) start after the last ')'
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Starts a `monsys hub` as node `id`, joining `join`: the release build of this package, or
/// the binary named by `MONSYS_BENCH_BIN` (to compare two builds side by side).
pub fn start_hub(dir: &std::path::Path, id: u64, join: Option<&str>) -> Proc {
    let (api, gossip) = (free_port(), free_port());
    let bin = std::env::var_os("MONSYS_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_monsys").into());
    let mut cmd = Command::new(bin);
    cmd.arg("hub")
        .args(["--node-id", &id.to_string()])
        .args(["--api-addr", &format!("127.0.0.1:{api}")])
        .args(["--agent-url", &format!("http://127.0.0.1:{api}")])
        .args(["--gossip-addr", &format!("127.0.0.1:{gossip}")])
        .args(["--data-dir", dir.join(format!("n{id}")).to_str().unwrap()])
        .args(["--cluster-secret", SECRET, "--admin-token", TOKEN])
        .env("MONSYS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = join {
        cmd.args(["--join", url]);
    }
    Proc { child: cmd.spawn().expect("start monsys hub"), url: format!("http://127.0.0.1:{api}") }
}

/// Polls `f` until true or panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out: {what}");
}

/// Starts a 3-node monsys cluster and waits for three live voters.
pub async fn monsys_cluster(dir: &std::path::Path, http: &reqwest::Client) -> Vec<Proc> {
    let first = start_hub(dir, 1, None);
    wait_until("node 1 ready", Duration::from_secs(30), async || {
        http.get(format!("{}/api/v1/ready", first.url)).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let others = vec![start_hub(dir, 2, Some(&first.url)), start_hub(dir, 3, Some(&first.url))];
    let hubs: Vec<Proc> = std::iter::once(first).chain(others).collect();
    wait_until("3 voters", Duration::from_secs(60), async || {
        let Ok(r) = http.get(format!("{}/api/v1/cluster", hubs[0].url)).bearer_auth(TOKEN).send().await
        else {
            return false;
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["members"]
            .as_array()
            .is_some_and(|m| m.iter().filter(|x| x["role"] == "voter" && x["live"] == true).count() == 3)
    })
    .await;
    hubs
}

/// The value at quantile `p` of sorted values.
pub fn pct<T: Copy + Into<f64>>(sorted: &[T], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize].into()
}

/// Sum of `monsys_raft_leader_changes_total` over the nodes at `urls`.
#[allow(dead_code)] // not every bench uses it
pub async fn leader_changes(http: &reqwest::Client, urls: &[String]) -> f64 {
    let mut total = 0.0;
    for u in urls {
        if let Ok(r) = http.get(format!("{u}/metrics")).send().await
            && let Ok(text) = r.text().await
        {
            total += text
                .lines()
                .find(|l| l.starts_with("monsys_raft_leader_changes_total"))
                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    total
}
