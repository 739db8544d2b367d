//! Users, API keys and custom roles of the caller's tenant.
//!
//! Every route declares its permission; every query is scoped to the caller's tenant. Nobody
//! grants more than they hold (a role with permissions the caller lacks, or `owner` unless the
//! caller is an owner, is refused with 403). Disabling a user, resetting a password and revoking
//! a key return once every live node applied them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use monsys_raft::identity::{ApiKey, CustomRole, IdentityCommand, IdentityResult};
use monsys_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{REVOKE_SPREAD, identity_error, new_user, user_json};
use super::extract::JsonBody;
use crate::auth::permissions::{self, Permission, may_grant};
use crate::auth::principal::{API_KEY_PREFIX, role_permissions};
use crate::auth::{Auth, password};
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;
use crate::secrets;

/// 403 unless the caller may grant `role` (no one hands out more than they hold).
pub fn check_grant(hub: &Hub, auth: &Auth, role: &str) -> Result<(), ApiError> {
    let granted = role_permissions(hub, &auth.tenant, role)?;
    if permissions::system_role(role).is_none()
        && hub.replica.reader().identity().role(&auth.tenant, role)?.is_none()
    {
        return Err(ApiError::InvalidBody(format!("role: unknown role {role:?}")));
    }
    if !may_grant(&auth.permissions, &auth.role, &granted, role) {
        return Err(ApiError::Forbidden(format!("you cannot grant role {role}")));
    }
    Ok(())
}

async fn identity_write(
    hub: &Hub,
    cmd: IdentityCommand,
    everywhere: bool,
) -> Result<IdentityResult, ApiError> {
    let result = if everywhere {
        hub.replica.write_applied_everywhere(Command::Identity(cmd), REVOKE_SPREAD).await?
    } else {
        hub.replica.write(Command::Identity(cmd)).await?
    };
    match result {
        CommandResult::Identity(r) => Ok(r),
        CommandResult::IdentityRejected(r) => Err(identity_error(&r)),
        other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
    }
}

/// `GET /api/v1/users`.
pub async fn list(State(hub): State<Hub>, auth: Auth) -> Result<Response, ApiError> {
    auth.require(Permission::UsersRead)?;
    let users: Result<Vec<Value>, ApiError> =
        hub.replica.reader().identity().users(&auth.tenant)?.iter().map(|u| user_json(&hub, u)).collect();
    Ok(Json(json!({ "users": users? })).into_response())
}

/// `POST /api/v1/users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Initial password.
    pub password: String,
    /// Role id.
    pub role: String,
}

/// `POST /api/v1/users`.
pub async fn create(
    State(hub): State<Hub>,
    auth: Auth,
    JsonBody(b): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    auth.require(Permission::UsersWrite)?;
    check_grant(&hub, &auth, &b.role)?;
    let user = new_user(&auth.tenant, &b.email, &b.name, &b.role, &b.password)?;
    match identity_write(&hub, IdentityCommand::CreateUser(user), false).await? {
        IdentityResult::User(u) => Ok((StatusCode::CREATED, Json(user_json(&hub, &u)?)).into_response()),
        _ => Err(ApiError::Internal("no user returned".into())),
    }
}

/// `GET /api/v1/users/{id}`.
pub async fn get(State(hub): State<Hub>, auth: Auth, Path(id): Path<String>) -> Result<Response, ApiError> {
    auth.require(Permission::UsersRead)?;
    let u = hub
        .replica
        .reader()
        .identity()
        .user(&auth.tenant, &id)?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
    Ok(Json(user_json(&hub, &u)?).into_response())
}

/// `PATCH /api/v1/users/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New role.
    #[serde(default)]
    pub role: Option<String>,
    /// Disable or enable.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// `PATCH /api/v1/users/{id}`: disabling ends the user's sessions everywhere.
