//! Alerts, alert rules and the audit log.
//!
//! Consistency as in `agents`: linearizable reads by default, `?consistency=local` from the
//! node's applied state; writes return once committed.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use monsys_proto::agent::Severity;
use monsys_raft::fleet::{
    AlertRecord, AlertRule, AlertSource, AlertState, FleetCommand, FleetRejection, FleetResult, RulesDoc,
};
use monsys_raft::{Command, CommandResult, Rejection};
use serde::Deserialize;
use serde_json::{Value, json};

use super::agents::{ReadQuery, barrier, query};
use super::extract::{IfMatch, JsonBody};
use super::settings::Consistency;
use crate::auth::{Auth, Permission};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;

type Q<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// Query of `GET /api/v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `open` (active or acknowledged), `active`, `acknowledged`, `resolved` or `all` (default `open`).
    pub state: Option<String>,
    /// Only this agent's alerts.
    pub agent_id: Option<String>,
    /// Only this severity.
    pub severity: Option<Severity>,
    /// Newest first, at most this many (default 100, max 1000).
    pub limit: Option<usize>,
    /// Read consistency.
    #[serde(default)]
    pub consistency: Consistency,
}

fn state_name(s: AlertState) -> &'static str {
    match s {
        AlertState::Active => "active",
        AlertState::Acknowledged => "acknowledged",
        AlertState::Resolved => "resolved",
    }
}

/// The JSON view of an alert.
pub fn alert_json(a: &AlertRecord) -> Value {
    json!({
        "id": a.id, "agent_id": a.agent_id, "key": a.key,
        "source": match a.source { AlertSource::Rule => "rule", AlertSource::Agent => "agent", AlertSource::Offline => "offline" },
        "severity": a.severity, "message": a.message, "value": a.value, "state": state_name(a.state),
        "fired_at_ms": a.fired_at_ms, "updated_at_ms": a.updated_at_ms, "resolved_at_ms": a.resolved_at_ms,
        "resolved_by": a.resolved_by, "occurrences": a.occurrences,
    })
}

/// `GET /api/v1/alerts`.
pub async fn list(State(hub): State<Hub>, auth: Auth, q: Q<AlertQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::AlertsRead)?;
    let q = query(q)?;
    let state = q.state.as_deref().unwrap_or("open");
    let keep_state = |s: AlertState| match state {
        "open" => Ok(s != AlertState::Resolved),
        "all" => Ok(true),
        "active" | "acknowledged" | "resolved" => Ok(state_name(s) == state),
        other => Err(ApiError::BadRequest(format!(
            "state must be open, active, acknowledged, resolved or all, not {other:?}"
        ))),
    };
    keep_state(AlertState::Active)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1..=1000".into()));
    }
    barrier(&hub, q.consistency).await?;
    let mut alerts = hub.replica.reader().fleet().alerts(&auth.tenant)?;
    alerts.retain(|a| {
        keep_state(a.state).unwrap_or(false)
            && q.agent_id.as_ref().is_none_or(|id| &a.agent_id == id)
            && q.severity.is_none_or(|s| a.severity == s)
    });
    let out: Vec<Value> = alerts.iter().rev().take(limit).map(alert_json).collect();
    Ok(Json(json!({ "alerts": out })).into_response())
}

async fn set_state(hub: &Hub, auth: &Auth, id: u64, state: AlertState) -> Result<Response, ApiError> {
    let cmd = FleetCommand::SetAlertState {
        tenant: auth.tenant.clone(),
        id,
        state,
        actor: auth.actor(),
        at_ms: now_ms(),
    };
    match hub.replica.write(Command::Fleet(cmd)).await? {
        CommandResult::Fleet(FleetResult::Alert(a)) => Ok(Json(alert_json(&a)).into_response()),
        CommandResult::FleetRejected(FleetRejection::NotFound) => {
            Err(ApiError::NotFound(format!("no alert {id}")))
        }
        CommandResult::FleetRejected(FleetRejection::AlreadyResolved) => {
            Err(ApiError::Conflict(format!("alert {id} is already resolved")))
        }
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

fn alert_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::BadRequest(format!("alert id must be a number, not {raw:?}")))
}

/// `PATCH /api/v1/alerts/{id}/resolve`.
pub async fn resolve(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AlertsWrite)?;
    set_state(&hub, &auth, alert_id(&id)?, AlertState::Resolved).await
}

