//! `GET /api/v1/integrity-anomalies` and `PATCH /api/v1/integrity-anomalies/{id}/resolve`:
//! the append-only findings of the leader's integrity checker (`ingest::integrity`).
//! Reads are linearizable by default, `?consistency=local` from the node's applied state.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use monsys_raft::fleet::{Anomaly, FleetCommand, FleetRejection, FleetResult};
use monsys_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::agents::{barrier, query};
use super::settings::Consistency;
use crate::auth::{Auth, Permission};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;

type Q<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// Query of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyQuery {
    /// `1` includes resolved anomalies (default `0`).
    pub include_resolved: Option<u8>,
    /// Read consistency.
    #[serde(default)]
    pub consistency: Consistency,
}

fn anomaly_json(a: &Anomaly) -> Value {
    json!({
        "id": a.id, "agent_id": a.agent_id, "kind": a.kind,
        "details": serde_json::from_str::<Value>(&a.details).unwrap_or(Value::Null),
        "detected_at_ms": a.detected_at_ms, "resolved_at_ms": a.resolved_at_ms, "resolved_by": a.resolved_by,
    })
}

/// `GET /api/v1/integrity-anomalies?include_resolved=0|1`, newest first.
pub async fn list(State(hub): State<Hub>, auth: Auth, q: Q<AnomalyQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::IntegrityRead)?;
    let q = query(q)?;
    let include_resolved = match q.include_resolved.unwrap_or(0) {
        0 => false,
        1 => true,
        _ => return Err(ApiError::BadRequest("include_resolved must be 0 or 1".into())),
    };
    barrier(&hub, q.consistency).await?;
    let list: Vec<Value> = hub
        .replica
        .reader()
        .fleet()
        .anomalies(&auth.tenant)?
        .iter()
        .rev()
        .filter(|a| include_resolved || a.resolved_at_ms.is_none())
        .map(anomaly_json)
        .collect();
    Ok(Json(json!({ "anomalies": list })).into_response())
}

/// `PATCH /api/v1/integrity-anomalies/{id}/resolve`.
pub async fn resolve(
    State(replica): State<Replica>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::IntegrityWrite)?;
    let id: u64 =
        id.parse().map_err(|_| ApiError::BadRequest(format!("anomaly id must be a number, not {id:?}")))?;
    let cmd = FleetCommand::ResolveAnomaly {
        tenant: auth.tenant.clone(),
        id,
        actor: auth.actor(),
        at_ms: now_ms(),
    };
    match replica.write(Command::Fleet(cmd)).await? {
        CommandResult::Fleet(FleetResult::Anomaly(a)) => Ok(Json(anomaly_json(&a)).into_response()),
        CommandResult::FleetRejected(FleetRejection::NotFound) => {
            Err(ApiError::NotFound(format!("no anomaly {id}")))
        }
        CommandResult::FleetRejected(FleetRejection::AlreadyResolved) => {
            Err(ApiError::Conflict(format!("anomaly {id} is already resolved")))
        }
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}
