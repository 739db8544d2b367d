//! Snapshot files: their format, and the directory that holds them.
//!
//! Layout (every format so far):
//! ```text
//! "MONSYSSN" | format: u8 | frame*        frame := len: u32 LE | bincode(Frame)
//! frames: Meta(SnapshotMeta), Record{tree, key, value}*, End{records, checksum}
//! checksum = xxh3-64 over the payloads of every frame before End
//! ```
//! A reader checks magic, format, frame sizes (`codec::MAX_FRAME_BYTES`), that each record's
//! tree belongs to the file's format, the record count, the checksum and that nothing follows
//! `End`, so a truncated or damaged file is refused before it can replace the state machine.
//!
//! Formats ([`SnapshotFormat`]): the header's format byte names the set of trees a file may
//! carry. Rules:
//! - a new tree, or a new meaning of a tree, is a new format; never add a tree to an existing
//!   one (an older reader takes the unknown tree for damage);
//! - a build reads every format up to [`SnapshotFormat::NEWEST`] and refuses a newer one with
//!   `Error::SnapshotFormat` ("unsupported snapshot format N; this build reads up to M"), which
//!   is not corruption: a follower refuses such a snapshot when its first chunk arrives
//!   ([`refuse_unreadable_chunk`], called by `network::serve_rpc`), before openraft installs
//!   it, so the refusal is an RPC error the leader retries, not a storage error that would stop
//!   this node's Raft;
//! - the builder writes the format it is told (`StateMachineStore::snapshot_format`), so a
//!   leader keeps writing what every member reads until the cluster version is finalized; a
//!   received snapshot is kept in the format it came in.
//!
//! Directory: `<dir>/snapshots/snap-<generation>.bin`, generation increasing per node; the
//! highest is current. New files are written as `<name>.tmp` and published with an atomic
//! rename ([`AtomicFile`]); publishing deletes older generations. Leftover `.tmp` files are
//! removed on open. Received snapshots live in anonymous temp files until installed.
//!
//! Deliberately missing: compression, and chunked or incremental snapshots. A snapshot is the
//! whole state machine; large states pay for a full dump per snapshot.

use std::fs::File;
use std::io::{self, BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

use crate::codec::{self, MAX_FRAME_BYTES};
use crate::durable::{AtomicFile, TMP_SUFFIX, fsync_dir};
use crate::{Error, Node, NodeId};

const MAGIC: &[u8; 8] = b"MONSYSSN";
/// Length of the header: the magic and the format byte.
const HEADER_LEN: usize = MAGIC.len() + 1;
/// Tree id of `sm_data` in snapshot records.
pub(crate) const TREE_DATA: u8 = 0;
/// Tree id of the telemetry heads in snapshot records (key: series prefix, value: the head).
pub(crate) const TREE_HEADS: u8 = 1;
const PREFIX: &str = "snap-";
const SUFFIX: &str = ".bin";

/// A snapshot file format: the format byte of its header and the trees it may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SnapshotFormat {
    /// Format 1: `sm_data` without the state machine's own records (tree 0) and the telemetry
    /// heads (tree 1). The baseline: the heads tree joined it without a new format byte, so
    /// the format before it (files with tree 0 only, from builds that kept heads in sled)
    /// cannot be written any more; heads covered by a snapshot are not in any log to rebuild
    /// them from.
    V1 = 1,
}

impl SnapshotFormat {
    /// The newest format this build reads and writes.
    pub const NEWEST: SnapshotFormat = SnapshotFormat::V1;

    /// The format's byte in a file header.
    pub fn version(self) -> u8 {
        self as u8
    }

    /// The format a header byte names; a newer (or unknown) one is `Error::SnapshotFormat`.
    pub fn from_version(found: u8) -> Result<Self, Error> {
        match found {
            1 => Ok(SnapshotFormat::V1),
            _ => Err(Error::SnapshotFormat { found, newest: Self::NEWEST.version() }),
        }
    }

    /// Whether files of this format may carry records of `tree`.
    pub(crate) fn carries(self, tree: u8) -> bool {
        match self {
            SnapshotFormat::V1 => matches!(tree, TREE_DATA | TREE_HEADS),
        }
    }
}

impl std::fmt::Display for SnapshotFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snapshot format {}", self.version())
    }
}

