//! The test network: one network namespace per node (`msj<N>`), each with a veth into a bridge
//! `msjbr0` in the root namespace, addresses `10.77.0.<N>/24`, the harness at `10.77.0.254`.
//! Faults are real network faults: iptables DROP rules inside a node's namespace (partitions)
//! and `tc netem` on its interface (delay, loss). Everything is removed by [`Net::teardown`],
//! and a stale setup from a crashed run is removed first.

use std::process::Command;

/// Bridge name.
const BRIDGE: &str = "msjbr0";
/// Address prefix.
pub const PREFIX: &str = "10.77.0";

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// The namespace of node `i` (1-based).
pub fn ns(i: usize) -> String {
    format!("msj{i}")
}

/// The address of node `i`.
pub fn addr(i: usize) -> String {
    format!("{PREFIX}.{i}")
}

/// Whether this machine can create namespaces and inject network faults (root with `ip`,
/// `iptables` and `tc`).
pub fn available() -> bool {
    let has = |tool: &str| Command::new(tool).arg("-V").output().is_ok_and(|o| o.status.success());
    has("iptables")
        && has("tc")
        && Command::new("ip").args(["netns", "add", "msjprobe"]).output().is_ok_and(|o| o.status.success())
        && {
            run_quiet(&["ip", "netns", "del", "msjprobe"]);
            true
        }
}

/// A created network of `n` nodes.
pub struct Net {
    n: usize,
}

impl Net {
    /// Creates the bridge and `n` namespaces (removing leftovers first).
    pub fn create(n: usize) -> anyhow::Result<Net> {
        Net::cleanup(9);
        run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{PREFIX}.254/24"), "dev", BRIDGE])?;
        run(&["ip", "link", "set", BRIDGE, "up"])?;
        // Docker sets the FORWARD policy to DROP; bridged traffic may traverse it
        run(&["iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"])?;
        for i in 1..=n {
            let (ns, host, peer) = (ns(i), format!("msjh{i}"), format!("msjp{i}"));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            run(&["ip", "link", "set", &peer, "netns", &ns])?;
            run(&["ip", "link", "set", &host, "master", BRIDGE])?;
            run(&["ip", "link", "set", &host, "up"])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", addr(i)),
                "dev",
                &peer,
            ])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &peer, "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(Net { n })
    }

    /// A handle on a network created by [`Net::create`] (for another thread).
    pub fn attach(n: usize) -> Net {
        Net { n }
    }

    /// Drops all traffic between node `a` and node `b` (both directions).
    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        for (x, y) in [(a, b), (b, a)] {
            run(&["ip", "netns", "exec", &ns(x), "iptables", "-A", "INPUT", "-s", &addr(y), "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Splits the nodes into groups that cannot talk to each other.
    pub fn partition(&self, groups: &[Vec<usize>]) -> anyhow::Result<()> {
        for (gi, g) in groups.iter().enumerate() {
            for other in groups.iter().skip(gi + 1) {
                for a in g {
                    for b in other {
                        self.cut(*a, *b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds delay and loss on every node's interface.
    pub fn netem(&self, delay_ms: u32, loss_pct: u32) -> anyhow::Result<()> {
        for i in 1..=self.n {
            run(&[
                "ip",
                "netns",
                "exec",
                &ns(i),
                "tc",
                "qdisc",
                "add",
                "dev",
                &format!("msjp{i}"),
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
                &format!("{}ms", delay_ms / 2),
                "loss",
                &format!("{loss_pct}%"),
            ])?;
        }
        Ok(())
    }

    /// Removes every partition and netem rule.
    pub fn heal(&self) {
        for i in 1..=self.n {
            run_quiet(&["ip", "netns", "exec", &ns(i), "iptables", "-F", "INPUT"]);
            run_quiet(&[
                "ip",
                "netns",
                "exec",
                &ns(i),
                "tc",
                "qdisc",
                "del",
                "dev",
                &format!("msjp{i}"),
                "root",
            ]);
        }
    }

    /// Removes namespaces `msj1..=msj<upto>`, their links and the bridge.
    pub fn cleanup(upto: usize) {
        for i in 1..=upto {
            run_quiet(&["ip", "netns", "del", &ns(i)]);
            run_quiet(&["ip", "link", "del", &format!("msjh{i}")]);
        }
        run_quiet(&["iptables", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]);
        run_quiet(&["ip", "link", "del", BRIDGE]);
    }

    /// Removes this network.
    pub fn teardown(&self) {
        Net::cleanup(self.n.max(9));
    }
}
