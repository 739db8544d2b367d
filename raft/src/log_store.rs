//! The Raft log in a segmented write-ahead log (`raft-log`), as openraft v2 `RaftLogStorage`.
//!
//! The log used to live in sled, next to the state machine. Every append then paid sled's
//! write path (page rewrites of the log's last leaf and of the meta keys, a hand-off to sled's
//! IO threads, a flush and an `fdatasync`) once per client write, because openraft 0.9 appends
//! each proposal on its own. `raft-log` (by openraft's author, built for this trait) appends
//! records to chunk files and syncs them on its own flush thread, grouping every request that
//! queued while the previous sync ran. Its sync is a plain `fdatasync` of the chunk file.
//!
//! Layout: `<data dir>/raftlog/` holds the chunk files; each record is an append (the entry's
//! log id and `codec::encode_value(EntryPayload)`), a vote, a commit, a truncation or a purge,
//! each with a checksum. A half-written record at the tail (crash mid-write) is cut off on open;
//! it was never reported durable.
//!
//! Invariants:
//! - `append` queues the entries and a sync, and returns: the entries are readable at once, and
//!   openraft hears `log_io_completed` only from the flush thread after the sync. (openraft
//!   0.9 itself waits for that before its next append, so syncs group only across callers:
//!   votes, truncations, the state machine's durability waits.)
//! - On open, everything replayed from the chunk files is synced before it is trusted (a
//!   process crash can leave written but unsynced records behind).
//! - `save_vote`, `truncate` and `purge` return only after their record is synced (a lost vote
//!   allows voting twice in one term; a lost truncation could resurrect a conflicting suffix).
//! - `save_committed` is not synced: it is a restart hint, and a hint that is behind is safe.
//! - [`LogStore::wait_durable`] lets the state machine refuse to apply an entry before it is
//!   durable *here*: a follower may apply what a quorum has while its own sync is in flight, and
//!   the telemetry heads are rebuilt from the local log after a crash, so an applied entry must
//!   never be missing from it.
//! - Upgrade: a data dir whose log is still in sled (`raft_log`, `raft_meta` trees) is imported
//!   once on open, into a temp dir that is synced and then renamed, so a crash mid-import
//!   leaves the sled copy authoritative; the sled trees are dropped after the rename.
//!
//! Reads: `raft-log` keeps recent payloads in memory, bounded by [`CACHE_BYTES`], and this
//! store has it keep them *decoded* ([`WalPayload`]): the leader reads every entry once per
//! follower to replicate it and once more to apply it, and ingest group entries are large, so
//! a read clones an `Arc` instead of copying and decoding bytes. The bytes on disk are the
//! same as when the cache held bytes (the length-prefixed `codec::encode_value` of the payload).
//!
//! Deliberately missing: background compaction (purged chunks are deleted whole).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, StorageError, Vote};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::{RaftLog, Types};

use crate::codec;
use crate::error::StorageResultExt;
use crate::{Command, Error, NodeId, TypeConfig};

/// Memory the WAL's cache of decoded payloads may use, counted as three times the encoded size
/// (a decoded group entry takes ~2.1–2.5× its bytes: a `(String, f64)` and a heap block per
/// sample). Entries of the open chunk stay cached until it
/// closes, so [`CHUNK_BYTES`] bounds it too.
pub const CACHE_BYTES: usize = 48 * 1024 * 1024;
/// A chunk file is closed at this size; purges delete whole closed chunks.
const CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Read buffer used to replay a chunk on open (raft-log's default is 64 MiB, all resident).
const REPLAY_BUFFER_BYTES: usize = 1024 * 1024;
/// Directory of the WAL under the store's dir, and of an import in progress.
const WAL_DIR: &str = "raftlog";
const IMPORT_DIR: &str = "raftlog.import";

/// Returns `Err(TooLarge)` if `cmd` would not fit in one log entry.
pub fn check_command_size(cmd: &Command) -> Result<(), Error> {
    let entry = Entry::<TypeConfig> { log_id: LogId::default(), payload: EntryPayload::Normal(cmd.clone()) };
    codec::encode_value("log entry", &entry).map(|_| ())
}

/// The Raft log store. Clones share one WAL; a clone is also the log reader.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    wal: Mutex<RaftLog<WalTypes>>,
    /// Shared with flush completions (which run on the WAL's flush thread and must not own
    /// the WAL: dropping its last handle there would join that thread from itself).
    marks: Arc<Mutex<DurableMark>>,
}

