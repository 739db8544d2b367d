//! The hub: one node's view of the cluster and the domain operations the API calls.
//!
//! [`Hub`] is a cheap clone shared by every request. It knows the local Raft handle, the local
//! replicated-state reader, gossip's live view and the peer clients, and exposes typed operations
//! (`write`, `linearizable_barrier`, membership changes). It knows nothing about HTTP; the
//! `api` module maps its errors once.
//!
//! Outcome semantics of writes (what the chaos checker relies on):
//! - `Ok` means the command is committed on a quorum and applied on this node;
//! - `ApiError::Unavailable` (503) means it was certainly not applied (safe to retry);
//! - `ApiError::Indeterminate` (504) means it may or may not have been applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monsys_proto::cluster::{ClusterStatus, JoinRequest, MemberStatus};
use monsys_raft::{Command, CommandResult, Node, NodeId, Raft, RaftMetrics, StateReader};
use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use tokio::sync::{Mutex, watch};

use crate::cluster::gossip::LiveView;
use crate::cluster::view::ClusterState;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::NodeMetrics;
use crate::routing::forward::Forwarder;
use crate::secrets::ClusterSecret;

/// How long a client write may wait for commit before its outcome is reported unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read barrier may wait for a quorum.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new learner may take to catch up before the join is reported failed.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an audit event recorded after the fact waits for every member to support it.
const AUDIT_WAIT: Duration = Duration::from_secs(10);
/// How long a promotion waits for a learner to catch up before it is refused.
const PROMOTE_CATCH_UP: Duration = Duration::from_secs(10);

/// Shared state of one node.
#[derive(Clone)]
pub struct Hub(Arc<HubInner>);

/// The fields of [`Hub`].
pub struct HubInner {
    /// This node's Raft id.
    pub id: NodeId,
    /// The configuration the node started with.
    pub config: Config,
    /// Local Raft handle.
    pub raft: Raft,
    /// Reader of the local replicated state.
    pub reader: StateReader,
    /// Gossip's live view.
    pub live: watch::Receiver<LiveView>,
    /// The derived cluster view and the index waits (kept current by `cluster::view::spawn`).
    pub cluster: ClusterState,
    /// Secret of node-to-node traffic.
    pub secret: ClusterSecret,
    /// Metrics registry of this node.
    pub metrics: NodeMetrics,
    /// Client for requests forwarded to the leader or an owner.
    pub forwarder: Forwarder,
    /// Serialises membership changes (openraft allows one at a time).
    membership_lock: Mutex<()>,
    /// Outgoing mail.
    pub mailer: Box<dyn crate::mail::Mailer>,
    /// Rate limiters of the limit keys this node owns.
    pub limits: monsys_actors::limits::LimitTable,
    /// Session uses seen here, replicated in batches (idle timeout).
    pub touches: crate::auth::touch::Touches,
    /// The agent plane (actors, group commit), set once at start.
    plane: std::sync::OnceLock<Arc<crate::ingest::AgentPlane>>,
    /// Batches concurrent batchable writes into one entry, set once at start.
    batcher: std::sync::OnceLock<crate::write_batch::WriteBatcher>,
    /// `x-monsys-owner` value of this node's agents (`config.agent_url()`, checked at start).
    owner_hint: Option<axum::http::HeaderValue>,
    started: Instant,
}

impl std::ops::Deref for Hub {
    type Target = HubInner;
    fn deref(&self) -> &HubInner {
        &self.0
    }
}

/// Parts a [`Hub`] is built from.
pub struct HubParts {
    /// This node's Raft id.
    pub id: NodeId,
    /// Configuration.
    pub config: Config,
    /// Local Raft handle.
    pub raft: Raft,
    /// Local state reader.
    pub reader: StateReader,
    /// Gossip live view.
    pub live: watch::Receiver<LiveView>,
    /// Cluster secret.
    pub secret: ClusterSecret,
    /// Metrics registry.
    pub metrics: NodeMetrics,
    /// Outgoing mail.
    pub mailer: Box<dyn crate::mail::Mailer>,
}

