//! Agents: registration (with an enrollment token; a known machine re-registers and keeps its
//! id and pinned key), deletion with everything stored for the agent, token rotation, clearing
//! the pinned signing key. Each writes an audit event.

use super::alerts::{open_alerts, resolve};
use super::{Prescan, ok, rejected, uncounted};
use crate::fleet::keys;
use crate::fleet::telemetry::{self, ByteDeltas, HeadsTx, Removal};
use crate::fleet::types::*;
use crate::txn::{R, Tx, get, put};
use crate::{CommandResult, Error, audit};

/// What `DeleteAgent` removes by range: the agent's seq window and telemetry (both layouts).
pub(super) fn prescan_delete(
    data: &sled::Tree,
    a: &AgentAction,
    found: &mut Vec<Removal>,
) -> Result<(), Error> {
    let (t, id) = (&a.tenant, &a.agent_id);
    let mut prefixes = telemetry::legacy_prefixes(t, id);
    prefixes.push(keys::seq_prefix(t, id));
    for p in prefixes {
        for kv in data.scan_prefix(p) {
            found.push(uncounted(kv?.0));
        }
    }
    telemetry::scan_agent(data, t, id, found)?;
    Ok(())
}

/// `DeleteAgent`: removes the agent, its indexes, telemetry (from the prescan) and head,
/// resolving its open alerts.
pub(super) fn delete(tx: &Tx<'_>, a: &AgentAction, pre: &Prescan, heads: &HeadsTx<'_>) -> R<CommandResult> {
    let Some(rec) = agent(tx, &a.tenant, &a.agent_id)? else {
        return Ok(rejected(FleetRejection::UnknownAgent));
    };
    let mut deltas = ByteDeltas::default();
    telemetry::remove(tx, &pre.removals, &mut deltas)?;
    telemetry::drop_head(heads, &a.tenant, &a.agent_id);
    deltas.write(tx)?;
    let mut open = open_alerts(tx, &a.tenant, &a.agent_id)?;
    for key in open.keys().cloned().collect::<Vec<_>>() {
        resolve(tx, &a.tenant, &mut open, &key, &a.actor, a.at_ms)?;
    }
    for k in [
        keys::agent(&a.tenant, &a.agent_id),
        keys::agent_token(&rec.token_sha256),
        keys::machine(&a.tenant, &rec.machine_id),
        keys::inventory(&a.tenant, &a.agent_id),
        keys::processes(&a.tenant, &a.agent_id),
        keys::open_alerts(&a.tenant, &a.agent_id),
    ] {
        tx.remove(k)?;
    }
    let details = serde_json::json!({ "hostname": rec.hostname, "machine_id": rec.machine_id });
    audit::append(
        tx,
        &a.tenant,
        a.at_ms,
        "agent_deleted",
        &a.actor,
        Some(&a.agent_id),
        &details.to_string(),
    )?;
    Ok(CommandResult::Ok)
}

/// `RotateToken`: replaces the agent's token (and its index entry).
pub(super) fn rotate_token(tx: &Tx<'_>, a: &AgentAction, token_sha256: &[u8; 32]) -> R<CommandResult> {
    let Some(mut rec) = agent(tx, &a.tenant, &a.agent_id)? else {
        return Ok(rejected(FleetRejection::UnknownAgent));
    };
    tx.remove(keys::agent_token(&rec.token_sha256))?;
    rec.token_sha256 = *token_sha256;
    put(tx, "agent token index", keys::agent_token(token_sha256), &(a.tenant.clone(), a.agent_id.clone()))?;
    put(tx, "agent", keys::agent(&a.tenant, &a.agent_id), &rec)?;
    audit::append(tx, &a.tenant, a.at_ms, "agent_token_rotated", &a.actor, Some(&a.agent_id), "{}")?;
    Ok(CommandResult::Ok)
}

/// `ClearSigningKey`: forgets the pinned key (the next registration may pin a new one).
pub(super) fn clear_signing_key(tx: &Tx<'_>, a: &AgentAction) -> R<CommandResult> {
    let Some(mut rec) = agent(tx, &a.tenant, &a.agent_id)? else {
        return Ok(rejected(FleetRejection::UnknownAgent));
    };
    let had = rec.pubkey.take().is_some();
    put(tx, "agent", keys::agent(&a.tenant, &a.agent_id), &rec)?;
    let details = serde_json::json!({ "had_pinned_key": had });
    audit::append(
        tx,
        &a.tenant,
        a.at_ms,
        "agent_signing_key_cleared",
        &a.actor,
        Some(&a.agent_id),
        &details.to_string(),
    )?;
    Ok(CommandResult::Ok)
}

