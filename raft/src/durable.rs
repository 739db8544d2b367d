//! Making writes durable: a real fsync behind sled's flush, and atomic file replacement.
//!
//! Why: sled 0.34's `flush` ends in `sync_file_range` on Linux, which neither writes file
//! metadata nor flushes the device cache (sled#1452), so a flushed write can still be lost on
//! power failure. [`Durable::durable_flush`] therefore runs `flush_async` (all trees share one
//! log, so this covers everything) and then `fdatasync`s a long-lived handle on sled's `db` file;
//! fsync works per inode, so it also covers the pages sled wrote through its own descriptor.
//!
//! Invariants:
//! - Everything openraft is told is durable (vote, appended entries, purge marker, snapshots,
//!   the state machine behind a snapshot) went through [`Durable::durable_flush`] first.
//! - Files we own (snapshots) are written with [`AtomicFile`]: temp file, fsync, rename, fsync of
//!   the directory. A reader sees the old file or the complete new one, never a torn one.
//!
//! Deliberately missing: sled's blob files (values above ~128 KiB) are not fsynced by anyone;
//! `codec::MAX_VALUE_BYTES` keeps every value below that threshold instead.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;

/// Flushes sled and fsyncs its data file. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Durable {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Handle on `<sled dir>/db`, kept open for the life of the store.
    db_file: File,
}

impl Durable {
    /// Opens the fsync handle on `<sled_dir>/db` and makes the directory entries durable.
    pub(crate) fn open(db: sled::Db, sled_dir: &Path) -> Result<Self, Error> {
        let db_file = OpenOptions::new().read(true).write(true).open(sled_dir.join("db"))?;
        db_file.sync_all()?;
        fsync_dir(sled_dir)?;
        if let Some(parent) = sled_dir.parent() {
            fsync_dir(parent)?;
        }
        Ok(Durable { inner: Arc::new(Inner { db, db_file }) })
    }

    /// Flushes every sled tree, then `fdatasync`s the data file (on the blocking pool).
    pub(crate) async fn durable_flush(&self) -> Result<(), Error> {
        self.inner.db.flush_async().await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.db_file.sync_data())
            .await
            .map_err(|e| Error::Io(io::Error::other(format!("fsync task failed: {e}"))))??;
        Ok(())
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file written under `<dest>.tmp` that replaces `dest` atomically on [`AtomicFile::commit`].
/// Dropped without commit, it removes the temp file.
pub(crate) struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: Option<BufWriter<File>>,
}

/// Suffix of temp files; leftovers from a crash are removed when the store opens.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

impl AtomicFile {
    /// Creates (truncating) the temp file for `dest`.
    pub(crate) fn create(dest: &Path) -> io::Result<Self> {
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(TMP_SUFFIX);
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp)?;
        Ok(AtomicFile { tmp, dest: dest.to_path_buf(), writer: Some(BufWriter::new(file)) })
    }

    /// The buffered writer of the temp file.
    pub(crate) fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("writer is present until commit")
    }

    /// Flushes and fsyncs the temp file, renames it to `dest` and fsyncs the directory.
    pub(crate) fn commit(mut self) -> io::Result<PathBuf> {
        let mut writer = self.writer.take().expect("commit runs once");
        writer.flush()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest)?;
        if let Some(dir) = self.dest.parent() {
            fsync_dir(dir)?;
        }
        Ok(self.dest.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_and_drop_discards() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"old").unwrap();

        let mut f = AtomicFile::create(&dest).unwrap();
        f.writer().write_all(b"half").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temp file removed");

        let mut f = AtomicFile::create(&dest).unwrap();
        f.writer().write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_durable_flush_puts_the_writes_in_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        // no background flushes: only an explicit flush writes the files
        let db = sled::Config::new().path(&sled_dir).flush_every_ms(None).open().unwrap();
        let durable = Durable::open(db.clone(), &sled_dir).unwrap();
        for i in 0..100u32 {
            db.insert(i.to_be_bytes(), b"value").unwrap();
        }
        durable.durable_flush().await.unwrap();
        // what a crash right now would leave: a copy of the files, taken while the database is
        // still open (its drop, which flushes too, has not run)
        let copy = dir.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(&sled_dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
            }
        }
        let recovered = sled::Config::new().path(&copy).open().unwrap();
        assert_eq!(recovered.len(), 100, "every flushed write is in the files");
        assert_eq!(recovered.get(99u32.to_be_bytes()).unwrap().as_deref(), Some(&b"value"[..]));
        drop(db);
    }
}
