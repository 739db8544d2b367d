//! Extractors that turn request parts into typed values or a clear [`ApiError`].
//!
//! - [`JsonBody`]: JSON body with our error mapping (400 malformed, 422 wrong shape, 413 too
//!   large, 415 wrong content type).
//! - [`AdminAuth`]: `Authorization: Bearer <admin token>` checked against the replicated hash.
//! - [`ClusterAuth`]: the admin token or the cluster secret (nodes joining, peers).
//! - [`IfMatch`]: an optional expected revision from `If-Match`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::secrets::{CLUSTER_SECRET_HEADER, token_matches};

/// A JSON request body.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Hub> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, hub: &Hub) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, hub).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(json_error(rejection, hub.config.max_body_bytes)),
        }
    }
}

fn json_error(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::InvalidBody(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit },
        other => ApiError::BadRequest(other.body_text()),
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    crate::auth::principal::bearer_token(value)
}

/// Proof that the request carries the cluster admin token.
pub struct AdminAuth;

impl FromRequestParts<Hub> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        check_admin(hub, token)
    }
}

fn check_admin(hub: &Hub, token: &str) -> Result<AdminAuth, ApiError> {
    match hub.replica.reader().admin_token_sha256()? {
        Some(stored) if token_matches(token, &stored) => Ok(AdminAuth),
        Some(_) => Err(ApiError::Unauthorized("invalid token".into())),
        None => Err(ApiError::unavailable("cluster not bootstrapped yet: no admin token")),
    }
}

/// An agent authenticated by its bearer token (`ms_…`), resolved against the local replicated
/// state. A token unknown here gets one bounded wait for this node to apply its log (a token
/// issued a moment ago through another node), then 401.
pub struct AgentAuth {
    /// The agent's tenant.
    pub tenant: String,
    /// The agent's id.
    pub agent_id: String,
    /// SHA-256 of the token it presented (a long-lived socket checks it is still the agent's).
    pub token_sha256: [u8; 32],
}

impl AgentAuth {
    /// The agent, as the ingest service names it.
    pub fn id(&self) -> crate::ingest::service::AgentId {
        crate::ingest::service::AgentId { tenant: self.tenant.clone(), agent_id: self.agent_id.clone() }
    }

    /// Why the token this agent authenticated with no longer admits it (the agent was deleted
    /// or its token rotated), read from this node's applied state; `None` while it still does.
    pub fn revoked(&self, reader: &monsys_raft::StateReader) -> Option<&'static str> {
        match reader.fleet().agent_by_token(&self.token_sha256) {
            Ok(Some((tenant, id))) if tenant == self.tenant && id == self.agent_id => None,
            Ok(_) => Some("agent token revoked (agent deleted or token rotated)"),
            Err(_) => None, // a storage error is not a revocation; the next check decides
        }
    }
}

/// Close code of a long-lived socket whose credentials were revoked (RFC 6455 1008, policy
/// violation); the close frame's reason says what happened.
pub const CLOSE_REVOKED: u16 = 1008;
/// Close code of a socket whose node is stopping (RFC 6455 1001, going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// How often a long-lived socket re-checks its credentials (the revocation bound the README
/// states for open sockets: revocation writes answer once every live voter applied them, and a
/// socket sees that within this).
pub const SOCKET_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// How long an unknown agent token waits for this node to catch up.
const TOKEN_CATCH_UP: std::time::Duration = std::time::Duration::from_millis(1500);

impl FromRequestParts<Hub> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, ApiError> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::Unauthorized("missing bearer agent token".into()))?;
        if !token.starts_with(monsys_proto::agent::AGENT_TOKEN_PREFIX) {
            return Err(ApiError::Unauthorized("invalid agent token".into()));
        }
        let sha = crate::secrets::sha256(token);
        let fleet = hub.replica.reader().fleet();
        let found = match fleet.agent_by_token(&sha)? {
            Some(found) => Some(found),
            None => {
                hub.replica.catch_up_locally(TOKEN_CATCH_UP).await;
                fleet.agent_by_token(&sha)?
            }
        };
        let (tenant, agent_id) = found.ok_or_else(|| ApiError::Unauthorized("invalid agent token".into()))?;
        Ok(AgentAuth { tenant, agent_id, token_sha256: sha })
    }
}

/// Proof that the request comes from the cluster operator (admin token) or a node of the
/// cluster (cluster secret).
pub enum ClusterAuth {
    /// The admin token.
    Admin,
    /// The cluster secret.
    Secret,
}

impl ClusterAuth {
    /// Who, for the audit log.
    pub fn actor(&self) -> &'static str {
        match self {
            ClusterAuth::Admin => "admin-token",
            ClusterAuth::Secret => "cluster-secret",
        }
    }
}

impl FromRequestParts<Hub> for ClusterAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, ApiError> {
        if let Some(secret) = parts.headers.get(CLUSTER_SECRET_HEADER) {
            let secret = secret.to_str().unwrap_or_default();
            return if hub.secret.verify(secret) {
                Ok(ClusterAuth::Secret)
            } else {
                Err(ApiError::Unauthorized("invalid cluster secret".into()))
            };
        }
        let token = bearer(parts).ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        check_admin(hub, token).map(|_| ClusterAuth::Admin)
    }
}

/// Proof that the request carries the cluster secret (internal routes only).
pub struct PeerAuth;

impl FromRequestParts<Hub> for PeerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(CLUSTER_SECRET_HEADER)
            .ok_or_else(|| ApiError::Unauthorized("missing cluster secret".into()))?;
        if hub.secret.verify(secret.to_str().unwrap_or_default()) {
            Ok(PeerAuth)
        } else {
            Err(ApiError::Unauthorized("invalid cluster secret".into()))
        }
    }
}

/// The revision a conditional write expects (`If-Match: "7"`); `None` when absent or `*`.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else { return Ok(IfMatch(None)) };
        let text = value.to_str().map_err(|_| ApiError::BadRequest("If-Match is not ASCII".into()))?.trim();
        if text == "*" {
            return Ok(IfMatch(None));
        }
        let unquoted = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
        unquoted
            .parse::<u64>()
            .map(|r| IfMatch(Some(r)))
            .map_err(|_| ApiError::BadRequest(format!("If-Match must be a revision like \"7\", got {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    async fn if_match(value: Option<&str>) -> Result<Option<u64>, ApiError> {
        let mut req = Request::builder();
        if let Some(v) = value {
            req = req.header(header::IF_MATCH, v);
        }
        let (mut parts, _) = req.body(()).unwrap().into_parts();
        IfMatch::from_request_parts(&mut parts, &()).await.map(|m| m.0)
    }

    #[tokio::test]
    async fn if_match_forms() {
        assert_eq!(if_match(None).await.unwrap(), None);
        assert_eq!(if_match(Some("*")).await.unwrap(), None);
        assert_eq!(if_match(Some("\"7\"")).await.unwrap(), Some(7));
        assert_eq!(if_match(Some("W/\"7\"")).await.unwrap(), Some(7));
        assert_eq!(if_match(Some("12")).await.unwrap(), Some(12));
        assert!(matches!(if_match(Some("\"abc\"")).await, Err(ApiError::BadRequest(_))));
    }
}
