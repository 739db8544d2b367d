//! The replicated state machine on sled (openraft v2 `RaftStateMachine`) and its reader.
//!
//! Layout: tree `sm_data` holds the application state keyed by tenant (`settings/<tenant>`)
//! plus cluster-wide keys (`admin/token_sha256`), and, under the reserved prefix `\0sm/`, the
//! state machine's own records: `last_applied`, `membership` and one `stored/<index>` record
//! per ingest group. Tree `sm_meta` holds only the `installing` marker (older versions kept the
//! records there; `StateMachineStore::open` moves them). Values use `codec::encode_value`.
//!
//! Invariants:
//! - A run of entries is applied as one `sled::Batch` on `sm_data` (see `txn`): the effects,
//!   `last_applied`, the membership and the stored records move together, all or nothing.
//! - `apply` is deterministic: it reads only the entry and the trees (timestamps come from the
//!   proposer). Refusals are `CommandResult::Rejected`, never errors; errors are disk or format
//!   failures and stop the node. Changing validation rules changes apply results, so a rule
//!   change needs a new command variant (see `command`), not an edit of `Settings::validate`.
//! - `apply` does not fsync. A crash can lose the last applied entries, but only as a whole
//!   (batches) and never past durable state: the log is durable up to `committed`, and
//!   openraft re-applies from `last_applied` on restart. Logs are purged only behind a snapshot,
//!   and building or installing a snapshot *does* `durable_flush` the state machine; if a snapshot
//!   is still ahead of `last_applied` on open, `StateMachineStore::recover` loads it.
//! - Snapshots are our own files (`snapshot`), never sled values. Installing one clears
//!   `sm_data` before loading it (openraft's old sledstore did not, so deleted keys survived).
//!   The install sets the `installing` marker durably first; a crash mid-load reloads on open.
//!
//! Consistency trade-offs:
//! - sled has no point-in-time read view, so the snapshot dump happens in
//!   `get_snapshot_builder`, which openraft 0.9 runs on the state-machine worker, serially with
//!   `apply`: applying stalls while the dump is written (not while it is fsynced). Fine while the
//!   state is small; a big state needs a store with snapshots (or a copy-on-write export).
//! - While a snapshot is being installed, [`StateReader`] can observe a partially loaded state.
//!   Only followers install snapshots, and their reads are stale anyway; linearizable reads go
//!   through the leader.

use std::collections::BTreeMap;
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::codec;
use crate::durable::{AtomicFile, Durable};
use crate::error::StorageResultExt;
use crate::fleet;
use crate::fleet::telemetry::{HeadMap, HeadsTx, SharedHeads};
use crate::snapshot::{Meta, SnapshotDir, SnapshotReader, SnapshotWriter};
use crate::txn::Tx;
use crate::{Command, CommandResult, Error, Node, NodeId, Rejection, TypeConfig};
use monsys_proto::{Settings, SettingsDoc};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, StorageError,
    StoredMembership,
};

/// Prefix of the state machine's own records in `sm_data` (never in snapshots).
const SM_PREFIX: &[u8] = b"\0sm/";
const KEY_LAST_APPLIED: &[u8] = b"\0sm/last_applied";
const KEY_MEMBERSHIP: &[u8] = b"\0sm/membership";
/// Prefix of the per-entry record of which group items were stored (for rebuilding telemetry
/// heads after a restart; entries covered by a snapshot are removed when it is built).
const STORED_PREFIX: &[u8] = b"\0sm/stored/";
/// `sm_meta`: set while a snapshot is being loaded (survives the clearing of `sm_data`).
const KEY_INSTALLING: &[u8] = b"installing";
/// Where versions before the one-tree layout kept the records, in `sm_meta`.
const LEGACY_LAST_APPLIED: &[u8] = b"last_applied";
const LEGACY_MEMBERSHIP: &[u8] = b"membership";
const LEGACY_STORED_PREFIX: &[u8] = b"stored/";
const KEY_ADMIN_TOKEN: &[u8] = b"admin/token_sha256";
/// Tree id of `sm_data` in snapshot records.
const TREE_DATA: u8 = 0;
/// Tree id of telemetry heads in snapshot records (key: series prefix, value: the head).
const TREE_HEADS: u8 = 1;
/// Records per sled batch when loading a snapshot.
const LOAD_BATCH: usize = 1024;