/// The snapshot format the builder writes: shared between the state machine and whoever
/// decides it (the binary, from the active cluster version). Starts at
/// [`SnapshotFormat::NEWEST`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotFormatSetting(Arc<AtomicU8>);

impl Default for SnapshotFormatSetting {
    fn default() -> Self {
        SnapshotFormatSetting(Arc::new(AtomicU8::new(SnapshotFormat::NEWEST.version())))
    }
}

impl SnapshotFormatSetting {
    /// The format the next snapshot is written in.
    pub fn get(&self) -> SnapshotFormat {
        // only `set` stores, and only formats this build knows
        SnapshotFormat::from_version(self.0.load(Ordering::SeqCst)).unwrap_or(SnapshotFormat::NEWEST)
    }

    /// Writes the next snapshots in `format` (one every member reads).
    pub fn set(&self, format: SnapshotFormat) {
        self.0.store(format.version(), Ordering::SeqCst);
    }
}

/// Refuses the chunk of an incoming snapshot that holds its format byte when that format is
/// newer than this build reads (other chunks, and readable formats, pass). Checked when the
/// chunk arrives, before openraft streams it into a file: once a complete snapshot reaches the
/// state machine's `install_snapshot`, any error there is fatal to this node's Raft.
pub fn refuse_unreadable_chunk(offset: u64, data: &[u8]) -> Result<(), Error> {
    let at = MAGIC.len() as u64;
    if offset <= at && at < offset + data.len() as u64 {
        SnapshotFormat::from_version(data[(at - offset) as usize])?;
    }
    Ok(())
}

/// Metadata of a snapshot, as openraft defines it.
pub(crate) type Meta = openraft::SnapshotMeta<NodeId, Node>;

/// One frame of a snapshot file. `B` is `&[u8]` when writing and `Vec<u8>` when reading; both
/// encode identically. Variants are only ever appended.
#[derive(Serialize, Deserialize)]
enum Frame<B> {
    Meta(Meta),
    Record { tree: u8, key: B, value: B },
    End { records: u64, checksum: u64 },
}

/// One key/value of a state-machine tree, read from a snapshot.
pub(crate) struct Record {
    pub(crate) tree: u8,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// Writes a snapshot stream.
pub(crate) struct SnapshotWriter<W: Write> {
    w: W,
    format: SnapshotFormat,
    hasher: Xxh3Default,
    records: u64,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header of a file in `format` and the meta frame.
    pub(crate) fn new(mut w: W, meta: &Meta, format: SnapshotFormat) -> Result<Self, Error> {
        w.write_all(MAGIC)?;
        w.write_all(&[format.version()])?;
        let mut s = SnapshotWriter { w, format, hasher: Xxh3Default::new(), records: 0 };
        s.frame(&Frame::<&[u8]>::Meta(meta.clone()), true)?;
        Ok(s)
    }

    /// Appends one record; refuses a tree the format does not carry.
    pub(crate) fn record(&mut self, tree: u8, key: &[u8], value: &[u8]) -> Result<(), Error> {
        if !self.format.carries(tree) {
            return Err(Error::Codec(format!("{} has no tree {tree}", self.format)));
        }
        self.records += 1;
        self.frame(&Frame::Record { tree, key, value }, true)
    }

    /// Writes the end frame and returns the inner writer (not flushed or synced).
    pub(crate) fn finish(mut self) -> Result<W, Error> {
        let end = Frame::<&[u8]>::End { records: self.records, checksum: self.hasher.digest() };
        self.frame(&end, false)?;
        Ok(self.w)
    }

