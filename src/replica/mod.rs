//! This node's handle on the replicated state: propose, commit, read barriers, index waits.
//!
//! A [`Replica`] is built first when a node starts, from the Raft handle, the state reader and
//! gossip's live view, and everything that writes takes one: the write batcher (inside), the
//! ingest group commit, session touches, membership changes, the audit recorder and the API.
//! It knows nothing about HTTP; its one error, [`WriteError`], says what a caller may conclude
//! about the outcome, and `crate::error` maps it once.
//!
//! Outcome semantics of every write (what the chaos checker relies on):
//! - `Ok` means the command is committed on a quorum and applied on this node (for
//!   [`Replica::propose`] from a follower: applied on the leader);
//! - [`WriteError::NotApplied`] means it was certainly not applied (safe to retry);
//! - [`WriteError::OutcomeUnknown`] means it may or may not have been applied;
//! - [`WriteError::Rejected`] means it was refused before it was proposed.
//!
//! Consistency of what it reads: [`Replica::reader`] reads this node's applied state (stale on
//! a follower); [`Replica::linearizable_barrier`] on the leader makes the next read
//! linearizable; [`Replica::leader`] and [`Replica::is_leader`] read openraft's metrics directly
//! (never the derived view), so routing to the leader does not lag an election.
//!
//! [`Replica::transfer_leadership`] (module `transfer`) hands the leadership to another voter;
//! writes and read barriers wait at the replica's gate while it runs.

pub mod commit;
pub mod error;
pub mod transfer;
pub mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use monsys_raft::{Command, CommandResult, Elector, Node, NodeId, Raft, RaftMetrics, StateReader};
use tokio::sync::{RwLock, watch};

pub use self::error::{Rejected, WriteError};
use crate::batch::Batcher;
use crate::cluster::gossip::LiveView;
use crate::cluster::view::{ClusterState, ClusterView};
use crate::lifecycle::Lifecycle;
use crate::metrics::NodeMetrics;
use crate::routing::forward::Forwarder;

/// This node's handle on the replicated state (cheap to clone).
#[derive(Clone)]
pub struct Replica(Arc<Inner>);

struct Inner {
    id: NodeId,
    raft: Raft,
    reader: StateReader,
    live: watch::Receiver<LiveView>,
    cluster: Arc<ClusterState>,
    forwarder: Forwarder,
    metrics: Arc<NodeMetrics>,
    writes: Batcher<writes::LeaderWrites>,
    elector: Elector,
    /// Writes and read barriers hold it shared; a leadership transfer holds it exclusively, so
    /// that nothing is appended (and no heartbeat renews the followers' lease) meanwhile.
    gate: RwLock<()>,
}

/// What a [`Replica`] is built from.
pub struct ReplicaParts {
    /// This node's Raft id.
    pub id: NodeId,
    /// The local Raft handle.
    pub raft: Raft,
    /// Reader of the local replicated state.
    pub reader: StateReader,
    /// Gossip's live view.
    pub live: watch::Receiver<LiveView>,
    /// Client of the peers' internal routes (proposals to the leader, index waits).
    pub forwarder: Forwarder,
    /// This node's metrics registry.
    pub metrics: Arc<NodeMetrics>,
    /// This node's election driver (its task runs on the node's lifecycle).
    pub elector: Elector,
}

impl Replica {
    /// Builds the replica and starts its tasks on `life`: the cluster view (kept current from
    /// Raft's metrics and gossip) and the write batcher.
    pub fn start(p: ReplicaParts, life: &Lifecycle) -> Replica {
        let cluster = {
            let (m, live) = (p.raft.metrics().borrow().clone(), p.live.borrow().clone());
            Arc::new(ClusterState::new(p.id, &m, &live))
        };
        crate::cluster::view::spawn(cluster.clone(), p.raft.clone(), p.live.clone(), p.metrics.clone(), life);
        let writes = Batcher::spawn(
            writes::LeaderWrites { raft: p.raft.clone() },
            writes::LIMITS,
            &life.tasks,
            life.stop.clone(),
        );
        Replica(Arc::new(Inner {
            id: p.id,
            raft: p.raft,
            reader: p.reader,
            live: p.live,
            cluster,
            forwarder: p.forwarder,
            metrics: p.metrics,
            writes,
            elector: p.elector,
            gate: RwLock::new(()),
        }))
    }

