//! Online membership changes, run on the leader one at a time: add (learner, catch up,
//! promote), promote, remove, and what a node does once it learns it was removed.
//!
//! openraft allows one configuration change at a time, so [`Membership`] serialises them
//! behind a lock. Every change goes through openraft's joint consensus; a learner is promoted
//! only once it has caught up with the log (openraft's own blocking `add_learner` gives up
//! after a short wait and says nothing, so the wait is ours).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use monsys_proto::cluster::{ClusterStatus, FormatRange, Formats, JoinRequest};
use monsys_raft::{Node, NodeId};
use openraft::ChangeMembers;
use tokio::sync::Mutex;

use crate::lifecycle::Lifecycle;
use crate::replica::{Replica, WriteError, commit::membership_error};

/// How long a new learner may take to catch up before the join is reported failed.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a promotion waits for a learner to catch up before it is refused.
const PROMOTE_CATCH_UP: Duration = Duration::from_secs(10);

/// Why a membership change failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The node is not a member.
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    /// The change failed, with what is known of its outcome.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The membership changes of one node (cheap to clone).
#[derive(Clone)]
pub struct Membership {
    replica: Replica,
    life: Lifecycle,
    data_dir: PathBuf,
    /// Serialises membership changes (openraft allows one at a time).
    lock: Arc<Mutex<()>>,
}

impl Membership {
    /// The membership changes of `replica`'s node, whose data lives in `data_dir`.
    pub fn new(replica: Replica, life: Lifecycle, data_dir: PathBuf) -> Membership {
        Membership { replica, life, data_dir, lock: Arc::default() }
    }

    /// Adds a node as learner, waits for it to catch up, then (optionally) promotes it to voter.
    pub async fn add(&self, req: JoinRequest) -> Result<ClusterStatus, MembershipError> {
        if req.id == 0 {
            return Err(WriteError::invalid("node id must not be 0").into());
        }
        let _guard = self.lock.lock().await;
        let node = Node { api_addr: req.api_addr.clone(), gossip_addr: req.gossip_addr.clone() };
        let membership = self.replica.raft_metrics().membership_config.membership().clone();
        if let Some(known) = membership.get_node(&req.id)
            && known != &node
        {
            return Err(WriteError::conflict(format!(
                "node {} is already a member at {known}; remove it first to change its address",
                req.id
            ))
            .into());
        }
        if membership.get_node(&req.id).is_none() {
            self.check_joiner(&req).await?;
        }
        tracing::info!(id = req.id, %node, "adding learner");
        let added =
            tokio::time::timeout(CATCH_UP_TIMEOUT, self.replica.raft().add_learner(req.id, node, false))
                .await;
        membership_error(added)?;
        self.wait_caught_up(req.id, CATCH_UP_TIMEOUT).await?;
        if req.promote {
            self.change(ChangeMembers::AddVoterIds(BTreeSet::from([req.id]))).await?;
        }
        Ok(crate::cluster::status::status(&self.replica))
    }

    /// Asks a node about to be added for its own Raft state: it must answer with this
    /// cluster's secret, be the node id it is added as, run the cluster's active version, and
    /// have no log of its own. A node that
    /// started its own cluster (no `--join`) or kept a removed member's data would otherwise
    /// take this cluster's entries over its own ones at the same terms and indexes, and serve
    /// a mix of both.
    async fn check_joiner(&self, req: &JoinRequest) -> Result<(), WriteError> {
        let state = self.replica.forwarder().node_state(&req.api_addr).await?;
        if state.node_id != req.id {
            return Err(WriteError::conflict(format!(
                "the node at {} is node {}, not node {}",
                req.api_addr, state.node_id, req.id
            )));
        }
        check_joiner_version(req.id, self.replica.active_cluster_version(), state.formats.as_ref())?;
        if state.has_log {
            return Err(WriteError::conflict(format!(
                "node {} already has a Raft log of its own (last index {:?}, term {}): it started a \
                 cluster of its own or was a member before; stop it, empty its data directory and \
                 start it with --join",
                req.id, state.last_log_index, state.term
            )));
        }
        Ok(())
    }

