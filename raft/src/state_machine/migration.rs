//! Migration of the older layout: versions before the one-tree layout kept the state machine's
//! records (`last_applied`, `membership`, `stored/<index>`) in `sm_meta`; opening the store
//! moves them into `sm_data` under the reserved prefix.

use super::{KEY_LAST_APPLIED, KEY_MEMBERSHIP, SM_PREFIX, decode_last_applied};
use crate::Error;

/// Where versions before the one-tree layout kept the records, in `sm_meta`.
const LEGACY_LAST_APPLIED: &[u8] = b"last_applied";
const LEGACY_MEMBERSHIP: &[u8] = b"membership";
const LEGACY_STORED_PREFIX: &[u8] = b"stored/";

/// Moves the records an older version kept in `sm_meta` (`last_applied`, `membership`,
/// `stored/<index>`) into `sm_data`, then deletes them from `sm_meta`. Where both trees hold a
/// `last_applied` (a crash between the two steps, or a downgraded binary that ran on this
/// directory after an earlier move), the further one wins with its membership; stored records
/// of the same entry are the same bytes whichever tree holds them.
pub(super) fn move_legacy_records(meta: &sled::Tree, data: &sled::Tree) -> Result<(), Error> {
    let legacy_stored: Vec<(sled::IVec, sled::IVec)> =
        meta.scan_prefix(LEGACY_STORED_PREFIX).collect::<Result<_, _>>()?;
    let legacy_applied = meta.get(LEGACY_LAST_APPLIED)?;
    let legacy_membership = meta.get(LEGACY_MEMBERSHIP)?;
    if legacy_stored.is_empty() && legacy_applied.is_none() && legacy_membership.is_none() {
        return Ok(());
    }
    let current = decode_last_applied(data.get(KEY_LAST_APPLIED)?)?;
    let legacy_is_ahead = decode_last_applied(legacy_applied.as_ref())? > current;
    let mut batch = sled::Batch::default();
    for (k, v) in &legacy_stored {
        batch.insert([SM_PREFIX, k.as_ref()].concat(), v.clone());
    }
    if legacy_is_ahead {
        if let Some(v) = &legacy_applied {
            batch.insert(KEY_LAST_APPLIED, v.clone());
        }
        if let Some(v) = &legacy_membership {
            batch.insert(KEY_MEMBERSHIP, v.clone());
        }
    }
    data.apply_batch(batch)?;
    data.flush()?; // the copy is on disk before the originals go
    tracing::info!(
        stored = legacy_stored.len(),
        legacy_is_ahead,
        "state machine records moved from sm_meta to sm_data"
    );
    let mut batch = sled::Batch::default();
    for (k, _) in legacy_stored {
        batch.remove(k);
    }
    batch.remove(LEGACY_LAST_APPLIED);
    batch.remove(LEGACY_MEMBERSHIP);
    meta.apply_batch(batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};

    use super::*;
    use crate::state_machine::test_support::*;
    use crate::state_machine::{KEY_INSTALLING, Membership, StateMachineStore};
    use crate::{Command, NodeId, Options, TypeConfig, codec, storage};

    /// Rewrites the state machine's records into the layout of older versions (in `sm_meta`).
    fn to_legacy_layout(sm: &StateMachineStore) {
        for kv in sm.data.scan_prefix(SM_PREFIX) {
            let (k, v) = kv.unwrap();
            sm.meta.insert(&k[SM_PREFIX.len()..], v).unwrap();
            sm.data.remove(k).unwrap();
        }
    }

    #[tokio::test]
    async fn open_moves_the_records_of_the_older_layout_and_rebuilds_the_heads_from_them() {
        let t0 = 1_764_000_000_000u64;
        for case in ["clean", "crashed mid-move", "stale copy left by a downgrade"] {
            let dir = tempfile::tempdir().unwrap();
            let (before, applied, membership) = {
                let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
                log_and_apply(&mut sm, fleet_setup()).await;
                let batches: Vec<Command> = (1..=50).map(|s| telemetry(s, t0 + s * 15_000)).collect();
                log_and_apply(&mut sm, batches).await;
                let index = sm.reader().last_applied().unwrap().unwrap().index + 1;
                let voters = openraft::Membership::new(vec![[1u64, 2, 3].into()], ());
                let entry = Entry::<TypeConfig> {
                    log_id: log_id(1, 1, index),
                    payload: EntryPayload::Membership(voters),
                };
                sm.log.append_durably(vec![entry.clone()]).await.unwrap();
                sm.apply(vec![entry]).await.unwrap();
                assert_eq!(sm.membership().unwrap().voter_ids().count(), 3);
                let state = (
                    sm.reader().fleet().telemetry_dump("t", "a1").unwrap(),
                    sm.reader().last_applied().unwrap(),
                    sm.membership().unwrap(),
                );
                to_legacy_layout(&sm);
                assert!(sm.data.scan_prefix(SM_PREFIX).next().is_none());
                assert!(sm.meta.contains_key(LEGACY_LAST_APPLIED).unwrap());
                assert!(sm.meta.scan_prefix(LEGACY_STORED_PREFIX).next().is_some(), "stored records");
                if case == "crashed mid-move" {
                    // the copy reached sm_data, the deletion from sm_meta did not
                    for kv in sm.meta.iter() {
                        let (k, v) = kv.unwrap();
                        if k.as_ref() != KEY_INSTALLING {
                            sm.data.insert([SM_PREFIX, k.as_ref()].concat(), v).unwrap();
                        }
                    }
                }
                if case == "stale copy left by a downgrade" {
                    // an older binary ran after an earlier move: sm_data keeps that move's
                    // records, sm_meta has the ones the older binary advanced since
                    let stale =
                        codec::encode_value("last applied", &Some(log_id::<NodeId>(1, 1, 3))).unwrap();
                    sm.data.insert(KEY_LAST_APPLIED, stale).unwrap();
                    let none = codec::encode_value("membership", &Membership::default()).unwrap();
                    sm.data.insert(KEY_MEMBERSHIP, none).unwrap();
                }
                sm.durable.durable_flush().await.unwrap();
                state
            };
            let sm = reopen(dir.path()).await;
            assert_eq!(sm.reader().last_applied().unwrap(), applied, "{case}");
            assert_eq!(sm.membership().unwrap(), membership, "{case}");
            assert!(
                sm.reader().fleet().telemetry_dump("t", "a1").unwrap() == before,
                "heads rebuilt: {case}"
            );
            assert!(sm.meta.iter().next().is_none(), "nothing left in sm_meta: {case}");
        }
    }
}
