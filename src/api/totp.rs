//! `/api/v1/auth/totp/*`: set up, verify (enable), disable, and the login challenge.
//!
//! A code is accepted once per time step per user, cluster-wide (the state machine keeps the
//! last accepted step); recovery codes are single-use. Wrong codes answer 401 and are audited.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use monsys_raft::identity::{IdentityCommand, SecondFactor, User};
use monsys_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::json;

use super::auth::{REVOKE_SPREAD, identity_error, new_session, session_response};
use super::extract::JsonBody;
use crate::auth::{Auth, totp};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::ratelimit::{self, ClientIp};
use crate::secrets;

fn current_user(hub: &Hub, auth: &Auth) -> Result<User, ApiError> {
    let uid = auth
        .user_id
        .as_ref()
        .ok_or_else(|| ApiError::Forbidden("two-factor settings belong to a user; log in".into()))?;
    hub.replica
        .reader()
        .identity()
        .user(&auth.tenant, uid)?
        .ok_or_else(|| ApiError::NotFound("user gone".into()))
}

async fn identity(hub: &Hub, cmd: IdentityCommand) -> Result<(), ApiError> {
    match hub.replica.write(Command::Identity(cmd)).await? {
        CommandResult::Identity(_) => Ok(()),
        CommandResult::IdentityRejected(r) => Err(identity_error(&r)),
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// `POST /api/v1/auth/totp/setup`: a new secret (base32 and `otpauth://` URI), not active until
/// verified.
pub async fn setup(State(hub): State<Hub>, auth: Auth) -> Result<Response, ApiError> {
    let user = current_user(&hub, &auth)?;
    let secret = totp::new_secret();
    let uri = totp::uri(&secret, &user.email)?;
    let cmd = IdentityCommand::SetTotpPending {
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        secret_enc: totp::seal(&hub.secret, &secret),
    };
    identity(&hub, cmd).await?;
    Ok(Json(json!({ "secret": totp::base32(&secret), "otpauth_uri": uri })).into_response())
}

/// A code or a recovery code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// Six-digit code from the app.
    #[serde(default)]
    pub code: Option<String>,
    /// A recovery code (instead of `code`).
    #[serde(default)]
    pub recovery_code: Option<String>,
}

/// Resolves the factor presented for `user` at `now`.
fn factor(hub: &Hub, user: &User, b: &CodeBody) -> Result<SecondFactor, ApiError> {
    match (&b.code, &b.recovery_code) {
        (Some(code), None) => {
            let t = user
                .totp
                .as_ref()
                .ok_or_else(|| ApiError::Conflict("two-factor authentication is not set up".into()))?;
            let secret = totp::open(&hub.secret, &t.secret_enc)?;
            totp::matching_step(&secret, code, now_ms() / 1000)
                .map(SecondFactor::Step)
                .ok_or_else(|| ApiError::Unauthorized("invalid or already used code".into()))
        }
        (None, Some(rc)) => Ok(SecondFactor::Recovery(totp::recovery_hash(rc))),
        _ => Err(ApiError::InvalidBody("give exactly one of code and recovery_code".into())),
    }
}

/// `POST /api/v1/auth/totp/verify`: enables TOTP; answers the recovery codes (shown once).
pub async fn verify(
    State(hub): State<Hub>,
    auth: Auth,
    JsonBody(b): JsonBody<CodeBody>,
) -> Result<Response, ApiError> {
    let user = current_user(&hub, &auth)?;
    if b.recovery_code.is_some() {
        return Err(ApiError::InvalidBody("verify with a code from the app".into()));
    }
    let SecondFactor::Step(step) = factor(&hub, &user, &b)? else {
        return Err(ApiError::InvalidBody("verify with a code from the app".into()));
    };
    let (codes, hashes) = totp::recovery_codes();
    let cmd = IdentityCommand::EnableTotp {
        tenant: user.tenant,
        user_id: user.id,
        step,
        recovery: hashes,
        at_ms: now_ms(),
    };
    identity(&hub, cmd).await?;
    Ok(Json(json!({ "enabled": true, "recovery_codes": codes })).into_response())
}

/// `POST /api/v1/auth/totp/disable`: needs a valid code or recovery code.
pub async fn disable(
    State(hub): State<Hub>,
    auth: Auth,
    JsonBody(b): JsonBody<CodeBody>,
) -> Result<Response, ApiError> {
    let user = current_user(&hub, &auth)?;
    let f = factor(&hub, &user, &b)?;
    identity(
        &hub,
        IdentityCommand::DisableTotp { tenant: user.tenant, user_id: user.id, factor: f, at_ms: now_ms() },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/auth/totp/challenge` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    /// The challenge from `/auth/login`.
    pub challenge: String,
    /// Six-digit code.
    #[serde(default)]
    pub code: Option<String>,
    /// A recovery code (instead of `code`).
    #[serde(default)]
    pub recovery_code: Option<String>,
}

/// `POST /api/v1/auth/totp/challenge`: completes a login that needs a second factor.
pub async fn challenge(
    State(hub): State<Hub>,
    ClientIp(ip): ClientIp,
    JsonBody(b): JsonBody<ChallengeBody>,
) -> Result<Response, ApiError> {
    ratelimit::check(&hub, &format!("totp:ip:{ip}"), ratelimit::TOTP_CHALLENGE).await?;
    let invalid = || ApiError::Unauthorized("login challenge unknown or expired; log in again".into());
    let sha = secrets::sha256(&b.challenge);
    let ident = hub.replica.reader().identity();
    let c = ident.challenge(&sha)?.ok_or_else(invalid)?;
    let user = ident.user(&c.tenant, &c.user_id)?.ok_or_else(invalid)?;
    let f = factor(&hub, &user, &CodeBody { code: b.code, recovery_code: b.recovery_code })?;
    let (token, session) = new_session(&user);
    let cmd = IdentityCommand::CompleteLogin { challenge: sha, factor: f, session };
    match hub.replica.write_everywhere(Command::Identity(cmd), REVOKE_SPREAD).await? {
        CommandResult::Identity(_) => session_response(&hub, &user, &token),
        CommandResult::IdentityRejected(r) => Err(identity_error(&r)),
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}
