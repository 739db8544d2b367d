//! Elections driven by this crate instead of openraft's timer: pre-vote, and campaigns on a
//! leader's request (leadership transfer).
//!
//! Why: openraft 0.9 has neither. A follower cut off for a while (a partition, a paused
//! process) kept raising its term by campaigning alone, and when it came back the leader saw
//! the higher term in an append-entries reply and stepped down, although it was healthy. So
//! openraft runs with `enable_elect = false` (`Options::to_config`) and an [`Elector`] per node
//! decides when to call `Raft::trigger().elect()`:
//!
//! - Every incoming append-entries or snapshot chunk from a leader this node accepts, and every
//!   vote it grants, resets its election clock (`network::serve_rpc` calls
//!   [`Elector::heard_from_leader`]).
//! - A voter that hears nothing for a timeout drawn each round from
//!   `[election_timeout_max, 2 × election_timeout_max − election_timeout_min)` asks the voters
//!   of the current configuration (all of them during a joint change) for a pre-vote. A voter
//!   grants only if it is not the leader, has not heard from a leader for the leader lease
//!   (`election_timeout_max`, the lease openraft itself enforces on votes) and the candidate's
//!   log is at least as up to date as its own (`rules`). Only with a quorum of grants (itself
//!   included; a majority of every configuration) does the node campaign, in a term one
//!   higher. A lone voter campaigns at once. A cut-off follower therefore never raises its term.
//! - A peer that does not know the pre-vote RPC (an older build) counts as a grant, as in Raft
//!   without pre-vote; a peer that does not answer counts as a refusal.
//! - On an `elect-now` request from its leader (`transfer`), a voter campaigns at once, without
//!   a pre-vote, and once more right after the voters' lease ran out if the first campaign was
//!   refused because of it.
//!
//! Deliberately missing: check-quorum (a leader cut off from its quorum keeps believing it
//! leads until it hears a higher term; it cannot commit, so nothing acknowledged is lost).

mod rules;
mod transfer;
pub mod wire;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use openraft::ServerState;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use self::transfer::{Target, TransferError, Transferred};
use self::wire::{ElectNowRequest, ElectNowResponse, PreVoteRequest, PreVoteResponse, Refusal};
use crate::codec::{self, MAX_RPC_BYTES};
use crate::network::{RaftTransport, RpcKind, TransportError};
use crate::{Error, Node, NodeId, Options, Raft};

/// How long after the voters' lease ran out a node asked to take over campaigns once more.
const RETRY_MARGIN: Duration = Duration::from_millis(25);

/// The election driver of one node (cheap to clone): serves pre-vote and elect-now requests,
/// and [`Elector::run`] campaigns when the leader has been silent.
#[derive(Clone)]
pub struct Elector(Arc<Inner>);

struct Inner {
    id: NodeId,
    raft: Raft,
    peers: Arc<dyn Peers>,
    timers: Timers,
    clock: Mutex<Clock>,
    wake: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Timers {
    min: Duration,
    /// `election_timeout_max`: also openraft's leader lease.
    lease: Duration,
    rpc: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    /// When this node last heard from a leader it accepts, granted a vote, or campaigned.
    heard: Instant,
    /// When a campaign on a leader's request is to be repeated if it has not been won.
    retry_at: Option<Instant>,
}

/// How a round of the driver ended.
enum Flow {
    Continue,
    Stop,
}

impl Elector {
    /// The elector of node `id`, sending its RPCs over `transport` (the one openraft uses).
    pub fn new<T: RaftTransport>(id: NodeId, raft: Raft, transport: Arc<T>, opts: &Options) -> Elector {
        let timers = Timers {
            min: Duration::from_millis(opts.election_timeout_min_ms),
            lease: Duration::from_millis(opts.election_timeout_max_ms),
            rpc: Duration::from_millis(opts.election_timeout_min_ms.min(opts.rpc_timeout_ms)),
        };
        let clock = Clock { heard: Instant::now(), retry_at: None };
        Elector(Arc::new(Inner {
            id,
            raft,
            peers: transport,
            timers,
            clock: Mutex::new(clock),
            wake: Notify::new(),
        }))
    }