    fn frame(&mut self, frame: &Frame<&[u8]>, hash: bool) -> Result<(), Error> {
        let payload = codec::encode("snapshot frame", frame, MAX_FRAME_BYTES)?;
        if hash {
            self.hasher.update(&payload);
        }
        self.w.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.w.write_all(&payload)?;
        Ok(())
    }
}

/// Reads and verifies a snapshot stream.
pub(crate) struct SnapshotReader<R: BufRead> {
    r: R,
    format: SnapshotFormat,
    hasher: Xxh3Default,
    records: u64,
    done: bool,
}

impl<R: BufRead> SnapshotReader<R> {
    /// Reads the header and the meta frame.
    pub(crate) fn open(mut r: R) -> Result<(Self, Meta), Error> {
        let mut head = [0u8; HEADER_LEN];
        r.read_exact(&mut head).map_err(|e| corrupt_eof(e, "header"))?;
        if &head[..MAGIC.len()] != MAGIC {
            return Err(Error::Corrupt("not a monsys snapshot (bad magic)".into()));
        }
        let format = SnapshotFormat::from_version(head[MAGIC.len()])?;
        let mut s = SnapshotReader { r, format, hasher: Xxh3Default::new(), records: 0, done: false };
        match s.frame()? {
            (Frame::Meta(meta), payload) => {
                s.hasher.update(&payload);
                Ok((s, meta))
            }
            _ => Err(Error::Corrupt("snapshot does not start with its meta".into())),
        }
    }

    /// The file's format.
    pub(crate) fn format(&self) -> SnapshotFormat {
        self.format
    }

    /// The next record; `None` after a verified end frame.
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, Error> {
        if self.done {
            return Ok(None);
        }
        match self.frame()? {
            (Frame::Record { tree, .. }, _) if !self.format.carries(tree) => {
                Err(Error::Corrupt(format!("{} has no tree {tree}", self.format)))
            }
            (Frame::Record { tree, key, value }, payload) => {
                self.hasher.update(&payload);
                self.records += 1;
                Ok(Some(Record { tree, key, value }))
            }
            (Frame::End { records, checksum }, _) => {
                self.verify_end(records, checksum)?;
                self.done = true;
                Ok(None)
            }
            (Frame::Meta(_), _) => Err(Error::Corrupt("second meta frame in snapshot".into())),
        }
    }

    fn verify_end(&mut self, records: u64, checksum: u64) -> Result<(), Error> {
        if records != self.records {
            return Err(Error::Corrupt(format!("snapshot has {} records, end says {records}", self.records)));
        }
        if checksum != self.hasher.digest() {
            return Err(Error::Corrupt("snapshot checksum mismatch".into()));
        }
        if !self.r.fill_buf()?.is_empty() {
            return Err(Error::Corrupt("trailing bytes after snapshot end".into()));
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<(Frame<Vec<u8>>, Vec<u8>), Error> {
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len).map_err(|e| corrupt_eof(e, "frame length"))?;
        let len = u64::from(u32::from_le_bytes(len));
        if len > MAX_FRAME_BYTES {
            return Err(Error::Corrupt(format!("snapshot frame of {len} bytes exceeds the limit")));
        }
        let mut payload = vec![0u8; len as usize];
        self.r.read_exact(&mut payload).map_err(|e| corrupt_eof(e, "frame"))?;
        let frame = codec::decode("snapshot frame", &payload, MAX_FRAME_BYTES)?;
        Ok((frame, payload))
    }
}

fn corrupt_eof(e: io::Error, what: &str) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Corrupt(format!("snapshot truncated in its {what}"))
    } else {
        Error::Io(e)
    }
}

/// Reads only the meta of the snapshot file at `path`.
pub(crate) fn read_meta(path: &Path) -> Result<Meta, Error> {
    let file = File::open(path)?;
    Ok(SnapshotReader::open(io::BufReader::new(file))?.1)
}

/// The snapshot directory.
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    next_gen: AtomicU64,
    /// Serializes publishing (rename + cleanup) with finding and opening the current file.
    lock: Mutex<()>,
}

