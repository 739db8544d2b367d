//! Real `monsys hub` processes, each in its node's namespace (or on 127.0.0.1 ports in
//! process mode), with kill -9, SIGSTOP/SIGCONT, graceful stop and restart — on the same or
//! (for upgrade runs) another binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net;

/// Shared secret of test clusters.
pub const SECRET: &str = "jepsen-cluster-secret-0123456789";
/// Admin token of test clusters.
pub const TOKEN: &str = "msa_jepsen_admin_token";
/// Enrollment token installed at first start (for the simulated agents).
pub const ENROLLMENT: &str = "mse_jepsen_enrollment_token";

/// How nodes are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A network namespace per node (network faults possible).
    Netns,
    /// Plain processes on loopback ports (process faults only).
    Process,
}

/// One node.
pub struct Node {
    /// 1-based index (= Raft id).
    pub id: usize,
    /// Base URL the harness uses.
    pub url: String,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    binary: PathBuf,
}

/// How a graceful stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The process exited by itself after SIGTERM (false: it was killed at the bound).
    pub graceful: bool,
    /// From SIGTERM to exit.
    pub took: Duration,
}

/// The cluster under test.
pub struct Cluster {
    /// Nodes, index 0 = node 1.
    pub nodes: Vec<Node>,
    mode: Mode,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `n` nodes on `binary`: node 1 bootstraps, the others join it. `env` is set for
    /// every process (environment variables, unlike flags, are safe for any binary version).
    pub fn start(
        binary: PathBuf,
        n: usize,
        mode: Mode,
        dir: &Path,
        unsafe_ack: bool,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Cluster> {
        let mut nodes = Vec::new();
        for id in 1..=n {
            let (api, gossip, url, join) = match mode {
                Mode::Netns => {
                    let a = net::addr(id);
                    (
                        format!("{a}:8080"),
                        format!("{a}:7946"),
                        format!("http://{a}:8080"),
                        format!("http://{}:8080", net::addr(1)),
                    )
                }
                Mode::Process => {
                    let (p, g) = (18080 + id, 17946 + id);
                    (
                        format!("127.0.0.1:{p}"),
                        format!("127.0.0.1:{g}"),
                        format!("http://127.0.0.1:{p}"),
                        "http://127.0.0.1:18081".to_string(),
                    )
                }
            };
            let mut args = vec![
                "hub".to_string(),
                "--node-id".into(),
                id.to_string(),
                "--api-addr".into(),
                api,
                "--gossip-addr".into(),
                gossip,
                "--data-dir".into(),
                dir.join(format!("n{id}")).display().to_string(),
                "--cluster-secret".into(),
                SECRET.into(),
                "--admin-token".into(),
                TOKEN.into(),
                "--enrollment-token".into(),
                ENROLLMENT.into(),
            ];
            if id > 1 {
                args.extend(["--join".into(), join]);
            }
            if unsafe_ack {
                args.push("--unsafe-ack-before-commit".into());
            }
            let log = dir.join(format!("n{id}.log"));
            nodes.push(Node { id, url, child: None, args, log, binary: binary.clone() });
        }
        let mut c = Cluster { nodes, mode, env };
        for i in 0..n {
            c.spawn(i)?;
            if i == 0 {
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let mut cmd = match self.mode {
            Mode::Netns => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net::ns(node.id)]).arg(&node.binary);
                c
            }
            Mode::Process => Command::new(&node.binary),
        };
        cmd.args(&node.args).env("MONSYS_LOG", "info,openraft=warn").stdout(Stdio::null()).stderr(log);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        node.child = Some(cmd.spawn()?);
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(c) = &self.nodes[i].child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).output();
        }
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        self.signal(i, "-KILL");
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.wait();
        }
    }

    /// Graceful stop (SIGTERM, then kill after 10 s).
    pub fn stop(&mut self, i: usize) {
        self.stop_within(i, Duration::from_secs(10));
    }

    /// SIGTERM, wait for the exit at most `bound`, then kill -9; says which it was.
    pub fn stop_within(&mut self, i: usize, bound: Duration) -> Stopped {
        let sent = Instant::now();
        self.signal(i, "-TERM");
        let Some(mut c) = self.nodes[i].child.take() else {
            return Stopped { graceful: true, took: Duration::ZERO };
        };
        while sent.elapsed() < bound {
            if c.try_wait().ok().flatten().is_some() {
                return Stopped { graceful: true, took: sent.elapsed() };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        Stopped { graceful: false, took: sent.elapsed() }
    }

    /// Waits at most `bound` for node `i`'s process to exit by itself; its exit status if it
    /// did (the process is then gone and the node can be started again).
    pub fn exited_within(&mut self, i: usize, bound: Duration) -> Option<std::process::ExitStatus> {
        let since = Instant::now();
        while since.elapsed() < bound {
            let child = self.nodes[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The last `n` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Runs node `i` on `binary` from its next start on (same data directory and addresses).
    pub fn set_binary(&mut self, i: usize, binary: PathBuf) {
        self.nodes[i].binary = binary;
    }

    /// Restarts a stopped node with its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    /// Stops every node (kill -9 after resuming paused ones).
    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