    /// How many handles of this replica exist (shutdown waits until it holds the last one).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.0.id
    }

    /// The local Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.0.raft
    }

    /// This node's election driver (serves pre-vote and elect-now).
    pub fn elector(&self) -> &Elector {
        &self.0.elector
    }

    /// Reader of this node's applied state (stale on a follower).
    pub fn reader(&self) -> &StateReader {
        &self.0.reader
    }

    /// Gossip's live view.
    pub fn live(&self) -> &watch::Receiver<LiveView> {
        &self.0.live
    }

    /// The client of the peers' internal routes.
    pub fn forwarder(&self) -> &Forwarder {
        &self.0.forwarder
    }

    /// This node's metrics registry.
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.0.metrics
    }

    /// The derived cluster view (members, live voters, placement; a moment old at most).
    pub fn view(&self) -> Arc<ClusterView> {
        self.0.cluster.view()
    }

    /// Re-derives the cluster view at once (for a caller that found it empty right after start).
    pub fn refresh_view(&self) -> Arc<ClusterView> {
        self.0.cluster.refresh(&self.0.raft, &self.0.live)
    }

    /// Latest Raft metrics of this node (a copy).
    pub fn raft_metrics(&self) -> RaftMetrics {
        self.0.raft.metrics().borrow().clone()
    }

    /// The leader this node knows of, with its address. Read from openraft's metrics (a short
    /// borrow, no copy): routing to the leader must not lag an election.
    pub fn leader(&self) -> Option<(NodeId, Node)> {
        let m = self.0.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        Some((id, m.membership_config.membership().get_node(&id)?.clone()))
    }

    /// Whether this node believes it is the leader (fresh, like [`Replica::leader`]).
    pub fn is_leader(&self) -> bool {
        // a leader that removed itself keeps its vote (openraft still names it leader) but is
        // not in the configuration any more
        let m = self.0.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.0.id) && m.membership_config.membership().get_node(&self.0.id).is_some()
    }

    /// Live members of the Raft configuration that are voters (the placement candidates).
    pub fn live_voters(&self) -> BTreeMap<NodeId, Node> {
        self.view().live_voters.clone()
    }

    /// Whether the log feature `feature` may be used: always once the cluster version that
    /// includes it is finalized (whoever is down: no member may run an older build any more);
    /// before that, only while every member (voters and learners: all apply the log) is live
    /// in gossip and announces it (a member that is down might come back running an older
    /// binary).
    pub fn members_support(&self, feature: &str) -> bool {
        if monsys_raft::cluster_version::feature_finalized(self.active_cluster_version(), feature) {
            return true;
        }
        let live = self.0.live.borrow().clone();
        all_announce(self.view().members.iter().copied(), &live, feature)
    }

    /// The cluster's active version as applied on this node (a local read: right after a
    /// finalize, a follower may still show the previous version for a moment).
    pub fn active_cluster_version(&self) -> u32 {
        self.0.reader.cluster_version().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the cluster version; assuming none");
            monsys_raft::cluster_version::UNVERSIONED
        })
    }

    /// Proposes `cmd` on this node (the leader) and waits until it is committed and applied
    /// here; batchable commands share entries with concurrent writes.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        Ok(self.write_at(cmd).await?.0)
    }

    /// [`Replica::write`], also returning the log index of the entry that carried the command.
    async fn write_at(&self, cmd: Command) -> Result<(CommandResult, u64), WriteError> {
        gate(&cmd, |f| self.members_support(f))?;
        let _open = self.pass_gate().await?;
        match cmd.batch_feature() {
            Some(feature) if self.members_support(feature) => {
                monsys_raft::check_command_size(&cmd).map_err(|e| WriteError::invalid(e.to_string()))?;
                self.0.writes.submit(cmd).await
            }
            _ => commit::commit(&self.0.raft, cmd).await.map(|r| (r.data, r.log_id.index)),
        }
    }

    /// Proposes `cmd` on this node (the leader) alone, with the size check and the commit
    /// timeout.
    pub async fn commit(
        &self,
        cmd: Command,
    ) -> Result<openraft::raft::ClientWriteResponse<monsys_raft::TypeConfig>, WriteError> {
        let _open = self.pass_gate().await?;
        commit::commit(&self.0.raft, cmd).await
    }

    /// Waits while a leadership transfer runs (bounded by its own timeouts); the guard keeps the
    /// next transfer waiting until the caller's write is done. A write that waited for a
    /// transfer that moved the leadership is refused here as certainly not applied, rather than
    /// by openraft as "forward to the leader" (which cannot tell whether it was appended).
    async fn pass_gate(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, WriteError> {
        if let Ok(open) = self.0.gate.try_read() {
            return Ok(open);
        }
        let open = self.0.gate.read().await;
        if !self.is_leader() {
            return Err(WriteError::not_applied("the leadership moved to another node; retry there"));
        }
        Ok(open)
    }

    /// Proposes `cmd` through the leader: locally when this node leads, otherwise as one
    /// internal request to the leader (which never forwards it further). Same outcome semantics
    /// as [`Replica::write`].
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        if self.is_leader() {
            return self.write(cmd).await;
        }
        gate(&cmd, |f| self.members_support(f))?;
        let (_, leader) = self.leader().ok_or_else(|| WriteError::not_applied("no leader elected"))?;
        monsys_raft::check_command_size(&cmd).map_err(|e| WriteError::invalid(e.to_string()))?;
        let body = monsys_raft::encode_command(&cmd).map_err(|e| WriteError::invalid(e.to_string()))?;
        self.0.metrics.forwarded("propose", "sent");
        self.0.forwarder.propose(&leader.api_addr, body).await
    }

    /// Offers `cmd` to each other member of the configuration this node knows until one, the
    /// leader, takes it (for a node that does not know the leader); whether one did.
    pub async fn propose_to_members(&self, cmd: &Command) -> bool {
        let Ok(body) = monsys_raft::encode_command(cmd) else { return false };
        let members: Vec<String> = self
            .raft_metrics()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.0.id)
            .map(|(_, n)| n.api_addr.clone())
            .collect();
        for addr in members {
            if self.0.forwarder.propose(&addr, body.clone()).await.is_ok() {
                return true;
            }
        }
        false
    }

    /// Like [`Replica::write`], and waits (at most `wait`) until every live voter has the
    /// entry in its log, so that a request arriving at any node right after the answer finds
    /// it applied there (or about to be). Used by writes that other nodes check locally
    /// (tokens).
    pub async fn write_everywhere(&self, cmd: Command, wait: Duration) -> Result<CommandResult, WriteError> {
        // batched with concurrent writes (a flood of registrations is a few entries, not one each)
        let (result, index) = self.write_at(cmd).await?;
        let _ = self.0.cluster.replicated(index, wait).await;
        Ok(result)
    }

    /// Like [`Replica::write`], and then waits (at most `wait` in all) until every live voter
    /// has *applied* the entry, asking each over `/internal/v1/wait-applied`. Used by
    /// revocations (logout, disable, key revoke, token rotation): once this returns, a request
    /// starting on any live node sees the change. A node that does not answer in time is
    /// reported in the log; the write itself stands.
    pub async fn write_applied_everywhere(
        &self,
        cmd: Command,
        wait: Duration,
    ) -> Result<CommandResult, WriteError> {
        let resp = self.commit(cmd).await?;
        let index = resp.log_id.index;
        let peers: Vec<Node> =
            self.live_voters().into_iter().filter(|(id, _)| *id != self.0.id).map(|(_, n)| n).collect();
        let waits = peers.iter().map(|n| self.0.forwarder.wait_applied(&n.api_addr, index, wait));
        for (node, ok) in peers.iter().zip(futures::future::join_all(waits).await) {
            if !ok {
                tracing::warn!(addr = %node.api_addr, index, "peer did not confirm applying a revocation in time");
            }
        }
        Ok(resp.data)
    }

    /// Waits (at most `wait`) until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, wait: Duration) -> bool {
        self.0.cluster.applied(index, wait).await
    }

    /// Waits (at most `wait`) until this node has applied everything in its log, e.g. before
    /// trusting that a token unknown here is unknown to the cluster.
    pub async fn catch_up_locally(&self, wait: Duration) {
        let target = self.0.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let _ = self.0.cluster.applied(target, wait).await;
    }

    /// Waits until this node, as leader, has confirmed its leadership with a quorum and applied
    /// everything committed before the call: a read after this is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<(), WriteError> {
        let _open = self.pass_gate().await?;
        commit::barrier(&self.0.raft).await
    }
}

