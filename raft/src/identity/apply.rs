//! Applying identity commands to the run's write set (`txn::Tx`; deterministic; refusals are
//! results). Scans (owners left in a tenant, users of a role) happen in [`prescan`] just
//! before the run, as in the fleet domain.

use super::keys;
use super::types::*;
use crate::audit;
use crate::txn::{R, Tx, get, put};
use crate::{CommandResult, Error, codec};

/// The system role of tenant owners.
pub const OWNER: &str = "owner";

fn rejected(r: IdentityRejection) -> CommandResult {
    CommandResult::IdentityRejected(r)
}

/// Facts found by scanning before the run.
#[derive(Debug, Default)]
pub(crate) struct Prescan {
    /// Enabled owners of the tenant concerned.
    owners_in_tenant: usize,
    /// Whether a user or key of the tenant has the role concerned.
    role_in_use: bool,
}

/// Whether [`prescan`] reads anything for `cmd` (see `fleet::needs_prescan`).
pub(crate) fn needs_prescan(cmd: &IdentityCommand) -> bool {
    matches!(cmd, IdentityCommand::UpdateUser { .. } | IdentityCommand::DeleteRole { .. })
}

/// Scans what `cmd` needs to know.
pub(crate) fn prescan(data: &sled::Tree, cmd: &IdentityCommand) -> Result<Prescan, Error> {
    let mut p = Prescan::default();
    if !needs_prescan(cmd) {
        return Ok(p);
    }
    match cmd {
        IdentityCommand::UpdateUser { tenant, .. } => {
            for kv in data.scan_prefix(keys::user_prefix(tenant)) {
                let u: User = codec::decode_value("user", &kv?.1)?;
                p.owners_in_tenant += usize::from(u.role == OWNER && !u.disabled);
            }
        }
        IdentityCommand::DeleteRole { tenant, id, .. } => {
            for kv in data.scan_prefix(keys::user_prefix(tenant)) {
                let u: User = codec::decode_value("user", &kv?.1)?;
                p.role_in_use |= &u.role == id;
            }
            for kv in data.scan_prefix(keys::api_key_id_prefix(tenant)) {
                let sha: [u8; 32] = codec::decode_value("key id", &kv?.1)?;
                if let Some(v) = data.get(keys::api_key(&sha))? {
                    let k: ApiKey = codec::decode_value("api key", &v)?;
                    p.role_in_use |= &k.role == id;
                }
            }
        }
        _ => {}
    }
    Ok(p)
}

