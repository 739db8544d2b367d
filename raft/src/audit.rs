//! The tenant audit log, writing side: every domain's apply (fleet, identity, settings) appends
//! its events here, in the same write set as the change they record.
//!
//! The log is a hash chain per tenant: each [`AuditEvent`] carries the hash of the one before
//! it, and the head (`seq`, `hash` of the newest event) is kept next to the events, so an append
//! reads one key. Keys are in the fleet layout (`fleet::keys::audit`, `audit_head`); reading and
//! verifying the chain is `fleet::FleetReader::{audit, verify_audit}`.
//!
//! Events are written only by `apply`, so `at_ms` is the proposer's time, and an event's
//! `details` is a JSON string chosen by the caller (deterministic, as everything applied).

use crate::fleet::AuditEvent;
use crate::fleet::keys;
use crate::txn::{R, Tx, get, put};

/// Appends an event to the tenant's hash-chained audit log.
pub(crate) fn append(
    tx: &Tx<'_>,
    tenant: &str,
    at_ms: u64,
    event_type: &str,
    actor: &str,
    agent_id: Option<&str>,
    details: &str,
) -> R<()> {
    let head_key = keys::audit_head(tenant);
    let (prev_seq, prev_hash) = get::<(u64, [u8; 32])>(tx, "audit head", &head_key)?.unwrap_or((0, [0; 32]));
    let mut event = AuditEvent {
        seq: prev_seq + 1,
        at_ms,
        event_type: event_type.to_string(),
        actor: actor.to_string(),
        agent_id: agent_id.map(str::to_string),
        details: details.to_string(),
        prev_hash,
        hash: [0; 32],
    };
    event.hash = event.compute_hash();
    put(tx, "audit event", keys::audit(tenant, event.seq), &event)?;
    put(tx, "audit head", head_key, &(event.seq, event.hash))?;
    Ok(())
}