type Membership = StoredMembership<NodeId, Node>;

fn settings_key(tenant: &str) -> Vec<u8> {
    format!("settings/{tenant}").into_bytes()
}

fn default_doc(tenant: &str) -> SettingsDoc {
    SettingsDoc { tenant: tenant.to_string(), revision: 0, updated_at_ms: 0, settings: Settings::default() }
}

/// A tenant's settings read directly from the data tree (outside an apply run).
pub(crate) fn settings_in(data: &sled::Tree, tenant: &str) -> Result<SettingsDoc, Error> {
    decode_doc(tenant, data.get(settings_key(tenant))?)
}

fn decode_doc(tenant: &str, raw: Option<impl AsRef<[u8]>>) -> Result<SettingsDoc, Error> {
    raw.map_or_else(|| Ok(default_doc(tenant)), |v| codec::decode_value("settings", v.as_ref()))
}

fn decode_last_applied(raw: Option<impl AsRef<[u8]>>) -> Result<Option<LogId<NodeId>>, Error> {
    Ok(raw
        .map(|v| codec::decode_value::<Option<LogId<NodeId>>>("last applied", v.as_ref()))
        .transpose()?
        .flatten())
}

/// Read access to the applied state. Cheap to clone; reads are local (possibly stale).
#[derive(Clone)]
pub struct StateReader {
    data: sled::Tree,
    heads: SharedHeads,
}

impl StateReader {
    /// The tenant's settings; defaults with revision 0 if never written.
    pub fn settings(&self, tenant: &str) -> Result<SettingsDoc, Error> {
        decode_doc(tenant, self.data.get(settings_key(tenant))?)
    }

    /// SHA-256 of the cluster admin token, once initialised.
    pub fn admin_token_sha256(&self) -> Result<Option<[u8; 32]>, Error> {
        self.data.get(KEY_ADMIN_TOKEN)?.map(|v| codec::decode_value("admin token", &v)).transpose()
    }

    /// Reader of the identity domain.
    pub fn identity(&self) -> crate::identity::IdentityReader {
        crate::identity::IdentityReader { data: self.data.clone() }
    }

    /// Reader of the fleet domain.
    pub fn fleet(&self) -> crate::fleet::FleetReader {
        crate::fleet::FleetReader { data: self.data.clone(), heads: self.heads.clone() }
    }

    /// Id of the last entry applied to this replica.
    pub fn last_applied(&self) -> Result<Option<LogId<NodeId>>, Error> {
        decode_last_applied(self.data.get(KEY_LAST_APPLIED)?)
    }
}

/// Log entries read at a time while the heads are replayed on open.
const REPLAY_SLICE: u64 = 64;

/// Most entries applied in one batch. A sled batch costs a few KiB of log writes whatever its
/// size, so one per entry made the state machine the write bottleneck; the bound keeps a
/// run's write set (held in memory) small.
const MAX_RUN: usize = 64;

/// Whether applying `entry` needs a prescan of the state before it (so it starts a run).
fn needs_prescan(entry: &Entry<TypeConfig>) -> bool {
    match &entry.payload {
        EntryPayload::Normal(Command::Fleet(f)) => fleet::needs_prescan(f),
        EntryPayload::Normal(Command::Identity(i)) => crate::identity::needs_prescan(i),
        _ => false,
    }
}

/// What the domains found by scanning before an entry's run.
#[derive(Default)]
struct Prescans {
    fleet: fleet::Prescan,
    identity: crate::identity::Prescan,
}

/// Applies a settings write (compare-and-set on the revision, validated again); with an
/// actor, also appends a `settings_changed` audit event with each changed field's old and new
/// value.
fn put_settings(
    data: &Tx<'_>,
    tenant: &str,
    expected_revision: Option<u64>,
    settings: &Settings,
    at_ms: u64,
    actor: Option<&str>,
) -> Result<CommandResult, Error> {
    let key = settings_key(tenant);
    let current = decode_doc(tenant, data.get(&key)?)?;
    if let Some(expected) = expected_revision.filter(|r| *r != current.revision) {
        tracing::debug!(%tenant, expected, current = current.revision, "settings revision mismatch");
        return Ok(CommandResult::Rejected(Rejection::RevisionMismatch { current: current.revision }));
    }
    if let Err(errors) = settings.validate() {
        let msg: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        return Ok(CommandResult::Rejected(Rejection::Invalid(msg.join("; "))));
    }
    let doc = SettingsDoc {
        tenant: tenant.to_string(),
        revision: current.revision + 1,
        updated_at_ms: at_ms,
        settings: settings.clone(),
    };
    if let Some(actor) = actor {
        let details = serde_json::json!({
            "revision": doc.revision,
            "changes": changed_fields(&current.settings, settings),
        });
        fleet::audit(data, tenant, at_ms, "settings_changed", actor, None, &details.to_string())?;
    }
    let value = codec::encode_value("settings", &doc)?;
    data.insert(key, value)?;
    Ok(CommandResult::Settings(doc))
}

