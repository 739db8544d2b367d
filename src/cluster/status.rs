//! What a node reports about the cluster and itself: `GET /api/v1/cluster` and readiness.
//!
//! Both are local reads: they show what *this* node knows (its Raft metrics and gossip's live
//! set), which is what an operator debugging a node wants.

use std::collections::BTreeSet;
use std::path::Path;

use monsys_proto::cluster::{ClusterStatus, MemberStatus};
use monsys_raft::NodeId;

use crate::replica::Replica;

/// Cluster status from this node's point of view.
pub fn status(replica: &Replica) -> ClusterStatus {
    let m = replica.raft_metrics();
    let live = replica.live().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let seen = live.get(id);
            MemberStatus {
                id: *id,
                api_addr: node.api_addr.clone(),
                gossip_addr: node.gossip_addr.clone(),
                role: if voters.contains(id) { "voter" } else { "learner" }.to_string(),
                live: seen.is_some(),
                version: seen.map(|s| s.version.clone()),
                generation: seen.map(|s| s.generation),
                formats: seen.and_then(|s| s.formats),
            }
        })
        .collect();
    ClusterStatus {
        node_id: replica.id(),
        leader: m.current_leader,
        term: m.current_term,
        applied_index: m.last_applied.map(|l| l.index),
        last_log_index: m.last_log_index,
        state: format!("{:?}", m.state),
        members,
        version: monsys_proto::VERSION.to_string(),
        active_version: Some(replica.active_cluster_version()),
        finalizable_to: crate::cluster::upgrade::target(replica).ok().flatten(),
    }
}

/// Why this node is not ready to serve, if it is not: removed, no leader known, not a member
/// yet, or more than `max_lag` entries behind its own log.
pub fn not_ready_reason(replica: &Replica, data_dir: &Path, max_lag: u64) -> Option<String> {
    if let Some(why) = crate::cluster::removed::marker(data_dir) {
        return Some(format!("{why}; empty the data directory and start with --join to serve again"));
    }
    let m = replica.raft_metrics();
    if m.current_leader.is_none() {
        return Some("no leader known".into());
    }
    if m.membership_config.membership().get_node(&replica.id()).is_none() {
        return Some("not a member of the cluster yet".into());
    }
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let lag = m.last_log_index.unwrap_or(0).saturating_sub(applied);
    if lag > max_lag {
        return Some(format!("applying: {lag} entries behind the log"));
    }
    None
}