impl Hub {
    /// Assembles a hub.
    pub fn new(p: HubParts) -> Hub {
        let forwarder = Forwarder::new(Duration::from_millis(p.config.forward_timeout_ms), p.secret.clone());
        let owner_hint = p.config.agent_url().and_then(|url| match axum::http::HeaderValue::from_str(&url) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(%url, "agent_url is not a valid header value; agents get no owner hint");
                None
            }
        });
        let cluster = {
            let (m, live) = (p.raft.metrics().borrow().clone(), p.live.borrow().clone());
            ClusterState::new(p.id, &m, &live)
        };
        Hub(Arc::new(HubInner {
            cluster,
            id: p.id,
            config: p.config,
            raft: p.raft,
            reader: p.reader,
            live: p.live,
            secret: p.secret,
            metrics: p.metrics,
            forwarder,
            membership_lock: Mutex::new(()),
            plane: std::sync::OnceLock::new(),
            batcher: std::sync::OnceLock::new(),
            touches: Default::default(),
            limits: monsys_actors::limits::LimitTable::new(100_000),
            mailer: p.mailer,
            owner_hint,
            started: Instant::now(),
        }))
    }

    /// Installs the write batcher (once, at start).
    pub fn set_batcher(&self, batcher: crate::write_batch::WriteBatcher) {
        let _ = self.batcher.set(batcher);
    }

    /// Installs the agent plane (once, at start).
    pub fn set_plane(&self, plane: Arc<crate::ingest::AgentPlane>) {
        let _ = self.plane.set(plane);
    }

    /// The owner hint this node sends to the agents it owns (`None`: hints are off).
    pub fn owner_hint(&self) -> Option<&axum::http::HeaderValue> {
        self.owner_hint.as_ref()
    }

    /// The agent plane; 503 while the node is still starting.
    pub fn plane(&self) -> Result<&Arc<crate::ingest::AgentPlane>, ApiError> {
        self.plane.get().ok_or_else(|| ApiError::unavailable("node is starting"))
    }

    /// Latest Raft metrics of this node.
    pub fn raft_metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The leader this node knows of, with its address. Read from openraft's metrics (a short
    /// borrow, no copy of the metrics): routing to the leader must not lag an election.
    pub fn leader(&self) -> Option<(NodeId, Node)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        Some((id, m.membership_config.membership().get_node(&id)?.clone()))
    }

    /// Whether this node believes it is the leader (fresh, like [`Hub::leader`]).
    pub fn is_leader(&self) -> bool {
        // a leader that removed itself keeps its vote (openraft still names it leader) but is
        // not in the configuration any more
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.membership_config.membership().get_node(&self.id).is_some()
    }

    /// Seconds since this node started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Proposes `cmd` and waits until it is committed and applied here.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        Ok(self.write_at(cmd).await?.0)
    }

    /// [`Hub::write`], also returning the log index of the entry that carried the command.
    async fn write_at(&self, cmd: Command) -> Result<(CommandResult, u64), ApiError> {
        match (self.batcher.get(), cmd.batch_feature()) {
            (Some(batcher), Some(feature)) if self.members_support(feature) => {
                monsys_raft::check_command_size(&cmd).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                batcher.submit(cmd).await
            }
            _ => self.commit(cmd).await.map(|r| (r.data, r.log_id.index)),
        }
    }

    /// Whether every member (voters and learners: all apply the log) is live in gossip and
    /// announces the log feature `feature` (a member that is down might come back running an
    /// older binary).
    pub fn members_support(&self, feature: &str) -> bool {
        let live = self.live.borrow().clone();
        all_announce(self.cluster.view().members.iter().copied(), &live, feature)
    }

    /// Appends an audit event to `tenant`'s log for a change that is already done (a
    /// membership change, an enrollment-token revocation), in the background: every member
    /// must announce `record-audit` first (a node that just joined is live in gossip a moment
    /// after its answer), so it waits for that up to [`AUDIT_WAIT`]. Best effort after the
    /// fact: if it cannot be written the change stands and a warning says what went unaudited.
    pub fn record_audit(&self, tenant: &str, event_type: &str, actor: &str, details: serde_json::Value) {
        let hub = self.clone();
        let (event_type, details) = (event_type.to_string(), details.to_string());
        let cmd = Command::Fleet(monsys_raft::fleet::FleetCommand::RecordAudit {
            tenant: tenant.to_string(),
            at_ms: crate::api::settings::now_ms(),
            event_type: event_type.clone(),
            actor: actor.to_string(),
            details: details.clone(),
        });
        let task = async move {
            let deadline = tokio::time::Instant::now() + AUDIT_WAIT;
            while !hub.members_support(monsys_raft::LOG_FEATURE_RECORD_AUDIT) {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        event_type,
                        details,
                        "not audited: not every member announces record-audit"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            loop {
                // to whichever node leads by then (this one may have stepped down meanwhile)
                let Err(e) = hub.propose(cmd.clone()).await else { return };
                if !matches!(e, ApiError::Unavailable { .. }) {
                    // it may have been written: trying again could record it twice
                    tracing::warn!(event_type, details, error = %e, "audit event perhaps not written");
                    return;
                }
                // a leader that removed itself never learns its successor: ask the members
                if hub.propose_to_members(&cmd).await {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(event_type, details, error = %e, "audit event not written");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::spawn(tracing::Instrument::in_current_span(task));
    }

    /// Proposes `cmd` on this node (the leader), with the size check and the commit timeout.
    pub(crate) async fn commit(
        &self,
        cmd: Command,
    ) -> Result<openraft::raft::ClientWriteResponse<monsys_raft::TypeConfig>, ApiError> {
        monsys_raft::check_command_size(&cmd).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(cmd)).await {
            Err(_) => {
                Err(ApiError::Indeterminate("commit not confirmed in time; the write may still apply".into()))
            }
            Ok(r) => r.map_err(write_error),
        }
    }

    /// Offers `cmd` to each other member of the configuration this node knows until one, the
    /// leader, takes it (for a node that does not know the leader); whether one did.
    async fn propose_to_members(&self, cmd: &Command) -> bool {
        let Ok(body) = monsys_raft::encode_command(cmd) else { return false };
        let members: Vec<String> = self
            .raft_metrics()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, n)| n.api_addr.clone())
            .collect();
        for addr in members {
            if self.forwarder.propose(&addr, body.clone()).await.is_ok() {
                return true;
            }
        }
        false
    }

    /// Proposes `cmd` through the leader: locally when this node leads, otherwise as one
    /// internal request to the leader (which never forwards it further). Same outcome semantics
    /// as [`Hub::write`].
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        if self.is_leader() {
            return self.write(cmd).await;
        }
        let (_, leader) = self.leader().ok_or_else(|| ApiError::unavailable("no leader elected"))?;
        monsys_raft::check_command_size(&cmd).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let body = monsys_raft::encode_command(&cmd)?;
        self.metrics.forwarded("propose", "sent");
        self.forwarder.propose(&leader.api_addr, body).await
    }

    /// Like [`Hub::write`], and waits (at most `wait`) until every live voter has the entry in
    /// its log, so that a request arriving at any node right after the answer finds it applied
    /// there (or about to be). Used by writes that other nodes check locally (tokens).
    pub async fn write_everywhere(&self, cmd: Command, wait: Duration) -> Result<CommandResult, ApiError> {
        // batched with concurrent writes (a flood of registrations is a few entries, not one each)
        let (result, index) = self.write_at(cmd).await?;
        let _ = self.cluster.replicated(index, wait).await;
        Ok(result)
    }

    /// Like [`Hub::write`], and then waits (at most `wait` in all) until every live voter has
    /// *applied* the entry, asking each over `/internal/v1/wait-applied`. Used by revocations
    /// (logout, disable, key revoke, token rotation): once this returns, a request starting on
    /// any live node sees the change. A node that does not answer in time is reported in the
    /// log; the write itself stands.
    pub async fn write_applied_everywhere(
        &self,
        cmd: Command,
        wait: Duration,
    ) -> Result<CommandResult, ApiError> {
        let resp = self.commit(cmd).await?;
        let index = resp.log_id.index;
        let peers: Vec<Node> =
            self.live_voters().into_iter().filter(|(id, _)| *id != self.id).map(|(_, n)| n).collect();
        let waits = peers.iter().map(|n| self.forwarder.wait_applied(&n.api_addr, index, wait));
        for (node, ok) in peers.iter().zip(futures::future::join_all(waits).await) {
            if !ok {
                tracing::warn!(addr = %node.api_addr, index, "peer did not confirm applying a revocation in time");
            }
        }
        Ok(resp.data)
    }

    /// Waits (at most `wait`) until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, wait: Duration) -> bool {
        self.cluster.applied(index, wait).await
    }

    /// Waits (at most `wait`) until this node has applied everything in its log, e.g. before
    /// trusting that a token unknown here is unknown to the cluster.
    pub async fn catch_up_locally(&self, wait: Duration) {
        let target = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let _ = self.cluster.applied(target, wait).await;
    }

    /// Waits until this node, as leader, has confirmed its leadership with a quorum and applied
    /// everything committed before the call: a read after this is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<(), ApiError> {
        match tokio::time::timeout(READ_TIMEOUT, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ApiError::unavailable("leadership not confirmed by a quorum in time")),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(ApiError::unavailable("this node is no longer the leader"))
            }
            Ok(Err(RaftError::APIError(e))) => Err(ApiError::unavailable(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(ApiError::unavailable(format!("raft stopped: {e}"))),
        }
    }

    /// Adds a node as learner, waits for it to catch up, then (optionally) promotes it to voter.
    pub async fn add_member(&self, req: JoinRequest) -> Result<ClusterStatus, ApiError> {
        if req.id == 0 {
            return Err(ApiError::BadRequest("node id must not be 0".into()));
        }
        let _guard = self.membership_lock.lock().await;
        let node = Node { api_addr: req.api_addr.clone(), gossip_addr: req.gossip_addr.clone() };
        let membership = self.raft_metrics().membership_config.membership().clone();
        if let Some(known) = membership.get_node(&req.id)
            && known != &node
        {
            return Err(ApiError::Conflict(format!(
                "node {} is already a member at {known}; remove it first to change its address",
                req.id
            )));
        }
        if membership.get_node(&req.id).is_none() {
            self.check_joiner(&req).await?;
        }
        tracing::info!(id = req.id, %node, "adding learner");
        let added = tokio::time::timeout(CATCH_UP_TIMEOUT, self.raft.add_learner(req.id, node, false)).await;
        membership_result(added)?;
        self.wait_caught_up(req.id, CATCH_UP_TIMEOUT).await?;
        if req.promote {
            self.change_voters(ChangeMembers::AddVoterIds(BTreeSet::from([req.id]))).await?;
        }
        Ok(self.status())
    }

    /// Asks a node about to be added for its own Raft state: it must answer with this
    /// cluster's secret, be the node id it is added as, and have no log of its own. A node that
    /// started its own cluster (no `--join`) or kept a removed member's data would otherwise
    /// take this cluster's entries over its own ones at the same terms and indexes, and serve
    /// a mix of both.
    async fn check_joiner(&self, req: &JoinRequest) -> Result<(), ApiError> {
        let state = self.forwarder.node_state(&req.api_addr).await?;
        if state.node_id != req.id {
            return Err(ApiError::Conflict(format!(
                "the node at {} is node {}, not node {}",
                req.api_addr, state.node_id, req.id
            )));
        }
        if state.has_log {
            return Err(ApiError::Conflict(format!(
                "node {} already has a Raft log of its own (last index {:?}, term {}): it started a \
                 cluster of its own or was a member before; stop it, empty its data directory and \
                 start it with --join",
                req.id, state.last_log_index, state.term
            )));
        }
        Ok(())
    }

    /// Waits (at most `limit`) until the leader has replicated to `id` every entry it had when
    /// the wait began. openraft's blocking `add_learner` gives up after a short wait and says
    /// nothing, so a node that could not be reached used to be promoted regardless.
    async fn wait_caught_up(&self, id: NodeId, limit: Duration) -> Result<(), ApiError> {
        let target = self.raft_metrics().last_log_index.unwrap_or(0);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = self.raft_metrics();
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
            if matched.is_some_and(|i| i >= target) {
                return Ok(());
            }
            if m.current_leader != Some(self.id) {
                return Err(ApiError::unavailable("leadership changed while a node was catching up; retry"));
            }
            if tokio::time::Instant::now() >= deadline {
                // the learner is added (so not a 503) and a retry is safe: it skips the probe
                // and waits again, so a joiner keeps retrying a long snapshot install
                return Err(ApiError::Indeterminate(format!(
                    "node {id} is a learner but has not caught up with the log within {limit:?} \
                     (replicated up to {matched:?} of {target}); retry to promote it once it has \
                     (is it running and reachable?)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Promotes a learner to voter once it has caught up with the log.
    pub async fn promote_member(&self, id: NodeId) -> Result<ClusterStatus, ApiError> {
        let _guard = self.membership_lock.lock().await;
        let membership = self.raft_metrics().membership_config.membership().clone();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::NotFound(format!("node {id} is not a member")));
        }
        if !membership.voter_ids().any(|v| v == id) {
            // nothing changed yet: a refusal, not an unknown outcome
            self.wait_caught_up(id, PROMOTE_CATCH_UP).await.map_err(|e| match e {
                ApiError::Indeterminate(m) => ApiError::Conflict(m),
                other => other,
            })?;
        }
        self.change_voters(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
        Ok(self.status())
    }

    /// Removes a voter or learner from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<ClusterStatus, ApiError> {
        let _guard = self.membership_lock.lock().await;
        let membership = self.raft_metrics().membership_config.membership().clone();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::NotFound(format!("node {id} is not a member")));
        }
        let is_voter = membership.voter_ids().any(|v| v == id);
        let addr = membership.get_node(&id).map(|n| n.api_addr.clone()).unwrap_or_default();
        let change = if is_voter {
            if membership.voter_ids().count() == 1 {
                return Err(ApiError::Conflict("cannot remove the last voter".into()));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change_voters(change).await?;
        if id == self.id {
            // the change is committed; stepping down and stopping follow shortly
            self.removed(self.id, Duration::from_secs(1));
        } else {
            let (forwarder, me) = (self.forwarder.clone(), self.id);
            tokio::spawn(async move { forwarder.notify_removed(&addr, id, me).await });
        }
        Ok(self.status())
    }

    /// This node was removed from the cluster (by node `by`): writes the marker, then after
    /// `delay` stops Raft so that it does not campaign (see `cluster::removed`).
    pub fn removed(&self, by: NodeId, delay: Duration) {
        tracing::error!(by, "this node was removed from the cluster; stopping Raft");
        if let Err(e) =
            crate::cluster::removed::mark(&self.config.data_dir, by, crate::api::settings::now_ms())
        {
            tracing::error!(error = %e, "cannot write the removal marker");
        }
        let raft = self.raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown after removal");
            }
        });
    }

    async fn change_voters(&self, change: ChangeMembers<NodeId, Node>) -> Result<(), ApiError> {
        tracing::info!(?change, "changing membership");
        let res = tokio::time::timeout(CATCH_UP_TIMEOUT, self.raft.change_membership(change, false)).await;
        membership_result(res)
    }

    /// Cluster status from this node's point of view (local read).
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft_metrics();
        let live = self.live.borrow().clone();
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
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            applied_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            state: format!("{:?}", m.state),
            members,
            version: monsys_proto::VERSION.to_string(),
        }
    }

    /// Live members of the Raft configuration that are voters (the placement candidates).
    pub fn live_voters(&self) -> BTreeMap<NodeId, Node> {
        self.cluster.view().live_voters.clone()
    }

    /// Why this node is not ready to serve, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(why) = crate::cluster::removed::marker(&self.config.data_dir) {
            return Some(format!("{why}; empty the data directory and start with --join to serve again"));
        }
        let m = self.raft_metrics();
        if m.current_leader.is_none() {
            return Some("no leader known".into());
        }
        if m.membership_config.membership().get_node(&self.id).is_none() {
            return Some("not a member of the cluster yet".into());
        }
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let lag = m.last_log_index.unwrap_or(0).saturating_sub(applied);
        if lag > self.config.ready_max_lag_entries {
            return Some(format!("applying: {lag} entries behind the log"));
        }
        None
    }
}