/// Each field that differs between two settings documents, by dotted path: `[old, new]`.
/// Deterministic (serde_json's maps are ordered), as everything applied must be.
fn changed_fields(old: &Settings, new: &Settings) -> serde_json::Map<String, serde_json::Value> {
    fn walk(
        path: &str,
        a: &serde_json::Value,
        b: &serde_json::Value,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                for (k, va) in x {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(&p, va, y.get(k).unwrap_or(&serde_json::Value::Null), out);
                }
            }
            _ if a != b => {
                out.insert(path.to_string(), serde_json::json!([a, b]));
            }
            _ => {}
        }
    }
    let mut out = serde_json::Map::new();
    let (a, b) = (serde_json::to_value(old), serde_json::to_value(new));
    if let (Ok(a), Ok(b)) = (a, b) {
        walk("", &a, &b, &mut out);
    }
    out
}

/// Applies one command to the run's write set.
fn apply_command(
    data: &Tx<'_>,
    cmd: &Command,
    pre: &Prescans,
    heads: &HeadsTx<'_>,
) -> Result<CommandResult, Error> {
    match cmd {
        Command::Batch(cmds) => {
            let none = Prescans::default();
            let mut results = Vec::with_capacity(cmds.len());
            for c in cmds {
                results.push(if c.batchable() {
                    apply_command(data, c, &none, heads)?
                } else {
                    CommandResult::Rejected(Rejection::Invalid("this command cannot be batched".into()))
                });
            }
            Ok(CommandResult::Batch(results))
        }
        Command::Fleet(f) => fleet::apply(data, f, &pre.fleet, heads),
        Command::Identity(i) => crate::identity::apply(data, i, &pre.identity),
        Command::Noop => Ok(CommandResult::Ok),
        Command::PutSettings { tenant, expected_revision, settings, at_ms } => {
            put_settings(data, tenant, *expected_revision, settings, *at_ms, None)
        }
        Command::PutSettingsAudited { tenant, expected_revision, settings, at_ms, actor } => {
            put_settings(data, tenant, *expected_revision, settings, *at_ms, Some(actor))
        }
        Command::InitAdminToken { sha256 } => {
            if data.get(KEY_ADMIN_TOKEN)?.is_some() {
                return Ok(CommandResult::Rejected(Rejection::AlreadyInitialized));
            }
            let value = codec::encode_value("admin token", sha256)?;
            data.insert(KEY_ADMIN_TOKEN, value)?;
            Ok(CommandResult::Ok)
        }
    }
}

/// The state machine store handed to openraft.
pub struct StateMachineStore {
    meta: sled::Tree,
    data: sled::Tree,
    durable: Durable,
    snapshots: Arc<SnapshotDir>,
    /// Telemetry heads (memory; in snapshots; rebuilt from `log` by `recover`).
    heads: SharedHeads,
    /// The Raft log (read by `recover` to rebuild heads; `apply` waits until an entry is
    /// durable in it, so an applied entry is always there to replay).
    log: crate::LogStore,
}

impl StateMachineStore {
    /// The store over `meta` and `data`, with records of the older layout moved into `data`.
    pub(crate) fn open(
        meta: sled::Tree,
        data: sled::Tree,
        durable: Durable,
        snapshots: SnapshotDir,
        log: crate::LogStore,
    ) -> Result<Self, Error> {
        move_legacy_records(&meta, &data)?;
        let heads = SharedHeads::default();
        Ok(StateMachineStore { meta, data, durable, snapshots: Arc::new(snapshots), heads, log })
    }

