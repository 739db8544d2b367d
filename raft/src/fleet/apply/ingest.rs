//! Ingest: a group of telemetry batches and heartbeats from many agents, in one entry.
//!
//! Exactly-once ingest: an agent's batch is stored only if its `seq` is above the highest stored
//! one. A lower `seq` is looked up in the agent's seq window (the last [`SEQ_WINDOW`] seqs with
//! their body hash): same body within [`DUPLICATE_WINDOW_MS`] → `Duplicate` (a retry after a lost
//! ack), other body → `SeqConflict`, otherwise → `Replay`. Both refusals write an audit event.
//!
//! A stored batch also carries the agent-side alerts and the rule firings the owner computed;
//! they are applied here (`alerts`).

use super::agents::{agent, note_version};
use super::alerts::{Firing, fire, open_alerts, resolve};
use super::ok;
use crate::fleet::keys;
use crate::fleet::telemetry::{self, ByteDeltas, HeadsTx};
use crate::fleet::types::*;
use crate::txn::{R, Tx, get, put};
use crate::{CommandResult, audit};

/// Seqs remembered per agent for duplicate detection.
pub const SEQ_WINDOW: u64 = 1024;
/// How long after its commit a batch's retry is still answered as a duplicate.
pub const DUPLICATE_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// At most one `unsigned_payload` audit event per agent per this interval.
const UNSIGNED_AUDIT_INTERVAL_MS: u64 = 3600 * 1000;

/// `Group`: each item's outcome, in order; the byte counters written once for the group.
pub(super) fn group(tx: &Tx<'_>, heads: &HeadsTx<'_>, items: &[GroupItem]) -> R<CommandResult> {
    let mut outcomes = Vec::with_capacity(items.len());
    let mut deltas = ByteDeltas::default();
    for item in items.iter() {
        outcomes.push(match item {
            GroupItem::Batch(b) => ingest(tx, heads, b, &mut deltas)?,
            GroupItem::Heartbeat(h) => heartbeat(tx, h)?,
        });
    }
    deltas.write(tx)?;
    Ok(ok(FleetResult::Group(outcomes)))
}

