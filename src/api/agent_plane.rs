//! The agent-facing routes: `POST /api/v1/agents/register`, `POST /api/v1/ingest`,
//! `POST /api/v1/agents/{id}/heartbeat`.
//!
//! - Register is a replicated write answered by the leader (the leader middleware forwards it),
//!   and it returns only once every live voter has the entry (bounded wait), so the agent's
//!   first ingest at any node finds its token.
//! - Ingest and heartbeat are actor-keyed: any node authenticates the token locally and
//!   forwards the request once to the owner of `agent:<id>`; the owner's actor does the rest
//!   (see `ingest`). A 2xx ingest means committed on a quorum.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use monsys_actors::ActorKey;
use monsys_actors::agent::{CommitOutcome, IngestRefusal, IngestRequest, RuleSpec};
use monsys_proto::agent::{
    self as wire, Heartbeat, IngestBatch, IngestResponse, IngestStatus, RegisterRequest, RegisterResponse,
};
use monsys_raft::Command;
use monsys_raft::fleet::{
    FleetCommand, FleetRejection, FleetResult, GroupItem, HeartbeatItem, ItemOutcome, Registration,
};

use super::extract::{AgentAuth, JsonBody};
use super::settings::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::routing::owner::{Placement, forward_to_owner, place};
use crate::secrets;

/// How long a registration waits for every live voter to have it.
const REGISTER_SPREAD: Duration = Duration::from_secs(2);
/// Collection interval announced to agents.
const INTERVAL_SECS: u32 = 15;

/// `POST /api/v1/agents/register`.
pub async fn register(
    State(hub): State<Hub>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    validate_register(&req)?;
    let pubkey = match &req.signing_pubkey {
        None => None,
        Some(s) => Some(
            wire::decode_pubkey(s)
                .ok_or_else(|| {
                    ApiError::InvalidBody("signing_pubkey: not base64 of an Ed25519 public key".into())
                })?
                .to_bytes(),
        ),
    };
    let token = secrets::random_token(wire::AGENT_TOKEN_PREFIX);
    let reg = Registration {
        enrollment_sha256: secrets::sha256(&req.enrollment_token),
        new_agent_id: uuid::Uuid::new_v4().simple().to_string(),
        machine_id: req.machine_id,
        hostname: req.hostname,
        pubkey,
        token_sha256: secrets::sha256(&token),
        agent_version: req.agent_version,
        os: req.os,
        arch: req.arch,
        at_ms: now_ms(),
    };
    let cmd = Command::Fleet(FleetCommand::Register(reg));
    match hub.write_everywhere(cmd, REGISTER_SPREAD).await? {
        monsys_raft::CommandResult::Fleet(FleetResult::Registered { agent_id, pinned, .. }) => {
            Ok(Json(RegisterResponse {
                agent_id,
                agent_token: token,
                signing_key_pinned: pinned,
                interval_secs: INTERVAL_SECS,
            })
            .into_response())
        }
        monsys_raft::CommandResult::FleetRejected(FleetRejection::EnrollmentRefused) => {
            Err(ApiError::Unauthorized("enrollment token unknown, expired, revoked or used up".into()))
        }
        monsys_raft::CommandResult::FleetRejected(FleetRejection::SigningKeyMismatch) => {
            Err(ApiError::SigningKeyMismatch)
        }
        other => Err(ApiError::Internal(format!("unexpected result of Register: {other:?}"))),
    }
}

fn validate_register(r: &RegisterRequest) -> Result<(), ApiError> {
    let mut fields = Vec::new();
    let mut check = |ok: bool, field: &str, message: &str| {
        if !ok {
            fields.push(monsys_proto::settings::FieldError { field: field.into(), message: message.into() });
        }
    };
    check(
        r.enrollment_token.starts_with(wire::ENROLLMENT_TOKEN_PREFIX),
        "enrollment_token",
        "must start with mse_",
    );
    check(!r.hostname.is_empty() && r.hostname.len() <= 253, "hostname", "1-253 bytes");
    check(
        !r.machine_id.is_empty()
            && r.machine_id.len() <= 128
            && r.machine_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "machine_id",
        "1-128 characters of [A-Za-z0-9._-]",
    );
    for (field, value) in [("agent_version", &r.agent_version), ("os", &r.os), ("arch", &r.arch)] {
        check(!value.is_empty() && value.len() <= 64, field, "1-64 bytes");
    }
    if fields.is_empty() { Ok(()) } else { Err(ApiError::Validation(fields)) }
}