pub async fn update(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<UserPatch>,
) -> Result<Response, ApiError> {
    auth.require(Permission::UsersWrite)?;
    let target = hub
        .replica
        .reader()
        .identity()
        .user(&auth.tenant, &id)?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
    // changing someone who holds more than you is granting
    check_grant(&hub, &auth, &target.role)?;
    if let Some(r) = &b.role {
        check_grant(&hub, &auth, r)?;
    }
    if b.name.as_ref().is_some_and(|n| n.is_empty() || n.chars().count() > 128) {
        return Err(ApiError::InvalidBody("name: 1-128 characters".into()));
    }
    let cmd = IdentityCommand::UpdateUser {
        tenant: auth.tenant.clone(),
        user_id: id,
        name: b.name,
        role: b.role,
        disabled: b.disabled,
        actor: auth.actor(),
        at_ms: now_ms(),
    };
    match identity_write(&hub, cmd, true).await? {
        IdentityResult::User(u) => Ok(Json(user_json(&hub, &u)?).into_response()),
        _ => Err(ApiError::Internal("no user returned".into())),
    }
}

/// `DELETE /api/v1/users/{id}`: disables the user (soft delete: the record and its audit trail
/// stay; sessions and keys end everywhere).
pub async fn disable(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    update(State(hub), auth, Path(id), JsonBody(UserPatch { name: None, role: None, disabled: Some(true) }))
        .await
}

/// `PUT /api/v1/users/{id}/password` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// The new password.
    pub new_password: String,
}

/// `PUT /api/v1/users/{id}/password`: admin reset; the user's sessions end everywhere.
pub async fn reset_password(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ResetBody>,
) -> Result<Response, ApiError> {
    auth.require(Permission::UsersWrite)?;
    let target = hub
        .replica
        .reader()
        .identity()
        .user(&auth.tenant, &id)?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
    check_grant(&hub, &auth, &target.role)?;
    if let Some(why) = password::weakness(&b.new_password, &target.email) {
        return Err(ApiError::InvalidBody(format!("new_password: {why}")));
    }
    let cmd = IdentityCommand::SetPassword {
        tenant: auth.tenant.clone(),
        user_id: id,
        password_hash: password::hash(&b.new_password),
        keep_session: None,
        actor: auth.actor(),
        at_ms: now_ms(),
    };
    identity_write(&hub, cmd, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "id": k.id, "name": k.name, "role": k.role, "user_id": k.user_id, "created_at_ms": k.created_at_ms,
        "expires_at_ms": k.expires_at_ms, "last_used_ms": k.last_used_ms,
    })
}

/// `GET /api/v1/api-keys`: the tenant's keys (users without `users:read` see their own).
pub async fn list_keys(State(hub): State<Hub>, auth: Auth) -> Result<Response, ApiError> {
    let all = auth.require(Permission::UsersRead).is_ok();
    let keys: Vec<Value> = hub
        .replica
        .reader()
        .identity()
        .api_keys(&auth.tenant)?
        .iter()
        .filter(|k| all || (k.user_id.is_some() && k.user_id == auth.user_id))
        .map(key_json)
        .collect();
    Ok(Json(json!({ "api_keys": keys })).into_response())
}

/// `POST /api/v1/api-keys` body.
/// Lifetimes an API key may be given: a minute to ten years (a larger value would overflow the
/// expiry time, and 0 would make a key that is dead on arrival).
const API_KEY_LIFETIME_SECS: std::ops::RangeInclusive<u64> = 60..=10 * 365 * 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Display name.
    pub name: String,
    /// Role (default: the caller's role).
    #[serde(default)]
    pub role: Option<String>,
    /// Lifetime in seconds (none: no expiry).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// A tenant key, not tied to the caller (needs `users:write`).
    #[serde(default)]
    pub tenant_key: bool,
}

