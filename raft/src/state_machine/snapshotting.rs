//! Snapshots of the state machine: the dump of `sm_data` (without the state machine's own
//! records) and the telemetry heads into a snapshot file, its publication by the
//! [`SnapshotBuilder`], receiving a leader's snapshot, and loading one in place of the state.
//!
//! The file format and the snapshot directory are the crate's `snapshot` module; this module
//! decides what goes into a file and how it is loaded back. A dump is written in the format of
//! the store's `snapshot_format` setting, and carries the trees of that format only; a
//! received snapshot is kept in the format it came in.

use std::collections::BTreeMap;
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::Snapshot;
use openraft::{ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, StorageError};

use super::{
    KEY_INSTALLING, KEY_LAST_APPLIED, KEY_MEMBERSHIP, SM_PREFIX, StateMachineStore, blocking, stored_key,
};
use crate::durable::{AtomicFile, Durable};
use crate::error::StorageResultExt;
use crate::fleet::telemetry::HeadMap;
use crate::snapshot::{
    Meta, SnapshotDir, SnapshotFormat, SnapshotReader, SnapshotWriter, TREE_DATA, TREE_HEADS,
};
use crate::{Error, NodeId, TypeConfig, codec};

/// Records per sled batch when loading a snapshot.
const LOAD_BATCH: usize = 1024;

impl StateMachineStore {
    /// Writes the dump of the current state to a new temp snapshot file (not yet synced) in
    /// `format` (`get_snapshot_builder` passes the `snapshot_format` setting).
    pub(super) async fn dump_as(&self, format: SnapshotFormat) -> Result<Prepared, Error> {
        let last_log_id = self.reader().last_applied()?;
        let (generation, path) = self.snapshots.allocate();
        let meta = Meta {
            last_log_id,
            last_membership: self.membership()?,
            snapshot_id: snapshot_id(last_log_id, generation),
        };
        let data = self.data.clone();
        let heads: Vec<(Vec<u8>, Vec<u8>)> = if !format.carries(TREE_HEADS) {
            Vec::new()
        } else {
            let heads =
                self.heads.read().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))?;
            heads.iter().flat_map(|(k, h)| h.to_records().into_iter().map(|r| (k.clone(), r))).collect()
        };
        let (file, meta) = blocking(move || {
            let mut file = AtomicFile::create(&path)?;
            let mut w = SnapshotWriter::new(file.writer(), &meta, format)?;
            for kv in data.iter() {
                let (k, v) = kv?;
                if !k.starts_with(SM_PREFIX) {
                    w.record(TREE_DATA, &k, &v)?;
                }
            }
            for (k, v) in &heads {
                w.record(TREE_HEADS, k, v)?;
            }
            w.finish()?;
            Ok((file, meta))
        })
        .await?;
        // the heads as of the latest *published* snapshot are durable: the stored-item records
        // up to it are no longer needed (this snapshot's own are, until it is published)
        let upto = self.snapshots.latest()?.and_then(|(_, m)| m.last_log_id).map_or(0, |l| l.index);
        for kv in self.data.range(stored_key(0)..=stored_key(upto)) {
            self.data.remove(kv?.0)?;
        }
        Ok(Prepared { file, meta })
    }

    /// Replaces the state with the snapshot at `path` (already published).
    pub(super) async fn load_snapshot(&self, path: PathBuf, meta: &Meta) -> Result<(), Error> {
        self.meta.insert(KEY_INSTALLING, codec::encode_value("install marker", &meta.snapshot_id)?)?;
        self.durable.durable_flush().await?;
        let data = self.data.clone();
        let heads = blocking(move || load_records(&path, &data)).await?;
        *self.heads.write().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))? = heads;
        let mut batch = sled::Batch::default();
        batch.insert(KEY_LAST_APPLIED, codec::encode_value("last applied", &meta.last_log_id)?);
        batch.insert(KEY_MEMBERSHIP, codec::encode_value("membership", &meta.last_membership)?);
        self.data.apply_batch(batch)?;
        // the records are durable before the marker goes: a crash in between reloads
        self.durable.durable_flush().await?;
        self.meta.remove(KEY_INSTALLING)?;
        self.durable.durable_flush().await
    }

    /// Verifies the received snapshot against `meta` and publishes a copy as the current one.
    pub(super) async fn store_received(
        &self,
        mut file: std::fs::File,
        meta: &Meta,
    ) -> Result<PathBuf, Error> {
        let (_, dest) = self.snapshots.allocate();
        let snapshots = self.snapshots.clone();
        let expected = meta.clone();
        blocking(move || {
            file.seek(SeekFrom::Start(0))?;
            let (mut reader, found) = SnapshotReader::open(BufReader::new(file))?;
            if found != expected {
                return Err(Error::Corrupt(format!("received snapshot is {found}, expected {expected}")));
            }
            let mut out = AtomicFile::create(&dest)?;
            let mut w = SnapshotWriter::new(out.writer(), &expected, reader.format())?;
            while let Some(r) = reader.next_record()? {
                w.record(r.tree, &r.key, &r.value)?;
            }
            w.finish()?.flush()?;
            snapshots.publish(out)
        })
        .await
    }
}

