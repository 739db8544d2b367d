//! Operator routes for agents: enrollment tokens, the agent list and details, telemetry
//! history, inventory, processes, deletion, token rotation and signing-key reset.
//!
//! Consistency: reads are linearizable by default (leader, read-index barrier) and
//! `?consistency=local` answers from the receiving node's applied state. Writes return once
//! committed on a quorum. Every route takes a session, an API key or the admin token and checks
//! an `agents:*` permission.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use monsys_proto::agent::{AGENT_TOKEN_PREFIX, ENROLLMENT_TOKEN_PREFIX};
use monsys_raft::fleet::{
    AgentAction, AgentRecord, EnrollmentToken, FleetCommand, FleetRejection, Resolution,
};
use monsys_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::JsonBody;
use super::settings::Consistency;
use crate::auth::{Auth, Permission};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;
use crate::secrets;

/// Query of plain reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Read consistency.
    #[serde(default)]
    pub consistency: Consistency,
}

/// Runs the read-index barrier unless a local read was asked for.
pub async fn barrier(hub: &Hub, consistency: Consistency) -> Result<(), ApiError> {
    if consistency == Consistency::Linearizable {
        Ok(hub.replica.linearizable_barrier().await?)
    } else {
        Ok(())
    }
}

/// Parses a query string into `T` with a 400 on errors.
pub fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// A query string, or why it did not parse (see [`query`]).
pub(crate) type Q<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// `POST /api/v1/enrollment-tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// Display name.
    pub name: String,
    /// Lifetime in seconds (default 7 days, at most 1 year).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Most new agents (unbounded when absent).
    #[serde(default)]
    pub max_uses: Option<u32>,
}

fn token_json(t: &EnrollmentToken) -> Value {
    json!({
        "id": t.id, "name": t.name, "created_at_ms": t.created_at_ms, "expires_at_ms": t.expires_at_ms,
        "max_uses": t.max_uses, "uses": t.uses, "revoked": t.revoked,
    })
}