fn ingest(tx: &Tx<'_>, heads: &HeadsTx<'_>, b: &IngestItem, deltas: &mut ByteDeltas) -> R<ItemOutcome> {
    let Some(mut rec) = agent(tx, &b.tenant, &b.agent_id)? else {
        return Ok(ItemOutcome::UnknownAgent);
    };
    if let Some(pinned) = rec.pubkey
        && b.verified_with != Some(pinned)
    {
        return Ok(ItemOutcome::KeyChanged);
    }
    let last_seq = rec.last_seq;
    if b.seq <= last_seq {
        let seen = get::<([u8; 32], u64)>(tx, "seq window", &keys::seq(&b.tenant, &b.agent_id, b.seq))?;
        let (outcome, event) = match seen {
            Some((hash, at))
                if hash == b.body_sha256 && b.received_at_ms.saturating_sub(at) <= DUPLICATE_WINDOW_MS =>
            {
                return Ok(ItemOutcome::Duplicate { last_seq });
            }
            Some((hash, _)) if hash != b.body_sha256 => {
                (ItemOutcome::SeqConflict { last_seq }, "ingest_seq_conflict")
            }
            _ => (ItemOutcome::Replay { last_seq }, "ingest_replay_rejected"),
        };
        let details =
            serde_json::json!({ "seq": b.seq, "last_seq": last_seq, "collected_at_ms": b.collected_at_ms });
        audit::append(
            tx,
            &b.tenant,
            b.received_at_ms,
            event,
            &b.agent_id,
            Some(&b.agent_id),
            &details.to_string(),
        )?;
        return Ok(outcome);
    }

    // store
    if !b.samples.is_empty() {
        telemetry::append(tx, heads, b, deltas)?;
    }
    put(tx, "seq window", keys::seq(&b.tenant, &b.agent_id, b.seq), &(b.body_sha256, b.received_at_ms))?;
    if b.seq > SEQ_WINDOW {
        tx.remove(keys::seq(&b.tenant, &b.agent_id, b.seq - SEQ_WINDOW))?;
    }
    if let Some(json) = &b.inventory_json {
        put(tx, "inventory", keys::inventory(&b.tenant, &b.agent_id), &(b.collected_at_ms, json))?;
    }
    if let Some(json) = &b.processes_json {
        put(tx, "processes", keys::processes(&b.tenant, &b.agent_id), &(b.collected_at_ms, json))?;
    }
    let audit_due = rec.last_unsigned_audit_ms == 0
        || b.received_at_ms.saturating_sub(rec.last_unsigned_audit_ms) >= UNSIGNED_AUDIT_INTERVAL_MS;
    if b.verified_with.is_none() && audit_due {
        let details = serde_json::json!({ "seq": b.seq, "note": "agent has no pinned signing key" });
        audit::append(
            tx,
            &b.tenant,
            b.received_at_ms,
            "unsigned_payload",
            &b.agent_id,
            Some(&b.agent_id),
            &details.to_string(),
        )?;
        rec.last_unsigned_audit_ms = b.received_at_ms;
    }

    // alerts: agent-side (present = firing, absent = resolved), rules, offline
    let mut open = open_alerts(tx, &b.tenant, &b.agent_id)?;
    let before = open.clone();
    for a in &b.agent_alerts {
        let key = format!("agent:{}", a.key);
        let firing = Firing {
            key: &key,
            source: AlertSource::Agent,
            severity: a.severity,
            message: &a.message,
            value: None,
        };
        fire(tx, &b.tenant, &b.agent_id, &mut open, firing, b.received_at_ms)?;
    }
    let firing_now: std::collections::BTreeSet<String> =
        b.agent_alerts.iter().map(|a| format!("agent:{}", a.key)).collect();
    let stale: Vec<String> =
        open.keys().filter(|k| k.starts_with("agent:") && !firing_now.contains(*k)).cloned().collect();
    for key in stale {
        resolve(tx, &b.tenant, &mut open, &key, "auto", b.received_at_ms)?;
    }
    for f in &b.fire {
        let firing = Firing {
            key: &f.rule_id,
            source: AlertSource::Rule,
            severity: f.severity,
            message: &f.message,
            value: Some(f.value),
        };
        fire(tx, &b.tenant, &b.agent_id, &mut open, firing, b.received_at_ms)?;
    }
    for rule in &b.clear {
        resolve(tx, &b.tenant, &mut open, rule, "auto", b.received_at_ms)?;
    }
    resolve(tx, &b.tenant, &mut open, "offline", "auto", b.received_at_ms)?;
    if open != before {
        put(tx, "open alerts", keys::open_alerts(&b.tenant, &b.agent_id), &open)?;
    }

    note_version(tx, &mut rec, &b.agent_version, b.received_at_ms)?;
    rec.last_seq = b.seq;
    rec.last_collected_at_ms = b.collected_at_ms;
    rec.last_seen_ms = rec.last_seen_ms.max(b.received_at_ms);
    rec.batches += 1;
    rec.samples += b.samples.len() as u64;
    put(tx, "agent", keys::agent(&b.tenant, &b.agent_id), &rec)?;
    Ok(ItemOutcome::Stored { last_seq: b.seq })
}

fn heartbeat(tx: &Tx<'_>, h: &HeartbeatItem) -> R<ItemOutcome> {
    let Some(mut rec) = agent(tx, &h.tenant, &h.agent_id)? else {
        return Ok(ItemOutcome::UnknownAgent);
    };
    rec.last_seen_ms = rec.last_seen_ms.max(h.received_at_ms);
    let offset = i128::from(h.sent_at_ms) - i128::from(h.received_at_ms);
    rec.clock_offset_ms = offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    note_version(tx, &mut rec, &h.agent_version, h.received_at_ms)?;
    let mut open = open_alerts(tx, &h.tenant, &h.agent_id)?;
    if resolve(tx, &h.tenant, &mut open, "offline", "auto", h.received_at_ms)? {
        put(tx, "open alerts", keys::open_alerts(&h.tenant, &h.agent_id), &open)?;
    }
    put(tx, "agent", keys::agent(&h.tenant, &h.agent_id), &rec)?;
    Ok(ItemOutcome::Seen)
}
