//! `/api/v1/auth/*`: first-run registration, login, logout, the current user, password change.
//!
//! - `POST /auth/register` creates a tenant and its Owner: while no owner exists anywhere
//!   (first run; the tenant is `default`, which already holds the data written with the admin
//!   token), or when the `default` tenant's settings enable registration (a new tenant).
//! - `POST /auth/login` answers the same 401 for an unknown email, a wrong password and a
//!   disabled user, after the same argon2 work, so responses do not reveal accounts.
//! - Logout and password changes return once every live node applied them.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use monsys_proto::DEFAULT_TENANT;
use monsys_raft::identity::{IdentityCommand, IdentityRejection, IdentityResult, Session, Tenant, User};
use monsys_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::JsonBody;
use crate::auth::principal::{Credential, SESSION_COOKIE, SESSION_PREFIX, role_permissions};
use crate::auth::{Auth, password};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::ratelimit::{self, ClientIp};
use crate::replica::Replica;
use crate::secrets;

/// Absolute lifetime of a session.
pub const SESSION_LIFETIME_MS: u64 = 12 * 3600 * 1000;
/// Idle timeout of a session.
pub const SESSION_IDLE_MS: u64 = 2 * 3600 * 1000;
/// Bound of waits for revocations to reach every node.
pub const REVOKE_SPREAD: Duration = Duration::from_secs(2);

/// The JSON view of a user (never the hash).
pub fn user_json(hub: &Hub, u: &User) -> Result<Value, ApiError> {
    let perms: Vec<&str> = role_permissions(hub, &u.tenant, &u.role)?.into_iter().map(|p| p.name()).collect();
    Ok(json!({
        "id": u.id, "tenant": u.tenant, "email": u.email, "name": u.name, "role": u.role,
        "permissions": perms, "disabled": u.disabled, "created_at_ms": u.created_at_ms,
        "password_changed_at_ms": u.password_changed_at_ms,
    }))
}

/// Lower-cased, checked email.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let e = email.trim().to_ascii_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(['/', ' ', '\\']);
    if ok { Ok(e) } else { Err(ApiError::InvalidBody("email: not a valid address".into())) }
}

/// A new user record (hashes the password).
pub fn new_user(tenant: &str, email: &str, name: &str, role: &str, pw: &str) -> Result<User, ApiError> {
    let email = normalize_email(email)?;
    if let Some(why) = password::weakness(pw, &email) {
        return Err(ApiError::InvalidBody(format!("password: {why}")));
    }
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::InvalidBody("name: 1-128 characters".into()));
    }
    let now = now_ms();
    Ok(User {
        id: uuid::Uuid::new_v4().simple().to_string(),
        tenant: tenant.into(),
        email,
        name: name.into(),
        role: role.into(),
        password_hash: password::hash(pw),
        disabled: false,
        created_at_ms: now,
        password_changed_at_ms: now,
        totp: None,
    })
}

/// Maps identity refusals to API errors.
pub fn identity_error(r: &IdentityRejection) -> ApiError {
    match r {
        IdentityRejection::OwnerExists => {
            ApiError::Forbidden("registration is closed: this cluster has an owner".into())
        }
        IdentityRejection::TenantExists => ApiError::Conflict("tenant exists".into()),
        IdentityRejection::EmailTaken => ApiError::Conflict("email already registered".into()),
        IdentityRejection::NotFound => ApiError::NotFound("not found".into()),
        IdentityRejection::RoleInUse => ApiError::Conflict("role is assigned to users or keys".into()),
        IdentityRejection::LastOwner => {
            ApiError::Conflict("the last owner of a tenant cannot be demoted or disabled".into())
        }
        IdentityRejection::CodeRejected => ApiError::Unauthorized("invalid or already used code".into()),
        IdentityRejection::ChallengeInvalid => {
            ApiError::Unauthorized("login challenge unknown or expired; log in again".into())
        }
        IdentityRejection::TokenInvalid => {
            ApiError::Unauthorized("token unknown, expired or already used".into())
        }
        IdentityRejection::TotpState => {
            ApiError::Conflict("two-factor authentication is not in the required state".into())
        }
    }
}

/// `POST /api/v1/auth/register` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Login email.
    pub email: String,
    /// Password (≥ 12 characters).
    pub password: String,
    /// Display name.
    pub name: String,
    /// Organisation name (required when creating a further tenant).
    #[serde(default)]
    pub tenant_name: Option<String>,
}