impl SnapshotDir {
    /// Creates the directory if needed and removes temp files left by a crash.
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                tracing::info!(path = %path.display(), "removing leftover snapshot temp file");
                std::fs::remove_file(&path)?;
            }
        }
        fsync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            fsync_dir(parent)?;
        }
        let s = SnapshotDir { dir: dir.to_path_buf(), next_gen: AtomicU64::new(0), lock: Mutex::new(()) };
        let next = s.generations()?.last().map_or(1, |g| g + 1);
        s.next_gen.store(next, Ordering::SeqCst);
        Ok(s)
    }

    /// The directory path.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Reserves a new generation and returns it with its final path.
    pub(crate) fn allocate(&self) -> (u64, PathBuf) {
        let generation = self.next_gen.fetch_add(1, Ordering::SeqCst);
        (generation, self.dir.join(format!("{PREFIX}{generation:020}{SUFFIX}")))
    }

    /// Publishes `file` (fsync, rename, dir fsync) and deletes every older generation.
    pub(crate) fn publish(&self, file: AtomicFile) -> Result<PathBuf, Error> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = file.commit()?;
        let published = parse_generation(&path).ok_or_else(|| Error::Corrupt("bad snapshot name".into()))?;
        for generation in self.generations()?.into_iter().filter(|g| *g < published) {
            std::fs::remove_file(self.path_of(generation))?;
        }
        fsync_dir(&self.dir)?;
        Ok(path)
    }

    /// Path and meta of the current (newest) snapshot.
    pub(crate) fn latest(&self) -> Result<Option<(PathBuf, Meta)>, Error> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(generation) = self.generations()?.last().copied() else { return Ok(None) };
        let path = self.path_of(generation);
        let meta = read_meta(&path)?;
        Ok(Some((path, meta)))
    }

    /// The current snapshot opened for reading at offset 0, with its meta.
    pub(crate) fn open_latest(&self) -> Result<Option<(Meta, File)>, Error> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(generation) = self.generations()?.last().copied() else { return Ok(None) };
        let mut file = File::open(self.path_of(generation))?;
        let meta = SnapshotReader::open(io::BufReader::new(&mut file))?.1;
        file.seek(SeekFrom::Start(0))?;
        Ok(Some((meta, file)))
    }

    fn path_of(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{generation:020}{SUFFIX}"))
    }

    /// Generations of published snapshots, ascending.
    fn generations(&self) -> Result<Vec<u64>, Error> {
        let mut gens = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(g) = parse_generation(&entry?.path()) {
                gens.push(g);
            }
        }
        gens.sort_unstable();
        Ok(gens)
    }
}