    /// The local Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.0.raft
    }

    /// Records that a leader this node accepts spoke to it (or that it granted a vote): the
    /// election clock starts again.
    pub fn heard_from_leader(&self) {
        self.clock().heard = Instant::now();
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.0.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Campaigns whenever the leader has been silent for an election timeout and a quorum
    /// grants a pre-vote; returns when Raft has stopped. Run it on a task of the node and stop
    /// it with the node.
    pub async fn run(self) {
        let mut round_start = Instant::now();
        loop {
            let timeout =
                rules::election_timeout(self.0.timers.min, self.0.timers.lease, rand::random::<f64>());
            let retry = loop {
                let clock = *self.clock();
                let due = clock.heard.max(round_start) + timeout;
                let next = clock.retry_at.map_or(due, |r| r.min(due));
                if Instant::now() >= next {
                    break clock.retry_at.is_some_and(|r| r <= next);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = self.0.wake.notified() => {}
                }
            };
            round_start = Instant::now();
            let flow = if retry {
                self.clock().retry_at = None;
                self.retry_handover().await
            } else {
                self.round().await
            };
            if let Flow::Stop = flow {
                tracing::debug!("raft stopped; the election driver ends");
                return;
            }
        }
    }

    /// One round after a silence: ask for pre-votes, campaign with a quorum of them.
    async fn round(&self) -> Flow {
        let m = self.0.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return Flow::Stop;
        }
        if m.state == ServerState::Leader {
            return Flow::Continue;
        }
        let membership = m.membership_config.membership();
        let configs = membership.get_joint_config().clone();
        let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
        if !voters.contains(&self.0.id) {
            return Flow::Continue;
        }
        let heard = self.clock().heard;
        let last_log_id = self.0.raft.data_metrics().borrow().last_log;
        let req = PreVoteRequest::V1 { term: m.current_term + 1, candidate: self.0.id, last_log_id };
        let asks = voters
            .iter()
            .filter(|id| **id != self.0.id)
            .filter_map(|id| membership.get_node(id).map(|node| (*id, node.clone())))
            .map(|(id, node)| {
                let req = req.clone();
                async move { (id, self.ask_pre_vote(id, &node, &req).await) }
            });
        let mut granted = BTreeSet::from([self.0.id]);
        let mut refused = Vec::new();
        for (id, answer) in join_all(asks).await {
            match answer {
                Ok(()) => {
                    granted.insert(id);
                }
                Err(why) => refused.push((id, why)),
            }
        }
        if !rules::is_quorum(&configs, &granted) {
            tracing::debug!(
                term = m.current_term,
                ?granted,
                ?refused,
                "pre-vote without a quorum; not campaigning"
            );
            return Flow::Continue;
        }
        if self.clock().heard != heard {
            tracing::debug!("a leader spoke during the pre-vote; not campaigning");
            return Flow::Continue;
        }
        tracing::info!(
            term = m.current_term + 1,
            ?granted,
            "leader silent and a quorum granted a pre-vote; campaigning"
        );
        self.campaign().await
    }

    /// Asks `id` for a pre-vote: `Ok` if granted (or if the peer does not know pre-vote).
    async fn ask_pre_vote(&self, id: NodeId, node: &Node, req: &PreVoteRequest) -> Result<(), String> {
        let body = codec::encode("pre-vote", req, MAX_RPC_BYTES).map_err(|e| e.to_string())?;
        let sent = self.0.peers.send_boxed(id, node, RpcKind::PreVote, body, self.0.timers.rpc).await;
        let reply = match sent {
            Ok(reply) => reply,
            // an older build: it would vote on its own terms, as in Raft without pre-vote
            Err(TransportError::Unsupported(_)) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        match codec::decode("pre-vote reply", &reply, MAX_RPC_BYTES).map_err(|e| e.to_string())? {
            PreVoteResponse::V1 { granted: true, .. } => Ok(()),
            PreVoteResponse::V1 { refusal, term, .. } => Err(format!("refused in term {term}: {refusal:?}")),
        }
    }

    /// Campaigns now (the election clock starts again, so the next round waits a full timeout).
    async fn campaign(&self) -> Flow {
        self.heard_from_leader();
        match self.0.raft.trigger().elect().await {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::debug!(error = %e, "cannot campaign");
                Flow::Stop
            }
        }
    }

