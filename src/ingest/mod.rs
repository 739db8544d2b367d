//! The agent plane of a node: per-agent actors, the group committer, background jobs.
//!
//! Request flow of `POST /api/v1/ingest` (see `api::agent_plane`): any node authenticates the
//! agent token locally and forwards the request once to the agent's owner; there
//! [`service::submit`] validates the batch, reads the agent's record and rules and calls the
//! agent's actor in the [`AgentRegistry`], which verifies, rate-limits and evaluates rules,
//! then hands the batch to [`PlaneCommitter`] → [`group::GroupCommitter`] → one Raft entry with
//! other agents' batches, proposed to the leader. The answer is sent after the commit.

pub mod error;
pub mod group;
pub mod integrity;
pub mod jobs;
pub mod service;
pub mod sockets;
pub mod validate;

use std::sync::Arc;

use monsys_actors::agent::{Accepted, AgentRegistry, CommitOutcome, Committer};
use monsys_raft::fleet::{AgentAlertItem, GroupItem, IngestItem, ItemOutcome, RuleFiring};

use self::group::GroupCommitter;
use crate::replica::WriteError;

/// Most agent actors on one node.
pub const MAX_ACTORS: usize = 100_000;

/// The agent plane of a node.
pub struct AgentPlane {
    /// Group commit of batches and heartbeats.
    pub group: GroupCommitter,
    /// Agent actors owned by this node.
    pub registry: AgentRegistry<PlaneCommitter>,
    /// Agents connected to this node by WebSocket.
    pub sockets: sockets::Sockets,
    /// When this node last ran the integrity checker (unix ms).
    pub integrity_last_ms: std::sync::atomic::AtomicU64,
}

impl AgentPlane {
    /// A plane committing through `group`.
    pub fn new(group: GroupCommitter) -> Arc<AgentPlane> {
        let committer = Arc::new(PlaneCommitter { group: group.clone() });
        Arc::new(AgentPlane {
            group,
            registry: AgentRegistry::new(committer, MAX_ACTORS),
            sockets: Default::default(),
            integrity_last_ms: Default::default(),
        })
    }
}

/// Commits accepted batches through the group committer.
pub struct PlaneCommitter {
    group: GroupCommitter,
}

impl Committer for PlaneCommitter {
    type Error = WriteError;

    async fn commit(&self, a: Accepted) -> Result<CommitOutcome, WriteError> {
        let item = to_item(a)?;
        Ok(match self.group.submit(GroupItem::Batch(Box::new(item))).await? {
            ItemOutcome::Stored { last_seq } => CommitOutcome::Stored { last_seq },
            ItemOutcome::Duplicate { last_seq } => CommitOutcome::Duplicate { last_seq },
            ItemOutcome::SeqConflict { last_seq } => CommitOutcome::SeqConflict { last_seq },
            ItemOutcome::Replay { last_seq } => CommitOutcome::Replay { last_seq },
            ItemOutcome::UnknownAgent => CommitOutcome::UnknownAgent,
            ItemOutcome::KeyChanged => CommitOutcome::KeyChanged,
            ItemOutcome::Seen => return Err(WriteError::unknown("heartbeat outcome for a batch")),
        })
    }
}

/// The replicated form of an accepted batch.
fn to_item(a: Accepted) -> Result<IngestItem, WriteError> {
    let req = a.request;
    let batch = req.batch;
    debug_assert_eq!(req.series.len(), batch.metrics.len(), "one series key per sample");
    Ok(IngestItem {
        tenant: req.tenant,
        agent_id: batch.agent_id,
        seq: batch.seq,
        body_sha256: req.body_sha256,
        collected_at_ms: batch.collected_at_ms,
        received_at_ms: req.received_at_ms,
        verified_with: a.verified_with,
        agent_version: batch.agent_version,
        samples: req.series.into_iter().zip(batch.metrics.iter().map(|s| s.value)).collect(),
        inventory_json: batch.inventory.as_ref().map(to_json).transpose()?,
        processes_json: batch.processes.as_ref().map(to_json).transpose()?,
        agent_alerts: batch
            .alerts
            .into_iter()
            .map(|x| AgentAlertItem { key: x.key, severity: x.severity, message: x.message })
            .collect(),
        fire: a
            .decisions
            .fire
            .into_iter()
            .map(|f| RuleFiring {
                rule_id: f.rule_id,
                severity: f.severity,
                message: f.message,
                value: f.value,
            })
            .collect(),
        clear: a.decisions.clear,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, WriteError> {
    serde_json::to_vec(v).map_err(|e| WriteError::invalid(e.to_string()))
}