/// `POST /api/v1/auth/register`.
pub async fn register(
    State(hub): State<Hub>,
    JsonBody(b): JsonBody<RegisterBody>,
) -> Result<Response, ApiError> {
    let ident = hub.replica.reader().identity();
    let first_run = !ident.has_owner()?;
    if !first_run && !hub.replica.reader().settings(DEFAULT_TENANT)?.settings.registration_enabled {
        return Err(ApiError::Forbidden("registration is closed: ask an admin for an invitation".into()));
    }
    // a tenant name, when given, must make a slug (the first run's too, although its tenant
    // id is always `default`)
    let slug = b.tenant_name.as_deref().map(tenant_slug).transpose()?;
    let (tenant_id, tenant_name) = if first_run {
        (DEFAULT_TENANT.to_string(), b.tenant_name.clone().unwrap_or_else(|| "Default".into()))
    } else {
        let name =
            b.tenant_name.clone().ok_or_else(|| ApiError::InvalidBody("tenant_name is required".into()))?;
        (slug.expect("a slug of the name"), name)
    };
    let owner = new_user(&tenant_id, &b.email, &b.name, "owner", &b.password)?;
    let email = owner.email.clone();
    let cmd = IdentityCommand::CreateTenant {
        tenant: Tenant { id: tenant_id, name: tenant_name.clone(), created_at_ms: now_ms() },
        owner,
        only_if_no_owner: first_run,
    };
    let result = hub.replica.write(Command::Identity(cmd)).await?;
    if first_run {
        // the first owner of the cluster: no account exists yet, so there is nothing to hide
        return match result {
            CommandResult::Identity(IdentityResult::User(u)) => {
                Ok((StatusCode::CREATED, Json(user_json(&hub, &u)?)).into_response())
            }
            CommandResult::IdentityRejected(r) => Err(identity_error(&r)),
            other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
        };
    }
    // Later registrations answer alike whether the address already has an account or not,
    // and the mail says which it was: the answer must not tell anyone which emails exist.
    let url = crate::mail::public_url(&hub.config);
    let mail = match result {
        CommandResult::Identity(IdentityResult::User(_)) => crate::mail::Mail {
            to: email,
            subject: "Your monsys organisation".into(),
            body: format!(
                "Your monsys organisation {tenant_name} was created, with this address as its owner.\n\nSign in at {url}\n"
            ),
        },
        CommandResult::IdentityRejected(IdentityRejection::EmailTaken) => crate::mail::Mail {
            to: email,
            subject: "A monsys registration with your address".into(),
            body: format!(
                "Someone asked to register a new monsys organisation ({tenant_name}) with this address, which \
                 already has a monsys account. Nothing was created.\n\nIf it was you, sign in at {url} or \
                 reset your password at {url}/forgot-password.\n"
            ),
        },
        CommandResult::IdentityRejected(r) => return Err(identity_error(&r)),
        other => return Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    };
    let mailer = hub.mailer.clone();
    hub.life.spawn(async move {
        if let Err(e) = mailer.send(mail).await {
            tracing::warn!(error = %e, "registration mail not sent");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": REGISTRATION_RECEIVED }))).into_response())
}

/// The tenant id a tenant name makes: lower-case letters and digits, other runs of characters
/// as `-`, 1-48 long.
fn tenant_slug(name: &str) -> Result<String, ApiError> {
    let slug: String =
        name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let slug = slug.trim_matches('-').to_string();
    if slug.is_empty() || slug.len() > 48 {
        return Err(ApiError::InvalidBody("tenant_name: 1-48 letters or digits".into()));
    }
    Ok(slug)
}

/// The answer to every registration after the first: the mail says what happened.
pub const REGISTRATION_RECEIVED: &str =
    "registration received: a mail to this address says whether the organisation was created";

/// `POST /api/v1/auth/login` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /api/v1/auth/login`: a session token (also as an HttpOnly cookie).
pub async fn login(
    State(hub): State<Hub>,
    ClientIp(ip): ClientIp,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    ratelimit::check(&hub, &format!("login:ip:{ip}"), ratelimit::LOGIN).await?;
    let refused = || ApiError::Unauthorized("wrong email or password".into());
    let email = b.email.trim().to_ascii_lowercase();
    let user = hub.replica.reader().identity().user_by_email(&email)?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let pw = b.password.clone();
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, stored.as_deref()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = user.filter(|u| ok && !u.disabled).ok_or_else(refused)?;
    if user.totp.as_ref().is_some_and(|t| t.enabled) {
        return challenge(&hub, &user).await;
    }
    let (token, session) = new_session(&user);
    match hub
        .replica
        .write_everywhere(Command::Identity(IdentityCommand::CreateSession(session)), REVOKE_SPREAD)
        .await?
    {
        CommandResult::Identity(_) => session_response(&hub, &user, &token),
        CommandResult::IdentityRejected(_) => Err(refused()),
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// Prefix of login challenges (password verified, second factor pending).
pub const CHALLENGE_PREFIX: &str = "msc_";
/// Lifetime of a login challenge.
const CHALLENGE_LIFETIME_MS: u64 = 5 * 60 * 1000;

async fn challenge(hub: &Hub, user: &User) -> Result<Response, ApiError> {
    let token = secrets::random_token(CHALLENGE_PREFIX);
    let expires_at_ms = now_ms() + CHALLENGE_LIFETIME_MS;
    let c = monsys_raft::identity::LoginChallenge {
        sha256: secrets::sha256(&token),
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        expires_at_ms,
    };
    hub.replica
        .write_everywhere(Command::Identity(IdentityCommand::CreateChallenge(c)), REVOKE_SPREAD)
        .await?;
    Ok(Json(json!({ "totp_required": true, "challenge": token, "expires_at_ms": expires_at_ms }))
        .into_response())
}

/// A fresh session token and record for `user`.
pub fn new_session(user: &User) -> (String, Session) {
    let token = secrets::random_token(SESSION_PREFIX);
    let now = now_ms();
    let session = Session {
        sha256: secrets::sha256(&token),
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        created_at_ms: now,
        expires_at_ms: now + SESSION_LIFETIME_MS,
        idle_timeout_ms: SESSION_IDLE_MS,
        last_seen_ms: now,
    };
    (token, session)
}

/// The answer of a completed login: token in the body and as an HttpOnly cookie.
pub fn session_response(hub: &Hub, user: &User, token: &str) -> Result<Response, ApiError> {
    let body = json!({ "token": token, "expires_at_ms": now_ms() + SESSION_LIFETIME_MS, "user": user_json(hub, user)? });
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME_MS / 1000
    );
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("token is url-safe"));
    Ok(resp)
}

/// `POST /api/v1/auth/logout`: ends the session on every node.
pub async fn logout(State(replica): State<Replica>, auth: Auth) -> Result<Response, ApiError> {
    let Credential::Session(sha) = auth.credential else {
        return Err(ApiError::Forbidden(
            "logout ends a session; this request used another credential".into(),
        ));
    };
    let cmd = IdentityCommand::RevokeSession { sha256: sha, at_ms: now_ms() };
    replica.write_applied_everywhere(Command::Identity(cmd), REVOKE_SPREAD).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("static cookie"));
    Ok(resp)
}

/// `GET /api/v1/auth/me`.
pub async fn me(State(hub): State<Hub>, auth: Auth) -> Result<Response, ApiError> {
    let Some(uid) = &auth.user_id else {
        let perms: Vec<&str> = auth.permissions.iter().map(|p| p.name()).collect();
        return Ok(Json(json!({ "tenant": auth.tenant, "role": auth.role, "permissions": perms, "credential": auth.actor() })).into_response());
    };
    let u = hub
        .replica
        .reader()
        .identity()
        .user(&auth.tenant, uid)?
        .ok_or_else(|| ApiError::NotFound("user gone".into()))?;
    Ok(Json(user_json(&hub, &u)?).into_response())
}

/// `PUT /api/v1/auth/me/password` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// Current password.
    pub current_password: String,
    /// New password.
    pub new_password: String,
}

/// `PUT /api/v1/auth/me/password`: other sessions of the user end.
pub async fn change_password(
    State(hub): State<Hub>,
    auth: Auth,
    JsonBody(b): JsonBody<PasswordBody>,
) -> Result<Response, ApiError> {
    let uid =
        auth.user_id.clone().ok_or_else(|| ApiError::Forbidden("this credential has no user".into()))?;
    // guessing the current password is held to the login limit, per user (a stolen session
    // must not turn into a password oracle at the generic 1000/min)
    ratelimit::check(&hub, &format!("password:user:{}:{uid}", auth.tenant), ratelimit::LOGIN).await?;
    let user = hub
        .replica
        .reader()
        .identity()
        .user(&auth.tenant, &uid)?
        .ok_or_else(|| ApiError::NotFound("user gone".into()))?;
    let (stored, current) = (user.password_hash.clone(), b.current_password.clone());
    let ok = tokio::task::spawn_blocking(move || password::verify(&current, Some(&stored)))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !ok {
        return Err(ApiError::Unauthorized("current password is wrong".into()));
    }
    if let Some(why) = password::weakness(&b.new_password, &user.email) {
        return Err(ApiError::InvalidBody(format!("new_password: {why}")));
    }
    let keep = match auth.credential {
        Credential::Session(sha) => Some(sha),
        _ => None,
    };
    let cmd = IdentityCommand::SetPassword {
        tenant: auth.tenant.clone(),
        user_id: uid.clone(),
        password_hash: password::hash(&b.new_password),
        keep_session: keep,
        actor: uid,
        at_ms: now_ms(),
    };
    hub.replica.write_applied_everywhere(Command::Identity(cmd), REVOKE_SPREAD).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
