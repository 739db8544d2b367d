//! Errors of the replicated store and their translation into openraft's `StorageError`.
//!
//! Classification (see `Error::is_corruption`, `Error::is_bad_request`):
//! - `Storage`, `Io`: the disk or sled failed. Never returned from a deterministic `apply` result:
//!   openraft receives them as a `StorageError` and stops the node, which is the only safe reaction
//!   (a replica that silently skipped a write would diverge).
//! - `Codec`, `Corrupt`, `UnsupportedFormat`: persisted bytes could not be read. Also fatal for
//!   the node; `UnsupportedFormat` usually means a newer binary wrote the data (rolling back a
//!   binary past a format bump is not supported).
//! - `TooLarge`: a value would exceed what sled stores durably (see `codec::MAX_VALUE_BYTES`);
//!   callers should check proposals with `log_store::check_command_size` first.
//! - `SnapshotFormat`: a snapshot of a newer format than this build reads. Not corruption:
//!   an incoming one is refused chunk-side (`network::serve_rpc`), before openraft installs it;
//!   the binary answers 409 with the message, and the leader retries.
//! - `BadRequest`: an incoming Raft RPC body did not decode; the binary answers 400.
//! - `Config`: invalid [`crate::Options`].
//!
//! Deterministic refusals of a command are not errors: they are `CommandResult::Rejected`.

use openraft::{ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::NodeId;

/// Error of the replicated store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A file operation failed (snapshots, fsync).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// bincode could not encode or decode a value.
    #[error("codec: {0}")]
    Codec(String),
    /// Persisted data is inconsistent (bad magic, checksum, missing file).
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Persisted data carries a format version this build does not know.
    #[error("unsupported {what} format version {found} (this build reads version {supported})")]
    UnsupportedFormat {
        /// What was being decoded, e.g. `log entry`.
        what: &'static str,
        /// Version byte found on disk.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// A snapshot of a newer format than this build reads (see the snapshot module's rules).
    /// Not corruption: the snapshot is refused before it replaces anything.
    #[error("unsupported snapshot format {found}; this build reads up to {newest}")]
    SnapshotFormat {
        /// The format byte of the snapshot's header.
        found: u8,
        /// The newest format this build reads.
        newest: u8,
    },
    /// The data directory was written by a newer build (see `data_format`).
    #[error(
        "the data directory has data format {found}, written by a newer monsys; this build reads format {supported} \
         at most: run the newer binary again (or restore a backup made with this one)"
    )]
    DataFormat {
        /// The format the directory's marker names.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// The cluster's active version is one this build cannot run (see `cluster_version`).
    #[error(
        "the cluster runs cluster version {active}; this build runs versions {min} to {max}: start this node \
         with a binary that supports version {active}"
    )]
    ClusterVersion {
        /// The cluster's active version.
        active: u32,
        /// The oldest version this build runs.
        min: u32,
        /// The newest version this build runs.
        max: u32,
    },
    /// A value exceeds the size limit of its kind.
    #[error("{what} too large: more than {max} bytes")]
    TooLarge {
        /// What was being encoded.
        what: &'static str,
        /// The limit, bytes.
        max: u64,
    },
    /// An incoming Raft RPC could not be decoded.
    #[error("bad raft rpc: {0}")]
    BadRequest(String),
    /// Invalid options.
    #[error("invalid raft options: {0}")]
    Config(String),
    /// Raft has stopped (shutdown or a fatal error); nothing more can be done on it.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// True if persisted data could not be understood: the node must not continue on this data.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Codec(_) | Error::Corrupt(_) | Error::UnsupportedFormat { .. })
    }

    /// True if the error was caused by the caller's input (a malformed RPC body).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Error::BadRequest(_))
    }

    /// Wraps the error as an openraft `StorageError` about `subject`.
    pub fn into_storage(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, &self).into()
    }
}

impl From<Error> for StorageError<NodeId> {
    fn from(e: Error) -> Self {
        e.into_storage(ErrorSubject::Store, ErrorVerb::Write)
    }
}

/// Shorthand to map a `Result<_, Error>` into openraft's storage error with a subject.
// openraft's storage traits return `StorageError` by value; its size is not ours to choose.
#[allow(clippy::result_large_err)]
pub(crate) trait StorageResultExt<T> {
    /// Maps the error into a `StorageError` about `subject` while doing `verb`.
    fn sto(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> Result<T, StorageError<NodeId>>;
}

impl<T> StorageResultExt<T> for Result<T, Error> {
    fn sto(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> Result<T, StorageError<NodeId>> {
        self.map_err(|e| e.into_storage(subject, verb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(Error::Corrupt("x".into()).is_corruption());
        assert!(Error::UnsupportedFormat { what: "log entry", found: 9, supported: 1 }.is_corruption());
        assert!(!Error::Io(std::io::Error::other("x")).is_corruption());
        assert!(Error::BadRequest("x".into()).is_bad_request());
        let refused = Error::SnapshotFormat { found: 2, newest: 1 };
        assert!(!refused.is_corruption() && !refused.is_bad_request());
        assert_eq!(refused.to_string(), "unsupported snapshot format 2; this build reads up to 1");
    }

    #[test]
    fn storage_error_keeps_the_message() {
        let e: StorageError<NodeId> = Error::Corrupt("bad magic".into()).into();
        assert!(e.to_string().contains("bad magic"), "{e}");
    }
}
