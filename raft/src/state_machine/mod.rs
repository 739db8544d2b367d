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
//!   change needs a new command variant (see `command`), not an edit of `SettingsV1::check`.
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
//!
//! Modules, one job each:
//! - `apply`: the apply engine: entries in runs, one `sled::Batch` per run, commands dispatched
//!   to the domains.
//! - `settings`: the settings domain (tenant settings documents, compare-and-set, audit of
//!   changed fields).
//! - `recovery`: opening the store and bringing it up to date (snapshot reload, telemetry heads
//!   replayed from the log).
//! - `snapshotting`: taking, receiving and loading snapshots of this state machine (the file
//!   format and directory are the crate's `snapshot` module).
//! - `migration`: moving the records of the older two-tree layout.

use std::sync::Arc;

use self::apply::apply_entries;
use self::settings::{decode_doc, settings_key};
use crate::durable::Durable;
use crate::error::StorageResultExt;
use crate::fleet::telemetry::SharedHeads;
use crate::record::settings::SettingsRecord;
use crate::snapshot::{Meta, SnapshotDir, SnapshotFormatSetting};
use crate::{CommandResult, Error, Node, NodeId, TypeConfig, codec};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, StorageError, StoredMembership};

mod apply;
mod migration;
mod recovery;
mod settings;
mod snapshotting;
#[cfg(test)]
pub(crate) mod test_support;

pub(crate) use settings::settings_in;
pub use snapshotting::SnapshotBuilder;

/// Prefix of the state machine's own records in `sm_data` (never in snapshots).
const SM_PREFIX: &[u8] = b"\0sm/";
const KEY_LAST_APPLIED: &[u8] = b"\0sm/last_applied";
const KEY_MEMBERSHIP: &[u8] = b"\0sm/membership";
/// Prefix of the per-entry record of which group items were stored (for rebuilding telemetry
/// heads after a restart; entries covered by a snapshot are removed when it is built).
const STORED_PREFIX: &[u8] = b"\0sm/stored/";
/// `sm_meta`: set while a snapshot is being loaded (survives the clearing of `sm_data`).
const KEY_INSTALLING: &[u8] = b"installing";
const KEY_ADMIN_TOKEN: &[u8] = b"admin/token_sha256";

type Membership = StoredMembership<NodeId, Node>;

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
    pub fn settings(&self, tenant: &str) -> Result<SettingsRecord, Error> {
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

    /// The cluster's active version as applied here ([`crate::cluster_version::UNVERSIONED`]
    /// if never set).
    pub fn cluster_version(&self) -> Result<u32, Error> {
        let raw = self.data.get(crate::cluster_version::KEY)?;
        Ok(raw
            .map(|v| codec::decode_value("cluster version", &v))
            .transpose()?
            .unwrap_or(crate::cluster_version::UNVERSIONED))
    }

    /// Id of the last entry applied to this replica.
    pub fn last_applied(&self) -> Result<Option<LogId<NodeId>>, Error> {
        decode_last_applied(self.data.get(KEY_LAST_APPLIED)?)
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
    /// The data directory, whose format marker follows the applied cluster version.
    dir: std::path::PathBuf,
    /// The format the next snapshot is written in.
    snapshot_format: SnapshotFormatSetting,
}

impl StateMachineStore {
    /// A reader over the same trees.
    pub fn reader(&self) -> StateReader {
        StateReader { data: self.data.clone(), heads: self.heads.clone() }
    }

    /// Brings the formats that follow the applied cluster version up to it: the snapshot
    /// format the builder writes (what every member of such a cluster reads), and the data
    /// directory's marker (see `data_format`): from then on, builds that cannot run the
    /// version refuse the directory instead of reading data they do not know.
    pub(crate) async fn sync_formats(&self) -> Result<(), Error> {
        let active = self.reader().cluster_version()?;
        self.snapshot_format.set(crate::cluster_version::snapshot_format_for(active));
        let format = crate::cluster_version::data_format_for(active);
        let dir = self.dir.clone();
        blocking(move || crate::data_format::raise_to(&dir, format)).await
    }

    /// The setting of the format snapshots are written in (default: the newest this build
    /// writes). Take it before handing the store to `Raft::new`; lower it while some member
    /// cannot read the newest format (see the crate's snapshot module).
    pub fn snapshot_format(&self) -> SnapshotFormatSetting {
        self.snapshot_format.clone()
    }

    fn membership(&self) -> Result<Membership, Error> {
        let raw = self.data.get(KEY_MEMBERSHIP)?;
        Ok(raw.map(|v| codec::decode_value("membership", &v)).transpose()?.unwrap_or_default())
    }
}

/// Key of the stored-items record of the entry at `index`.
fn stored_key(index: u64) -> Vec<u8> {
    [STORED_PREFIX, &index.to_be_bytes()].concat()
}

/// Runs blocking file/sled work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(format!("blocking task failed: {e}"))))?
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
        let results = match applied {
            Ok(results) => results,
            Err((at, e)) => return Err(e).sto(ErrorSubject::Apply(at), ErrorVerb::Write),
        };
        if results
            .iter()
            .any(|r| matches!(r, CommandResult::ClusterVersion { active, previous } if active > previous))
        {
            self.sync_formats().await.sto(ErrorSubject::Apply(last), ErrorVerb::Write)?;
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let format = self.snapshot_format.get();
        SnapshotBuilder {
            prepared: Some(self.dump_as(format).await),
            format,
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
        self.load_snapshot(path, meta).await.sto(subject(), ErrorVerb::Write)?;
        self.sync_formats().await.sto(subject(), ErrorVerb::Write)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let latest = self.snapshots.open_latest().sto(ErrorSubject::Snapshot(None), ErrorVerb::Read)?;
        Ok(latest.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}
