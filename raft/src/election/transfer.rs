//! Leadership transfer, the leader's side: hand the leadership to a caught-up voter, e.g.
//! before stopping this node for an upgrade.
//!
//! Steps: pick the target (the given voter, or the most caught-up of the candidates), stop
//! heartbeats, wait (bounded) until the target has replicated this leader's whole log, ask it
//! to campaign at once (`elect-now`), and wait (bounded) until another node leads. Heartbeats
//! are switched back on at the end whatever happened, also when the caller gives up.
//!
//! Why it works although voters refuse votes within their leader lease: this leader's own
//! lease started when it was elected and is not renewed by its heartbeats, so it grants the
//! target's vote (the target has its whole log) and steps down at once; in a three-voter
//! cluster that is a quorum. With more voters the others grant once their lease has run out,
//! `election_timeout_max` after the last heartbeat, when the target campaigns a second time
//! (see `Elector::serve_elect_now`). The caller must keep new writes away meanwhile (the
//! replica holds them back): an entry appended after the target caught up would make this
//! leader's log longer than the target's, and its vote a refusal.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use super::wire::{ElectNowRequest, ElectNowResponse, Refusal};
use super::{Elector, rules};
use crate::codec::{self, MAX_RPC_BYTES};
use crate::network::{RpcKind, TransportError};
use crate::{NodeId, Raft, RaftMetrics};

/// How long the target may take to replicate the leader's log.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// How long the leadership may take to move once the target campaigns.
pub const MOVE_WAIT: Duration = Duration::from_secs(2);

/// Whom to hand the leadership to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This voter.
    To(NodeId),
    /// The most caught-up of these nodes (voters other than the leader; the others are ignored).
    Best(BTreeSet<NodeId>),
}

/// A completed transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// The new leader (normally the target; another voter if it won the election instead).
    pub leader: NodeId,
    /// From the campaign request until this node saw the new leader: at most how long the
    /// cluster was without a leader.
    pub leaderless: Duration,
    /// The whole transfer, catching up included.
    pub took: Duration,
}

/// Why the leadership was not handed over. In every case this node is still the leader with
/// heartbeats on, except after [`TransferError::NotMoved`] (the target may yet win, or the
/// leaderless cluster elects someone by the usual timeout).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// This node is not the leader.
    #[error("this node is not the leader")]
    NotLeader,
    /// The target is this node or not a voter of the current configuration.
    #[error("node {0} is not another voter of the current configuration")]
    BadTarget(NodeId),
    /// No candidate voter has replicated anything yet.
    #[error("no other voter to hand the leadership to")]
    NoCandidate,
    /// The target did not replicate the whole log in time.
    #[error("node {target} did not catch up within {CATCH_UP_WAIT:?}")]
    Lagging {
        /// The target.
        target: NodeId,
    },
    /// The target refused to campaign.
    #[error("node {target} refused to take over: {refusal:?}")]
    Refused {
        /// The target.
        target: NodeId,
        /// Its reason.
        refusal: Refusal,
    },
    /// The target runs a build without leadership transfer.
    #[error("node {0} runs a build without leadership transfer")]
    Unsupported(NodeId),
    /// The campaign request did not reach the target, or its answer did not come back.
    #[error("asking node {target} to take over failed: {reason}")]
    Unreachable {
        /// The target.
        target: NodeId,
        /// The transport's error.
        reason: String,
    },
    /// The target campaigned but no node was seen leading within [`MOVE_WAIT`].
    #[error("no new leader within {MOVE_WAIT:?} of asking node {target} to take over")]
    NotMoved {
        /// The target.
        target: NodeId,
    },
}

impl Elector {
    /// Hands this leader's leadership to `target` (see the module doc). Returns the new leader.
    pub async fn transfer_leadership(&self, target: Target) -> Result<Transferred, TransferError> {
        let started = Instant::now();
        let me = self.0.id;
        let m = self.0.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(me) {
            return Err(TransferError::NotLeader);
        }
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let target = match target {
            Target::To(id) if id == me || !voters.contains(&id) => return Err(TransferError::BadTarget(id)),
            Target::To(id) => id,
            Target::Best(candidates) => {
                let candidates: BTreeSet<NodeId> = candidates.intersection(&voters).copied().collect();
                let best = |m: &RaftMetrics| {
                    let replication = m.replication.clone().unwrap_or_default();
                    rules::best_target(me, &replication, &candidates)
                };
                // a leader elected a moment ago knows no follower's match yet
                let known = self
                    .0
                    .raft
                    .wait(Some(CATCH_UP_WAIT))
                    .metrics(|m| best(m).is_some(), "a match known")
                    .await;
                known.ok().as_ref().and_then(best).ok_or(TransferError::NoCandidate)?
            }
        };
        let node = membership.get_node(&target).cloned().ok_or(TransferError::BadTarget(target))?;

        let _heartbeats = HeartbeatsOff::new(&self.0.raft);
        let caught_up = |m: &RaftMetrics| {
            let matched = m.replication.as_ref().and_then(|r| r.get(&target).copied().flatten());
            matched.map(|l| l.index) >= m.last_log_index
        };
        self.0
            .raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(caught_up, "transfer target caught up")
            .await
            .map_err(|_| TransferError::Lagging { target })?;

        let asked = Instant::now();
        tracing::info!(target, term = m.current_term, "handing the leadership over");
        let req = ElectNowRequest::V1 { term: m.current_term, leader: me };
        let body = codec::encode("elect-now", &req, MAX_RPC_BYTES)
            .map_err(|e| TransferError::Unreachable { target, reason: e.to_string() })?;
        let sent = self.0.peers.send_boxed(target, &node, RpcKind::ElectNow, body, self.0.timers.rpc).await;
        let reply = sent.map_err(|e| match e {
            TransportError::Unsupported(_) => TransferError::Unsupported(target),
            e => TransferError::Unreachable { target, reason: e.to_string() },
        })?;
        let answer: ElectNowResponse = codec::decode("elect-now reply", &reply, MAX_RPC_BYTES)
            .map_err(|e| TransferError::Unreachable { target, reason: e.to_string() })?;
        if let ElectNowResponse::V1 { refusal: Some(refusal) } = answer {
            return Err(TransferError::Refused { target, refusal });
        }

        let moved = self
            .0
            .raft
            .wait(Some(MOVE_WAIT))
            .metrics(|m| m.current_leader.is_some_and(|l| l != me), "leadership moved")
            .await
            .map_err(|_| TransferError::NotMoved { target })?;
        let leader = moved.current_leader.unwrap_or(target);
        let done = Transferred { leader, leaderless: asked.elapsed(), took: started.elapsed() };
        tracing::info!(leader, leaderless = ?done.leaderless, took = ?done.took, "leadership handed over");
        Ok(done)
    }
}

/// Heartbeats off while it lives (openraft's runtime switch), back on when dropped.
struct HeartbeatsOff<'a>(&'a Raft);

impl<'a> HeartbeatsOff<'a> {
    fn new(raft: &'a Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        HeartbeatsOff(raft)
    }
}

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}