fn parse_generation(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use openraft::StoredMembership;

    use super::*;

    fn meta() -> Meta {
        Meta {
            last_log_id: Some(openraft::testing::log_id(2, 1, 9)),
            last_membership: StoredMembership::default(),
            snapshot_id: "s1".into(),
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), &meta(), SnapshotFormat::V1).unwrap();
        w.record(0, b"a", b"1").unwrap();
        w.record(0, b"b", b"2").unwrap();
        w.finish().unwrap()
    }

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> Result<Pairs, Error> {
        let (mut r, m) = SnapshotReader::open(Cursor::new(bytes))?;
        assert_eq!(m, meta());
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push((rec.key, rec.value));
        }
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let recs = read_all(&sample()).unwrap();
        assert_eq!(recs, vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
    }

    #[test]
    fn damage_is_detected() {
        let good = sample();
        let mut flipped = good.clone();
        let i = good.len() - 30; // inside the last record
        flipped[i] ^= 0xff;
        assert!(read_all(&flipped).is_err());
        assert!(matches!(read_all(&good[..good.len() - 3]), Err(Error::Corrupt(_))));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(read_all(&trailing), Err(Error::Corrupt(_))));
        let mut version = good;
        version[8] = 9;
        assert!(matches!(read_all(&version), Err(Error::SnapshotFormat { found: 9, newest: 1 })));
    }

    /// Format 1, byte for byte: magic, format byte, then length-prefixed frames (meta, one
    /// record per tree, end). Files written before formats had names decode unchanged.
    #[test]
    fn format_1_layout_is_stable() {
        let mut w = SnapshotWriter::new(Vec::new(), &meta(), SnapshotFormat::V1).unwrap();
        w.record(TREE_DATA, b"k", b"v").unwrap();
        w.record(TREE_HEADS, b"h", b"x").unwrap();
        let bytes = w.finish().unwrap();
        let hex = hex::encode(&bytes);
        assert_eq!(&hex[..18], "4d4f4e535953534e01", "magic, then format 1");
        assert_eq!(hex, GOLDEN_V1);
        let (mut r, m) = SnapshotReader::open(Cursor::new(hex::decode(GOLDEN_V1).unwrap())).unwrap();
        assert_eq!((r.format(), m), (SnapshotFormat::V1, meta()));
        let mut trees = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            trees.push((rec.tree, rec.key, rec.value));
        }
        assert_eq!(trees, vec![(0, b"k".to_vec(), b"v".to_vec()), (1, b"h".to_vec(), b"x".to_vec())]);
    }

    const GOLDEN_V1: &str = "4d4f4e535953534e0138000000000000000102000000000000000100000000000000090000000000000000000000000000000000000000000000000200000000000000733117000000010000000001000000000000006b01000000000000007617000000010000000101000000000000006801000000000000007814000000020000000200000000000000302a91670f153b08";

    #[test]
    fn a_newer_format_is_refused_by_name_and_is_not_corruption() {
        let mut bytes = sample();
        bytes[8] = 2;
        let Err(e) = SnapshotReader::open(Cursor::new(&bytes)) else { panic!("format 2 was read") };
        assert_eq!(e.to_string(), "unsupported snapshot format 2; this build reads up to 1");
        assert!(!e.is_corruption(), "{e:?}");
        assert_eq!(SnapshotFormat::from_version(1).unwrap(), SnapshotFormat::NEWEST);
        assert!(SnapshotFormat::from_version(0).is_err());
    }

    #[test]
    fn a_tree_outside_the_format_is_refused_on_both_sides() {
        let mut w = SnapshotWriter::new(Vec::new(), &meta(), SnapshotFormat::V1).unwrap();
        assert!(w.record(7, b"k", b"v").is_err(), "the writer refuses it");
        // a file that names tree 7 anyway, with a right checksum, is damaged for this format
        let mut bytes = [&MAGIC[..], &[1]].concat();
        let frames = [Frame::Meta(meta()), Frame::Record { tree: 7, key: &b"k"[..], value: &b"v"[..] }];
        let encode = |f: &Frame<&[u8]>| codec::encode("frame", f, MAX_FRAME_BYTES).unwrap();
        let payloads: Vec<Vec<u8>> = frames.iter().map(encode).collect();
        let mut hasher = Xxh3Default::new();
        payloads.iter().for_each(|p| hasher.update(p));
        let end = encode(&Frame::End { records: 1, checksum: hasher.digest() });
        for payload in payloads.iter().chain([&end]) {
            bytes.extend((payload.len() as u32).to_le_bytes());
            bytes.extend(payload);
        }
        let e = read_all(&bytes).unwrap_err();
        assert!(matches!(&e, Error::Corrupt(m) if m.contains("snapshot format 1 has no tree 7")), "{e:?}");
    }

    #[test]
    fn only_the_chunk_holding_the_format_byte_is_checked() {
        let mut newer = sample();
        newer[8] = 2;
        let refused = |offset: usize, len: usize| {
            refuse_unreadable_chunk(offset as u64, &newer[offset..offset + len]).is_err()
        };
        assert!(refused(0, newer.len()), "the whole file in one chunk");
        assert!(refused(0, 9) && refused(8, 1) && refused(5, 10), "chunks holding byte 8");
        assert!(!refused(0, 8) && !refused(9, 20), "chunks before and after it");
        assert!(refuse_unreadable_chunk(0, &sample()).is_ok(), "a readable format passes");
        assert!(refuse_unreadable_chunk(0, &[]).is_ok());
    }

    #[test]
    fn the_format_setting_starts_at_the_newest_and_is_shared() {
        let setting = SnapshotFormatSetting::default();
        assert_eq!(setting.get(), SnapshotFormat::NEWEST);
        let other = setting.clone();
        other.set(SnapshotFormat::V1);
        assert_eq!(setting.get(), SnapshotFormat::V1);
    }

    #[test]
    fn directory_keeps_the_newest_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(&tmp.path().join("snapshots")).unwrap();
        for _ in 0..3 {
            let (_, path) = dir.allocate();
            let mut f = AtomicFile::create(&path).unwrap();
            f.writer().write_all(&sample()).unwrap();
            dir.publish(f).unwrap();
        }
        assert_eq!(dir.generations().unwrap(), vec![3]);
        let (m, _file) = dir.open_latest().unwrap().unwrap();
        assert_eq!(m, meta());

        std::fs::write(dir.path().join("snap-x.bin.tmp"), b"junk").unwrap();
        let reopened = SnapshotDir::open(dir.path()).unwrap();
        assert_eq!(reopened.allocate().0, 4);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