/// How far the log is known to be durable.
#[derive(Default)]
struct DurableMark {
    /// Every entry with an index below this is durable (0: nothing known). Lowered by
    /// truncation; raised by flush completions of the same `generation`.
    below: u64,
    /// Bumped by every truncation, so a sync requested before it cannot vouch for entries
    /// appended after it.
    generation: u64,
}

impl LogStore {
    /// Opens the WAL under `dir`, importing a log still kept in the sled trees `old_log` and
    /// `old_meta` (both are emptied once the WAL holds it durably).
    pub(crate) fn open(dir: &Path, old_log: &sled::Tree, old_meta: &sled::Tree) -> Result<Self, Error> {
        let wal_dir = dir.join(WAL_DIR);
        let import_dir = dir.join(IMPORT_DIR);
        if import_dir.exists() {
            std::fs::remove_dir_all(&import_dir)?;
        }
        if !wal_dir.exists() {
            if !old_log.is_empty() || !old_meta.is_empty() {
                import_from_sled(&import_dir, old_log, old_meta)?;
                std::fs::rename(&import_dir, &wal_dir)?;
            } else {
                std::fs::create_dir_all(&wal_dir)?;
            }
            crate::durable::fsync_dir(dir)?;
        }
        if !old_log.is_empty() || !old_meta.is_empty() {
            old_log.clear()?;
            old_meta.clear()?;
            old_log.flush()?;
            tracing::info!("raft log moved from sled to the write-ahead log");
        }
        let mut wal = open_wal(&wal_dir)?;
        // records written before a crash may sit in the page cache only: sync them before
        // anything relies on them
        blocking_sync(&mut wal)?;
        let below = wal.log_state().last().map_or(0, |l| l.0.index + 1);
        let marks = Arc::new(Mutex::new(DurableMark { below, generation: 0 }));
        Ok(LogStore { inner: Arc::new(Inner { wal: Mutex::new(wal), marks }) })
    }

    fn wal(&self) -> Result<MutexGuard<'_, RaftLog<WalTypes>>, Error> {
        self.inner.wal.lock().map_err(|_| Error::Corrupt("raft log lock poisoned".into()))
    }

    /// Entries with index in `[start, end)` (`end == None`: to the last).
    pub(crate) fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let wal = self.wal()?;
        let end = end.unwrap_or_else(|| wal.log_state().last().map_or(0, |l| l.0.index + 1));
        if end <= start {
            return Ok(Vec::new());
        }
        wal.read(start, end)
            .map(|r| {
                r.map(|(id, p)| Entry { log_id: id.0, payload: (*p.entry).clone() }).map_err(Error::from)
            })
            .collect()
    }

    /// Queues `entries` and a sync; `done` runs on the flush thread once they are durable.
    fn append_then(&self, entries: Vec<Entry<TypeConfig>>, done: Flushed) -> Result<(), Error> {
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            records.push((WalLogId(e.log_id), WalPayload::new(e.payload)?));
        }
        let mut wal = self.wal()?;
        // openraft truncates before it overwrites, and never appends below a purge; the storage
        // test suite does both, so both get the meaning they would have had in a key-value log
        let first_kept = wal.log_state().purged().map_or(0, |p| p.0.index + 1);
        records.retain(|(id, _)| id.0.index >= first_kept);
        if let Some((first, _)) = records.first()
            && wal.log_state().last().is_some_and(|last| last.0.index >= first.0.index)
        {
            self.truncate_locked(&mut wal, first.0.index)?;
        }
        wal.append(records)?;
        let upto = wal.log_state().last().map_or(0, |l| l.0.index + 1);
        let marks = self.inner.marks.clone();
        let generation = lock(&marks)?.generation;
        let track = Box::new(move |ok: bool| {
            if let Ok(mut m) = marks.lock()
                && ok
                && m.generation == generation
            {
                m.below = m.below.max(upto);
            }
        });
        wal.flush(true, Some(Flushed { notify: done.notify, track: Some(track) }))?;
        Ok(())
    }

    /// Removes the entries from `index` on (the caller holds the WAL lock).
    fn truncate_locked(&self, wal: &mut RaftLog<WalTypes>, index: u64) -> Result<(), Error> {
        {
            let mut m = lock(&self.inner.marks)?;
            m.generation += 1;
            m.below = m.below.min(index);
        }
        wal.truncate(index)?;
        Ok(())
    }

    /// Queues a sync of everything written so far and waits for it.
    async fn sync(&self) -> Result<(), Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.wal()?.flush(true, Some(Flushed { notify: Notify::Wait(tx), track: None }))?;
        rx.await.map_err(|_| Error::Io(io::Error::other("raft log flush thread stopped")))??;
        Ok(())
    }

    /// Returns once every entry up to `index` is durable in this node's log.
    pub(crate) async fn wait_durable(&self, index: u64) -> Result<(), Error> {
        if lock(&self.inner.marks)?.below > index {
            return Ok(());
        }
        self.sync().await
    }

    #[cfg(test)]
    pub(crate) async fn append_durably(&self, entries: Vec<Entry<TypeConfig>>) -> Result<(), Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.append_then(entries, Flushed { notify: Notify::Wait(tx), track: None })?;
        rx.await.map_err(|_| Error::Io(io::Error::other("raft log flush thread stopped")))??;
        Ok(())
    }
}

