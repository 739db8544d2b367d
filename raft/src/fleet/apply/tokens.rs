//! Enrollment tokens: created by an admin, consumed by `agents::register`, revoked.

use super::rejected;
use crate::fleet::keys;
use crate::fleet::types::*;
use crate::txn::{R, Tx, get, put};
use crate::{CommandResult, audit};

/// `CreateEnrollmentToken`: stores the token and its hash index. Its audit event names
/// "admin" and carries the bare id as details (which is not JSON, so the API shows `null`);
/// kept as is, because every replica must apply an entry the same way.
pub(super) fn create(tx: &Tx<'_>, t: &EnrollmentToken) -> R<CommandResult> {
    store(tx, t)?;
    audit::append(tx, &t.tenant, t.created_at_ms, "enrollment_token_created", "admin", None, &t.id)?;
    Ok(CommandResult::Ok)
}

/// `CreateEnrollmentTokenBy`: as [`create`], with the creator and `{"id","name"}` as details.
pub(super) fn create_by(tx: &Tx<'_>, t: &EnrollmentToken, actor: &str) -> R<CommandResult> {
    store(tx, t)?;
    let details = serde_json::json!({ "id": t.id, "name": t.name }).to_string();
    audit::append(tx, &t.tenant, t.created_at_ms, "enrollment_token_created", actor, None, &details)?;
    Ok(CommandResult::Ok)
}

fn store(tx: &Tx<'_>, t: &EnrollmentToken) -> R<()> {
    put(tx, "enrollment token", keys::enrollment(&t.tenant, &t.id), t)?;
    put(tx, "enrollment index", keys::enrollment_hash(&t.sha256), &(t.tenant.clone(), t.id.clone()))
}

/// `RevokeEnrollmentToken`: marks the token revoked (registrations with it are refused).
pub(super) fn revoke(tx: &Tx<'_>, tenant: &str, id: &str) -> R<CommandResult> {
    let key = keys::enrollment(tenant, id);
    let Some(mut t) = get::<EnrollmentToken>(tx, "enrollment token", &key)? else {
        return Ok(rejected(FleetRejection::NotFound));
    };
    t.revoked = true;
    put(tx, "enrollment token", key, &t)?;
    Ok(CommandResult::Ok)
}
