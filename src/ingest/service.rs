//! The ingest service: what the owner of an agent does with one signed batch or heartbeat.
//!
//! [`submit`] parses and validates the batch, reads the agent's record and alert rules from
//! the local replicated state, and hands the request to the agent's actor, which verifies the
//! signature, rate-limits, evaluates the rules and commits through the group committer. It
//! answers with the one [`IngestResponse`] or the one [`IngestError`]; the HTTP handler only
//! reads the request and maps the error once (`api::agent_plane`).
//!
//! Consistency: the agent record and rules are read from this node's applied state. The owner
//! is usually a follower, so a rule change reaches the evaluation a moment after it commits;
//! the seq and signature checks are decided again on apply (exactly-once never depends on
//! this read).

use bytes::Bytes;
use monsys_actors::agent::{CommitOutcome, IngestRefusal, IngestRequest, RuleSpec};
use monsys_proto::agent::{self as wire, Heartbeat, IngestBatch, IngestResponse, IngestStatus};
use monsys_raft::StateReader;
use monsys_raft::fleet::{GroupItem, HeartbeatItem, ItemOutcome};

use super::AgentPlane;
pub use super::error::IngestError;
use crate::replica::WriteError;

/// The agent a request is from (authenticated by its token).
#[derive(Debug, Clone)]
pub struct AgentId {
    /// The agent's tenant.
    pub tenant: String,
    /// The agent's id.
    pub agent_id: String,
}

/// Stores one signed batch of `agent` (this node owns the agent's actor).
pub async fn submit(
    plane: &AgentPlane,
    reader: &StateReader,
    agent: AgentId,
    body: Bytes,
    signature: Option<String>,
) -> Result<IngestResponse, IngestError> {
    let batch: IngestBatch = serde_json::from_slice(&body).map_err(json_error)?;
    let received_at_ms = crate::clock::now_ms();
    let series: Vec<String> = batch.metrics.iter().map(|s| s.series_key()).collect();
    super::validate::batch(&batch, &series, &agent.agent_id)?;
    let fleet = reader.fleet();
    let record = fleet.agent(&agent.tenant, &agent.agent_id)?.ok_or(IngestError::UnknownAgent)?;
    let rules: Vec<RuleSpec> = fleet
        .rules(&agent.tenant)?
        .rules
        .into_iter()
        .filter(|r| r.enabled)
        .map(|r| RuleSpec {
            id: r.id,
            metric: r.metric,
            threshold: r.threshold,
            for_samples: r.for_samples,
            severity: r.severity,
        })
        .collect();
    let seq = batch.seq;
    let req = IngestRequest {
        tenant: agent.tenant,
        batch,
        series,
        body_sha256: wire::body_sha256(&body),
        signature,
        pinned: record.pubkey,
        last_seq: record.last_seq,
        rules: rules.into(),
        received_at_ms,
    };
    let outcome = plane.registry.ingest(&agent.agent_id, req).await.map_err(refusal)?;
    match outcome {
        CommitOutcome::Stored { last_seq } => {
            Ok(IngestResponse { status: IngestStatus::Stored, seq, last_seq })
        }
        CommitOutcome::Duplicate { last_seq } => {
            Ok(IngestResponse { status: IngestStatus::Duplicate, seq, last_seq })
        }
        CommitOutcome::SeqConflict { last_seq } => Err(IngestError::SeqConflict { seq, last_seq }),
        CommitOutcome::Replay { last_seq } => Err(IngestError::Replay { seq, last_seq }),
        CommitOutcome::UnknownAgent => Err(IngestError::UnknownAgent),
        CommitOutcome::KeyChanged => Err(IngestError::SignatureInvalid(
            "the agent's signing key changed while the batch was in flight".into(),
        )),
    }
}

/// Records one heartbeat of `agent` (this node owns the agent's actor); returns when it was
/// received (unix ms), which the agent's WebSocket acknowledges.
pub async fn heartbeat(plane: &AgentPlane, agent: AgentId, hb: Heartbeat) -> Result<u64, IngestError> {
    if hb.agent_version.is_empty() || hb.agent_version.chars().count() > 64 {
        return Err(IngestError::Shape("agent_version: 1-64 characters".into()));
    }
    let received_at_ms = crate::clock::now_ms();
    let item = HeartbeatItem {
        tenant: agent.tenant,
        agent_id: agent.agent_id,
        received_at_ms,
        sent_at_ms: hb.sent_at_ms,
        agent_version: hb.agent_version,
    };
    match plane.group.submit(GroupItem::Heartbeat(item)).await? {
        ItemOutcome::Seen => Ok(received_at_ms),
        ItemOutcome::UnknownAgent => Err(IngestError::UnknownAgent),
        other => {
            tracing::error!(?other, "unexpected heartbeat outcome");
            Err(WriteError::unknown("unexpected heartbeat outcome").into())
        }
    }
}

/// Parses a heartbeat body.
pub fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, IngestError> {
    serde_json::from_slice(body).map_err(json_error)
}

fn refusal(r: IngestRefusal<WriteError>) -> IngestError {
    match r {
        IngestRefusal::SignatureMissing => IngestError::SignatureMissing,
        IngestRefusal::SignatureInvalid(e) => IngestError::SignatureInvalid(e.to_string()),
        IngestRefusal::RateLimited(wait) => IngestError::RateLimited(wait),
        IngestRefusal::Busy => IngestError::Busy,
        IngestRefusal::Timeout => {
            WriteError::unknown("the batch was not confirmed in time; retry it unchanged").into()
        }
        IngestRefusal::Stopped => WriteError::not_applied("agent actor stopped; retry").into(),
        IngestRefusal::Commit(e) => e.into(),
    }
}

fn json_error(e: serde_json::Error) -> IngestError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => IngestError::Malformed(e.to_string()),
        Category::Data => IngestError::Shape(e.to_string()),
    }
}