/// `POST /api/v1/api-keys`: the key is in this answer only.
pub async fn create_key(
    State(hub): State<Hub>,
    auth: Auth,
    JsonBody(b): JsonBody<NewKey>,
) -> Result<Response, ApiError> {
    if b.tenant_key || auth.user_id.is_none() {
        auth.require(Permission::UsersWrite)?;
    }
    if b.name.is_empty() || b.name.chars().count() > 128 {
        return Err(ApiError::InvalidBody("name: 1-128 characters".into()));
    }
    if b.expires_in_secs.is_some_and(|s| !API_KEY_LIFETIME_SECS.contains(&s)) {
        return Err(ApiError::InvalidBody(format!(
            "expires_in_secs: {}..={} (omit it for a key that does not expire)",
            API_KEY_LIFETIME_SECS.start(),
            API_KEY_LIFETIME_SECS.end()
        )));
    }
    let role = b.role.unwrap_or_else(|| auth.role.clone());
    check_grant(&hub, &auth, &role)?;
    let token = secrets::random_token(API_KEY_PREFIX);
    let now = now_ms();
    let key = ApiKey {
        id: uuid::Uuid::new_v4().simple().to_string(),
        sha256: secrets::sha256(&token),
        tenant: auth.tenant.clone(),
        user_id: if b.tenant_key { None } else { auth.user_id.clone() },
        name: b.name,
        role,
        created_at_ms: now,
        expires_at_ms: b.expires_in_secs.map(|s| now + s * 1000),
        last_used_ms: 0,
    };
    let mut body = key_json(&key);
    hub.replica
        .write_everywhere(Command::Identity(IdentityCommand::CreateApiKey(key)), REVOKE_SPREAD)
        .await?;
    body["key"] = json!(token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /api/v1/api-keys/{id}`: dead on every node once this answers.
pub async fn revoke_key(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = hub.replica.reader().identity().api_keys(&auth.tenant)?.into_iter().find(|k| k.id == id);
    let key = key.ok_or_else(|| ApiError::NotFound(format!("no api key {id}")))?;
    if key.user_id.is_none() || key.user_id != auth.user_id {
        auth.require(Permission::UsersWrite)?;
    }
    let cmd = IdentityCommand::RevokeApiKey {
        tenant: auth.tenant.clone(),
        id,
        actor: auth.actor(),
        at_ms: now_ms(),
    };
    identity_write(&hub, cmd, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/roles`: system and custom roles with their permissions.
pub async fn list_roles(State(replica): State<Replica>, auth: Auth) -> Result<Response, ApiError> {
    auth.require(Permission::UsersRead)?;
    let mut roles: Vec<Value> = permissions::SYSTEM_ROLES
        .iter()
        .map(|r| {
            let perms: Vec<&str> =
                permissions::system_role(r).unwrap_or_default().into_iter().map(|p| p.name()).collect();
            json!({ "id": r, "name": r, "permissions": perms, "is_system": true })
        })
        .collect();
    for r in replica.reader().identity().roles(&auth.tenant)? {
        roles.push(json!({ "id": r.id, "name": r.name, "permissions": r.permissions, "is_system": false }));
    }
    Ok(Json(json!({ "roles": roles })).into_response())
}

/// `PUT /api/v1/roles/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// Display name.
    pub name: String,
    /// Permission strings, e.g. `alerts:read`.
    pub permissions: Vec<String>,
}

/// `PUT /api/v1/roles/{id}`: creates or replaces a custom role.
pub async fn put_role(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<RoleBody>,
) -> Result<Response, ApiError> {
    auth.require(Permission::UsersWrite)?;
    if permissions::system_role(&id).is_some() {
        return Err(ApiError::Conflict(format!("{id} is a system role")));
    }
    if id.is_empty()
        || id.len() > 64
        || !id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    {
        return Err(ApiError::InvalidBody("role id: 1-64 characters of [a-z0-9_-]".into()));
    }
    let mut set = std::collections::BTreeSet::new();
    for p in &b.permissions {
        set.insert(
            Permission::parse(p)
                .ok_or_else(|| ApiError::InvalidBody(format!("permissions: unknown permission {p:?}")))?,
        );
    }
    if set.contains(&Permission::ClusterWrite) || !set.is_subset(&auth.permissions) {
        return Err(ApiError::Forbidden("a role cannot hold permissions you lack".into()));
    }
    let role = CustomRole {
        id: id.clone(),
        tenant: auth.tenant.clone(),
        name: b.name,
        permissions: set.iter().map(|p| p.name().to_string()).collect(),
    };
    identity_write(&hub, IdentityCommand::PutRole(role.clone()), true).await?;
    Ok(Json(json!({ "id": role.id, "name": role.name, "permissions": role.permissions, "is_system": false }))
        .into_response())
}

/// `DELETE /api/v1/roles/{id}`: refused while a user or key has the role.
pub async fn delete_role(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require(Permission::UsersWrite)?;
    if permissions::system_role(&id).is_some() {
        return Err(ApiError::Conflict(format!("{id} is a system role")));
    }
    let cmd =
        IdentityCommand::DeleteRole { tenant: auth.tenant.clone(), id, actor: auth.actor(), at_ms: now_ms() };
    identity_write(&hub, cmd, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
