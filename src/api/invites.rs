//! Invitations and password resets, delivered by mail (`crate::mail`; the outbox by default).
//!
//! Tokens are random, stored as SHA-256, single-use and expiring (invitations 7 days, resets 1
//! hour); they travel only in the mail, never in an API answer. `forgot-password` answers 202
//! for every address and does its work in the background, so neither the answer nor its timing
//! tells whether an account exists.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use monsys_raft::identity::{IdentityCommand, IdentityRejection, IdentityResult, Invitation, ResetToken};
use monsys_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::json;

use super::auth::{REVOKE_SPREAD, identity_error, new_user, normalize_email, user_json};
use super::extract::JsonBody;
use super::users::check_grant;
use crate::auth::{Auth, Permission, password};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::mail::Mail;
use crate::ratelimit::{self, ClientIp};
use crate::replica::Replica;
use crate::secrets;

/// Prefix of invitation tokens.
pub const INVITE_PREFIX: &str = "msi_";
/// Prefix of password-reset tokens.
pub const RESET_PREFIX: &str = "msr_";
const INVITE_LIFETIME_MS: u64 = 7 * 86_400_000;
const RESET_LIFETIME_MS: u64 = 3_600_000;

/// `POST /api/v1/auth/invitations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// Who to invite.
    pub email: String,
    /// Their role.
    pub role: String,
}

