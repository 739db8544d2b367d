//! Keeps gossip connected to every member of the Raft configuration.
//!
//! Raft membership is the durable list of who belongs to the cluster; this task periodically
//! gossips with each member gossip does not currently see alive (their addresses are in the
//! membership), so a restarted node or a node that joined through Raft finds its peers without
//! a hand-kept seed list.

use std::time::Duration;

use super::gossip::{Gossip, LiveView, resolve};
use monsys_raft::Raft;

/// How often to retry members gossip does not see.
const RESEED_INTERVAL: Duration = Duration::from_secs(2);

/// Starts the re-seeding task; it ends when the node stops.
pub fn spawn(raft: Raft, gossip: std::sync::Arc<Gossip>, self_id: u64, life: &crate::lifecycle::Lifecycle) {
    life.spawn_until_stop(async move {
        let mut tick = tokio::time::interval(RESEED_INTERVAL);
        loop {
            tick.tick().await;
            reseed(&raft, &gossip, self_id, &gossip.live()).await;
        }
    });
}

async fn reseed(raft: &Raft, gossip: &Gossip, self_id: u64, live: &LiveView) {
    let membership = raft.metrics().borrow().membership_config.clone();
    for (id, node) in membership.membership().nodes() {
        if *id == self_id || live.contains_key(id) || node.gossip_addr.is_empty() {
            continue;
        }
        match resolve(&node.gossip_addr).await {
            Ok(addr) => gossip.gossip_with(addr),
            Err(e) => tracing::debug!(member = id, error = %e, "cannot resolve member gossip address"),
        }
    }
}
