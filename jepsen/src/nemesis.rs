//! Fault schedules: every `interval` the next fault of the list is injected for `duration`,
//! then healed. Every injection and heal is logged with its time for the summary.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use crate::cluster::{Cluster, Mode, TOKEN};
use crate::net::Net;

/// The faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 a random node, restart it after the fault's duration.
    Kill,
    /// kill -9 the leader, restart it later.
    KillLeader,
    /// SIGSTOP a random node, SIGCONT later.
    Pause,
    /// Cut one random node off from the others.
    PartitionMajority,
    /// Cut the leader off from the others.
    PartitionLeader,
    /// Node 1 and node 3 cannot talk; node 2 talks to both.
    PartitionBridge,
    /// 100 ms ± 50 ms delay and 5 % loss on every node.
    Netem,
    /// Graceful restart of every node, one at a time.
    RollingRestart,
}

impl Fault {
    /// Parses a name (`kill`, `kill-leader`, …).
    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "kill" => Fault::Kill,
            "kill-leader" => Fault::KillLeader,
            "pause" => Fault::Pause,
            "partition-majority" => Fault::PartitionMajority,
            "partition-leader" => Fault::PartitionLeader,
            "partition-bridge" => Fault::PartitionBridge,
            "netem" => Fault::Netem,
            "rolling-restart" => Fault::RollingRestart,
            _ => return None,
        })
    }

    /// Whether the fault needs network namespaces.
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            Fault::PartitionMajority | Fault::PartitionLeader | Fault::PartitionBridge | Fault::Netem
        )
    }
}

/// One nemesis action, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the start.
    pub at_s: f64,
    /// The fault.
    pub fault: Fault,
    /// `inject` or `heal`.
    pub phase: &'static str,
    /// Which nodes.
    pub nodes: Vec<usize>,
}

/// The leader's Raft id as the first reachable node sees it (a plain blocking HTTP/1.0 request:
/// the nemesis runs on a blocking thread).
pub fn leader(urls: &[String]) -> Option<usize> {
    {
        for u in urls {
            let host = u.trim_start_matches("http://");
            let Ok(mut s) = std::net::TcpStream::connect_timeout(
                &host.parse().ok()?,
                std::time::Duration::from_millis(500),
            ) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            use std::io::{Read, Write};
            let req = format!(
                "GET /api/v1/cluster HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).is_err() {
                continue;
            }
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            let Some((_, body)) = buf.split_once("\r\n\r\n") else { continue };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
                && let Some(l) = v["leader"].as_u64()
            {
                return Some(l as usize);
            }
        }
        None
    }
}

/// Runs the schedule until `deadline` (blocking; run it on a blocking thread).
pub fn run(
    cluster: Arc<Mutex<Cluster>>,
    net: Option<&Net>,
    faults: &[Fault],
    start: Instant,
    deadline: Instant,
    interval: Duration,
    duration: Duration,
) -> Vec<Event> {
    let mut events = Vec::new();
    let urls: Vec<String> = cluster.lock().expect("cluster").nodes.iter().map(|n| n.url.clone()).collect();
    let n = urls.len();
    let mut log = |fault, phase, nodes: Vec<usize>| {
        events.push(Event { at_s: start.elapsed().as_secs_f64(), fault, phase, nodes });
    };
    let mut k = 0;
    std::thread::sleep(interval / 2);
    while Instant::now() + duration < deadline {
        let fault = faults[k % faults.len()];
        k += 1;
        if fault.needs_netns() && net.is_none() {
            continue;
        }
        let random = rand::thread_rng().gen_range(0..n);
        let leader_idx = leader(&urls).map(|l| l - 1).filter(|l| *l < n).unwrap_or(random);
        match fault {
            Fault::Kill | Fault::KillLeader => {
                let i = if fault == Fault::Kill { random } else { leader_idx };
                cluster.lock().expect("cluster").kill(i);
                log(fault, "inject", vec![i + 1]);
                std::thread::sleep(duration);
                let _ = cluster.lock().expect("cluster").restart(i);
                log(fault, "heal", vec![i + 1]);
            }
            Fault::Pause => {
                cluster.lock().expect("cluster").pause(random);
                log(fault, "inject", vec![random + 1]);
                std::thread::sleep(duration);
                cluster.lock().expect("cluster").resume(random);
                log(fault, "heal", vec![random + 1]);
            }
            Fault::PartitionMajority | Fault::PartitionLeader | Fault::PartitionBridge | Fault::Netem => {
                let net = net.expect("checked above");
                let nodes: Vec<usize> = match fault {
                    Fault::PartitionMajority | Fault::PartitionLeader => {
                        let alone = if fault == Fault::PartitionMajority { random } else { leader_idx } + 1;
                        let rest: Vec<usize> = (1..=n).filter(|x| *x != alone).collect();
                        let _ = net.partition(&[vec![alone], rest]);
                        vec![alone]
                    }
                    Fault::PartitionBridge => {
                        let _ = net.cut(1, n);
                        vec![1, n]
                    }
                    _ => {
                        let _ = net.netem(100, 5);
                        (1..=n).collect()
                    }
                };
                log(fault, "inject", nodes.clone());
                std::thread::sleep(duration);
                net.heal();
                log(fault, "heal", nodes);
            }
            Fault::RollingRestart => {
                for i in 0..n {
                    cluster.lock().expect("cluster").stop(i);
                    log(fault, "inject", vec![i + 1]);
                    std::thread::sleep(Duration::from_secs(1));
                    let _ = cluster.lock().expect("cluster").restart(i);
                    log(fault, "heal", vec![i + 1]);
                    std::thread::sleep(Duration::from_secs(3));
                }
            }
        }
        std::thread::sleep(interval.saturating_sub(duration));
    }
    events
}

/// Mode requirement check for a fault list.
pub fn supported(faults: &[Fault], mode: Mode) -> Vec<Fault> {
    faults.iter().copied().filter(|f| mode == Mode::Netns || !f.needs_netns()).collect()
}
