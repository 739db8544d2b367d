//! Opening the store: one sled database, its trees, and the snapshot directory.
//!
//! Directory layout under the node's data dir:
//! ```text
//! <dir>/raftlog/     the Raft log: chunk files of a write-ahead log (see `log_store`)
//! <dir>/sled/         sled database (trees sm_meta, sm_data; raft_log and raft_meta only
//!                     until a log kept there by an earlier version is imported)
//! <dir>/snapshots/    snapshot files (see `snapshot`)
//! <dir>/FORMAT        the layout version of all of it (see `data_format`), checked first
//! ```
//! One `sled::Db` with few trees: sled flushes one log for all trees, so more databases or
//! per-tenant trees would only add flushes and space overhead.
//!
//! On open, the state machine is reconciled with the newest snapshot (see
//! `StateMachineStore::recover`), so openraft always starts from a state at or after the
//! snapshot it may purge logs behind.
//!
//! Upgrades: a log still kept in sled by an earlier version is imported into the WAL on open
//! (see `log_store`). Deliberately missing: a lock file of our own (sled and the WAL each
//! refuse a second open of the same directory).

use std::path::Path;

use crate::durable::Durable;
use crate::snapshot::SnapshotDir;
use crate::{Error, LogStore, Options, StateMachineStore, StateReader};

/// Everything `Raft::new` and the hub need from the store.
pub struct Storage {
    /// The Raft log store (give it to `Raft::new`).
    pub log: LogStore,
    /// The state machine store (give it to `Raft::new`).
    pub sm: StateMachineStore,
    /// Reader over the applied state, for the hub.
    pub reader: StateReader,
}

/// Opens (or creates) the store under `dir`.
pub async fn open(dir: &Path, opts: &Options) -> Result<Storage, Error> {
    let dir = dir.to_path_buf();
    let cache = opts.cache_capacity_bytes;
    let (log, sm) = tokio::task::spawn_blocking(move || open_blocking(&dir, cache))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(format!("open task failed: {e}"))))??;
    sm.recover().await?;
    let reader = sm.reader();
    let active = reader.cluster_version()?;
    if !crate::cluster_version::supports(active) {
        return Err(Error::ClusterVersion {
            active,
            min: crate::cluster_version::MIN_CLUSTER_VERSION,
            max: crate::cluster_version::CLUSTER_VERSION,
        });
    }
    sm.sync_formats().await?;
    tracing::info!(last_applied = ?reader.last_applied()?, "raft store opened");
    Ok(Storage { log, sm, reader })
}

fn open_blocking(dir: &Path, cache_capacity: u64) -> Result<(LogStore, StateMachineStore), Error> {
    std::fs::create_dir_all(dir)?;
    crate::data_format::check_or_write(dir)?;
    let sled_dir = dir.join("sled");
    let db = sled::Config::new().path(&sled_dir).cache_capacity(cache_capacity).open()?;
    let durable = Durable::open(db.clone(), &sled_dir)?;
    let log = LogStore::open(dir, &db.open_tree("raft_log")?, &db.open_tree("raft_meta")?)?;
    let snapshots = SnapshotDir::open(&dir.join("snapshots"))?;
    let trees = (db.open_tree("sm_meta")?, db.open_tree("sm_data")?);
    let sm = StateMachineStore::open(trees.0, trees.1, durable, snapshots, log.clone(), dir.to_path_buf())?;
    Ok((log, sm))
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;
    use crate::{NodeId, TypeConfig};

    /// Opens a fresh store in a temp dir; the dir is the guard that outlives the store.
    struct FreshStore;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FreshStore {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
            let dir = tempfile::tempdir().map_err(Error::from)?;
            let s = open(dir.path(), &Options::default()).await?;
            Ok((dir, s.log, s.sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        // Suite runs each case in its own runtime, so this test must not be async.
        Suite::test_all(FreshStore).unwrap();
    }

    #[tokio::test]
    async fn second_open_of_the_same_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), &Options::default()).await.unwrap();
        assert!(open(dir.path(), &Options::default()).await.is_err());
    }
}
