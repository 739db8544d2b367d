//! Who is calling: the [`Auth`] extractor resolves a request's credential to a principal (tenant,
//! user, role, permissions) from the local replicated state — a sled lookup, never a Raft round
//! trip — and handlers call [`Auth::require`] with the permission they need.
//!
//! Credentials, by prefix:
//! - `mss_…` session token: `Authorization: Bearer` or the `monsys_session` cookie;
//! - `msk_…` API key: `Authorization: Bearer` or `X-Api-Key`;
//! - `msa_…` the cluster admin token printed at first start: the **break-glass** path of the
//!   cluster operator. It acts as Owner of the `default` tenant and alone may change cluster
//!   membership. Keep it offline; every use is visible in the logs.
//!
//! A token unknown to this node gets one bounded wait for the node to apply its log (a login a
//! moment ago through another node) before 401. Revocations (logout, disable, key revoke) return
//! only once applied on every live node, so checks stay local and still see them at once.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use monsys_proto::DEFAULT_TENANT;

use super::permissions::{self, Permission};
use crate::error::ApiError;
use crate::hub::Hub;
use crate::secrets::{self, token_matches};

/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "mss_";
/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "msk_";
pub use crate::secrets::ADMIN_PREFIX;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "monsys_session";
/// How long an unknown token waits for this node to catch up.
const CATCH_UP: Duration = Duration::from_millis(1500);

/// How the principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The cluster admin token.
    BreakGlass,
    /// A session (its token hash).
    Session([u8; 32]),
    /// An API key (its id).
    ApiKey(String),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Tenant every query is scoped to.
    pub tenant: String,
    /// The user, unless break-glass or a tenant API key.
    pub user_id: Option<String>,
    /// Role id.
    pub role: String,
    /// What the role may do.
    pub permissions: BTreeSet<Permission>,
    /// The credential used.
    pub credential: Credential,
}

impl Auth {
    /// 403 unless the principal holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(&p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("role {} lacks permission {}", self.role, p.name())))
        }
    }

    /// Who, for the audit log.
    pub fn actor(&self) -> String {
        match (&self.credential, &self.user_id) {
            (Credential::BreakGlass, _) => "admin-token".into(),
            (Credential::ApiKey(id), None) => format!("api-key:{id}"),
            (_, Some(u)) => u.clone(),
            (_, None) => "unknown".into(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme name is case-insensitive
/// (RFC 9110), so `bearer` and `BEARER` work too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The presented token: bearer, `X-Api-Key`, or the session cookie.
pub fn presented_token(parts: &Parts) -> Option<String> {
    let h = &parts.headers;
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(t) = bearer_token(v)
    {
        return Some(t.to_string());
    }
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The permissions of `role` in `tenant` (system or custom; empty for an unknown role).
pub fn role_permissions(hub: &Hub, tenant: &str, role: &str) -> Result<BTreeSet<Permission>, ApiError> {
    if let Some(set) = permissions::system_role(role) {
        return Ok(set);
    }
    Ok(hub
        .replica
        .reader()
        .identity()
        .role(tenant, role)?
        .map(|r| r.permissions.iter().filter_map(|p| Permission::parse(p)).collect())
        .unwrap_or_default())
}

impl FromRequestParts<Hub> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, ApiError> {
        let token =
            presented_token(parts).ok_or_else(|| ApiError::Unauthorized("missing credentials".into()))?;
        authenticate(hub, &token).await
    }
}

/// Resolves a token to a principal.
pub async fn authenticate(hub: &Hub, token: &str) -> Result<Auth, ApiError> {
    let invalid = || ApiError::Unauthorized("invalid or expired credentials".into());
    if token.starts_with(ADMIN_PREFIX) {
        return match hub.replica.reader().admin_token_sha256()? {
            Some(stored) if token_matches(token, &stored) => {
                tracing::debug!("break-glass admin token used");
                let mut permissions = permissions::system_role("owner").expect("owner role");
                permissions.insert(Permission::ClusterWrite);
                Ok(Auth {
                    tenant: DEFAULT_TENANT.into(),
                    user_id: None,
                    role: "owner".into(),
                    permissions,
                    credential: Credential::BreakGlass,
                })
            }
            Some(_) => Err(invalid()),
            None => Err(ApiError::unavailable("cluster not bootstrapped yet: no admin token")),
        };
    }
    let sha = secrets::sha256(token);
    let ident = hub.replica.reader().identity();
    let now = crate::clock::now_ms();
    if token.starts_with(SESSION_PREFIX) {
        let session = match ident.session(&sha)? {
            Some(s) => Some(s),
            None => {
                hub.replica.catch_up_locally(CATCH_UP).await;
                ident.session(&sha)?
            }
        };
        let s = session.ok_or_else(invalid)?;
        let last_seen = s.last_seen_ms.max(hub.touches.last_seen(&sha));
        if now >= s.expires_at_ms || now.saturating_sub(last_seen) > s.idle_timeout_ms {
            return Err(invalid());
        }
        let user = ident.user(&s.tenant, &s.user_id)?.filter(|u| !u.disabled).ok_or_else(invalid)?;
        hub.touches.record(sha, now);
        return Ok(Auth {
            permissions: role_permissions(hub, &user.tenant, &user.role)?,
            tenant: user.tenant,
            user_id: Some(user.id),
            role: user.role,
            credential: Credential::Session(sha),
        });
    }
    if token.starts_with(API_KEY_PREFIX) {
        let key = match ident.api_key(&sha)? {
            Some(k) => Some(k),
            None => {
                hub.replica.catch_up_locally(CATCH_UP).await;
                ident.api_key(&sha)?
            }
        };
        let k = key.ok_or_else(invalid)?;
        if k.expires_at_ms.is_some_and(|e| now >= e) {
            return Err(invalid());
        }
        hub.touches.record_key(sha, now);
        let mut permissions = role_permissions(hub, &k.tenant, &k.role)?;
        if let Some(uid) = &k.user_id {
            // a user's key never exceeds what the user may do now, and dies with the user
            let user = ident.user(&k.tenant, uid)?.filter(|u| !u.disabled).ok_or_else(invalid)?;
            let user_perms = role_permissions(hub, &k.tenant, &user.role)?;
            permissions.retain(|p| user_perms.contains(p));
        }
        return Ok(Auth {
            tenant: k.tenant,
            user_id: k.user_id,
            role: k.role,
            permissions,
            credential: Credential::ApiKey(k.id),
        });
    }
    Err(invalid())
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        for v in ["Bearer mss_x", "bearer mss_x", "BEARER  mss_x ", " Bearer mss_x"] {
            assert_eq!(bearer_token(v), Some("mss_x"), "{v:?}");
        }
        for v in ["Basic mss_x", "Bearer", "Bearer   ", "Bearermss_x", ""] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
