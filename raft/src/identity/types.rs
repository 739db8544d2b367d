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
    /// Stores a new, not yet verified TOTP secret (replaces an unverified one).
    SetTotpPending {
        /// Tenant.
        tenant: String,
        /// User id.
        user_id: String,
        /// Encrypted secret.
        secret_enc: Vec<u8>,
    },
    /// Enables the pending TOTP after a valid code; stores the recovery codes.
    EnableTotp {
        /// Tenant.
        tenant: String,
        /// User id.
        user_id: String,
        /// The step of the verifying code.
        step: u64,
        /// SHA-256 of the recovery codes.
        recovery: Vec<[u8; 32]>,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Disables TOTP after a valid second factor.
    DisableTotp {
        /// Tenant.
        tenant: String,
        /// User id.
        user_id: String,
        /// The factor presented.
        factor: SecondFactor,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Stores a login challenge (password verified, second factor pending).
    CreateChallenge(LoginChallenge),
    /// Completes a challenged login: consumes the challenge and the factor, creates the session.
    CompleteLogin {
        /// SHA-256 of the challenge token.
        challenge: [u8; 32],
        /// The factor presented.
        factor: SecondFactor,
        /// The session to create.
        session: Session,
    },
    /// Stores an invitation (refused if the email has an account).
    CreateInvitation(Invitation),
    /// Consumes an invitation and creates its user (email and role from the invitation).
    AcceptInvitation {
        /// SHA-256 of the invitation token.
        sha256: [u8; 32],
        /// The new user (`tenant`, `email`, `role` must match the invitation).
        user: User,
    },
    /// Stores a password-reset token.
    CreateReset(ResetToken),
    /// Consumes a reset token: new password, every session of the user ends.
    CompleteReset {
        /// SHA-256 of the reset token.
        sha256: [u8; 32],
        /// New argon2id PHC string.
        password_hash: String,
        /// Proposer's clock.
        at_ms: u64,
    },
    /// Records that API keys were used (`last_used_ms`), batched by the node that saw them.
    TouchApiKeys {
        /// Key hashes and their last use.
        seen: Vec<([u8; 32], u64)>,
    },
    /// Stores a WebSocket ticket.
    CreateTicket(Ticket),
    /// Consumes a WebSocket ticket (single use); answers the ticket.
    ConsumeTicket {
        /// SHA-256 of the ticket.
        sha256: [u8; 32],
        /// Proposer's clock.
        at_ms: u64,
    },
    /// [`IdentityCommand::CreateReset`] that also makes this token the user's only live one:
    /// older unused tokens of the user stop working (log feature `reset-exclusive`).
    CreateResetExclusive(ResetToken),
    /// [`IdentityCommand::CompleteReset`] that accepts only the user's newest token and leaves
    /// the user with none (log feature `reset-exclusive`). A token issued before the feature
    /// (no record of the newest one) is accepted as before.
    CompleteResetExclusive {
        /// SHA-256 of the reset token.
        sha256: [u8; 32],
        /// The new password's hash.
        password_hash: String,
        /// Proposer's clock.
        at_ms: u64,
    },
}

/// A single-use, short-lived WebSocket ticket (browsers cannot set headers on a WebSocket, and
/// secrets must not sit in URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// SHA-256 of the ticket.
    pub sha256: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// User, if any.
    pub user_id: Option<String>,
    /// Role the connection acts with.
    pub role: String,
    /// Expiry.
    pub expires_at_ms: u64,
}

/// An invitation to join a tenant (token stored as SHA-256; single use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// Invited email.
    pub email: String,
    /// Role the user will have.
    pub role: String,
    /// Who invited.
    pub invited_by: String,
    /// Creation time.
    pub created_at_ms: u64,
    /// Expiry.
    pub expires_at_ms: u64,
}

/// A password-reset token (stored as SHA-256; single use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetToken {
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// User id.
    pub user_id: String,
    /// Expiry.
    pub expires_at_ms: u64,
}

/// What an identity command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityResult {
    /// The user after the change.
    User(Box<User>),
    /// Nothing to report.
    Done,
    /// A consumed ticket.
    Ticket(Box<Ticket>),
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
    /// The code's time step (or the recovery code) was used already, or is unknown.
    CodeRejected,
    /// The challenge is unknown or expired.
    ChallengeInvalid,
    /// No TOTP is pending, or it is already enabled / not enabled.
    TotpState,
    /// An invitation or reset token is unknown, expired or used.
    TokenInvalid,
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
    /// Second factor, once set up.
    pub totp: Option<TotpState>,
}

/// A user's TOTP (RFC 6238) state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpState {
    /// The shared secret, AES-256-GCM encrypted under a key derived from the cluster secret
    /// (nonce ‖ ciphertext).
    pub secret_enc: Vec<u8>,
    /// Verified and required at login.
    pub enabled: bool,
    /// Highest time step accepted so far; a code of this step or earlier is never accepted again.
    pub last_step: u64,
    /// SHA-256 of the unused recovery codes.
    pub recovery: Vec<[u8; 32]>,
}

/// A login waiting for its second factor (token stored as SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginChallenge {
    /// SHA-256 of the challenge token.
    pub sha256: [u8; 32],
    /// Tenant.
    pub tenant: String,
    /// User id.
    pub user_id: String,
    /// Expiry.
    pub expires_at_ms: u64,
}

/// The second factor presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecondFactor {
    /// A TOTP code valid for this time step (checked by the proposer).
    Step(u64),
    /// A recovery code (its SHA-256).
    Recovery([u8; 32]),
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
