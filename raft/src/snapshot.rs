//! Snapshot files: their format, and the directory that holds them.
//!
//! Format (version [`SNAPSHOT_VERSION`]):
//! ```text
//! "MONSYSSN" | version: u8 | frame*        frame := len: u32 LE | bincode(Frame)
//! frames: Meta(SnapshotMeta), Record{tree, key, value}*, End{records, checksum}
//! checksum = xxh3-64 over the payloads of every frame before End
//! ```
//! A reader checks magic, version, frame sizes (`codec::MAX_FRAME_BYTES`), record count,
//! checksum and that nothing follows `End`, so a truncated or damaged file is refused before it
//! can replace the state machine.
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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

use crate::codec::{self, MAX_FRAME_BYTES};
use crate::durable::{AtomicFile, TMP_SUFFIX, fsync_dir};
use crate::{Error, Node, NodeId};

const MAGIC: &[u8; 8] = b"MONSYSSN";
/// Version of the snapshot file format.
pub(crate) const SNAPSHOT_VERSION: u8 = 1;
const PREFIX: &str = "snap-";
const SUFFIX: &str = ".bin";

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
    hasher: Xxh3Default,
    records: u64,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header and the meta frame.
    pub(crate) fn new(mut w: W, meta: &Meta) -> Result<Self, Error> {
        w.write_all(MAGIC)?;
        w.write_all(&[SNAPSHOT_VERSION])?;
        let mut s = SnapshotWriter { w, hasher: Xxh3Default::new(), records: 0 };
        s.frame(&Frame::<&[u8]>::Meta(meta.clone()), true)?;
        Ok(s)
    }

    /// Appends one record.
    pub(crate) fn record(&mut self, tree: u8, key: &[u8], value: &[u8]) -> Result<(), Error> {
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
    hasher: Xxh3Default,
    records: u64,
    done: bool,
}

impl<R: BufRead> SnapshotReader<R> {
    /// Reads the header and the meta frame.
    pub(crate) fn open(mut r: R) -> Result<(Self, Meta), Error> {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).map_err(|e| corrupt_eof(e, "header"))?;
        if &head[..8] != MAGIC {
            return Err(Error::Corrupt("not a monsys snapshot (bad magic)".into()));
        }
        if head[8] != SNAPSHOT_VERSION {
            let found = head[8];
            return Err(Error::UnsupportedFormat { what: "snapshot", found, supported: SNAPSHOT_VERSION });
        }
        let mut s = SnapshotReader { r, hasher: Xxh3Default::new(), records: 0, done: false };
        match s.frame()? {
            (Frame::Meta(meta), payload) => {
                s.hasher.update(&payload);
                Ok((s, meta))
            }
            _ => Err(Error::Corrupt("snapshot does not start with its meta".into())),
        }
    }

    /// The next record; `None` after a verified end frame.
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, Error> {
        if self.done {
            return Ok(None);
        }
        match self.frame()? {
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
        let mut w = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
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
        assert!(matches!(read_all(&version), Err(Error::UnsupportedFormat { found: 9, .. })));
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