fn lock(marks: &Mutex<DurableMark>) -> Result<MutexGuard<'_, DurableMark>, Error> {
    marks.lock().map_err(|_| Error::Corrupt("raft log durability mark poisoned".into()))
}

/// Syncs everything written to `wal` so far, blocking the calling thread.
fn blocking_sync(wal: &mut RaftLog<WalTypes>) -> Result<(), Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    wal.flush(true, Some(Flushed { notify: Notify::Blocking(tx), track: None }))?;
    rx.recv().map_err(|_| Error::Io(io::Error::other("raft log flush thread stopped")))??;
    Ok(())
}

fn open_wal(dir: &Path) -> Result<RaftLog<WalTypes>, Error> {
    let mut config = raft_log::Config::new(dir.to_string_lossy());
    config.log_cache_capacity = Some(CACHE_BYTES);
    config.wal.chunk_max_size = Some(CHUNK_BYTES);
    config.wal.read_buffer_size = Some(REPLAY_BUFFER_BYTES);
    // group commit comes from syncs queueing behind the one in flight; no extra wait
    config.wal.flush_batch_wait = Some(std::time::Duration::ZERO);
    Ok(RaftLog::open(Arc::new(config))?)
}

/// Writes the log kept in sled (format of versions up to 0.6) into a new WAL at `dir`, synced.
fn import_from_sled(dir: &Path, log: &sled::Tree, meta: &sled::Tree) -> Result<(), Error> {
    let read_meta = |key: &[u8]| -> Result<Option<Vec<u8>>, Error> { Ok(meta.get(key)?.map(|v| v.to_vec())) };
    let purged: Option<LogId<NodeId>> =
        read_meta(b"last_purged")?.map(|v| codec::decode_value("raft meta", &v)).transpose()?.flatten();
    let vote: Option<Vote<NodeId>> =
        read_meta(b"vote")?.map(|v| codec::decode_value("raft meta", &v)).transpose()?;
    let committed: Option<LogId<NodeId>> =
        read_meta(b"committed")?.map(|v| codec::decode_value("raft meta", &v)).transpose()?.flatten();
    std::fs::create_dir_all(dir)?;
    let mut wal = open_wal(dir)?;
    if let Some(p) = purged {
        wal.purge(WalLogId(p))?;
    }
    let mut n = 0u64;
    for kv in log.iter() {
        let entry: Entry<TypeConfig> = codec::decode_value("log entry", &kv?.1)?;
        if purged.is_some_and(|p| entry.log_id.index <= p.index) {
            continue; // left behind by a crash between the purge marker and the delete
        }
        wal.append([(WalLogId(entry.log_id), WalPayload::new(entry.payload)?)])?;
        n += 1;
    }
    if let Some(v) = vote {
        wal.save_vote(WalVote(v))?;
    }
    let last = wal.log_state().last().cloned();
    if let Some(c) = committed.filter(|c| Some(&WalLogId(*c)) <= last.as_ref() && Some(*c) >= purged) {
        wal.commit(WalLogId(c))?;
    }
    blocking_sync(&mut wal)?;
    drop(wal);
    crate::durable::fsync_dir(dir)?;
    tracing::info!(entries = n, ?purged, "imported the raft log from sled");
    Ok(())
}

