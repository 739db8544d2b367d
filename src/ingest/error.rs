//! The one error of the ingest service: why a batch or heartbeat was not stored. The HTTP
//! layer maps it once (`api::agent_plane::ingest_error`).

use std::time::Duration;

use monsys_proto::settings::FieldError;

use crate::replica::error::WriteError;

/// Why a batch or heartbeat was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON of the wrong shape.
    #[error("{0}")]
    Shape(String),
    /// Values out of the wire limits.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The batch names another agent than the token's.
    #[error("agent_id does not match the agent token")]
    WrongAgent,
    /// The agent was deleted (or never existed on this replica's state).
    #[error("agent no longer exists")]
    UnknownAgent,
    /// A key is pinned and the batch carries no signature.
    #[error("signature missing")]
    SignatureMissing,
    /// The signature does not verify, or the key changed while the batch was in flight.
    #[error("{0}")]
    SignatureInvalid(String),
    /// Over the agent's rate limit.
    #[error("rate limit exceeded")]
    RateLimited(Duration),
    /// Too many requests of this agent in flight.
    #[error("too many requests in flight for this agent")]
    Busy,
    /// A seq below the highest stored one that is not a recent retry.
    #[error("seq {seq} is below the highest stored seq {last_seq} and is not a recent retry")]
    Replay {
        /// The batch's seq.
        seq: u64,
        /// The agent's highest stored seq.
        last_seq: u64,
    },
    /// A stored seq came with a different body.
    #[error("seq {seq} was already stored with a different body (highest stored seq: {last_seq})")]
    SeqConflict {
        /// The batch's seq.
        seq: u64,
        /// The agent's highest stored seq.
        last_seq: u64,
    },
    /// The actor stopped (node shutting down) or did not answer in time.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading the local state failed.
    #[error("replicated state: {0}")]
    Storage(#[from] monsys_raft::Error),
}