/// `PATCH /api/v1/alerts/{id}/acknowledge`.
pub async fn acknowledge(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::AlertsWrite)?;
    set_state(&hub, &auth, alert_id(&id)?, AlertState::Acknowledged).await
}

fn rules_response(doc: RulesDoc) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", doc.revision)).expect("digits");
    let mut resp = Json(json!({ "revision": doc.revision, "rules": doc.rules })).into_response();
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// `GET /api/v1/alert-rules`.
pub async fn get_rules(State(hub): State<Hub>, auth: Auth, q: Q<ReadQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::AlertsRead)?;
    barrier(&hub, query(q)?.consistency).await?;
    Ok(rules_response(hub.replica.reader().fleet().rules(&auth.tenant)?))
}

/// `PUT /api/v1/alert-rules` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesBody {
    /// The complete rule set.
    pub rules: Vec<AlertRule>,
}

/// `PUT /api/v1/alert-rules` (with `If-Match` as a compare-and-set).
pub async fn put_rules(
    State(replica): State<Replica>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    JsonBody(body): JsonBody<RulesBody>,
) -> Result<Response, ApiError> {
    auth.require(Permission::RulesWrite)?;
    monsys_raft::fleet::validate_rules(&body.rules).map_err(ApiError::InvalidBody)?;
    let (tenant, rules, at_ms) = (auth.tenant.clone(), body.rules, now_ms());
    // the changer is named in the audit event once every member can apply that
    let cmd = if replica.members_support(monsys_raft::LOG_FEATURE_ACTOR_AUDIT) {
        FleetCommand::PutRulesBy { tenant, expected_revision: expected, rules, at_ms, actor: auth.actor() }
    } else {
        FleetCommand::PutRules { tenant, expected_revision: expected, rules, at_ms }
    };
    match replica.write(Command::Fleet(cmd)).await? {
        CommandResult::Fleet(FleetResult::Rules(doc)) => Ok(rules_response(doc)),
        CommandResult::Rejected(Rejection::RevisionMismatch { current }) => {
            Err(ApiError::RevisionMismatch { current })
        }
        CommandResult::Rejected(Rejection::Invalid(m)) => Err(ApiError::InvalidBody(m)),
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Events after this seq (pagination cursor; default 0).
    pub after: Option<u64>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<usize>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only events of this agent.
    pub agent_id: Option<String>,
    /// Read consistency.
    #[serde(default)]
    pub consistency: Consistency,
}

/// `GET /api/v1/audit`: oldest first from `after`; `next_after` continues.
pub async fn audit(State(hub): State<Hub>, auth: Auth, q: Q<AuditQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::AuditRead)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1..=1000".into()));
    }
    barrier(&hub, q.consistency).await?;
    let fleet = hub.replica.reader().fleet();
    let (mut after, mut out, mut scanned_to) = (q.after.unwrap_or(0), Vec::new(), None);
    while out.len() < limit {
        let page = fleet.audit(&auth.tenant, after, 1000)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            scanned_to = Some(e.seq);
            if q.event_type.as_ref().is_none_or(|t| &e.event_type == t)
                && q.agent_id.as_ref().is_none_or(|a| e.agent_id.as_ref() == Some(a))
            {
                out.push(json!({
                    "seq": e.seq, "at_ms": e.at_ms, "event_type": e.event_type, "actor": e.actor, "agent_id": e.agent_id,
                    "details": serde_json::from_str::<Value>(&e.details).unwrap_or(Value::Null),
                    "hash": hex::encode(e.hash), "prev_hash": hex::encode(e.prev_hash),
                }));
                if out.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(Json(json!({ "events": out, "next_after": scanned_to })).into_response())
}

/// `GET /api/v1/audit/verify`: recomputes the hash chain.
pub async fn verify_audit(State(hub): State<Hub>, auth: Auth, q: Q<ReadQuery>) -> Result<Response, ApiError> {
    auth.require(Permission::AuditRead)?;
    barrier(&hub, query(q)?.consistency).await?;
    Ok(Json(match hub.replica.reader().fleet().verify_audit(&auth.tenant)? {
        Ok(n) => json!({ "ok": true, "events": n }),
        Err(seq) => json!({ "ok": false, "broken_at_seq": seq }),
    })
    .into_response())
}