/// `POST /api/v1/auth/invitations` (20 per hour per tenant).
pub async fn invite(
    State(hub): State<Hub>,
    auth: Auth,
    JsonBody(b): JsonBody<InviteBody>,
) -> Result<Response, ApiError> {
    auth.require(Permission::UsersWrite)?;
    check_grant(&hub, &auth, &b.role)?;
    let email = normalize_email(&b.email)?;
    ratelimit::check(&hub, &format!("invite:tenant:{}", auth.tenant), ratelimit::INVITATIONS).await?;
    let token = secrets::random_token(INVITE_PREFIX);
    let now = now_ms();
    let inv = Invitation {
        sha256: secrets::sha256(&token),
        tenant: auth.tenant.clone(),
        email: email.clone(),
        role: b.role.clone(),
        invited_by: auth.actor(),
        created_at_ms: now,
        expires_at_ms: now + INVITE_LIFETIME_MS,
    };
    let mut taken_elsewhere = false;
    match hub
        .replica
        .write_everywhere(Command::Identity(IdentityCommand::CreateInvitation(inv)), REVOKE_SPREAD)
        .await?
    {
        CommandResult::Identity(_) => {}
        CommandResult::IdentityRejected(IdentityRejection::EmailTaken) => {
            // a member of this organisation already: the inviter can see that in the user list
            let existing = hub.replica.reader().identity().user_by_email(&email)?;
            if existing.is_none_or(|u| u.tenant == auth.tenant) {
                return Err(ApiError::Conflict(
                    "this address is already a member of this organisation".into(),
                ));
            }
            taken_elsewhere = true;
        }
        CommandResult::IdentityRejected(r) => return Err(identity_error(&r)),
        other => return Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
    // An address that has an account in another organisation gets a notice instead of an
    // invitation, and the answer is the same: it must not tell the inviter which emails exist.
    let (subject, body) = if taken_elsewhere {
        (
            "A monsys invitation for your address".to_string(),
            format!(
                "The monsys organisation {} invited this address as {}, but it already has a monsys \
                 account in another organisation, so no invitation was made. Ask them to invite \
                 another address.\n",
                auth.tenant, b.role
            ),
        )
    } else {
        (
            "Your monsys invitation".to_string(),
            format!(
                "You are invited to monsys (organisation {}) as {}.\n\nAccept within 7 days:\n{}/accept-invite?token={token}\n\nInvitation token: {token}\n",
                auth.tenant,
                b.role,
                crate::mail::public_url(&hub.config)
            ),
        )
    };
    // The invitation is committed: a failed mail is reported in the 201, not as a 503 (which
    // promises that nothing was applied; a retry creates a new invitation either way).
    let mut answer = json!({ "email": email, "role": b.role });
    match hub.mailer.send(Mail { to: email.clone(), subject, body }).await {
        Ok(()) => answer["mail_sent"] = json!(true),
        Err(e) => {
            tracing::warn!(error = %e, "invitation stored but its mail was not sent");
            answer["mail_sent"] = json!(false);
            answer["mail_error"] = json!(e);
        }
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /api/v1/auth/accept-invite` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// Token from the mail.
    pub token: String,
    /// Display name.
    pub name: String,
    /// Password.
    pub password: String,
}

/// `POST /api/v1/auth/accept-invite`: creates the invited user.
pub async fn accept(State(hub): State<Hub>, JsonBody(b): JsonBody<AcceptBody>) -> Result<Response, ApiError> {
    let invalid = || ApiError::Unauthorized("token unknown, expired or already used".into());
    let sha = secrets::sha256(&b.token);
    let inv = hub.replica.reader().identity().invitation(&sha)?.ok_or_else(invalid)?;
    let user = new_user(&inv.tenant, &inv.email, &b.name, &inv.role, &b.password)?;
    match hub
        .replica
        .write(Command::Identity(IdentityCommand::AcceptInvitation { sha256: sha, user }))
        .await?
    {
        CommandResult::Identity(IdentityResult::User(u)) => {
            Ok((StatusCode::CREATED, Json(user_json(&hub, &u)?)).into_response())
        }
        CommandResult::IdentityRejected(r) => Err(identity_error(&r)),
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// `POST /api/v1/auth/forgot-password` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgotBody {
    /// The account's email.
    pub email: String,
}

/// `POST /api/v1/auth/forgot-password` (5 per hour per IP): always 202.
pub async fn forgot(
    State(hub): State<Hub>,
    ClientIp(ip): ClientIp,
    JsonBody(b): JsonBody<ForgotBody>,
) -> Result<Response, ApiError> {
    ratelimit::check(&hub, &format!("forgot:ip:{ip}"), ratelimit::FORGOT_PASSWORD).await?;
    let email = normalize_email(&b.email)?;
    let bg = hub.clone();
    hub.life.spawn(async move {
        if let Err(e) = send_reset(&bg, &email).await {
            tracing::warn!(error = %e, "password reset not sent");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "if the account exists, a reset link was sent" })))
        .into_response())
}

async fn send_reset(hub: &Hub, email: &str) -> Result<(), ApiError> {
    let Some(user) = hub.replica.reader().identity().user_by_email(email)?.filter(|u| !u.disabled) else {
        return Ok(());
    };
    let token = secrets::random_token(RESET_PREFIX);
    let r = ResetToken {
        sha256: secrets::sha256(&token),
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        expires_at_ms: now_ms() + RESET_LIFETIME_MS,
    };
    // one live token per user once every member can apply that: a new one ends the older ones
    let cmd = if hub.replica.members_support(monsys_raft::LOG_FEATURE_RESET_EXCLUSIVE) {
        IdentityCommand::CreateResetExclusive(r)
    } else {
        IdentityCommand::CreateReset(r)
    };
    hub.replica.write_everywhere(Command::Identity(cmd), REVOKE_SPREAD).await?;
    let body = format!(
        "A password reset was asked for your monsys account.\n\nReset within one hour:\n{}/reset-password?token={token}\n\nReset token: {token}\n\nIf it was not you, ignore this mail.\n",
        crate::mail::public_url(&hub.config)
    );
    hub.mailer
        .send(Mail { to: user.email, subject: "Reset your monsys password".into(), body })
        .await
        .map_err(ApiError::Internal)
}

/// `POST /api/v1/auth/reset-password` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// Token from the mail.
    pub token: String,
    /// New password.
    pub new_password: String,
}

/// `POST /api/v1/auth/reset-password`: single use; every session of the user ends.
pub async fn reset(
    State(replica): State<Replica>,
    JsonBody(b): JsonBody<ResetBody>,
) -> Result<Response, ApiError> {
    let invalid = || ApiError::Unauthorized("token unknown, expired or already used".into());
    let sha = secrets::sha256(&b.token);
    let ident = replica.reader().identity();
    let r = ident.reset_token(&sha)?.ok_or_else(invalid)?;
    let user = ident.user(&r.tenant, &r.user_id)?.ok_or_else(invalid)?;
    if let Some(why) = password::weakness(&b.new_password, &user.email) {
        return Err(ApiError::InvalidBody(format!("new_password: {why}")));
    }
    let (password_hash, at_ms) = (password::hash(&b.new_password), now_ms());
    let cmd = if replica.members_support(monsys_raft::LOG_FEATURE_RESET_EXCLUSIVE) {
        IdentityCommand::CompleteResetExclusive { sha256: sha, password_hash, at_ms }
    } else {
        IdentityCommand::CompleteReset { sha256: sha, password_hash, at_ms }
    };
    match replica.write_applied_everywhere(Command::Identity(cmd), REVOKE_SPREAD).await? {
        CommandResult::Identity(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        CommandResult::IdentityRejected(r) => Err(identity_error(&r)),
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}