/// `POST /api/v1/ingest`.
pub async fn ingest(State(hub): State<Hub>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let agent = AgentAuth::from_request_parts(&mut parts, &hub).await?;
    let key = ActorKey::Agent(agent.agent_id.clone());
    if let Placement::Remote(_, owner) = place(&hub, &key)? {
        let req = Request::from_parts(parts, body);
        return forward_to_owner(&hub, &key, &owner, req).await;
    }
    // every answer of the owner carries the hint: the agent trusts a hinted URL only then
    let answer = ingest_owned(&hub, agent, parts, body).await.unwrap_or_else(IntoResponse::into_response);
    Ok(with_owner_hint(&hub, answer))
}

/// The owner's part of `POST /api/v1/ingest`.
async fn ingest_owned(
    hub: &Hub,
    agent: AgentAuth,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require_json(&parts.headers)?;
    let limit = wire::MAX_INGEST_BODY_BYTES;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let signature = match parts.headers.get(wire::SIGNATURE_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::SignatureInvalid("signature header is not ASCII".into()))?
                .to_string(),
        ),
    };
    let result = ingest_local(hub, agent, body, signature).await;
    hub.metrics.ingest(match &result {
        Ok(r) if r.status == IngestStatus::Stored => "stored",
        Ok(_) => "duplicate",
        Err(e) => e.status_and_code().1,
    });
    result.map(|r| Json(r).into_response())
}

/// Adds this node's agent URL as the owner hint (see `wire::OWNER_HEADER`) to an answer of
/// the agent's owner.
fn with_owner_hint(hub: &Hub, mut response: Response) -> Response {
    if let Some(value) = hub.owner_hint() {
        response.headers_mut().insert(wire::OWNER_HEADER, value.clone());
    }
    response
}

async fn ingest_local(
    hub: &Hub,
    agent: AgentAuth,
    body: Bytes,
    signature: Option<String>,
) -> Result<IngestResponse, ApiError> {
    let batch: IngestBatch = serde_json::from_slice(&body).map_err(json_error)?;
    let received_at_ms = now_ms();
    let series: Vec<String> = batch.metrics.iter().map(|s| s.series_key()).collect();
    validate_batch(&batch, &series, &agent)?;
    let fleet = hub.reader.fleet();
    let record = fleet
        .agent(&agent.tenant, &agent.agent_id)?
        .ok_or_else(|| ApiError::Unauthorized("agent no longer exists".into()))?;
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
    let plane = hub.plane()?;
    let outcome = plane.registry.ingest(&agent.agent_id, req).await.map_err(refusal)?;
    match outcome {
        CommitOutcome::Stored { last_seq } => {
            Ok(IngestResponse { status: IngestStatus::Stored, seq, last_seq })
        }
        CommitOutcome::Duplicate { last_seq } => {
            Ok(IngestResponse { status: IngestStatus::Duplicate, seq, last_seq })
        }
        CommitOutcome::SeqConflict { last_seq } => Err(ApiError::SeqConflict(format!(
            "seq {seq} was already stored with a different body (highest stored seq: {last_seq})"
        ))),
        CommitOutcome::Replay { last_seq } => Err(ApiError::Replay(format!(
            "seq {seq} is below the highest stored seq {last_seq} and is not a recent retry"
        ))),
        CommitOutcome::UnknownAgent => Err(ApiError::Unauthorized("agent no longer exists".into())),
        CommitOutcome::KeyChanged => Err(ApiError::SignatureInvalid(
            "the agent's signing key changed while the batch was in flight".into(),
        )),
    }
}

fn refusal(r: IngestRefusal<ApiError>) -> ApiError {
    match r {
        IngestRefusal::SignatureMissing => ApiError::SignatureMissing,
        IngestRefusal::SignatureInvalid(e) => ApiError::SignatureInvalid(e.to_string()),
        IngestRefusal::RateLimited(wait) => {
            ApiError::RateLimited { retry_after: wait, limit: monsys_actors::agent::actor::INGEST_PER_MINUTE }
        }
        IngestRefusal::Busy => ApiError::Unavailable {
            reason: "too many requests in flight for this agent".into(),
            retry_after: Duration::from_secs(1),
        },
        IngestRefusal::Timeout => {
            ApiError::Indeterminate("the batch was not confirmed in time; retry it unchanged".into())
        }
        IngestRefusal::Stopped => ApiError::unavailable("agent actor stopped; retry"),
        IngestRefusal::Commit(e) => e,
    }
}

