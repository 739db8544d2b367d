//! Persisted records and commands of the identity domain: tenants, users, sessions, API keys,
//! custom roles. Log-format rules of `command` apply (fields fixed, variants appended).
//!
//! Secrets are never stored: passwords as argon2id PHC strings (hashed by the proposer, so
//! every replica stores the same string), session and API tokens as SHA-256.

use serde::{Deserialize, Serialize};

/// An identity-domain state change (a [`crate::Command::Identity`] payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityCommand {
    /// Creates a tenant and its Owner. With `only_if_no_owner`, refused once any owner exists
    /// anywhere (first-run bootstrap).
    CreateTenant {
        /// The tenant.
        tenant: Tenant,
        /// Its first user (role Owner).
        owner: User,
        /// First-run bootstrap: refuse if any owner exists.
        only_if_no_owner: bool,
    },
    /// Creates a user in an existing tenant.
    CreateUser(User),
    /// Changes a user's name, role or disabled flag; disabling revokes every session.
    UpdateUser {
        /// Tenant.
        tenant: String,
        /// User id.
        user_id: String,
        /// New display name.
        name: Option<String>,
        /// New role.
        role: Option<String>,
        /// Disable (true) or enable (false).
        disabled: Option<bool>,
        /// Who.
        actor: String,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Replaces a user's password hash; revokes every session but `keep_session`.
    SetPassword {
        /// Tenant.
        tenant: String,
        /// User id.
        user_id: String,
        /// New argon2id PHC string.
        password_hash: String,
        /// SHA-256 of a session to keep (the one changing its own password).
        keep_session: Option<[u8; 32]>,
        /// Who.
        actor: String,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Stores a new session.
    CreateSession(Session),
    /// Deletes a session (logout).
    RevokeSession {
        /// SHA-256 of the session token.
        sha256: [u8; 32],
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Records that sessions were used (idle timeout), batched by the node that saw them.
    TouchSessions {
        /// Session hashes and their last use.
        seen: Vec<([u8; 32], u64)>,
    },
    /// Stores a new API key.
    CreateApiKey(ApiKey),
    /// Revokes an API key.
    RevokeApiKey {
        /// Tenant.
        tenant: String,
        /// Key id.
        id: String,
        /// Who.
        actor: String,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Creates or replaces a custom role.
    PutRole(CustomRole),
    /// Deletes a custom role (refused while a user or key has it).
    DeleteRole {
        /// Tenant.
        tenant: String,
        /// Role id.
        id: String,
        /// Who.
        actor: String,
        /// Proposer's clock.
        at_ms: u64,
    },
}

/// What an identity command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityResult {
    /// The user after the change.
    User(User),
    /// Nothing to report.
    Done,
}

/// Why an identity command was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityRejection {
    /// Bootstrap refused: an owner exists already.
    OwnerExists,
    /// The tenant id is taken.
    TenantExists,
    /// The email is taken.
    EmailTaken,
    /// No such tenant, user, key or role.
    NotFound,
    /// The role is in use or is a system role.
    RoleInUse,
    /// The last enabled Owner of a tenant cannot be disabled or demoted.
    LastOwner,
}

/// A tenant (organisation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id (slug, `[a-z0-9-]`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at_ms: u64,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Email (lower-case; unique across the cluster; the login name).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role id: a system role (`owner`, `admin`, `operator`, `analyst`, `viewer`) or a custom one.
    pub role: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Disabled users cannot log in; their sessions and keys stop working.
    pub disabled: bool,
    /// Creation time.
    pub created_at_ms: u64,
    /// Last password change.
    pub password_changed_at_ms: u64,
}

/// A login session (token stored as SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// User id.
    pub user_id: String,
    /// Creation time.
    pub created_at_ms: u64,
    /// Absolute expiry.
    pub expires_at_ms: u64,
    /// Idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// Last recorded use (batched; may trail by the touch interval).
    pub last_seen_ms: u64,
}

/// An API key (token stored as SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id.
    pub id: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// Owning user (a tenant key when `None`).
    pub user_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Role the key acts with.
    pub role: String,
    /// Creation time.
    pub created_at_ms: u64,
    /// Expiry, if any.
    pub expires_at_ms: Option<u64>,
    /// Last recorded use.
    pub last_used_ms: u64,
}

/// A tenant's custom role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRole {
    /// Id (`[a-z0-9_-]`, not a system role id).
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// Permission strings (validated by the hub).
    pub permissions: Vec<String>,
}