/// `[start, end)` of a range of indexes; `end == None` means unbounded.
fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    Some((start, end))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let Some((start, end)) = index_bounds(&range) else { return Ok(Vec::new()) };
        self.read_range(start, end).sto(ErrorSubject::Logs, ErrorVerb::Read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let wal = self.wal().sto(ErrorSubject::Logs, ErrorVerb::Read)?;
        let state = wal.log_state();
        let last_purged_log_id = state.purged().map(|l| l.0);
        let last_log_id = state.last().map(|l| l.0).or(last_purged_log_id);
        Ok(LogState { last_log_id, last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = || -> Result<(), Error> {
            self.wal()?.save_vote(WalVote(*vote))?;
            Ok(())
        };
        write().sto(ErrorSubject::Vote, ErrorVerb::Write)?;
        self.sync().await.sto(ErrorSubject::Vote, ErrorVerb::Write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let wal = self.wal().sto(ErrorSubject::Vote, ErrorVerb::Read)?;
        Ok(wal.log_state().vote().map(|v| v.0))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        let Some(committed) = committed else { return Ok(()) };
        let mut wal = self.wal().sto(ErrorSubject::Store, ErrorVerb::Write)?;
        let state = wal.log_state();
        // a hint: skip values the WAL would refuse (behind the stored one, past the last entry)
        let c = WalLogId(committed);
        if state.committed().is_some_and(|s| *s >= c) || state.last().is_none_or(|l| *l < c) {
            return Ok(());
        }
        wal.commit(c).map(|_| ()).map_err(Error::from).sto(ErrorSubject::Store, ErrorVerb::Write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let wal = self.wal().sto(ErrorSubject::Store, ErrorVerb::Read)?;
        Ok(wal.log_state().committed().map(|l| l.0))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.append_then(entries, Flushed { notify: Notify::Raft(callback), track: None })
            .sto(ErrorSubject::Logs, ErrorVerb::Write)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "truncate raft log");
        let write = || -> Result<(), Error> { self.truncate_locked(&mut *self.wal()?, log_id.index) };
        write().sto(ErrorSubject::Logs, ErrorVerb::Delete)?;
        self.sync().await.sto(ErrorSubject::Logs, ErrorVerb::Delete)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "purge raft log");
        let subject = || ErrorSubject::Log(log_id);
        let write = || -> Result<(), Error> {
            self.wal()?.purge(WalLogId(log_id))?;
            Ok(())
        };
        write().sto(subject(), ErrorVerb::Delete)?;
        self.sync().await.sto(subject(), ErrorVerb::Delete)
    }
}

/// The type bundle `raft-log` is generic over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct WalTypes;

impl Types for WalTypes {
    type LogId = WalLogId;
    type LogPayload = WalPayload;
    type Vote = WalVote;
    type Callback = Flushed;
    type UserData = ();

    fn log_index(log_id: &WalLogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &WalPayload) -> u64 {
        3 * payload.encoded_len
    }
}

/// A log entry's payload as the WAL holds it: decoded and shared. `bytes` holds the encoding
/// made at the append (which also checks the entry's size) until the WAL writes it.
#[derive(Clone)]
pub(crate) struct WalPayload {
    entry: Arc<EntryPayload<TypeConfig>>,
    encoded_len: u64,
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

impl WalPayload {
    fn new(entry: EntryPayload<TypeConfig>) -> Result<WalPayload, Error> {
        let bytes = codec::encode_value("log entry", &entry)?;
        Ok(WalPayload {
            entry: Arc::new(entry),
            encoded_len: bytes.len() as u64,
            bytes: Arc::new(Mutex::new(Some(bytes))),
        })
    }
}

impl Debug for WalPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WalPayload({} bytes)", self.encoded_len)
    }
}

impl Encode for WalPayload {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        // the WAL encodes a record once, when it is appended; if it ever encodes it again the
        // bytes are rebuilt, and bincode gives the same bytes for the same value
        let taken = self.bytes.lock().ok().and_then(|mut b| b.take());
        let bytes = match taken {
            Some(b) => b,
            None => {
                codec::encode_value("log entry", &*self.entry).map_err(|e| io::Error::other(e.to_string()))?
            }
        };
        bytes.encode(w)
    }
}

impl Decode for WalPayload {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        let bytes = Vec::<u8>::decode(r)?;
        let entry = codec::decode_value("log entry", &bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(WalPayload { entry: Arc::new(entry), encoded_len: bytes.len() as u64, bytes: Default::default() })
    }
}

/// openraft's log id with the WAL's encoding: term, node id, index (big-endian u64s). Ordered
/// as openraft orders log ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WalLogId(LogId<NodeId>);

impl Encode for WalLogId {
    fn encode<W: io::Write>(&self, mut w: W) -> io::Result<usize> {
        let l = &self.0;
        Ok(l.leader_id.term.encode(&mut w)? + l.leader_id.node_id.encode(&mut w)? + l.index.encode(&mut w)?)
    }
}