fn json_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
        Category::Data => ApiError::InvalidBody(e.to_string()),
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType("expected Content-Type: application/json".into()))
    }
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Which samples repeat the series of an earlier sample of the batch (`series[i]` is the key
/// of sample `i`).
fn repeated_series(series: &[String]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_unstable_by(|a, b| series[*a].cmp(&series[*b]).then(a.cmp(b)));
    let mut repeated = vec![false; series.len()];
    for pair in order.windows(2) {
        if series[pair[0]] == series[pair[1]] {
            repeated[pair[1]] = true;
        }
    }
    repeated
}

fn validate_batch(b: &IngestBatch, series: &[String], agent: &AgentAuth) -> Result<(), ApiError> {
    let mut fields = Vec::new();
    // the field name is built only for a failed check: this runs for every sample of every batch
    let mut check = |ok: bool, field: &dyn Fn() -> String, message: &str| {
        if !ok {
            fields.push(monsys_proto::settings::FieldError { field: field(), message: message.into() });
        }
    };
    if b.agent_id != agent.agent_id {
        return Err(ApiError::Forbidden("agent_id does not match the agent token".into()));
    }
    check(b.seq >= 1, &|| "seq".into(), "must be at least 1");
    // A collection time far in the future (an agent's clock running fast) refuses nothing
    // here: the batch is stored and its samples are refused and counted by the state machine
    // (`samples_refused` of the agent); refusing the batch would make the agent drop it.
    check(b.agent_version.len() <= 64, &|| "agent_version".into(), "at most 64 bytes");
    check(b.metrics.len() <= wire::MAX_SAMPLES_PER_BATCH, &|| "metrics".into(), "too many samples");
    check(
        b.processes.as_ref().is_none_or(|p| p.len() <= wire::MAX_PROCESSES),
        &|| "processes".into(),
        "too many processes",
    );
    check(b.alerts.len() <= wire::MAX_AGENT_ALERTS, &|| "alerts".into(), "too many alerts");
    let repeated = repeated_series(series);
    for (i, s) in b.metrics.iter().enumerate() {
        check(!repeated[i], &|| format!("metrics[{i}]"), "series repeated in the batch");
        check(name_ok(&s.name, 64), &|| format!("metrics[{i}].name"), "1-64 characters of [a-z0-9_]");
        check(s.value.is_finite(), &|| format!("metrics[{i}].value"), "must be finite");
        check(s.labels.len() <= 8, &|| format!("metrics[{i}].labels"), "at most 8 labels");
        for (k, v) in &s.labels {
            check(
                name_ok(k, 32) && v.len() <= 128,
                &|| format!("metrics[{i}].labels.{k}"),
                "key [a-z0-9_] ≤ 32, value ≤ 128 bytes",
            );
        }
    }
    for (i, a) in b.alerts.iter().enumerate() {
        check(
            !a.key.is_empty()
                && a.key.len() <= 64
                && a.key.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c)),
            &|| format!("alerts[{i}].key"),
            "1-64 characters of [A-Za-z0-9_.:-]",
        );
        check(a.message.len() <= 512, &|| format!("alerts[{i}].message"), "at most 512 bytes");
    }
    if fields.is_empty() { Ok(()) } else { Err(ApiError::Validation(fields)) }
}

/// `POST /api/v1/agents/{id}/heartbeat`.
pub async fn heartbeat(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let agent = AgentAuth::from_request_parts(&mut parts, &hub).await?;
    if agent.agent_id != id {
        return Err(ApiError::Forbidden("the agent token belongs to another agent".into()));
    }
    let key = ActorKey::Agent(id.clone());
    if let Placement::Remote(_, owner) = place(&hub, &key)? {
        return forward_to_owner(&hub, &key, &owner, Request::from_parts(parts, body)).await;
    }
    let answer =
        heartbeat_owned(&hub, agent, id, parts, body).await.unwrap_or_else(IntoResponse::into_response);
    Ok(with_owner_hint(&hub, answer))
}

/// The owner's part of `POST /api/v1/agents/{id}/heartbeat`.
async fn heartbeat_owned(
    hub: &Hub,
    agent: AgentAuth,
    id: String,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require_json(&parts.headers)?;
    let body =
        axum::body::to_bytes(body, 4096).await.map_err(|_| ApiError::PayloadTooLarge { limit: 4096 })?;
    let hb: Heartbeat = serde_json::from_slice(&body).map_err(json_error)?;
    if hb.agent_version.is_empty() || hb.agent_version.len() > 64 {
        return Err(ApiError::InvalidBody("agent_version: 1-64 bytes".into()));
    }
    let item = HeartbeatItem {
        tenant: agent.tenant,
        agent_id: id,
        received_at_ms: now_ms(),
        sent_at_ms: hb.sent_at_ms,
        agent_version: hb.agent_version,
    };
    match hub.plane()?.group.submit(GroupItem::Heartbeat(item)).await? {
        ItemOutcome::Seen => Ok(StatusCode::NO_CONTENT.into_response()),
        ItemOutcome::UnknownAgent => Err(ApiError::Unauthorized("agent no longer exists".into())),
        other => Err(ApiError::Internal(format!("unexpected heartbeat outcome {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_later_copies_of_a_series_count_as_repeated() {
        let keys: Vec<String> = ["b", "a", "b", "c", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(repeated_series(&keys), [false, false, true, false, true, true]);
        assert!(repeated_series(&[]).is_empty());
    }
}