/// Whether every one of `voters` is in `live` and announces `feature`.
fn all_announce(
    mut voters: impl Iterator<Item = NodeId>,
    live: &crate::cluster::gossip::LiveView,
    feature: &str,
) -> bool {
    voters.all(|id| live.get(&id).is_some_and(|m| m.log_features.split(',').any(|f| f == feature)))
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ApiError::Indeterminate(
            "leadership changed while the write was in flight; it may or may not have applied".into(),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ApiError::Conflict(e.to_string()),
        RaftError::Fatal(e) => ApiError::unavailable(format!("raft stopped: {e}")),
    }
}

type MembershipResult = Result<
    Result<
        openraft::raft::ClientWriteResponse<monsys_raft::TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, Node>>,
    >,
    tokio::time::error::Elapsed,
>;

fn membership_result(res: MembershipResult) -> Result<(), ApiError> {
    match res {
        Err(_) => Err(ApiError::Indeterminate("membership change not confirmed in time".into())),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(ApiError::unavailable(
            "leadership changed during the membership change; check status and retry",
        )),
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Err(match e {
            ChangeMembershipError::InProgress(_) => ApiError::Unavailable {
                reason: format!("another membership change is in progress: {e}"),
                retry_after: Duration::from_secs(2),
            },
            other => ApiError::Conflict(other.to_string()),
        }),
        Ok(Err(RaftError::Fatal(e))) => Err(ApiError::unavailable(format!("raft stopped: {e}"))),
    }
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
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
        };
        (id, m)
    }

    #[test]
    fn a_log_feature_is_used_only_when_every_voter_announces_it() {
        let live = Arc::new(BTreeMap::from([member(1, "batch"), member(2, "x,batch"), member(3, "")]));
        assert!(all_announce([1, 2].into_iter(), &live, "batch"));
        assert!(!all_announce([1, 2, 3].into_iter(), &live, "batch"), "an older voter");
        assert!(!all_announce([1, 4].into_iter(), &live, "batch"), "a voter not seen alive");
        assert!(!all_announce([1].into_iter(), &live, "bat"));
    }
}