pub(super) fn agent(tx: &Tx<'_>, tenant: &str, id: &str) -> R<Option<AgentRecord>> {
    get(tx, "agent", &keys::agent(tenant, id))
}

pub(super) fn register(tx: &Tx<'_>, r: &Registration) -> R<CommandResult> {
    let Some((tenant, token_id)) =
        get::<(String, String)>(tx, "enrollment index", &keys::enrollment_hash(&r.enrollment_sha256))?
    else {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    };
    let token_key = keys::enrollment(&tenant, &token_id);
    let Some(mut token) = get::<EnrollmentToken>(tx, "enrollment token", &token_key)? else {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    };
    if token.revoked || token.expires_at_ms.is_some_and(|e| r.at_ms >= e) {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    }
    let machine_key = keys::machine(&tenant, &r.machine_id);
    if let Some(id) = get::<String>(tx, "machine index", &machine_key)? {
        let Some(mut rec) = agent(tx, &tenant, &id)? else {
            return Err(Error::Corrupt(format!("machine index points at missing agent {id}")));
        };
        if let Some(pinned) = rec.pubkey
            && r.pubkey != Some(pinned)
        {
            let details = serde_json::json!({ "machine_id": r.machine_id, "hostname": r.hostname });
            audit::append(
                tx,
                &tenant,
                r.at_ms,
                "agent_register_key_mismatch",
                &id,
                Some(&id),
                &details.to_string(),
            )?;
            return Ok(rejected(FleetRejection::SigningKeyMismatch));
        }
        tx.remove(keys::agent_token(&rec.token_sha256))?;
        let newly_pinned = rec.pubkey.is_none() && r.pubkey.is_some();
        rec.pubkey = rec.pubkey.or(r.pubkey);
        rec.token_sha256 = r.token_sha256;
        rec.hostname = r.hostname.clone();
        rec.os = r.os.clone();
        rec.arch = r.arch.clone();
        note_version(tx, &mut rec, &r.agent_version, r.at_ms)?;
        put(tx, "agent token index", keys::agent_token(&r.token_sha256), &(tenant.clone(), id.clone()))?;
        let pinned = rec.pubkey.is_some();
        put(tx, "agent", keys::agent(&tenant, &id), &rec)?;
        let details = serde_json::json!({ "hostname": r.hostname, "newly_pinned": newly_pinned });
        audit::append(tx, &tenant, r.at_ms, "agent_reregistered", &id, Some(&id), &details.to_string())?;
        return Ok(ok(FleetResult::Registered { agent_id: id, pinned, created: false }));
    }
    if token.max_uses.is_some_and(|m| token.uses >= m) {
        return Ok(rejected(FleetRejection::EnrollmentRefused));
    }
    token.uses += 1;
    put(tx, "enrollment token", token_key, &token)?;
    let id = r.new_agent_id.clone();
    let rec = AgentRecord {
        id: id.clone(),
        tenant: tenant.clone(),
        hostname: r.hostname.clone(),
        machine_id: r.machine_id.clone(),
        os: r.os.clone(),
        arch: r.arch.clone(),
        agent_version: r.agent_version.clone(),
        pubkey: r.pubkey,
        token_sha256: r.token_sha256,
        registered_at_ms: r.at_ms,
        last_seen_ms: r.at_ms,
        last_seq: 0,
        last_collected_at_ms: 0,
        batches: 0,
        samples: 0,
        last_unsigned_audit_ms: 0,
        clock_offset_ms: 0,
    };
    put(tx, "agent", keys::agent(&tenant, &id), &rec)?;
    put(tx, "machine index", machine_key, &id)?;
    put(tx, "agent token index", keys::agent_token(&r.token_sha256), &(tenant.clone(), id.clone()))?;
    let details = serde_json::json!({
        "hostname": r.hostname, "machine_id": r.machine_id, "enrollment_token": token_id,
        "pinned": r.pubkey.is_some(),
    });
    audit::append(tx, &tenant, r.at_ms, "agent_registered", &id, Some(&id), &details.to_string())?;
    Ok(ok(FleetResult::Registered { agent_id: id, pinned: r.pubkey.is_some(), created: true }))
}

pub(super) fn note_version(tx: &Tx<'_>, rec: &mut AgentRecord, version: &str, at_ms: u64) -> R<()> {
    if rec.agent_version != version {
        let details = serde_json::json!({ "from": rec.agent_version, "to": version });
        audit::append(
            tx,
            &rec.tenant,
            at_ms,
            "agent_version_seen",
            &rec.id,
            Some(&rec.id),
            &details.to_string(),
        )?;
        rec.agent_version = version.to_string();
    }
    Ok(())
}