/// Applies one identity command.
pub(crate) fn apply(tx: &Tx<'_>, cmd: &IdentityCommand, pre: &Prescan) -> R<CommandResult> {
    match cmd {
        IdentityCommand::CreateTenant { tenant, owner, only_if_no_owner } => {
            let owners: u64 = get(tx, "owners", keys::OWNERS)?.unwrap_or(0);
            if *only_if_no_owner && owners > 0 {
                return Ok(rejected(IdentityRejection::OwnerExists));
            }
            if tx.get(keys::tenant(&tenant.id))?.is_some() {
                return Ok(rejected(IdentityRejection::TenantExists));
            }
            if tx.get(keys::email(&owner.email))?.is_some() {
                return Ok(rejected(IdentityRejection::EmailTaken));
            }
            put(tx, "tenant", keys::tenant(&tenant.id), tenant)?;
            insert_user(tx, owner)?;
            audit::append(
                tx,
                &tenant.id,
                tenant.created_at_ms,
                "tenant_created",
                &owner.id,
                None,
                &serde_json::json!({ "owner": owner.email }).to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::User(Box::new(owner.clone()))))
        }
        IdentityCommand::CreateUser(u) => {
            if tx.get(keys::tenant(&u.tenant))?.is_none() {
                return Ok(rejected(IdentityRejection::NotFound));
            }
            if tx.get(keys::email(&u.email))?.is_some() {
                return Ok(rejected(IdentityRejection::EmailTaken));
            }
            insert_user(tx, u)?;
            audit::append(
                tx,
                &u.tenant,
                u.created_at_ms,
                "user_created",
                "admin",
                None,
                &serde_json::json!({ "user": u.id, "email": u.email, "role": u.role }).to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::User(Box::new(u.clone()))))
        }
        IdentityCommand::UpdateUser { tenant, user_id, name, role, disabled, actor, at_ms } => {
            let key = keys::user(tenant, user_id);
            let Some(mut u) = get::<User>(tx, "user", &key)? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            let was_active_owner = u.role == OWNER && !u.disabled;
            if let Some(n) = name {
                u.name = n.clone();
            }
            if let Some(r) = role {
                u.role = r.clone();
            }
            if let Some(d) = disabled {
                u.disabled = *d;
            }
            let is_active_owner = u.role == OWNER && !u.disabled;
            if was_active_owner && !is_active_owner && pre.owners_in_tenant <= 1 {
                return Ok(rejected(IdentityRejection::LastOwner));
            }
            adjust_owners(tx, was_active_owner, is_active_owner)?;
            if u.disabled {
                revoke_all(tx, tenant, user_id, None)?;
            }
            put(tx, "user", key, &u)?;
            let details = serde_json::json!({ "user": user_id, "role": u.role, "disabled": u.disabled });
            let event = if disabled == &Some(true) { "user_disabled" } else { "user_updated" };
            audit::append(tx, tenant, *at_ms, event, actor, None, &details.to_string())?;
            Ok(CommandResult::Identity(IdentityResult::User(Box::new(u))))
        }
        IdentityCommand::SetPassword { tenant, user_id, password_hash, keep_session, actor, at_ms } => {
            let key = keys::user(tenant, user_id);
            let Some(mut u) = get::<User>(tx, "user", &key)? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            u.password_hash = password_hash.clone();
            u.password_changed_at_ms = *at_ms;
            revoke_all(tx, tenant, user_id, *keep_session)?;
            put(tx, "user", key, &u)?;
            audit::append(
                tx,
                tenant,
                *at_ms,
                "password_changed",
                actor,
                None,
                &serde_json::json!({ "user": user_id }).to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::CreateSession(s) => {
            let Some(u) = get::<User>(tx, "user", &keys::user(&s.tenant, &s.user_id))? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            if u.disabled {
                return Ok(rejected(IdentityRejection::NotFound));
            }
            put(tx, "session", keys::session(&s.sha256), s)?;
            let index_key = keys::user_sessions(&s.tenant, &s.user_id);
            let mut list: Vec<[u8; 32]> = get(tx, "user sessions", &index_key)?.unwrap_or_default();
            // drop entries of sessions that are gone or expired, keep the index bounded
            let mut kept = Vec::with_capacity(list.len() + 1);
            for sha in list.drain(..) {
                if let Some(old) = get::<Session>(tx, "session", &keys::session(&sha))? {
                    if old.expires_at_ms > s.created_at_ms {
                        kept.push(sha);
                    } else {
                        tx.remove(keys::session(&sha))?;
                    }
                }
            }
            kept.push(s.sha256);
            while kept.len() > 100 {
                let oldest = kept.remove(0);
                tx.remove(keys::session(&oldest))?;
            }
            put(tx, "user sessions", index_key, &kept)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::RevokeSession { sha256, .. } => {
            let Some(s) = get::<Session>(tx, "session", &keys::session(sha256))? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            tx.remove(keys::session(sha256))?;
            let index_key = keys::user_sessions(&s.tenant, &s.user_id);
            let mut list: Vec<[u8; 32]> = get(tx, "user sessions", &index_key)?.unwrap_or_default();
            list.retain(|x| x != sha256);
            put(tx, "user sessions", index_key, &list)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::TouchSessions { seen } => {
            for (sha, at) in seen {
                let key = keys::session(sha);
                if let Some(mut s) = get::<Session>(tx, "session", &key)?
                    && *at > s.last_seen_ms
                {
                    s.last_seen_ms = *at;
                    put(tx, "session", key, &s)?;
                }
            }
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::CreateApiKey(k) => {
            put(tx, "api key", keys::api_key(&k.sha256), k)?;
            put(tx, "key id", keys::api_key_id(&k.tenant, &k.id), &k.sha256)?;
            let details = serde_json::json!({ "key": k.id, "role": k.role, "user": k.user_id });
            audit::append(
                tx,
                &k.tenant,
                k.created_at_ms,
                "api_key_created",
                k.user_id.as_deref().unwrap_or("admin"),
                None,
                &details.to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::RevokeApiKey { tenant, id, actor, at_ms } => {
            let id_key = keys::api_key_id(tenant, id);
            let Some(sha) = get::<[u8; 32]>(tx, "key id", &id_key)? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            tx.remove(id_key)?;
            tx.remove(keys::api_key(&sha))?;
            audit::append(
                tx,
                tenant,
                *at_ms,
                "api_key_revoked",
                actor,
                None,
                &serde_json::json!({ "key": id }).to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::SetTotpPending { tenant, user_id, secret_enc } => {
            let key = keys::user(tenant, user_id);
            let Some(mut u) = get::<User>(tx, "user", &key)? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            if u.totp.as_ref().is_some_and(|t| t.enabled) {
                return Ok(rejected(IdentityRejection::TotpState));
            }
            u.totp = Some(TotpState {
                secret_enc: secret_enc.clone(),
                enabled: false,
                last_step: 0,
                recovery: vec![],
            });
            put(tx, "user", key, &u)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::EnableTotp { tenant, user_id, step, recovery, at_ms } => {
            let key = keys::user(tenant, user_id);
            let Some(mut u) = get::<User>(tx, "user", &key)? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            let Some(t) = u.totp.as_mut().filter(|t| !t.enabled) else {
                return Ok(rejected(IdentityRejection::TotpState));
            };
            t.enabled = true;
            t.last_step = *step;
            t.recovery = recovery.clone();
            put(tx, "user", key, &u)?;
            audit::append(
                tx,
                tenant,
                *at_ms,
                "totp_enabled",
                user_id,
                None,
                &serde_json::json!({ "user": user_id }).to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::DisableTotp { tenant, user_id, factor, at_ms } => {
            let key = keys::user(tenant, user_id);
            let Some(mut u) = get::<User>(tx, "user", &key)? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            let Some(t) = u.totp.as_mut().filter(|t| t.enabled) else {
                return Ok(rejected(IdentityRejection::TotpState));
            };
            if !consume_factor(t, factor) {
                return Ok(rejected(IdentityRejection::CodeRejected));
            }
            u.totp = None;
            put(tx, "user", key, &u)?;
            audit::append(
                tx,
                tenant,
                *at_ms,
                "totp_disabled",
                user_id,
                None,
                &serde_json::json!({ "user": user_id }).to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::CreateChallenge(c) => {
            put(tx, "challenge", keys::challenge(&c.sha256), c)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::CompleteLogin { challenge, factor, session } => {
            let ckey = keys::challenge(challenge);
            let Some(c) = get::<LoginChallenge>(tx, "challenge", &ckey)? else {
                return Ok(rejected(IdentityRejection::ChallengeInvalid));
            };
            if session.created_at_ms >= c.expires_at_ms
                || c.user_id != session.user_id
                || c.tenant != session.tenant
            {
                tx.remove(ckey)?;
                return Ok(rejected(IdentityRejection::ChallengeInvalid));
            }
            let ukey = keys::user(&c.tenant, &c.user_id);
            let Some(mut u) = get::<User>(tx, "user", &ukey)? else {
                return Ok(rejected(IdentityRejection::NotFound));
            };
            let Some(t) = u.totp.as_mut().filter(|t| t.enabled) else {
                return Ok(rejected(IdentityRejection::TotpState));
            };
            if u.disabled {
                return Ok(rejected(IdentityRejection::NotFound));
            }
            if !consume_factor(t, factor) {
                let details = serde_json::json!({ "user": c.user_id });
                audit::append(
                    tx,
                    &c.tenant,
                    session.created_at_ms,
                    "totp_code_rejected",
                    &c.user_id,
                    None,
                    &details.to_string(),
                )?;
                return Ok(rejected(IdentityRejection::CodeRejected));
            }
            tx.remove(ckey)?;
            put(tx, "user", ukey, &u)?;
            apply(tx, &IdentityCommand::CreateSession(session.clone()), pre)
        }
        IdentityCommand::CreateInvitation(inv) => {
            if tx.get(keys::email(&inv.email))?.is_some() {
                return Ok(rejected(IdentityRejection::EmailTaken));
            }
            put(tx, "invitation", keys::invitation(&inv.sha256), inv)?;
            let details = serde_json::json!({ "email": inv.email, "role": inv.role });
            audit::append(
                tx,
                &inv.tenant,
                inv.created_at_ms,
                "invitation_created",
                &inv.invited_by,
                None,
                &details.to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::AcceptInvitation { sha256, user } => {
            let key = keys::invitation(sha256);
            let Some(inv) = get::<Invitation>(tx, "invitation", &key)? else {
                return Ok(rejected(IdentityRejection::TokenInvalid));
            };
            if user.created_at_ms >= inv.expires_at_ms
                || user.tenant != inv.tenant
                || user.email != inv.email
                || user.role != inv.role
            {
                return Ok(rejected(IdentityRejection::TokenInvalid));
            }
            if tx.get(keys::email(&user.email))?.is_some() {
                return Ok(rejected(IdentityRejection::EmailTaken));
            }
            tx.remove(key)?;
            insert_user(tx, user)?;
            let details = serde_json::json!({ "user": user.id, "email": user.email, "role": user.role });
            audit::append(
                tx,
                &user.tenant,
                user.created_at_ms,
                "invitation_accepted",
                &user.id,
                None,
                &details.to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::User(Box::new(user.clone()))))
        }
        IdentityCommand::CreateReset(r) => {
            put(tx, "reset token", keys::reset(&r.sha256), r)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::CreateResetExclusive(r) => {
            put(tx, "reset token", keys::reset(&r.sha256), r)?;
            put(tx, "current reset", keys::reset_current(&r.tenant, &r.user_id), &r.sha256)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::CompleteResetExclusive { sha256, password_hash, at_ms } => {
            let Some(r) = get::<ResetToken>(tx, "reset token", &keys::reset(sha256))? else {
                return Ok(rejected(IdentityRejection::TokenInvalid));
            };
            let current_key = keys::reset_current(&r.tenant, &r.user_id);
            match get::<[u8; 32]>(tx, "current reset", &current_key)? {
                Some(current) if current != *sha256 => return Ok(rejected(IdentityRejection::TokenInvalid)),
                _ => {}
            }
            let done = complete_reset(tx, sha256, password_hash, *at_ms)?;
            if matches!(done, CommandResult::Identity(_)) {
                // used: no token of this user works until a new one is issued
                put(tx, "current reset", current_key, &[0u8; 32])?;
            }
            Ok(done)
        }
        IdentityCommand::CompleteReset { sha256, password_hash, at_ms } => {
            complete_reset(tx, sha256, password_hash, *at_ms)
        }
        IdentityCommand::TouchApiKeys { seen } => {
            for (sha, at) in seen {
                let key = keys::api_key(sha);
                if let Some(mut k) = get::<ApiKey>(tx, "api key", &key)?
                    && *at > k.last_used_ms
                {
                    k.last_used_ms = *at;
                    put(tx, "api key", key, &k)?;
                }
            }
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::CreateTicket(t) => {
            put(tx, "ticket", keys::ticket(&t.sha256), t)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::ConsumeTicket { sha256, at_ms } => {
            let key = keys::ticket(sha256);
            let Some(t) = get::<Ticket>(tx, "ticket", &key)? else {
                return Ok(rejected(IdentityRejection::TokenInvalid));
            };
            if *at_ms >= t.expires_at_ms {
                return Ok(rejected(IdentityRejection::TokenInvalid));
            }
            tx.remove(key)?;
            Ok(CommandResult::Identity(IdentityResult::Ticket(Box::new(t))))
        }
        IdentityCommand::PutRole(r) => {
            put(tx, "role", keys::role(&r.tenant, &r.id), r)?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
        IdentityCommand::DeleteRole { tenant, id, actor, at_ms } => {
            if pre.role_in_use {
                return Ok(rejected(IdentityRejection::RoleInUse));
            }
            let key = keys::role(tenant, id);
            if tx.get(&key)?.is_none() {
                return Ok(rejected(IdentityRejection::NotFound));
            }
            tx.remove(key)?;
            audit::append(
                tx,
                tenant,
                *at_ms,
                "role_deleted",
                actor,
                None,
                &serde_json::json!({ "role": id }).to_string(),
            )?;
            Ok(CommandResult::Identity(IdentityResult::Done))
        }
    }
}

/// Accepts a factor at most once: a TOTP step above the last accepted one, or an unused
/// recovery code (removed).
fn consume_factor(t: &mut TotpState, factor: &SecondFactor) -> bool {
    match factor {
        SecondFactor::Step(step) if *step > t.last_step => {
            t.last_step = *step;
            true
        }
        SecondFactor::Step(_) => false,
        SecondFactor::Recovery(sha) => match t.recovery.iter().position(|r| r == sha) {
            Some(i) => {
                t.recovery.remove(i);
                true
            }
            None => false,
        },
    }
}

fn insert_user(tx: &Tx<'_>, u: &User) -> R<()> {
    put(tx, "user", keys::user(&u.tenant, &u.id), u)?;
    put(tx, "email index", keys::email(&u.email), &(u.tenant.clone(), u.id.clone()))?;
    adjust_owners(tx, false, u.role == OWNER && !u.disabled)
}

fn adjust_owners(tx: &Tx<'_>, before: bool, after: bool) -> R<()> {
    if before == after {
        return Ok(());
    }
    let n: u64 = get(tx, "owners", keys::OWNERS)?.unwrap_or(0);
    let n = if after { n + 1 } else { n.saturating_sub(1) };
    put(tx, "owners", keys::OWNERS.to_vec(), &n)
}

/// Deletes every session of a user except `keep`.
fn revoke_all(tx: &Tx<'_>, tenant: &str, user_id: &str, keep: Option<[u8; 32]>) -> R<()> {
    let index_key = keys::user_sessions(tenant, user_id);
    let list: Vec<[u8; 32]> = get(tx, "user sessions", &index_key)?.unwrap_or_default();
    let mut kept = Vec::new();
    for sha in list {
        if Some(sha) == keep {
            kept.push(sha);
        } else {
            tx.remove(keys::session(&sha))?;
        }
    }
    put(tx, "user sessions", index_key, &kept)
}

/// Consumes reset token `sha256`: the new password, every session of the user ends.
fn complete_reset(tx: &Tx<'_>, sha256: &[u8; 32], password_hash: &str, at_ms: u64) -> R<CommandResult> {
    let key = keys::reset(sha256);
    let Some(r) = get::<ResetToken>(tx, "reset token", &key)? else {
        return Ok(rejected(IdentityRejection::TokenInvalid));
    };
    if at_ms >= r.expires_at_ms {
        return Ok(rejected(IdentityRejection::TokenInvalid));
    }
    tx.remove(key)?;
    let ukey = keys::user(&r.tenant, &r.user_id);
    let Some(mut u) = get::<User>(tx, "user", &ukey)? else {
        return Ok(rejected(IdentityRejection::TokenInvalid));
    };
    u.password_hash = password_hash.to_string();
    u.password_changed_at_ms = at_ms;
    revoke_all(tx, &r.tenant, &r.user_id, None)?;
    put(tx, "user", ukey, &u)?;
    audit::append(
        tx,
        &r.tenant,
        at_ms,
        "password_reset",
        &r.user_id,
        None,
        &serde_json::json!({ "user": r.user_id }).to_string(),
    )?;
    Ok(CommandResult::Identity(IdentityResult::Done))
}