    /// The second campaign of a node asked to take over, if its first has not been won (voters
    /// still inside their lease refused it).
    async fn retry_handover(&self) -> Flow {
        let m = self.0.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return Flow::Stop;
        }
        if m.state != ServerState::Candidate {
            return Flow::Continue;
        }
        tracing::info!(
            term = m.current_term,
            "handed-over campaign not won yet; campaigning again after the lease"
        );
        self.campaign().await
    }

    /// Answers a pre-vote request (`network::serve_rpc`).
    pub(crate) fn serve_pre_vote(&self, req: PreVoteRequest) -> PreVoteResponse {
        let PreVoteRequest::V1 { term: asked, candidate, last_log_id } = req;
        let (is_leader, term) = {
            let m = self.0.raft.metrics();
            let m = m.borrow();
            (m.state == ServerState::Leader, m.current_term)
        };
        let mine = self.0.raft.data_metrics().borrow().last_log;
        let voter = rules::Voter {
            is_leader,
            silence: Some(self.clock().heard.elapsed()),
            last_log_id: mine.as_ref(),
        };
        let decision = rules::grant_pre_vote(&voter, last_log_id.as_ref(), self.0.timers.lease);
        tracing::debug!(candidate, asked, ?decision, "pre-vote");
        PreVoteResponse::V1 { granted: decision.is_ok(), term, refusal: decision.err() }
    }

    /// Answers a leader's request to take over (`network::serve_rpc`): campaigns at once if the
    /// asker is this node's leader in that term and this node is a voter.
    pub(crate) async fn serve_elect_now(&self, req: ElectNowRequest) -> Result<ElectNowResponse, Error> {
        let ElectNowRequest::V1 { term, leader } = req;
        let refusal = {
            let m = self.0.raft.metrics();
            let m = m.borrow();
            if m.state == ServerState::Leader {
                Some(Refusal::IAmLeader)
            } else if !m.membership_config.membership().voter_ids().any(|v| v == self.0.id) {
                Some(Refusal::NotAVoter)
            } else if m.current_leader != Some(leader) || m.current_term != term {
                Some(Refusal::NotMyLeader)
            } else {
                None
            }
        };
        if let Some(refusal) = refusal {
            tracing::info!(leader, term, ?refusal, "refusing to take over the leadership");
            return Ok(ElectNowResponse::V1 { refusal: Some(refusal) });
        }
        let heard = self.clock().heard;
        tracing::info!(leader, term, "leader hands its leadership over; campaigning without a pre-vote");
        if let Flow::Stop = self.campaign().await {
            return Err(Error::Stopped("cannot campaign".into()));
        }
        self.clock().retry_at = Some(heard + self.0.timers.lease + RETRY_MARGIN);
        self.0.wake.notify_one();
        Ok(ElectNowResponse::V1 { refusal: None })
    }
}

/// [`RaftTransport`] behind a pointer (its `send` returns `impl Future`, which a `dyn` cannot).
trait Peers: Send + Sync + 'static {
    fn send_boxed<'a>(
        &'a self,
        target: NodeId,
        node: &'a Node,
        kind: RpcKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send + 'a>>;
}

impl<T: RaftTransport> Peers for T {
    fn send_boxed<'a>(
        &'a self,
        target: NodeId,
        node: &'a Node,
        kind: RpcKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send + 'a>> {
        Box::pin(self.send(target, node, kind, body, timeout))
    }
}

#[cfg(test)]
mod tests;