    /// Waits (at most `limit`) until the leader has replicated to `id` every entry it had when
    /// the wait began.
    async fn wait_caught_up(&self, id: NodeId, limit: Duration) -> Result<(), WriteError> {
        let target = self.replica.raft_metrics().last_log_index.unwrap_or(0);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = self.replica.raft_metrics();
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
            if matched.is_some_and(|i| i >= target) {
                return Ok(());
            }
            if m.current_leader != Some(self.replica.id()) {
                return Err(WriteError::not_applied(
                    "leadership changed while a node was catching up; retry",
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                // the learner is added (so not "not applied") and a retry is safe: it skips the
                // probe and waits again, so a joiner keeps retrying a long snapshot install
                return Err(WriteError::unknown(format!(
                    "node {id} is a learner but has not caught up with the log within {limit:?} \
                     (replicated up to {matched:?} of {target}); retry to promote it once it has \
                     (is it running and reachable?)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Promotes a learner to voter once it has caught up with the log.
    pub async fn promote(&self, id: NodeId) -> Result<ClusterStatus, MembershipError> {
        let _guard = self.lock.lock().await;
        let membership = self.replica.raft_metrics().membership_config.membership().clone();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::NotMember(id));
        }
        if !membership.voter_ids().any(|v| v == id) {
            // nothing changed yet: a refusal, not an unknown outcome
            self.wait_caught_up(id, PROMOTE_CATCH_UP).await.map_err(|e| match e {
                WriteError::OutcomeUnknown(m) => WriteError::conflict(m),
                other => other,
            })?;
        }
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
        Ok(crate::cluster::status::status(&self.replica))
    }

    /// Removes a voter or learner from the cluster, and tells it.
    pub async fn remove(&self, id: NodeId) -> Result<ClusterStatus, MembershipError> {
        let _guard = self.lock.lock().await;
        let membership = self.replica.raft_metrics().membership_config.membership().clone();
        let Some(node) = membership.get_node(&id) else { return Err(MembershipError::NotMember(id)) };
        let addr = node.api_addr.clone();
        let change = if membership.voter_ids().any(|v| v == id) {
            if membership.voter_ids().count() == 1 {
                return Err(WriteError::conflict("cannot remove the last voter").into());
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change(change).await?;
        let me = self.replica.id();
        if id == me {
            // the change is committed; stepping down and stopping follow shortly
            self.removed(me, Duration::from_secs(1));
        } else {
            let forwarder = self.replica.forwarder().clone();
            self.life.spawn(async move { forwarder.notify_removed(&addr, id, me).await });
        }
        Ok(crate::cluster::status::status(&self.replica))
    }

    /// This node was removed from the cluster (by node `by`): writes the marker, then after
    /// `delay` stops Raft so that it does not campaign (see `cluster::removed`).
    pub fn removed(&self, by: NodeId, delay: Duration) {
        tracing::error!(by, "this node was removed from the cluster; stopping Raft");
        if let Err(e) = crate::cluster::removed::mark(&self.data_dir, by, crate::clock::now_ms()) {
            tracing::error!(error = %e, "cannot write the removal marker");
        }
        let raft = self.replica.raft().clone();
        self.life.spawn_until_stop(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown after removal");
            }
        });
    }

    async fn change(&self, change: ChangeMembers<NodeId, Node>) -> Result<(), WriteError> {
        tracing::info!(?change, "changing membership");
        let res =
            tokio::time::timeout(CATCH_UP_TIMEOUT, self.replica.raft().change_membership(change, false))
                .await;
        membership_error(res)
    }
}

/// Refuses a joiner whose build cannot run the cluster's active version `active` (`formats`:
/// what it announced; `None` from builds before cluster versions, which run version 0 only).
fn check_joiner_version(id: NodeId, active: u32, formats: Option<&Formats>) -> Result<(), WriteError> {
    let runs = formats.map_or(FormatRange { min: 0, max: 0 }, |f| f.cluster);
    if (runs.min..=runs.max).contains(&active) {
        return Ok(());
    }
    Err(WriteError::conflict(format!(
        "node {id} runs cluster versions {} to {}, but this cluster is at version {active}: start it with a \
         binary that supports version {active}",
        runs.min, runs.max
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_must_run_the_active_version() {
        let this = monsys_raft::cluster_version::formats();
        assert!(check_joiner_version(2, 1, Some(&this)).is_ok());
        assert!(check_joiner_version(2, 0, Some(&this)).is_ok(), "this build runs an unversioned cluster");
        assert!(
            check_joiner_version(2, 0, None).is_ok(),
            "a build before versions joins an unversioned cluster"
        );
        let e = check_joiner_version(2, 1, None).unwrap_err();
        assert!(e.to_string().contains("versions 0 to 0") && e.to_string().contains("version 1"), "{e}");
        let newer = Formats { cluster: FormatRange { min: 2, max: 3 }, ..this };
        assert!(check_joiner_version(2, 1, Some(&newer)).is_err(), "a build that dropped version 1");
    }
}