impl Decode for WalLogId {
    fn decode<R: io::Read>(mut r: R) -> io::Result<Self> {
        let (term, node_id, index) = (u64::decode(&mut r)?, u64::decode(&mut r)?, u64::decode(&mut r)?);
        Ok(WalLogId(LogId::new(openraft::CommittedLeaderId::new(term, node_id), index)))
    }
}

/// openraft's vote with the WAL's encoding: term, node id, committed flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WalVote(Vote<NodeId>);

impl PartialOrd for WalVote {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(&other.0)
    }
}

impl Encode for WalVote {
    fn encode<W: io::Write>(&self, mut w: W) -> io::Result<usize> {
        let v = &self.0;
        Ok(v.leader_id.term.encode(&mut w)?
            + v.leader_id.node_id.encode(&mut w)?
            + v.committed.encode(&mut w)?)
    }
}

impl Decode for WalVote {
    fn decode<R: io::Read>(mut r: R) -> io::Result<Self> {
        let (term, node_id, committed) = (u64::decode(&mut r)?, u64::decode(&mut r)?, bool::decode(&mut r)?);
        let vote = if committed { Vote::new_committed(term, node_id) } else { Vote::new(term, node_id) };
        Ok(WalVote(vote))
    }
}

/// What to do when a sync completes: tell its waiter, and maybe advance `durable_below`.
struct Flushed {
    notify: Notify,
    track: Option<Box<dyn FnOnce(bool) + Send>>,
}

