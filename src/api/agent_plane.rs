//! The agent-facing routes: `POST /api/v1/agents/register`, `POST /api/v1/ingest`,
//! `POST /api/v1/agents/{id}/heartbeat`.
//!
//! - Register is a replicated write answered by the leader (the leader middleware forwards it),
//!   and it returns only once every live voter has the entry (bounded wait), so the agent's
//!   first ingest at any node finds its token.
//! - Ingest and heartbeat are actor-keyed: any node authenticates the token locally and
//!   forwards the request once to the owner of `agent:<id>`; the owner's actor does the rest
//!   (`ingest::service`). A 2xx ingest means committed on a quorum. The handlers here only
//!   read HTTP and map the service's one error type once.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use monsys_actors::ActorKey;
use monsys_proto::agent::{self as wire, IngestStatus, RegisterRequest, RegisterResponse};
use monsys_raft::Command;
use monsys_raft::fleet::{FleetCommand, FleetRejection, FleetResult, Registration};

use super::declared_length::HEARTBEAT_BODY_LIMIT;
use super::extract::{AgentAuth, JsonBody};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::ingest::service::{self, IngestError};
use crate::replica::Replica;
use crate::routing::owner::{Routed, route};
use crate::secrets;

/// How long a registration waits for every live voter to have it.
const REGISTER_SPREAD: Duration = Duration::from_secs(2);
/// Collection interval announced to agents.
const INTERVAL_SECS: u32 = 15;

/// `POST /api/v1/agents/register`.
pub async fn register(
    State(replica): State<Replica>,
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
    match replica.write_everywhere(cmd, REGISTER_SPREAD).await? {
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
    check(!r.hostname.is_empty() && r.hostname.chars().count() <= 253, "hostname", "1-253 characters");
    check(
        !r.machine_id.is_empty()
            && r.machine_id.len() <= 128
            && r.machine_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "machine_id",
        "1-128 characters of [A-Za-z0-9._-]",
    );
    for (field, value) in [("agent_version", &r.agent_version), ("os", &r.os), ("arch", &r.arch)] {
        check(!value.is_empty() && value.chars().count() <= 64, field, "1-64 characters");
    }
    if fields.is_empty() { Ok(()) } else { Err(ApiError::Validation(fields)) }
}

/// `POST /api/v1/ingest`.
pub async fn ingest(State(hub): State<Hub>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let agent = AgentAuth::from_request_parts(&mut parts, &hub).await?;
    let key = ActorKey::Agent(agent.agent_id.clone());
    let (parts, body) = match route(&hub, &key, Request::from_parts(parts, body)).await? {
        Routed::Local(req) => req.into_parts(),
        Routed::Answered(answer) => return Ok(answer),
    };
    // every answer of the owner carries the hint: the agent trusts a hinted URL only then
    let answer = ingest_owned(&hub, agent, parts, body).await.unwrap_or_else(IntoResponse::into_response);
    Ok(with_owner_hint(&hub, answer))
}

/// The owner's part of `POST /api/v1/ingest`: reads the request, calls the ingest service.
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
    let result = service::submit(&hub.plane, hub.replica.reader(), agent.id(), body, signature)
        .await
        .map_err(ingest_error);
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

/// The one mapping of the ingest service's refusals to HTTP.
pub(crate) fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::Malformed(m) => ApiError::BadRequest(format!("malformed JSON: {m}")),
        IngestError::Shape(m) => ApiError::InvalidBody(m),
        IngestError::Validation(fields) => ApiError::Validation(fields),
        e @ IngestError::WrongAgent => ApiError::Forbidden(e.to_string()),
        e @ IngestError::UnknownAgent => ApiError::Unauthorized(e.to_string()),
        IngestError::SignatureMissing => ApiError::SignatureMissing,
        IngestError::SignatureInvalid(m) => ApiError::SignatureInvalid(m),
        IngestError::RateLimited(retry_after) => {
            ApiError::RateLimited { retry_after, limit: monsys_actors::agent::actor::INGEST_PER_MINUTE }
        }
        e @ IngestError::Busy => {
            ApiError::Unavailable { reason: e.to_string(), retry_after: Duration::from_secs(1) }
        }
        e @ IngestError::Replay { .. } => ApiError::Replay(e.to_string()),
        e @ IngestError::SeqConflict { .. } => ApiError::SeqConflict(e.to_string()),
        IngestError::Write(e) => e.into(),
        IngestError::Storage(e) => e.into(),
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
    let (parts, body) = match route(&hub, &key, Request::from_parts(parts, body)).await? {
        Routed::Local(req) => req.into_parts(),
        Routed::Answered(answer) => return Ok(answer),
    };
    let answer = heartbeat_owned(&hub, agent, parts, body).await.unwrap_or_else(IntoResponse::into_response);
    Ok(with_owner_hint(&hub, answer))
}

/// The owner's part of `POST /api/v1/agents/{id}/heartbeat`.
async fn heartbeat_owned(
    hub: &Hub,
    agent: AgentAuth,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require_json(&parts.headers)?;
    let body = axum::body::to_bytes(body, HEARTBEAT_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit: HEARTBEAT_BODY_LIMIT })?;
    let hb = service::parse_heartbeat(&body).map_err(ingest_error)?;
    service::heartbeat(&hub.plane, agent.id(), hb).await.map_err(ingest_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