/// Clears `data` and loads every record of the snapshot at `path` into it; returns its heads.
fn load_records(path: &Path, data: &sled::Tree) -> Result<HeadMap, Error> {
    let (mut reader, _) = SnapshotReader::open(BufReader::new(std::fs::File::open(path)?))?;
    data.clear()?;
    let mut batch = sled::Batch::default();
    let mut heads = BTreeMap::new();
    let mut n = 0;
    while let Some(r) = reader.next_record()? {
        match r.tree {
            // a snapshot never carries the state machine's records (one written by an older
            // version from a tree that held stale ones may): they are set after the load
            TREE_DATA if r.key.starts_with(SM_PREFIX) => continue,
            TREE_DATA => batch.insert(r.key, r.value),
            TREE_HEADS => {
                add_head_record(&mut heads, r.key, &r.value)?;
                continue;
            }
            other => return Err(Error::Corrupt(format!("snapshot record for unknown tree {other}"))),
        }
        n += 1;
        if n % LOAD_BATCH == 0 {
            data.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    data.apply_batch(batch)?;
    Ok(finish_heads(heads))
}

/// The heads of the snapshot at `path` (the rest of the file is skipped).
pub(super) fn load_heads(path: &Path) -> Result<HeadMap, Error> {
    let (mut reader, _) = SnapshotReader::open(BufReader::new(std::fs::File::open(path)?))?;
    let mut heads = BTreeMap::new();
    while let Some(r) = reader.next_record()? {
        if r.tree == TREE_HEADS {
            add_head_record(&mut heads, r.key, &r.value)?;
        }
    }
    Ok(finish_heads(heads))
}

type PartialHeads = BTreeMap<Vec<u8>, Option<monsys_tsdb::series::AgentHead>>;

fn add_head_record(heads: &mut PartialHeads, key: Vec<u8>, value: &[u8]) -> Result<(), Error> {
    monsys_tsdb::series::AgentHead::add_record(heads.entry(key).or_default(), value)
        .map_err(|e| Error::Corrupt(format!("telemetry head in snapshot: {e}")))
}

fn finish_heads(heads: PartialHeads) -> HeadMap {
    heads.into_iter().filter_map(|(k, h)| h.map(|h| (k, h))).collect()
}

fn snapshot_id(last: Option<LogId<NodeId>>, generation: u64) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let (term, index) = last.map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("{term}-{index}-{generation}-{nanos:x}")
}

/// A dumped, not yet published snapshot.
pub(super) struct Prepared {
    file: AtomicFile,
    meta: Meta,
}

/// Publishes the snapshot dumped by `get_snapshot_builder`.
pub struct SnapshotBuilder {
    pub(super) prepared: Option<Result<Prepared, Error>>,
    /// The format the dump was written in.
    pub(super) format: SnapshotFormat,
    pub(super) durable: Durable,
    pub(super) snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let subject = || ErrorSubject::Snapshot(None);
        let prepared =
            self.prepared.take().unwrap_or_else(|| Err(Error::Corrupt("snapshot already built".into())));
        let Prepared { file, meta } = prepared.sto(subject(), ErrorVerb::Write)?;
        self.durable.durable_flush().await.sto(subject(), ErrorVerb::Write)?;
        let snapshots = self.snapshots.clone();
        let path = blocking(move || snapshots.publish(file)).await.sto(subject(), ErrorVerb::Write)?;
        let file = std::fs::File::open(&path).map_err(Error::from).sto(subject(), ErrorVerb::Read)?;
        tracing::info!(snapshot = %meta, format = %self.format, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::state_machine::STORED_PREFIX;
    use crate::state_machine::settings::default_doc;
    use crate::state_machine::test_support::*;
    use crate::{Command, Options, storage};

    #[tokio::test]
    async fn installed_snapshot_replaces_the_whole_state() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = storage::open(dir_a.path(), &Options::default()).await.unwrap().sm;
        let mut b = storage::open(dir_b.path(), &Options::default()).await.unwrap().sm;
        apply_commands(
            &mut a,
            vec![put("t1", None, refresh(30), 1), Command::InitAdminToken { sha256: [7; 32] }],
        )
        .await;
        apply_commands(&mut b, vec![put("only-on-b", None, refresh(99), 2)]).await;

        let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 2)));

        let mut incoming = b.begin_receiving_snapshot().await.unwrap();
        let mut bytes = Vec::new();
        let mut current = a.get_current_snapshot().await.unwrap().unwrap();
        current.snapshot.read_to_end(&mut bytes).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes).await.unwrap();
        b.install_snapshot(&snap.meta, incoming).await.unwrap();

        let (ra, rb) = (a.reader(), b.reader());
        assert_eq!(rb.settings("only-on-b").unwrap(), default_doc("only-on-b"), "extra key survived");
        assert_eq!(rb.settings("t1").unwrap(), ra.settings("t1").unwrap());
        assert_eq!(rb.admin_token_sha256().unwrap(), Some([7; 32]));
        assert_eq!(rb.last_applied().unwrap(), Some(log_id(1, 1, 2)));
        assert_eq!(b.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
        assert_eq!(std::fs::read_dir(dir_b.path().join("snapshots")).unwrap().count(), 1);
    }

    /// Bytes of the current snapshot of `sm`.
    async fn current_bytes(sm: &mut StateMachineStore) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut current = sm.get_current_snapshot().await.unwrap().unwrap();
        current.snapshot.read_to_end(&mut bytes).await.unwrap();
        bytes
    }

    #[tokio::test]
    async fn the_builder_writes_the_format_it_is_set_to_and_a_receiver_keeps_it() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = storage::open(dir_a.path(), &Options::default()).await.unwrap().sm;
        let mut b = storage::open(dir_b.path(), &Options::default()).await.unwrap().sm;
        log_and_apply(&mut a, fleet_setup()).await;
        log_and_apply(&mut a, vec![telemetry(1, 1_764_000_000_000)]).await;
        for format in [SnapshotFormat::V1] {
            a.snapshot_format().set(format);
            let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
            let bytes = current_bytes(&mut a).await;
            assert_eq!(bytes[8], format.version(), "{format}");
            let mut incoming = b.begin_receiving_snapshot().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes).await.unwrap();
            b.install_snapshot(&snap.meta, incoming).await.unwrap();
            assert_eq!(current_bytes(&mut b).await[8], format.version(), "kept as received: {format}");
            let dump = |sm: &StateMachineStore| sm.reader().fleet().telemetry_dump("t", "a1").unwrap();
            assert!(dump(&b) == dump(&a), "heads carried: {format}");
        }
    }

    /// A transport to nowhere: the node under test only serves.
    struct Nowhere;

    impl crate::RaftTransport for Nowhere {
        fn send(
            &self,
            _: crate::NodeId,
            _: &crate::Node,
            _: crate::RpcKind,
            _: Vec<u8>,
            _: std::time::Duration,
        ) -> impl std::future::Future<Output = Result<Vec<u8>, crate::TransportError>> + Send {
            std::future::ready(Err(crate::TransportError::Unreachable("nowhere".into())))
        }
    }

    /// What an older build meets when the leader writes a newer format: the chunk is refused
    /// with a clear error before openraft installs it, and this node's Raft keeps running (an
    /// error from `install_snapshot` would stop it).
    #[tokio::test]
    async fn a_snapshot_of_a_newer_format_is_refused_and_raft_keeps_running() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = storage::open(dir_a.path(), &Options::default()).await.unwrap().sm;
        apply_commands(&mut a, vec![put("t1", None, refresh(30), 1)]).await;
        let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut newer = current_bytes(&mut a).await;
        newer[8] = SnapshotFormat::NEWEST.version() + 1;

        let opts = Options::default();
        let s = storage::open(dir_b.path(), &opts).await.unwrap();
        let config = Arc::new(opts.to_config("test").unwrap());
        let net = crate::NetworkFactory::new(Arc::new(Nowhere), &opts);
        let raft = crate::Raft::new(1, config, net, s.log, s.sm).await.unwrap();
        let req = openraft::raft::InstallSnapshotRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(1, 2),
            meta: snap.meta.clone(),
            offset: 0,
            data: newer,
            done: true,
        };
        let body = codec::encode("raft rpc", &req, crate::MAX_RPC_BYTES).unwrap();
        let elector = crate::Elector::new(1, raft.clone(), Arc::new(Nowhere), &opts);
        let refused = crate::serve_rpc(&elector, crate::RpcKind::InstallSnapshot, &body).await;
        let Err(e) = refused else { panic!("the newer snapshot was handed to openraft") };
        assert_eq!(e.to_string(), "unsupported snapshot format 2; this build reads up to 1");
        assert!(!e.is_corruption(), "{e:?}");

        assert!(raft.metrics().borrow().running_state.is_ok(), "raft stopped");
        raft.initialize(BTreeMap::from([(1, crate::Node::default())])).await.unwrap();
        raft.wait(Some(std::time::Duration::from_secs(10)))
            .current_leader(1, "leader of itself")
            .await
            .unwrap();
        raft.client_write(Command::Noop).await.unwrap();
        assert!(s.reader.settings("t1").unwrap().revision == 0, "nothing of the snapshot loaded");
        raft.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn corrupt_snapshot_is_refused_and_state_kept() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = storage::open(dir_a.path(), &Options::default()).await.unwrap().sm;
        let mut b = storage::open(dir_b.path(), &Options::default()).await.unwrap().sm;
        apply_commands(&mut a, vec![put("t1", None, refresh(30), 1)]).await;
        apply_commands(&mut b, vec![put("t1", None, refresh(99), 2)]).await;
        let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();

        let mut bytes = Vec::new();
        let mut current = a.get_current_snapshot().await.unwrap().unwrap();
        current.snapshot.read_to_end(&mut bytes).await.unwrap();
        bytes.truncate(bytes.len() - 1);
        let mut incoming = b.begin_receiving_snapshot().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes).await.unwrap();

        assert!(b.install_snapshot(&snap.meta, incoming).await.is_err());
        assert_eq!(b.reader().settings("t1").unwrap().settings, refresh(99));
        assert!(b.get_current_snapshot().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_head_larger_than_a_snapshot_frame_is_snapshotted_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_764_000_000_000u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let before = {
            let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
            log_and_apply(&mut sm, fleet_setup()).await;
            // 4000 series of random values for 30 batches: over 1 MB of head blocks
            for seq in 1..=30 {
                let samples = (0..4000)
                    .map(|s| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (format!("r{s}"), f64::from_bits(x >> 2))
                    })
                    .collect();
                log_and_apply(&mut sm, vec![telemetry_with(seq, t0 + seq * 15_000, samples)]).await;
            }
            let (_, bytes) = sm.reader().fleet().head_stats().unwrap();
            assert!(bytes as u64 > crate::codec::MAX_FRAME_BYTES, "head of {bytes} bytes");
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            sm.durable.durable_flush().await.unwrap();
            sm.reader().fleet().telemetry_dump("t", "a1").unwrap()
        };
        let sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        assert!(sm.reader().fleet().telemetry_dump("t", "a1").unwrap() == before);
    }

    #[tokio::test]
    async fn snapshots_carry_the_state_but_not_the_state_machine_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        log_and_apply(&mut sm, fleet_setup()).await;
        log_and_apply(&mut sm, vec![telemetry(1, 1_764_000_000_000)]).await;
        assert!(sm.data.scan_prefix(STORED_PREFIX).next().is_some());
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let file = snap.snapshot.into_std().await;
        let (mut reader, _) = SnapshotReader::open(BufReader::new(file)).unwrap();
        let mut data_records = 0;
        while let Some(r) = reader.next_record().unwrap() {
            assert!(!r.key.starts_with(SM_PREFIX), "{:?}", String::from_utf8_lossy(&r.key));
            data_records += usize::from(r.tree == TREE_DATA);
        }
        assert!(data_records > 0);
    }
}
