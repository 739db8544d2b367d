//! Handing this node's leadership to another voter (graceful drain before a restart or an
//! upgrade).
//!
//! The replica closes its gate first: new writes and read barriers wait (they are answered
//! "not applied, retry" once the leadership has moved), the writes already in flight finish
//! (bounded by [`DRAIN_WAIT`]). Then the election layer hands the leadership over (module doc of
//! the raft crate's `election::transfer`): heartbeats off, target caught up, `elect-now`, new
//! leader seen. Without a named target the most caught-up live voter takes over.

use std::collections::BTreeSet;
use std::time::Duration;

use monsys_raft::NodeId;
use monsys_raft::election::{Target, Transferred};

use super::Replica;

/// How long the writes in flight may take to finish before a transfer gives up.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Why the leadership was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The writes in flight did not finish within [`DRAIN_WAIT`]; nothing was changed.
    #[error("writes in flight did not finish within {DRAIN_WAIT:?}")]
    WritesInFlight,
    /// The election layer's refusal or failure.
    #[error(transparent)]
    Raft(#[from] monsys_raft::election::TransferError),
}

impl Replica {
    /// Hands the leadership of this node (the leader) to `target`, or without one to the most
    /// caught-up live voter; returns the new leader and how long the cluster was leaderless.
    pub async fn transfer_leadership(&self, target: Option<NodeId>) -> Result<Transferred, TransferError> {
        if !self.is_leader() {
            return Err(monsys_raft::election::TransferError::NotLeader.into());
        }
        let target = match target {
            Some(id) => Target::To(id),
            None => Target::Best(self.transfer_candidates()),
        };
        let _closed = tokio::time::timeout(DRAIN_WAIT, self.0.gate.write())
            .await
            .map_err(|_| TransferError::WritesInFlight)?;
        Ok(self.0.elector.transfer_leadership(target).await?)
    }

    /// The other voters gossip sees alive; all other voters while gossip sees none (it has not
    /// converged yet: the catch-up wait then weeds out a voter that is down).
    fn transfer_candidates(&self) -> BTreeSet<NodeId> {
        let me = self.id();
        let live: BTreeSet<NodeId> = self.live_voters().into_keys().filter(|id| *id != me).collect();
        if !live.is_empty() {
            return live;
        }
        self.raft_metrics().membership_config.membership().voter_ids().filter(|id| *id != me).collect()
    }
}