/// `POST /api/v1/enrollment-tokens`: the token is in the answer only.
pub async fn create_enrollment_token(
    State(replica): State<Replica>,
    auth: Auth,
    JsonBody(req): JsonBody<NewEnrollmentToken>,
) -> Result<Response, ApiError> {
    auth.require(Permission::EnrollmentManage)?;
    if req.name.trim().is_empty() || req.name.chars().count() > 128 {
        return Err(ApiError::InvalidBody("name: 1-128 characters, not only spaces".into()));
    }
    let lifetime = req.expires_in_secs.unwrap_or(7 * 86_400);
    if !(60..=366 * 86_400).contains(&lifetime) {
        return Err(ApiError::InvalidBody("expires_in_secs: 60..=31622400".into()));
    }
    if req.max_uses == Some(0) {
        return Err(ApiError::InvalidBody("max_uses: at least 1".into()));
    }
    let token = secrets::random_token(ENROLLMENT_TOKEN_PREFIX);
    let now = now_ms();
    let t = EnrollmentToken {
        id: uuid::Uuid::new_v4().simple().to_string(),
        tenant: auth.tenant.clone(),
        name: req.name,
        sha256: secrets::sha256(&token),
        created_at_ms: now,
        expires_at_ms: Some(now + lifetime * 1000),
        max_uses: req.max_uses,
        uses: 0,
        revoked: false,
    };
    let mut body = token_json(&t);
    // the creator is named in the audit event once every member can apply that (until then,
    // e.g. during a rolling upgrade, the event says "admin")
    let cmd = if replica.members_support(monsys_raft::LOG_FEATURE_ACTOR_AUDIT) {
        FleetCommand::CreateEnrollmentTokenBy { token: t, actor: auth.actor() }
    } else {
        FleetCommand::CreateEnrollmentToken(t)
    };
    replica.write(Command::Fleet(cmd)).await?;
    body["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/v1/enrollment-tokens`.
pub async fn list_enrollment_tokens(
    State(hub): State<Hub>,
    auth: Auth,
    q: Q<ReadQuery>,
) -> Result<Response, ApiError> {
    auth.require(Permission::EnrollmentManage)?;
    barrier(&hub, query(q)?.consistency).await?;
    let tokens: Vec<Value> =
        hub.replica.reader().fleet().enrollment_tokens(&auth.tenant)?.iter().map(token_json).collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// `DELETE /api/v1/enrollment-tokens/{id}`: revokes.
pub async fn revoke_enrollment_token(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::EnrollmentManage)?;
    let cmd = FleetCommand::RevokeEnrollmentToken { tenant: auth.tenant.clone(), id: id.clone() };
    match hub.replica.write(Command::Fleet(cmd)).await? {
        CommandResult::Ok => {
            hub.audit.record(&auth.tenant, "enrollment_token_revoked", &auth.actor(), json!({ "id": id }));
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        CommandResult::FleetRejected(FleetRejection::NotFound) => {
            Err(ApiError::NotFound("no such enrollment token".into()))
        }
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// The JSON view of an agent, with its status computed at `now`.
fn agent_json(a: &AgentRecord, offline_after_ms: u64, now: u64) -> Value {
    let online = now.saturating_sub(a.last_seen_ms) <= offline_after_ms;
    json!({
        "id": a.id, "hostname": a.hostname, "machine_id": a.machine_id, "os": a.os, "arch": a.arch,
        "agent_version": a.agent_version, "status": if online { "online" } else { "offline" },
        "signing_key_pinned": a.pubkey.is_some(), "registered_at_ms": a.registered_at_ms,
        "last_seen_ms": a.last_seen_ms, "last_seq": a.last_seq, "last_collected_at_ms": a.last_collected_at_ms,
        "batches": a.batches, "samples": a.samples, "clock_offset_ms": a.clock_offset_ms,
    })
}

fn offline_after_ms(hub: &Hub, tenant: &str) -> Result<u64, ApiError> {
    Ok(u64::from(hub.replica.reader().settings(tenant)?.settings.agent_offline_after_secs) * 1000)
}

fn find(hub: &Hub, tenant: &str, id: &str) -> Result<AgentRecord, ApiError> {
    hub.replica
        .reader()
        .fleet()
        .agent(tenant, id)?
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
}

/// `GET /api/v1/agents`.
pub async fn list(State(hub): State<Hub>, auth: Auth, q: Q<ReadQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsRead)?;
    barrier(&hub, query(q)?.consistency).await?;
    let (limit, now) = (offline_after_ms(&hub, &auth.tenant)?, now_ms());
    let agents: Vec<Value> = hub
        .replica
        .reader()
        .fleet()
        .agents(&auth.tenant)?
        .iter()
        .map(|a| agent_json(a, limit, now))
        .collect();
    Ok(Json(json!({ "agents": agents })).into_response())
}

/// `GET /api/v1/agents/{id}`.
pub async fn get(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
    q: Q<ReadQuery>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsRead)?;
    barrier(&hub, query(q)?.consistency).await?;
    let a = find(&hub, &auth.tenant, &id)?;
    let mut body = agent_json(&a, offline_after_ms(&hub, &auth.tenant)?, now_ms());
    body["open_alerts"] = json!(hub.replica.reader().fleet().open_alerts(&auth.tenant, &id)?.len());
    body["samples_refused"] = json!(hub.replica.reader().fleet().telemetry_head(&auth.tenant, &id)?.refused);
    Ok(Json(body).into_response())
}

/// `DELETE /api/v1/agents/{id}`: the agent, its token and its telemetry.
pub async fn delete(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsWrite)?;
    let action =
        AgentAction { tenant: auth.tenant.clone(), agent_id: id, actor: auth.actor(), at_ms: now_ms() };
    agent_action(&hub, FleetCommand::DeleteAgent(action)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn agent_action(hub: &Hub, cmd: FleetCommand) -> Result<(), ApiError> {
    match hub.replica.write_applied_everywhere(Command::Fleet(cmd), std::time::Duration::from_secs(2)).await?
    {
        CommandResult::Ok => Ok(()),
        CommandResult::FleetRejected(FleetRejection::UnknownAgent) => {
            Err(ApiError::NotFound("no such agent".into()))
        }
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// `POST /api/v1/agents/{id}/rotate-token`: a new agent token, shown once; the old one stops
/// working on every node once this answers.
pub async fn rotate_token(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsWrite)?;
    crate::ratelimit::check(&hub, &format!("rotate:user:{}", auth.actor()), crate::ratelimit::ROTATE).await?;
    let token = secrets::random_token(AGENT_TOKEN_PREFIX);
    let action = AgentAction {
        tenant: auth.tenant.clone(),
        agent_id: id.clone(),
        actor: auth.actor(),
        at_ms: now_ms(),
    };
    agent_action(&hub, FleetCommand::RotateToken { action, token_sha256: secrets::sha256(&token) }).await?;
    Ok(Json(json!({ "agent_id": id, "agent_token": token })).into_response())
}

/// `POST /api/v1/agents/{id}/rotate-signing-key`: clears the pin; the agent's next
/// registration pins its (new) key.
pub async fn rotate_signing_key(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsWrite)?;
    crate::ratelimit::check(&hub, &format!("rotate:user:{}", auth.actor()), crate::ratelimit::ROTATE).await?;
    let action = AgentAction {
        tenant: auth.tenant.clone(),
        agent_id: id.clone(),
        actor: auth.actor(),
        at_ms: now_ms(),
    };
    agent_action(&hub, FleetCommand::ClearSigningKey(action)).await?;
    Ok(Json(json!({ "agent_id": id, "signing_key_pinned": false })).into_response())
}

/// Query of `GET /api/v1/agents/{id}/metrics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Start, unix ms (default: one hour before `to`).
    pub from: Option<u64>,
    /// End, unix ms, exclusive (default: now).
    pub to: Option<u64>,
    /// `raw`, `1m`, `5m`, `1h` or `auto` (default): the coarsest that gives ≤ ~500 points.
    pub interval: Option<String>,
    /// Only series of this metric name.
    pub metric: Option<String>,
    /// Read consistency.
    #[serde(default)]
    pub consistency: Consistency,
}

/// Picks the resolution for `[from, to)`: raw up to 2 h, then the finest rollup giving ≤ 500
/// points; a resolution whose retention no longer covers `from` (at `now`) is skipped for the
/// next coarser one, so an old range is answered from what is still kept.
pub fn pick_resolution(
    from: u64,
    to: u64,
    now: u64,
    retention: &monsys_proto::settings::Retention,
) -> Resolution {
    let span_ms = to - from;
    let kept_since = |r: Resolution| {
        let hours = match r {
            Resolution::Raw => u64::from(retention.raw_hours),
            Resolution::M1 => 24 * u64::from(retention.rollup_1m_days),
            Resolution::M5 => 24 * u64::from(retention.rollup_5m_days),
            Resolution::H1 => 24 * u64::from(retention.rollup_1h_days),
        };
        now.saturating_sub(hours * 3_600_000)
    };
    let fits = |r: Resolution| match r {
        Resolution::Raw => span_ms <= 2 * 3_600_000,
        r => span_ms / r.width_ms() <= 500,
    };
    [Resolution::Raw, Resolution::M1, Resolution::M5]
        .into_iter()
        .find(|r| fits(*r) && kept_since(*r) <= from)
        .unwrap_or(Resolution::H1)
}

/// `GET /api/v1/agents/{id}/metrics?from&to&interval&metric`.
pub async fn metrics(
    State(hub): State<Hub>,
    auth: Auth,
    Path(agent_id): Path<String>,
    q: Q<MetricsQuery>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsRead)?;
    let q = query(q)?;
    let to = q.to.unwrap_or_else(now_ms);
    let from = q.from.unwrap_or(to.saturating_sub(3_600_000));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let res = match q.interval.as_deref() {
        None | Some("auto") => {
            let stored = hub.replica.reader().settings(&auth.tenant)?.settings;
            pick_resolution(from, to, now_ms(), &super::settings::settings_to_api(stored).retention)
        }
        Some("raw") => Resolution::Raw,
        Some("1m") => Resolution::M1,
        Some("5m") => Resolution::M5,
        Some("1h") => Resolution::H1,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "interval must be raw, 1m, 5m, 1h or auto, not {other:?}"
            )));
        }
    };
    if res == Resolution::Raw && to - from > 7 * 86_400_000 {
        return Err(ApiError::BadRequest("raw queries span at most 7 days; use a rollup interval".into()));
    }
    barrier(&hub, q.consistency).await?;
    find(&hub, &auth.tenant, &agent_id)?;
    let fleet = hub.replica.reader().fleet();
    let wanted = |series: &str| {
        q.metric.as_deref().is_none_or(|m| series == m || series.starts_with(&format!("{m}{{")))
    };
    let mut series = Vec::new();
    for (id, key) in fleet.series(&auth.tenant, &agent_id)?.into_iter().enumerate() {
        if !wanted(&key) {
            continue;
        }
        let id = id as u32;
        let points: Vec<Value> = if res == Resolution::Raw {
            let samples = fleet.raw_series(&auth.tenant, &agent_id, id, from, to)?;
            samples.into_iter().map(|(t, v)| json!({ "t": t, "v": v })).collect()
        } else {
            let start = from - from % res.width_ms();
            let buckets = fleet.rollup_series(res, &auth.tenant, &agent_id, id, start, to)?;
            buckets
                .into_iter()
                .map(|(t, a)| {
                    json!({ "t": t, "min": a.min, "max": a.max, "avg": a.avg(), "count": a.count, "last": a.last })
                })
                .collect()
        };
        if !points.is_empty() {
            series.push(json!({ "series": key, "points": points }));
        }
    }
    Ok(Json(
        json!({ "agent_id": agent_id, "interval": res.name(), "from": from, "to": to, "series": series }),
    )
    .into_response())
}

