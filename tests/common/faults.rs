//! Fault injection between in-process nodes: partitions, slow links and dropped messages.
//!
//! Every node of a [`super::TestCluster`] is started with links from one shared [`Faults`]
//! table (`monsys::cluster::links`). The table decides, per direction, what happens to each
//! message a node sends to a peer over TCP: Raft RPC, forwarded requests, proposals, index
//! waits. Gossip (UDP) is not cut, as in a partition that drops only TCP; placement therefore
//! still sees an isolated node alive, which the tests here do not depend on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monsys::cluster::links::{Link, Links};
use rand::Rng;

#[derive(Default)]
struct Table {
    /// Directed links that are down: (from, to) API addresses.
    down: HashSet<(String, String)>,
    /// Directed links with a delay.
    slow: HashMap<(String, String), Duration>,
    /// Directed links that drop this fraction of messages.
    lossy: HashMap<(String, String), f64>,
}

/// The fault table shared by the nodes of a test cluster (cheap to clone).
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Table>>);

impl Faults {
    /// The links of the node at `from` (its API address), as the node's wiring takes them.
    pub fn links_of(&self, from: &str) -> Arc<dyn Links> {
        Arc::new(NodeLinks { from: from.to_string(), table: self.clone() })
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&self, a: &[String], b: &[String]) {
        let mut t = self.0.lock().unwrap();
        for x in a {
            for y in b {
                t.down.insert((x.clone(), y.clone()));
                t.down.insert((y.clone(), x.clone()));
            }
        }
    }

    /// Delays every message from `from` to `to` by `by`.
    pub fn delay(&self, from: &str, to: &str, by: Duration) {
        self.0.lock().unwrap().slow.insert((from.into(), to.into()), by);
    }

    /// Drops the fraction `p` of the messages from `from` to `to`.
    pub fn drop_messages(&self, from: &str, to: &str, p: f64) {
        self.0.lock().unwrap().lossy.insert((from.into(), to.into()), p);
    }

    /// Restores every link.
    pub fn heal(&self) {
        *self.0.lock().unwrap() = Table::default();
    }

    fn link(&self, from: &str, to: &str) -> Link {
        let t = self.0.lock().unwrap();
        let key = (from.to_string(), to.to_string());
        if t.down.contains(&key) {
            return Link::Down;
        }
        if let Some(p) = t.lossy.get(&key)
            && rand::thread_rng().gen_bool(p.clamp(0.0, 1.0))
        {
            return Link::Down;
        }
        t.slow.get(&key).map_or(Link::Up, |d| Link::Slow(*d))
    }
}

struct NodeLinks {
    from: String,
    table: Faults,
}

impl Links for NodeLinks {
    fn link(&self, to_addr: &str) -> Link {
        self.table.link(&self.from, to_addr)
    }
}