    /// A reader over the same trees.
    pub fn reader(&self) -> StateReader {
        StateReader { data: self.data.clone(), heads: self.heads.clone() }
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

    fn membership(&self) -> Result<Membership, Error> {
        let raw = self.data.get(KEY_MEMBERSHIP)?;
        Ok(raw.map(|v| codec::decode_value("membership", &v)).transpose()?.unwrap_or_default())
    }

    /// Writes the dump of the current state to a new temp snapshot file (not yet synced).
    async fn dump(&self) -> Result<Prepared, Error> {
        let last_log_id = self.reader().last_applied()?;
        let (generation, path) = self.snapshots.allocate();
        let meta = Meta {
            last_log_id,
            last_membership: self.membership()?,
            snapshot_id: snapshot_id(last_log_id, generation),
        };
        let data = self.data.clone();
        let heads: Vec<(Vec<u8>, Vec<u8>)> = {
            let heads =
                self.heads.read().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))?;
            heads.iter().flat_map(|(k, h)| h.to_records().into_iter().map(|r| (k.clone(), r))).collect()
        };
        let (file, meta) = blocking(move || {
            let mut file = AtomicFile::create(&path)?;
            let mut w = SnapshotWriter::new(file.writer(), &meta)?;
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
    async fn load_snapshot(&self, path: PathBuf, meta: &Meta) -> Result<(), Error> {
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
    async fn store_received(&self, mut file: std::fs::File, meta: &Meta) -> Result<PathBuf, Error> {
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
            let mut w = SnapshotWriter::new(out.writer(), &expected)?;
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
fn load_heads(path: &Path) -> Result<HeadMap, Error> {
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

/// Key of the stored-items record of the entry at `index`.
fn stored_key(index: u64) -> Vec<u8> {
    [STORED_PREFIX, &index.to_be_bytes()].concat()
}

/// Moves the records an older version kept in `sm_meta` (`last_applied`, `membership`,
/// `stored/<index>`) into `sm_data`, then deletes them from `sm_meta`. Where both trees hold a
/// `last_applied` (a crash between the two steps, or a downgraded binary that ran on this
/// directory after an earlier move), the further one wins with its membership; stored records
/// of the same entry are the same bytes whichever tree holds them.
fn move_legacy_records(meta: &sled::Tree, data: &sled::Tree) -> Result<(), Error> {
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

fn snapshot_id(last: Option<LogId<NodeId>>, generation: u64) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let (term, index) = last.map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("{term}-{index}-{generation}-{nanos:x}")
}

/// Runs blocking file/sled work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(format!("blocking task failed: {e}"))))?
}

/// Applies `entries` in runs (see [`MAX_RUN`]); a run that fails stops the rest and is
/// reported with its last entry's id.
fn apply_entries(
    data: &sled::Tree,
    heads: &SharedHeads,
    entries: &[Entry<TypeConfig>],
) -> Result<Vec<CommandResult>, (LogId<NodeId>, Error)> {
    let mut results = Vec::with_capacity(entries.len());
    let mut rest = entries;
    while !rest.is_empty() {
        let len = 1 + rest[1..].iter().take(MAX_RUN - 1).take_while(|e| !needs_prescan(e)).count();
        let (run, tail) = rest.split_at(len);
        let last = run[len - 1].log_id;
        results.extend(apply_run(data, heads, run).map_err(|e| (last, e))?);
        rest = tail;
    }
    Ok(results)
}

/// Applies a run of entries as one batch (see [`MAX_RUN`]); only the first may need a
/// prescan, which reads the state every earlier run left. On an error nothing of the run
/// is written and no head changes.
fn apply_run(
    data: &sled::Tree,
    heads: &SharedHeads,
    run: &[Entry<TypeConfig>],
) -> Result<Vec<CommandResult>, Error> {
    let Some(last) = run.last() else { return Ok(Vec::new()) };
    // readers take the read lock for a whole query, so they never see a sealed block and
    // the head it came from (or neither)
    let mut heads = heads.write().map_err(|_| Error::Corrupt("telemetry heads lock poisoned".into()))?;
    let staged = HeadsTx::new(&heads);
    let applied = codec::encode_value("last applied", &Some(last.log_id))?;
    // the run's last membership entry is the one in effect after it
    let membership = run
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(Membership::new(Some(e.log_id), m.clone())),
            _ => None,
        })
        .map(|m| codec::encode_value("membership", &m))
        .transpose()?;
    let mut first_pre = Prescans::default();
    match &run[0].payload {
        EntryPayload::Normal(Command::Fleet(f)) => first_pre.fleet = fleet::prescan(data, f)?,
        EntryPayload::Normal(Command::Identity(i)) => first_pre.identity = crate::identity::prescan(data, i)?,
        _ => {}
    }
    let no_pre = Prescans::default();
    let tx = Tx::new(data);
    tx.insert(KEY_LAST_APPLIED, applied)?;
    if let Some(m) = membership {
        tx.insert(KEY_MEMBERSHIP, m)?;
    }
    let mut results = Vec::with_capacity(run.len());
    for (i, entry) in run.iter().enumerate() {
        let pre = if i == 0 { &first_pre } else { &no_pre };
        let result = match &entry.payload {
            EntryPayload::Normal(cmd) => apply_command(&tx, cmd, pre, &staged)?,
            EntryPayload::Blank | EntryPayload::Membership(_) => CommandResult::Ok,
        };
        if let CommandResult::Fleet(fleet::FleetResult::Group(outcomes)) = &result {
            tx.insert(stored_key(entry.log_id.index), fleet::stored_bitmap(outcomes))?;
        }
        results.push(result);
    }
    data.apply_batch(tx.into_batch())?;
    staged.finish().publish(&mut heads);
    Ok(results)
}

/// A dumped, not yet published snapshot.
struct Prepared {
    file: AtomicFile,
    meta: Meta,
}

/// Publishes the snapshot dumped by `get_snapshot_builder`.
pub struct SnapshotBuilder {
    prepared: Option<Result<Prepared, Error>>,
    durable: Durable,
    snapshots: Arc<SnapshotDir>,
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
        tracing::info!(snapshot = %meta, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let applied = self.reader().last_applied().sto(ErrorSubject::StateMachine, ErrorVerb::Read)?;
        let membership = self.membership().sto(ErrorSubject::StateMachine, ErrorVerb::Read)?;
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else { return Ok(Vec::new()) };
        self.log.wait_durable(last.index).await.sto(ErrorSubject::Apply(last), ErrorVerb::Write)?;
        // a run can take a long time under load: on a blocking thread it never holds up the
        // runtime's workers (Raft heartbeats, HTTP), whose queued tasks would wait behind it
        let (data, heads) = (self.data.clone(), self.heads.clone());
        let applied = tokio::task::spawn_blocking(move || apply_entries(&data, &heads, &entries))
            .await
            .map_err(|e| (last, Error::Io(std::io::Error::other(format!("apply task failed: {e}")))))
            .and_then(|r| r);
        match applied {
            Ok(results) => Ok(results),
            Err((at, e)) => Err(e).sto(ErrorSubject::Apply(at), ErrorVerb::Write),
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            prepared: Some(self.dump().await),
            durable: self.durable.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let file = tempfile::tempfile_in(self.snapshots.path()).map_err(Error::from);
        let file = file.sto(ErrorSubject::Snapshot(None), ErrorVerb::Write)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        tracing::info!(snapshot = %meta, "installing snapshot");
        let file = snapshot.into_std().await;
        let path = self.store_received(file, meta).await.sto(subject(), ErrorVerb::Write)?;
        self.load_snapshot(path, meta).await.sto(subject(), ErrorVerb::Write)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let latest = self.snapshots.open_latest().sto(ErrorSubject::Snapshot(None), ErrorVerb::Read)?;
        Ok(latest.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use openraft::testing::log_id;

    use super::*;

    /// Applies `cmds` as entries with consecutive indexes after the last applied one.
    pub(crate) async fn apply_commands(sm: &mut StateMachineStore, cmds: Vec<Command>) -> Vec<CommandResult> {
        let next = sm.reader().last_applied().unwrap().map_or(1, |l| l.index + 1);
        let entries = cmds.into_iter().zip(next..).map(|(cmd, i)| Entry::<TypeConfig> {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Normal(cmd),
        });
        sm.apply(entries.collect::<Vec<_>>()).await.unwrap()
    }
}

#[cfg(test)]
mod tests {
    use monsys_proto::Settings;
    use openraft::testing::log_id;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::{Options, storage};

    fn put(tenant: &str, expected_revision: Option<u64>, settings: Settings, at_ms: u64) -> Command {
        Command::PutSettings { tenant: tenant.into(), expected_revision, settings, at_ms }
    }

    /// Opens the store in `dir` again. The dropped store's sled threads may hold its lock for
    /// a moment after the drop (a real restart is a new process), so a busy lock is retried.
    async fn reopen(dir: &std::path::Path) -> StateMachineStore {
        for _ in 0..50 {
            match storage::open(dir, &Options::default()).await {
                Ok(s) => return s.sm,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        panic!("the store's lock stayed busy for 5 s")
    }

    async fn apply(sm: &mut StateMachineStore, cmds: Vec<Command>) -> Vec<CommandResult> {
        super::test_support::apply_commands(sm, cmds).await
    }

    fn refresh(secs: u32) -> Settings {
        Settings { refresh_interval_secs: secs, ..Settings::default() }
    }

    #[tokio::test]
    async fn a_batch_applies_in_order_with_one_result_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        let batch = Command::Batch(vec![
            put("t1", Some(0), refresh(30), 1),
            put("t1", Some(0), refresh(40), 2),
            put("t1", Some(1), refresh(50), 3),
            Command::Noop,
            Command::Batch(vec![]),
        ]);
        let results = apply(&mut sm, vec![batch]).await;
        let CommandResult::Batch(r) = &results[0] else { panic!("{results:?}") };
        assert_eq!(r.len(), 5);
        assert!(matches!(&r[0], CommandResult::Settings(d) if d.revision == 1));
        assert_eq!(r[1], CommandResult::Rejected(Rejection::RevisionMismatch { current: 1 }));
        assert!(matches!(&r[2], CommandResult::Settings(d) if d.revision == 2 && d.settings == refresh(50)));
        assert!(matches!(&r[3], CommandResult::Rejected(Rejection::Invalid(_))), "not batchable");
        assert!(matches!(&r[4], CommandResult::Rejected(Rejection::Invalid(_))), "no nesting");
        assert_eq!(sm.reader().settings("t1").unwrap().revision, 2);
    }

    #[tokio::test]
    async fn put_settings_is_a_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        let reader = sm.reader();
        assert_eq!(reader.settings("t1").unwrap(), default_doc("t1"));

        let results = apply(
            &mut sm,
            vec![
                put("t1", Some(0), refresh(30), 1000),
                put("t1", Some(0), refresh(40), 2000),
                put("t1", None, refresh(0), 3000),
                put("t1", Some(1), refresh(50), 4000),
                put("t2", None, refresh(60), 5000),
            ],
        )
        .await;

        let doc1 =
            SettingsDoc { tenant: "t1".into(), revision: 1, updated_at_ms: 1000, settings: refresh(30) };
        let doc2 =
            SettingsDoc { tenant: "t1".into(), revision: 2, updated_at_ms: 4000, settings: refresh(50) };
        assert_eq!(results[0], CommandResult::Settings(doc1));
        assert_eq!(results[1], CommandResult::Rejected(Rejection::RevisionMismatch { current: 1 }));
        assert!(
            matches!(&results[2], CommandResult::Rejected(Rejection::Invalid(m)) if m.contains("refresh_interval_secs")),
            "{:?}",
            results[2]
        );
        assert_eq!(results[3], CommandResult::Settings(doc2.clone()));
        assert_eq!(reader.settings("t1").unwrap(), doc2);
        assert_eq!(reader.settings("t2").unwrap().revision, 1);
        assert_eq!(reader.last_applied().unwrap(), Some(log_id(1, 1, 5)));
    }

    #[tokio::test]
    async fn admin_token_initialises_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
        let results = apply(
            &mut sm,
            vec![
                Command::Noop,
                Command::InitAdminToken { sha256: [1; 32] },
                Command::InitAdminToken { sha256: [2; 32] },
            ],
        )
        .await;
        assert_eq!(
            results,
            vec![
                CommandResult::Ok,
                CommandResult::Ok,
                CommandResult::Rejected(Rejection::AlreadyInitialized)
            ]
        );
        assert_eq!(sm.reader().admin_token_sha256().unwrap(), Some([1; 32]));
    }

    #[tokio::test]
    async fn installed_snapshot_replaces_the_whole_state() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = storage::open(dir_a.path(), &Options::default()).await.unwrap().sm;
        let mut b = storage::open(dir_b.path(), &Options::default()).await.unwrap().sm;
        apply(&mut a, vec![put("t1", None, refresh(30), 1), Command::InitAdminToken { sha256: [7; 32] }])
            .await;
        apply(&mut b, vec![put("only-on-b", None, refresh(99), 2)]).await;

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

    #[tokio::test]
    async fn corrupt_snapshot_is_refused_and_state_kept() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = storage::open(dir_a.path(), &Options::default()).await.unwrap().sm;
        let mut b = storage::open(dir_b.path(), &Options::default()).await.unwrap().sm;
        apply(&mut a, vec![put("t1", None, refresh(30), 1)]).await;
        apply(&mut b, vec![put("t1", None, refresh(99), 2)]).await;
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

    /// Appends `cmds` to the log tree (as Raft would) and applies them.
    async fn log_and_apply(sm: &mut StateMachineStore, cmds: Vec<Command>) -> Vec<CommandResult> {
        let next = sm.reader().last_applied().unwrap().map_or(1, |l| l.index + 1);
        let entries: Vec<Entry<TypeConfig>> = cmds
            .into_iter()
            .zip(next..)
            .map(|(cmd, i)| Entry { log_id: log_id(1, 1, i), payload: EntryPayload::Normal(cmd) })
            .collect();
        sm.log.append_durably(entries.clone()).await.unwrap();
        sm.apply(entries).await.unwrap()
    }

    fn fleet_setup() -> Vec<Command> {
        use crate::fleet::{EnrollmentToken, FleetCommand, Registration};
        let token = EnrollmentToken {
            id: "et".into(),
            tenant: "t".into(),
            name: "x".into(),
            sha256: [1; 32],
            created_at_ms: 1,
            expires_at_ms: None,
            max_uses: None,
            uses: 0,
            revoked: false,
        };
        let reg = Registration {
            enrollment_sha256: [1; 32],
            new_agent_id: "a1".into(),
            machine_id: "m1".into(),
            hostname: "h".into(),
            pubkey: None,
            token_sha256: [2; 32],
            agent_version: "1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            at_ms: 1,
        };
        vec![
            Command::Fleet(FleetCommand::CreateEnrollmentToken(token)),
            Command::Fleet(FleetCommand::Register(reg)),
        ]
    }

    /// A group of one batch of agent `a1`: `seq`, collected at `at_ms`, a few series.
    fn telemetry(seq: u64, at_ms: u64) -> Command {
        telemetry_with(seq, at_ms, (0..40).map(|s| (format!("s{s}"), (seq * 31 + s) as f64 / 8.0)).collect())
    }

    fn telemetry_with(seq: u64, at_ms: u64, samples: Vec<(String, f64)>) -> Command {
        use crate::fleet::{FleetCommand, GroupItem, IngestItem};
        Command::Fleet(FleetCommand::Group(
            vec![GroupItem::Batch(Box::new(IngestItem {
                tenant: "t".into(),
                agent_id: "a1".into(),
                seq,
                body_sha256: [seq as u8; 32],
                collected_at_ms: at_ms,
                received_at_ms: at_ms,
                verified_with: None,
                agent_version: "1".into(),
                samples,
                inventory_json: None,
                processes_json: None,
                agent_alerts: vec![],
                fire: vec![],
                clear: vec![],
            }))]
            .into(),
        ))
    }

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
    async fn open_reloads_a_snapshot_ahead_of_the_state() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
            apply(&mut sm, vec![put("t1", None, refresh(30), 1), Command::Noop]).await;
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            // Simulate losing state-machine writes that never reached the disk.
            sm.data.clear().unwrap();
            sm.durable.durable_flush().await.unwrap();
        }
        let reader = storage::open(dir.path(), &Options::default()).await.unwrap().reader;
        assert_eq!(reader.settings("t1").unwrap().settings, refresh(30));
        assert_eq!(reader.last_applied().unwrap(), Some(log_id(1, 1, 2)));
    }

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

    #[tokio::test]
    async fn open_finishes_an_interrupted_install() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
            apply(&mut sm, vec![put("t1", None, refresh(30), 1)]).await;
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            apply(&mut sm, vec![put("t1", None, refresh(40), 2)]).await;
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
