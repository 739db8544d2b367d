//! Owners this node has just found dead, before gossip says so.
//!
//! Gossip's failure detector takes seconds to drop a killed node (it must not suspect a node
//! that is merely slow). A forward to an owner whose port *refuses* the connection needs no
//! such caution: nothing listens there, the process is gone or restarting. Placement then skips
//! that node for this node's requests at once, so the agent's next owner takes over within one
//! request instead of after the detector's seconds of 503s. Only a refused connection counts
//! (a timeout may be a slow or partitioned node), and a suspicion ends when the node shows up in
//! gossip with a new incarnation (it restarted) or after [`SUSPICION_TTL`], by which time gossip
//! has decided.
//!
//! A forwarded request carries the suspicion to the next owner (`x-monsys-suspect`, trusted only
//! with the forwarder secret), which otherwise would still see the dead node as owner and
//! refuse a second hop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use monsys_raft::NodeId;

/// Header of a forwarded request naming the owner the forwarding node found dead.
pub const SUSPECT_HEADER: &str = "x-monsys-suspect";
/// How long a suspicion lasts without a new incarnation of the node.
pub const SUSPICION_TTL: Duration = Duration::from_secs(10);

/// The nodes this node suspects, with the gossip incarnation each was suspected in.
#[derive(Debug, Default)]
pub struct Suspects {
    by_node: Mutex<HashMap<NodeId, Suspicion>>,
}

#[derive(Debug, Clone, Copy)]
struct Suspicion {
    /// The node's gossip generation when it was suspected (`None`: not known).
    generation: Option<u64>,
    until: Instant,
}

impl Suspects {
    /// Suspects `node`, seen in gossip with `generation`.
    pub fn suspect(&self, node: NodeId, generation: Option<u64>) {
        let mut map = self.by_node.lock().expect("suspects lock");
        let now = Instant::now();
        map.retain(|_, s| s.until > now);
        map.insert(node, Suspicion { generation, until: now + SUSPICION_TTL });
    }

    /// Whether `node`, seen in gossip now with `generation`, is suspected: suspected, not
    /// expired, and not restarted since.
    pub fn is_suspected(&self, node: NodeId, generation: Option<u64>) -> bool {
        let map = self.by_node.lock().expect("suspects lock");
        map.get(&node).is_some_and(|s| {
            s.until > Instant::now()
                && (s.generation.is_none() || generation.is_none() || s.generation == generation)
        })
    }

    /// Whether any node is suspected (a cheap check before ranking a key).
    pub fn any(&self) -> bool {
        let map = self.by_node.lock().expect("suspects lock");
        let now = Instant::now();
        map.values().any(|s| s.until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspicion_ends_when_the_node_restarts() {
        let s = Suspects::default();
        assert!(!s.any());
        s.suspect(2, Some(100));
        assert!(s.any());
        assert!(s.is_suspected(2, Some(100)));
        assert!(s.is_suspected(2, None), "gone from gossip: still suspected");
        assert!(!s.is_suspected(2, Some(200)), "a new incarnation is not suspected");
        assert!(!s.is_suspected(3, Some(100)));
    }
}
