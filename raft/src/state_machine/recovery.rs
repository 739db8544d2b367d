//! Opening the state machine and bringing it up to date: records of the older layout are moved
//! (`migration`), a snapshot ahead of the applied state (or an install cut short) is reloaded,
//! and the telemetry heads, which live in memory, are rebuilt from the newest snapshot plus the
//! log entries applied after it.

use std::sync::Arc;

use openraft::EntryPayload;

use super::migration::move_legacy_records;
use super::snapshotting::load_heads;
use super::{KEY_INSTALLING, StateMachineStore, blocking, stored_key};
use crate::durable::Durable;
use crate::fleet;
use crate::fleet::telemetry::{HeadMap, HeadsTx, SharedHeads};
use crate::snapshot::{SnapshotDir, SnapshotFormatSetting};
use crate::{Command, Error};

/// Log entries read at a time while the heads are replayed on open.
const REPLAY_SLICE: u64 = 64;

impl StateMachineStore {
    /// The store over `meta` and `data`, with records of the older layout moved into `data`.
    pub(crate) fn open(
        meta: sled::Tree,
        data: sled::Tree,
        durable: Durable,
        snapshots: SnapshotDir,
        log: crate::LogStore,
        dir: std::path::PathBuf,
    ) -> Result<Self, Error> {
        move_legacy_records(&meta, &data)?;
        let heads = SharedHeads::default();
        let snapshot_format = SnapshotFormatSetting::default();
        Ok(StateMachineStore {
            meta,
            data,
            durable,
            snapshots: Arc::new(snapshots),
            heads,
            log,
            dir,
            snapshot_format,
        })
    }

    /// Loads the newest snapshot if it is ahead of the applied state or an install was cut short.
    pub(crate) async fn recover(&self) -> Result<(), Error> {
        let installing = self.meta.contains_key(KEY_INSTALLING)?;
        let latest = self.snapshots.latest()?;
        let applied = self.reader().last_applied()?;
        match latest {
            None if installing => Err(Error::Corrupt("snapshot install marker without a snapshot".into())),
            None => self.replay_heads(HeadMap::new(), 0),
            Some((path, meta)) if installing || meta.last_log_id > applied => {
                tracing::warn!(snapshot = %meta, ?applied, installing, "state machine behind snapshot; reloading");
                self.load_snapshot(path, &meta).await
            }
            Some((path, meta)) => {
                let heads = blocking(move || load_heads(&path)).await?;
                self.replay_heads(heads, meta.last_log_id.map_or(0, |l| l.index))
            }
        }
    }

    /// Rebuilds the telemetry heads: `heads` as of log index `from`, then the telemetry of every
    /// applied entry after it, replayed from the log without writing (the trees hold its
    /// writes already).
    fn replay_heads(&self, mut heads: HeadMap, from: u64) -> Result<(), Error> {
        let applied = self.reader().last_applied()?.map_or(0, |l| l.index);
        let mut replayed = 0u64;
        // in slices, so a restart holds a few entries in memory, not the whole tail of the log
        for start in (from + 1..=applied).step_by(REPLAY_SLICE as usize) {
            let end = (start + REPLAY_SLICE).min(applied + 1);
            for entry in self.log.read_range(start, Some(end))? {
                let EntryPayload::Normal(Command::Fleet(cmd)) = &entry.payload else { continue };
                let stored = self.data.get(stored_key(entry.log_id.index))?;
                let tx = HeadsTx::new(&heads);
                fleet::replay(&self.data, cmd, stored.as_deref(), &tx)?;
                tx.finish().publish(&mut heads);
                replayed += 1;
            }
        }
        if replayed > 0 {
            tracing::info!(
                from,
                applied,
                replayed,
                heads = heads.len(),
                "telemetry heads rebuilt from the log"
            );
        }
        *self.heads.write().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))? = heads;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::testing::log_id;

    use super::*;
    use crate::state_machine::test_support::*;
    use crate::{Options, codec, storage};

    #[tokio::test]
    async fn telemetry_heads_are_rebuilt_after_a_restart_from_snapshot_and_log() {
        let t0 = 1_764_000_000_000u64;
        for with_snapshot in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let before = {
                let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
                log_and_apply(&mut sm, fleet_setup()).await;
                // 30 batches: two windows, the second open
                let first: Vec<Command> = (1..=30).map(|s| telemetry(s, t0 + s * 15_000)).collect();
                log_and_apply(&mut sm, first).await;
                if with_snapshot {
                    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
                }
                // after the snapshot: a late batch into the sealed window, a new window, a duplicate
                let mut after: Vec<Command> = vec![telemetry(31, t0 + 5_000)];
                after.extend((32..=70).map(|s| telemetry(s, t0 + s * 15_000)));
                after.push(telemetry(70, t0 + 70 * 15_000));
                log_and_apply(&mut sm, after).await;
                // a snapshot dumped but never published (the node dies first) must not cost
                // the records the replay needs
                drop(sm.get_snapshot_builder().await);
                sm.durable.durable_flush().await.unwrap();
                let dump = sm.reader().fleet().telemetry_dump("t", "a1").unwrap();
                assert!(dump.iter().any(|(k, _)| k.ends_with(b"~head")), "a head is open");
                dump
            };
            let sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
            let after = sm.reader().fleet().telemetry_dump("t", "a1").unwrap();
            assert!(after == before, "snapshot: {with_snapshot}: the rebuilt telemetry differs");
            let cpu = sm.reader().fleet().raw_series("t", "a1", 0, 0, u64::MAX).unwrap();
            assert_eq!(cpu.len(), 70, "every stored batch once (the duplicate is not)");
        }
    }

    #[tokio::test]
    async fn open_reloads_a_snapshot_ahead_of_the_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
            apply_commands(&mut sm, vec![put("t1", None, refresh(30), 1), Command::Noop]).await;
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            // Simulate losing state-machine writes that never reached the disk.
            sm.data.clear().unwrap();
            sm.durable.durable_flush().await.unwrap();
        }
        let reader = storage::open(dir.path(), &Options::default()).await.unwrap().reader;
        assert_eq!(reader.settings("t1").unwrap().settings, refresh(30));
        assert_eq!(reader.last_applied().unwrap(), Some(log_id(1, 1, 2)));
    }

    #[tokio::test]
    async fn open_finishes_an_interrupted_install() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
            apply_commands(&mut sm, vec![put("t1", None, refresh(30), 1)]).await;
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            apply_commands(&mut sm, vec![put("t1", None, refresh(40), 2)]).await;
            // A crash mid-install leaves the marker and half-loaded data.
            sm.meta.insert(KEY_INSTALLING, codec::encode_value("x", &"id").unwrap()).unwrap();
            sm.data.insert(b"junk", b"x".as_slice()).unwrap();
            sm.durable.durable_flush().await.unwrap();
        }
        let s = storage::open(dir.path(), &Options::default()).await.unwrap();
        assert_eq!(s.reader.settings("t1").unwrap().settings, refresh(30));
        assert_eq!(s.reader.last_applied().unwrap(), Some(log_id(1, 1, 1)));
        assert!(!s.sm.meta.contains_key(KEY_INSTALLING).unwrap());
        assert!(!s.sm.data.contains_key(b"junk").unwrap());
    }
}
