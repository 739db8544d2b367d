//! Integrity anomalies: recorded by the hub's checks (one open anomaly per agent and kind),
//! resolved by a user.

use super::{next_id, ok, rejected};
use crate::CommandResult;
use crate::fleet::keys;
use crate::fleet::types::*;
use crate::txn::{R, Tx, get, put};

/// `RecordAnomalies`: records each anomaly unless one of its agent and kind is open.
pub(super) fn record(tx: &Tx<'_>, tenant: &str, anomalies: &[NewAnomaly], at_ms: u64) -> R<CommandResult> {
    let mut recorded = 0;
    for n in anomalies {
        let open_key = keys::open_anomaly(tenant, &n.agent_id, &n.kind);
        if tx.get(&open_key)?.is_some() {
            continue;
        }
        let id = next_id(tx, "anomaly", tenant)?;
        let a = Anomaly {
            id,
            tenant: tenant.to_string(),
            agent_id: n.agent_id.clone(),
            kind: n.kind.clone(),
            details: n.details.clone(),
            detected_at_ms: at_ms,
            resolved_at_ms: None,
            resolved_by: None,
        };
        put(tx, "anomaly", keys::anomaly(tenant, id), &a)?;
        put(tx, "open anomaly", open_key, &id)?;
        recorded += 1;
    }
    Ok(ok(FleetResult::Count(recorded)))
}

/// `ResolveAnomaly`: closes an open anomaly.
pub(super) fn resolve(tx: &Tx<'_>, tenant: &str, id: u64, actor: &str, at_ms: u64) -> R<CommandResult> {
    let key = keys::anomaly(tenant, id);
    let Some(mut a) = get::<Anomaly>(tx, "anomaly", &key)? else {
        return Ok(rejected(FleetRejection::NotFound));
    };
    if a.resolved_at_ms.is_some() {
        return Ok(rejected(FleetRejection::AlreadyResolved));
    }
    a.resolved_at_ms = Some(at_ms);
    a.resolved_by = Some(actor.to_string());
    tx.remove(keys::open_anomaly(tenant, &a.agent_id, &a.kind))?;
    put(tx, "anomaly", key, &a)?;
    Ok(ok(FleetResult::Anomaly(a)))
}