/// Refuses (as certainly not applied) a command whose log feature not every member announces:
/// an older member would stop on an entry it cannot decode. Proposers pick an older command
/// themselves while a feature is missing; this is the net under them.
fn gate(cmd: &Command, supported: impl Fn(&str) -> bool) -> Result<(), WriteError> {
    match cmd.required_feature() {
        Some(f) if !supported(f) => Err(WriteError::busy(
            format!(
                "not every member can apply this command yet (log feature {f}); retry when all run a build that has it"
            ),
            Duration::from_secs(5),
        )),
        _ => Ok(()),
    }
}

/// Whether every one of `members` is in `live` and announces `feature`.
fn all_announce(mut members: impl Iterator<Item = NodeId>, live: &LiveView, feature: &str) -> bool {
    members.all(|id| live.get(&id).is_some_and(|m| m.log_features.split(',').any(|f| f == feature)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::cluster::gossip::LiveMember;

    fn member(id: u64, features: &str) -> (u64, LiveMember) {
        let m = LiveMember {
            raft_id: id,
            api_addr: String::new(),
            version: String::new(),
            log_features: features.into(),
            formats: None,
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
        };
        (id, m)
    }

    #[test]
    fn a_gated_command_is_refused_until_every_member_has_its_feature() {
        let audited = Command::PutSettingsAudited {
            tenant: "t".into(),
            expected_revision: None,
            settings: Default::default(),
            at_ms: 1,
            actor: "a".into(),
        };
        let e = gate(&audited, |_| false).unwrap_err();
        assert!(e.certainly_not_applied() && e.to_string().contains("settings-audit"), "{e}");
        assert!(gate(&audited, |f| f == "settings-audit").is_ok());
        assert!(gate(&Command::Noop, |_| false).is_ok(), "a baseline command needs nothing");
    }

    #[test]
    fn a_log_feature_is_used_only_when_every_member_announces_it() {
        let live = Arc::new(BTreeMap::from([member(1, "batch"), member(2, "x,batch"), member(3, "")]));
        assert!(all_announce([1, 2].into_iter(), &live, "batch"));
        assert!(!all_announce([1, 2, 3].into_iter(), &live, "batch"), "an older member");
        assert!(!all_announce([1, 4].into_iter(), &live, "batch"), "a member not seen alive");
        assert!(!all_announce([1].into_iter(), &live, "bat"));
    }
}
