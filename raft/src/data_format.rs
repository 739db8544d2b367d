//! The data directory's format marker: `<dir>/FORMAT` names the layout version of everything
//! the store keeps there (the WAL, the sled trees and their records, snapshot files).
//!
//! Opening checks it before touching anything else: a directory written by a newer build
//! (a higher format than [`DATA_FORMAT`]) is refused with a clear error, so a binary rolled
//! back past a format change never reads, and never rewrites, data it does not understand. A
//! directory without the marker is either new or written before markers existed (format 1),
//! and gets one. A build that changes the layout raises [`DATA_FORMAT`] and migrates on open.
//!
//! The format also follows the cluster version (see `cluster_version::data_format_for`): a new
//! directory is written as format 1, which builds from before cluster versions still open, and
//! [`raise_to`] moves it to 2 once the node applies a cluster version those builds cannot run.
//! Until the upgrade is finalized, a node can therefore still be rolled back to the older build.

use std::path::Path;

use crate::Error;
use crate::durable::AtomicFile;

/// The newest layout this build reads and writes.
pub const DATA_FORMAT: u32 = 2;
/// The layout a new directory starts at.
const INITIAL_FORMAT: u32 = 1;
/// The marker's file name in the data directory.
const MARKER: &str = "FORMAT";
/// What the marker says before the version number.
const PREFIX: &str = "monsys data format ";

/// Checks the marker of `dir` (writing it when missing); refuses a newer or unreadable one.
pub(crate) fn check_or_write(dir: &Path) -> Result<(), Error> {
    match read(dir)? {
        Some(found) if found > DATA_FORMAT => Err(Error::DataFormat { found, supported: DATA_FORMAT }),
        Some(_) => Ok(()),
        None => write(dir, INITIAL_FORMAT),
    }
}

/// Raises the marker of `dir` to `format` (durably) if it names an older one.
pub(crate) fn raise_to(dir: &Path, format: u32) -> Result<(), Error> {
    match read(dir)? {
        Some(found) if found >= format => Ok(()),
        _ => {
            tracing::info!(format, "raising the data directory's format");
            write(dir, format)
        }
    }
}

/// The format the marker of `dir` names (`None`: no marker).
fn read(dir: &Path) -> Result<Option<u32>, Error> {
    let path = dir.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim().strip_prefix(PREFIX).and_then(|v| v.parse::<u32>().ok());
            found.map(Some).ok_or_else(|| {
                Error::Corrupt(format!("{} does not name a data format: {text:?}", path.display()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write(dir: &Path, format: u32) -> Result<(), Error> {
    let mut f = AtomicFile::create(&dir.join(MARKER))?;
    std::io::Write::write_all(f.writer(), format!("{PREFIX}{format}\n").as_bytes())?;
    f.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_marker_is_written_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_or_write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MARKER)).unwrap();
        assert_eq!(text, "monsys data format 1\n", "a new directory stays readable by older builds");
        check_or_write(dir.path()).unwrap();

        raise_to(dir.path(), 2).unwrap();
        raise_to(dir.path(), 1).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MARKER)).unwrap();
        assert_eq!(text, "monsys data format 2\n", "raised, never lowered");
        check_or_write(dir.path()).unwrap();

        std::fs::write(dir.path().join(MARKER), format!("monsys data format {}\n", DATA_FORMAT + 1)).unwrap();
        let e = check_or_write(dir.path()).unwrap_err();
        assert!(matches!(e, Error::DataFormat { found, .. } if found == DATA_FORMAT + 1), "{e}");
        assert!(e.to_string().contains("newer monsys"), "{e}");

        std::fs::write(dir.path().join(MARKER), "garbage").unwrap();
        assert!(matches!(check_or_write(dir.path()), Err(Error::Corrupt(_))));
    }

    #[tokio::test]
    async fn opening_a_store_written_by_a_newer_build_fails_before_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER), "monsys data format 999\n").unwrap();
        let Err(e) = crate::open(dir.path(), &crate::Options::default()).await else {
            panic!("a newer data directory was opened")
        };
        assert!(e.to_string().contains("format 999"), "{e}");
        assert!(!dir.path().join("sled").exists(), "nothing was created next to the newer data");
    }
}
