//! The seam between a node and the network to its peers, for fault injection.
//!
//! Every message a node sends to a peer — Raft RPC (`raft_transport`), forwarded requests,
//! proposals and index waits (`routing::forward`) — first asks the node's [`LinkPolicy`] what
//! happens to it. In production the policy is empty and every link is up. In-process tests
//! install [`Links`] that cut, delay or drop links between chosen nodes (see
//! `tests/common/faults.rs`), so partitions can be tested without network namespaces.
//!
//! Gossip (UDP, chitchat) does not go through here: a cut link still shows its peer alive in
//! gossip, as a partition that drops TCP but not UDP would. The chaos harness (`jepsen/`) cuts
//! every kind of traffic with real network namespaces.

use std::sync::Arc;
use std::time::Duration;

/// What happens to a message on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Delivered.
    Up,
    /// Not delivered: the sender sees an unreachable peer.
    Down,
    /// Delivered after this delay.
    Slow(Duration),
}

/// Decides the fate of messages from one node to its peers.
pub trait Links: Send + Sync + 'static {
    /// The link from this node to the peer at `to_addr` (its API address).
    fn link(&self, to_addr: &str) -> Link;
}

/// A node's links to its peers (cheap to clone; empty means every link is up).
#[derive(Clone, Default)]
pub struct LinkPolicy(Option<Arc<dyn Links>>);

impl LinkPolicy {
    /// A policy asking `links`.
    pub fn new(links: Arc<dyn Links>) -> LinkPolicy {
        LinkPolicy(Some(links))
    }

    /// Waits out a slow link; `false` if the link to `to_addr` is down.
    pub async fn pass(&self, to_addr: &str) -> bool {
        let Some(links) = &self.0 else { return true };
        match links.link(to_addr) {
            Link::Up => true,
            Link::Down => false,
            Link::Slow(d) => {
                tokio::time::sleep(d).await;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct CutTo(&'static str);

    impl Links for CutTo {
        fn link(&self, to_addr: &str) -> Link {
            if to_addr == self.0 { Link::Down } else { Link::Up }
        }
    }

    #[tokio::test]
    async fn an_empty_policy_passes_and_a_cut_link_does_not() {
        assert!(LinkPolicy::default().pass("a:1").await);
        let p = LinkPolicy::new(Arc::new(CutTo("b:2")));
        assert!(p.pass("a:1").await);
        assert!(!p.pass("b:2").await);
    }
}
