//! Real `monsys hub` processes, each in its node's namespace (or on 127.0.0.1 ports in
//! process mode), with kill -9, SIGSTOP/SIGCONT and restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
}

/// The cluster under test.
pub struct Cluster {
    /// Nodes, index 0 = node 1.
    pub nodes: Vec<Node>,
    mode: Mode,
    binary: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes: node 1 bootstraps, the others join it.
    pub fn start(
        binary: PathBuf,
        n: usize,
        mode: Mode,
        dir: &std::path::Path,
        unsafe_ack: bool,
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
            nodes.push(Node { id, url, child: None, args, log: dir.join(format!("n{id}.log")) });
        }
        let mut c = Cluster { nodes, mode, binary };
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
                c.args(["netns", "exec", &net::ns(node.id)]).arg(&self.binary);
                c
            }
            Mode::Process => Command::new(&self.binary),
        };
        cmd.args(&node.args).env("MONSYS_LOG", "info,openraft=warn").stdout(Stdio::null()).stderr(log);
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
        self.signal(i, "-TERM");
        if let Some(mut c) = self.nodes[i].child.take() {
            for _ in 0..100 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
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