async fn stored_json(
    hub: &Hub,
    tenant: &str,
    id: &str,
    consistency: Consistency,
    read: impl Fn(&monsys_raft::fleet::FleetReader) -> Result<Option<(u64, Vec<u8>)>, monsys_raft::Error>,
    what: &str,
) -> Result<Response, ApiError> {
    barrier(hub, consistency).await?;
    find(hub, tenant, id)?;
    let (at, bytes) = read(&hub.replica.reader().fleet())?
        .ok_or_else(|| ApiError::NotFound(format!("no {what} reported yet")))?;
    let data: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "agent_id": id, "collected_at_ms": at, what: data })).into_response())
}

/// `GET /api/v1/agents/{id}/inventory`.
pub async fn inventory(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
    q: Q<ReadQuery>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsRead)?;
    let c = query(q)?.consistency;
    stored_json(&hub, &auth.tenant, &id, c, |f| f.inventory(&auth.tenant, &id), "inventory").await
}

/// `GET /api/v1/agents/{id}/processes`.
pub async fn processes(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
    q: Q<ReadQuery>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AgentsRead)?;
    let c = query(q)?.consistency;
    stored_json(&hub, &auth.tenant, &id, c, |f| f.processes(&auth.tenant, &id), "processes").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolution_follows_the_span_and_what_retention_still_keeps() {
        let r = monsys_proto::settings::Retention {
            raw_hours: 48,
            rollup_1m_days: 14,
            rollup_5m_days: 90,
            rollup_1h_days: 730,
        };
        let now = 1_000 * 86_400_000;
        let h = 3_600_000;
        assert_eq!(pick_resolution(now - h, now, now, &r), Resolution::Raw);
        assert_eq!(pick_resolution(now - 6 * h, now, now, &r), Resolution::M1);
        assert_eq!(pick_resolution(now - 7 * 24 * h, now, now, &r), Resolution::H1);
        // an hour three days ago: raw is gone, 1m still kept
        assert_eq!(pick_resolution(now - 72 * h, now - 71 * h, now, &r), Resolution::M1);
        // an hour a month ago: only 5m and 1h are kept
        assert_eq!(pick_resolution(now - 720 * h, now - 719 * h, now, &r), Resolution::M5);
        // a year ago: only 1h
        assert_eq!(pick_resolution(now - 8760 * h, now - 8759 * h, now, &r), Resolution::H1);
    }
}
