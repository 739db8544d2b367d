//! Restart support: the per-entry record of which group items were stored, and the replay of an
//! applied command's telemetry-head effects from it (heads live in memory; the state machine
//! rebuilds them from a snapshot plus the log).

use monsys_tsdb::series::{Mode, WINDOW_MS};

use crate::Error;
use crate::fleet::telemetry::{self, ByteDeltas, HeadsTx};
use crate::fleet::types::*;

/// Which items of a group were stored (bit `i` of byte `i / 8`), as `apply` decided.
pub(crate) fn stored_bitmap(outcomes: &[ItemOutcome]) -> Vec<u8> {
    let mut bits = vec![0u8; outcomes.len().div_ceil(8)];
    for (i, o) in outcomes.iter().enumerate() {
        if matches!(o, ItemOutcome::Stored { .. }) {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    bits
}

/// Replays the telemetry-head effects of an applied command (after a restart): the same head
/// changes `apply` made, writing nothing. `stored` is the entry's [`stored_bitmap`].
pub(crate) fn replay(
    data: &sled::Tree,
    cmd: &FleetCommand,
    stored: Option<&[u8]>,
    heads: &HeadsTx<'_>,
) -> Result<(), Error> {
    let mut store = telemetry::ReplayStore(data);
    let mut deltas = ByteDeltas::default(); // already counted when the entry was applied
    match cmd {
        FleetCommand::Group(items) => {
            let Some(bits) = stored else {
                tracing::warn!(
                    "applied group without a stored-items record; its samples are not in the head"
                );
                return Ok(());
            };
            for (i, item) in items.iter().enumerate() {
                let was_stored = bits.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1);
                if let (true, GroupItem::Batch(b)) = (was_stored, item)
                    && !b.samples.is_empty()
                {
                    telemetry::write(&mut store, heads, Mode::Replay, b, &mut deltas)
                        .map_err(telemetry::layout_err)?;
                }
            }
        }
        FleetCommand::DeleteAgent(a) => telemetry::drop_head(heads, &a.tenant, &a.agent_id),
        FleetCommand::Expire { at_ms } => {
            let before = at_ms.saturating_sub(WINDOW_MS);
            telemetry::seal_idle(&mut store, heads, Mode::Replay, before, &mut deltas)
                .map_err(telemetry::layout_err)?;
        }
        _ => {}
    }
    Ok(())
}
