//! Node-to-node routes under `/internal/v1`, authenticated with the cluster secret.
//!
//! `POST /internal/v1/raft/{append|vote|snapshot|prevote|elect-now}` carries Raft RPCs as opaque
//! bytes; the `monsys-raft` crate encodes and decodes them. An unknown kind is a 404, which a
//! newer peer reads as "this build does not know that RPC". A bad or missing secret gets 401 before the body
//! is looked at, so nothing is applied.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use monsys_proto::cluster::NodeState;
use monsys_raft::network::{RpcKind, serve_rpc};

use super::extract::PeerAuth;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;

/// `POST /internal/v1/raft/{kind}`.
pub async fn raft_rpc(
    State(replica): State<Replica>,
    _: PeerAuth,
    Path(kind): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = RpcKind::from_path_segment(&kind)
        .ok_or_else(|| ApiError::NotFound(format!("unknown raft rpc {kind:?}")))?;
    let reply = serve_rpc(replica.elector(), kind, &body).await.map_err(|e| match e {
        e if e.is_bad_request() => ApiError::BadRequest(e.to_string()),
        // a snapshot this build cannot read: the leader sees why (it retries; see the raft
        // crate's snapshot module)
        e @ monsys_raft::Error::SnapshotFormat { .. } => {
            tracing::warn!(error = %e, "refused a snapshot from the leader");
            ApiError::Conflict(e.to_string())
        }
        monsys_raft::Error::Stopped(_) => ApiError::unavailable(e.to_string()),
        e => ApiError::Internal(e.to_string()),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], reply).into_response())
}

/// `POST /internal/v1/propose`: a bincode [`monsys_raft::Command`] from a peer that is not the
/// leader (e.g. an agent owner's group commit). Answered only by the leader; never forwarded.
pub async fn propose(State(replica): State<Replica>, _: PeerAuth, body: Bytes) -> Result<Response, ApiError> {
    if !replica.is_leader() {
        return Err(ApiError::unavailable("not the leader (leadership moved); retry"));
    }
    let cmd = monsys_raft::decode_command(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let result = replica.write(cmd).await?;
    let bytes = monsys_raft::encode_result(&result)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Query of `POST /internal/v1/wait-applied`.
#[derive(Debug, serde::Deserialize)]
pub struct WaitApplied {
    /// Log index to wait for.
    pub index: u64,
    /// Longest wait, ms (capped at 5 s).
    pub wait_ms: u64,
}

/// `POST /internal/v1/wait-applied?index&wait_ms`: 204 once this node applied `index`, 503 if
/// not within the wait.
pub async fn wait_applied(
    State(replica): State<Replica>,
    _: PeerAuth,
    axum::extract::Query(q): axum::extract::Query<WaitApplied>,
) -> Result<Response, ApiError> {
    let wait = std::time::Duration::from_millis(q.wait_ms.min(5000));
    if replica.wait_applied(q.index, wait).await {
        Ok(axum::http::StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::unavailable(format!("index {} not applied within {wait:?}", q.index)))
    }
}

/// `POST /internal/v1/ratelimit` body: one request for a limit key this node owns.
#[derive(Debug, serde::Deserialize)]
pub struct RateCheck {
    /// The limit key.
    pub key: String,
    /// Requests per period.
    pub rate: u32,
    /// Period, ms.
    pub period_ms: u64,
    /// Burst.
    pub burst: u32,
}

/// `POST /internal/v1/ratelimit`: `{"retry_after_ms": 0}` when admitted.
pub async fn rate_limit(
    State(hub): State<Hub>,
    _: PeerAuth,
    axum::Json(q): axum::Json<RateCheck>,
) -> Result<Response, ApiError> {
    let policy = monsys_actors::limits::Policy {
        rate: q.rate.max(1),
        period: std::time::Duration::from_millis(q.period_ms.max(1)),
        burst: q.burst.max(1),
    };
    let wait = match hub.limits.check(&q.key, policy, crate::clock::now_ms()) {
        Ok(()) => 0,
        Err(w) => w.as_millis().max(1) as u64,
    };
    Ok(axum::Json(serde_json::json!({ "retry_after_ms": wait })).into_response())
}

/// `GET /internal/v1/node`: this node's own Raft state (see [`NodeState`]), asked by a leader
/// before it adds the node.
pub async fn node_state(State(replica): State<Replica>, _: PeerAuth) -> Result<Response, ApiError> {
    let m = replica.raft_metrics();
    let initialized = replica.raft().is_initialized().await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let state = NodeState {
        node_id: replica.id(),
        has_log: initialized || m.last_log_index.is_some() || m.current_term > 0,
        last_log_index: m.last_log_index,
        term: m.current_term,
        formats: Some(monsys_raft::cluster_version::formats()),
    };
    Ok(axum::Json(state).into_response())
}

/// `POST /internal/v1/removed` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovedNotice {
    /// The node that was removed (must be this one).
    pub node_id: u64,
    /// The leader that removed it.
    pub by: u64,
}

/// `POST /internal/v1/removed`: the leader tells this node it is no longer a member.
pub async fn removed(
    State(hub): State<Hub>,
    _: PeerAuth,
    super::extract::JsonBody(n): super::extract::JsonBody<RemovedNotice>,
) -> Result<Response, ApiError> {
    if n.node_id != hub.replica.id() {
        return Err(ApiError::Conflict(format!("this is node {}, not node {}", hub.replica.id(), n.node_id)));
    }
    hub.membership.removed(n.by, std::time::Duration::ZERO);
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `POST /internal/v1/drain` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// The node to drain (must be this one).
    pub node_id: u64,
}

/// `POST /internal/v1/drain`: another node relays an operator's drain request for this node.
pub async fn drain(
    State(hub): State<Hub>,
    _: PeerAuth,
    super::extract::JsonBody(d): super::extract::JsonBody<DrainRequest>,
) -> Result<Response, ApiError> {
    if d.node_id != hub.replica.id() {
        return Err(ApiError::Conflict(format!("this is node {}, not node {}", hub.replica.id(), d.node_id)));
    }
    hub.draining.request();
    Ok(axum::http::StatusCode::ACCEPTED.into_response())
}