enum Notify {
    /// openraft's append callback.
    Raft(LogFlushed<TypeConfig>),
    /// An async waiter.
    Wait(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// A blocking waiter (import, before the runtime needs the store).
    Blocking(std::sync::mpsc::Sender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: Result<(), io::Error>) {
        if let Some(track) = self.track {
            track(res.is_ok());
        }
        match self.notify {
            Notify::Raft(cb) => cb.log_io_completed(res),
            Notify::Wait(tx) => {
                let _ = tx.send(res);
            }
            Notify::Blocking(tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{blank_ent, log_id};

    use super::*;
    use crate::codec::MAX_VALUE_BYTES;
    use crate::{Options, storage};

    async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
        // LogFlushed has no public constructor outside openraft; go through the same code path.
        store.append_durably(entries).await.unwrap();
    }

    #[test]
    fn a_payload_is_written_as_the_length_prefixed_bytes_a_byte_cache_wrote() {
        // chunk files written before the cache held decoded payloads must stay readable, and
        // the other way round
        let cmd = Command::Fleet(crate::fleet::FleetCommand::RevokeEnrollmentToken {
            tenant: "t".into(),
            id: "tok".into(),
        });
        let payload = EntryPayload::<TypeConfig>::Normal(cmd);
        let old_bytes = codec::encode_value("log entry", &payload).unwrap();
        let mut old = Vec::new();
        old_bytes.encode(&mut old).unwrap();
        let p = WalPayload::new(payload.clone()).unwrap();
        let (mut first, mut again) = (Vec::new(), Vec::new());
        p.encode(&mut first).unwrap();
        p.encode(&mut again).unwrap(); // the kept bytes are gone: rebuilt from the entry
        assert_eq!((&first, &again), (&old, &old));
        let back = WalPayload::decode(&old[..]).unwrap();
        assert_eq!(format!("{:?}", back.entry), format!("{payload:?}"));
        assert_eq!(WalTypes::payload_size(&back), 3 * old_bytes.len() as u64);
        let mut torn = old.clone();
        torn.truncate(old.len() - 1);
        assert!(WalPayload::decode(&torn[..]).is_err());
    }

    #[test]
    fn index_bounds_cover_all_range_kinds() {
        assert_eq!(index_bounds(&(3..7)), Some((3, Some(7))));
        assert_eq!(index_bounds(&(3..=7)), Some((3, Some(8))));
        assert_eq!(index_bounds(&(..)), Some((0, None)));
        assert_eq!(index_bounds(&(5..=u64::MAX)), Some((5, None)));
        assert_eq!(index_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)), None);
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new(3, 2);
        {
            let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
            append(&mut s, (1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect()).await;
            s.save_vote(&vote).await.unwrap();
            s.save_committed(Some(log_id(1, 1, 8))).await.unwrap();
            s.purge(log_id(1, 1, 4)).await.unwrap();
        }
        let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
        assert_eq!(s.read_vote().await.unwrap(), Some(vote));
        assert_eq!(s.read_committed().await.unwrap(), Some(log_id(1, 1, 8)));
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 10)));
        let entries = s.try_get_log_entries(..).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (5..=10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn empty_log_reports_last_purged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
        append(&mut s, (1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect()).await;
        s.purge(log_id(1, 1, 3)).await.unwrap();
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    }

    #[tokio::test]
    async fn truncate_is_inclusive_and_lowers_the_durable_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
        append(&mut s, (1..=5).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect()).await;
        s.truncate(log_id(1, 1, 3)).await.unwrap();
        assert_eq!(s.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 1, 2)));
        assert_eq!(s.try_get_log_entries(0..100).await.unwrap().len(), 2);
        assert!(lock(&s.inner.marks).unwrap().below <= 3);
        s.wait_durable(2).await.unwrap();
    }

    fn chunk_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(WAL_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (synced, torn) = {
            let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
            append(&mut s, (1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect()).await;
            let chunk = chunk_files(dir.path()).pop().unwrap();
            let synced = std::fs::metadata(&chunk).unwrap().len();
            append(&mut s, vec![blank_ent::<TypeConfig>(1, 1, 4)]).await;
            (synced, std::fs::metadata(&chunk).unwrap().len())
        };
        // a crash in the middle of writing the record of entry 4
        let chunk = chunk_files(dir.path()).pop().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&chunk).unwrap();
        f.set_len(synced + (torn - synced) / 2).unwrap();
        drop(f);
        let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
        assert_eq!(s.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 1, 3)));
        append(&mut s, vec![blank_ent::<TypeConfig>(2, 1, 4)]).await;
        let entries = s.try_get_log_entries(..).await.unwrap();
        assert_eq!(entries.last().unwrap().log_id, log_id(2, 1, 4));
    }

    #[tokio::test]
    async fn damage_inside_the_log_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
            append(&mut s, (1..=5).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect()).await;
        }
        let chunk = chunk_files(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&chunk).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&chunk, bytes).unwrap();
        assert!(
            storage::open(dir.path(), &Options::default()).await.is_err(),
            "a damaged record is not dropped silently"
        );
    }

    #[tokio::test]
    async fn a_log_kept_in_sled_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new_committed(2, 1);
        {
            // the layout of earlier versions: trees raft_log and raft_meta
            let db = sled::Config::new().path(dir.path().join("sled")).open().unwrap();
            let (log, meta) = (db.open_tree("raft_log").unwrap(), db.open_tree("raft_meta").unwrap());
            for i in 2..=9 {
                let e = blank_ent::<TypeConfig>(2, 1, i);
                log.insert(i.to_be_bytes(), codec::encode_value("log entry", &e).unwrap()).unwrap();
            }
            meta.insert("vote", codec::encode_value("raft meta", &vote).unwrap()).unwrap();
            let committed = Some(log_id::<NodeId>(2, 1, 7));
            meta.insert("committed", codec::encode_value("raft meta", &committed).unwrap()).unwrap();
            let purged = Some(log_id::<NodeId>(2, 1, 3));
            meta.insert("last_purged", codec::encode_value("raft meta", &purged).unwrap()).unwrap();
            db.flush().unwrap();
        }
        for _ in 0..2 {
            let mut s = storage::open(dir.path(), &Options::default()).await.unwrap().log;
            assert_eq!(s.read_vote().await.unwrap(), Some(vote));
            assert_eq!(s.read_committed().await.unwrap(), Some(log_id(2, 1, 7)));
            let state = s.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 3)));
            assert_eq!(state.last_log_id, Some(log_id(2, 1, 9)));
            let indexes: Vec<u64> =
                s.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect();
            assert_eq!(indexes, (4..=9).collect::<Vec<_>>(), "entries below the purge marker are dropped");
            append(&mut s, vec![blank_ent::<TypeConfig>(2, 1, 10)]).await;
            s.truncate(log_id(2, 1, 10)).await.unwrap();
        }
        assert!(!dir.path().join(IMPORT_DIR).exists());
    }

    #[test]
    fn oversized_commands_are_refused() {
        let small = Command::Noop;
        assert!(check_command_size(&small).is_ok());
        let big = Command::PutSettings {
            tenant: "t".repeat(MAX_VALUE_BYTES as usize),
            expected_revision: None,
            settings: Default::default(),
            at_ms: 0,
        };
        assert!(matches!(check_command_size(&big), Err(Error::TooLarge { .. })));
    }
}
