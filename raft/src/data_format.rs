//! The data directory's format marker: `<dir>/FORMAT` names the layout version of everything
//! the store keeps there (the WAL, the sled trees and their records, snapshot files).
//!
//! Opening checks it before touching anything else: a directory written by a newer build
//! (a higher format than [`DATA_FORMAT`]) is refused with a clear error, so a binary rolled
//! back past a format change never reads, and never rewrites, data it does not understand. A
//! directory without the marker is either new or written before markers existed (format 1),
//! and gets one. A build that changes the layout raises [`DATA_FORMAT`] and migrates on open.

use std::path::Path;

use crate::Error;
use crate::durable::AtomicFile;

/// The layout this build reads and writes.
pub const DATA_FORMAT: u32 = 1;
/// The marker's file name in the data directory.
const MARKER: &str = "FORMAT";
/// What the marker says before the version number.
const PREFIX: &str = "monsys data format ";

/// Checks the marker of `dir` (writing it when missing); refuses a newer or unreadable one.
pub(crate) fn check_or_write(dir: &Path) -> Result<(), Error> {
    let path = dir.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found =
                text.trim().strip_prefix(PREFIX).and_then(|v| v.parse::<u32>().ok()).ok_or_else(|| {
                    Error::Corrupt(format!("{} does not name a data format: {text:?}", path.display()))
                })?;
            if found > DATA_FORMAT {
                return Err(Error::DataFormat { found, supported: DATA_FORMAT });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut f = AtomicFile::create(&path)?;
            std::io::Write::write_all(f.writer(), format!("{PREFIX}{DATA_FORMAT}\n").as_bytes())?;
            f.commit()?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_marker_is_written_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_or_write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MARKER)).unwrap();
        assert_eq!(text, format!("monsys data format {DATA_FORMAT}\n"));
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
