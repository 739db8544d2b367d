//! Retention: `Expire` deletes whole telemetry blocks past the tenant's retention (at most
//! [`EXPIRE_BATCH`] keys per run, so ingest never waits behind a long deletion; the next run
//! continues) and seals idle agents' head windows.

use monsys_tsdb::series::WINDOW_MS;

use super::{Prescan, ok, uncounted};
use crate::fleet::keys;
use crate::fleet::telemetry::{self, ByteDeltas, HeadsTx, Removal};
use crate::fleet::types::*;
use crate::txn::{R, Tx};
use crate::{CommandResult, Error, codec};

/// Most keys deleted by one `Expire` (the next run continues).
pub const EXPIRE_BATCH: usize = 20_000;

/// What `Expire` removes: each agent's blocks past its tenant's retention, in both layouts.
pub(super) fn prescan_expire(data: &sled::Tree, at_ms: u64, found: &mut Vec<Removal>) -> Result<(), Error> {
    for kv in data.scan_prefix(keys::ALL_AGENTS) {
        let rec: AgentRecord = codec::decode_value("agent", &kv?.1)?;
        if found.len() >= EXPIRE_BATCH {
            break;
        }
        let retention = crate::state_machine::settings_in(data, &rec.tenant)?.settings.retention;
        let hours = |h: u64| at_ms.saturating_sub(h * 3_600_000);
        let cutoffs = [
            hours(retention.raw_hours as u64),
            hours(24 * retention.rollup_1m_days as u64),
            hours(24 * retention.rollup_5m_days as u64),
            hours(24 * retention.rollup_1h_days as u64),
        ];
        telemetry::scan_expired(data, &rec.tenant, &rec.id, cutoffs, EXPIRE_BATCH, found)?;
        // the replaced layout ages out under the same retention
        let (t, id) = (&rec.tenant, &rec.id);
        let mut legacy = vec![(keys::raw(t, id, 0, 0), keys::raw(t, id, cutoffs[0], 0))];
        for (r, cutoff) in Resolution::ROLLUPS.iter().zip(&cutoffs[1..]) {
            let end = cutoff.saturating_sub(r.width_ms());
            legacy.push((keys::rollup(r.tag(), t, id, 0), keys::rollup(r.tag(), t, id, end)));
        }
        for (start, end) in legacy {
            for kv in data.range(start..end).take(EXPIRE_BATCH.saturating_sub(found.len())) {
                found.push(uncounted(kv?.0));
            }
        }
    }
    Ok(())
}

/// `Expire`: seals idle heads, then removes what the prescan found.
pub(super) fn expire(tx: &Tx<'_>, heads: &HeadsTx<'_>, pre: &Prescan, at_ms: u64) -> R<CommandResult> {
    let mut deltas = ByteDeltas::default();
    telemetry::seal_idle_tx(tx, heads, at_ms.saturating_sub(WINDOW_MS), &mut deltas)?;
    telemetry::remove(tx, &pre.removals, &mut deltas)?;
    deltas.write(tx)?;
    Ok(ok(FleetResult::Count(pre.removals.len() as u64)))
}
