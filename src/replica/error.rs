//! The one error of a replicated write: what the caller may conclude about its outcome.
//!
//! Every way a write can fail falls in one of three classes, and the class is all a caller
//! (and the chaos checker) may rely on:
//! - [`WriteError::NotApplied`]: certainly not applied; safe to retry after the delay (503);
//! - [`WriteError::OutcomeUnknown`]: may or may not have been applied (504); a retry must be
//!   idempotent (a seq, a revision, a compare-and-set);
//! - [`WriteError::Rejected`]: refused before it was proposed; retrying it unchanged fails
//!   the same way.
//!
//! The HTTP mapping is done once, in `src/error.rs`. Nothing here knows HTTP.

use std::time::Duration;

/// Why a write was refused before it was proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The command is malformed for the log (e.g. over the entry size limit).
    Invalid(String),
    /// One item is larger than the most a single entry may carry.
    TooLarge {
        /// The largest accepted size in bytes.
        limit: usize,
    },
    /// The change conflicts with the current state (a membership change that is not allowed).
    Conflict(String),
}

/// How a replicated write (or a read barrier) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Certainly not applied: no leader, shutting down, queue full, a peer that could not be
    /// reached before the request was delivered.
    #[error("{reason}")]
    NotApplied {
        /// Why.
        reason: String,
        /// Suggested delay before a retry.
        retry_after: Duration,
    },
    /// May or may not have been applied (leadership lost in flight, commit not confirmed in
    /// time, a peer lost after delivery).
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Refused before proposing.
    #[error("{}", match .0 {
        Rejected::Invalid(m) | Rejected::Conflict(m) => m.clone(),
        Rejected::TooLarge { limit } => format!("too large for one log entry (limit {limit} bytes)"),
    })]
    Rejected(Rejected),
}

impl WriteError {
    /// Not applied, retry after a second.
    pub fn not_applied(reason: impl Into<String>) -> WriteError {
        WriteError::NotApplied { reason: reason.into(), retry_after: Duration::from_secs(1) }
    }

    /// Not applied, retry after `retry_after`.
    pub fn busy(reason: impl Into<String>, retry_after: Duration) -> WriteError {
        WriteError::NotApplied { reason: reason.into(), retry_after }
    }

    /// Outcome unknown.
    pub fn unknown(reason: impl Into<String>) -> WriteError {
        WriteError::OutcomeUnknown(reason.into())
    }

    /// Refused as invalid.
    pub fn invalid(reason: impl Into<String>) -> WriteError {
        WriteError::Rejected(Rejected::Invalid(reason.into()))
    }

    /// Refused as conflicting.
    pub fn conflict(reason: impl Into<String>) -> WriteError {
        WriteError::Rejected(Rejected::Conflict(reason.into()))
    }

    /// Whether the write certainly did not apply (a retry cannot duplicate it).
    pub fn certainly_not_applied(&self) -> bool {
        matches!(self, WriteError::NotApplied { .. } | WriteError::Rejected(_))
    }
}

impl From<monsys_raft::Error> for WriteError {
    /// A storage or codec failure on the write path: the size check fails before proposing,
    /// anything else (a result that does not decode) happened after the command left.
    fn from(e: monsys_raft::Error) -> WriteError {
        WriteError::OutcomeUnknown(format!("replicated state error: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_and_not_applied_are_safe_to_retry_blindly() {
        assert!(WriteError::not_applied("no leader").certainly_not_applied());
        assert!(WriteError::invalid("too big").certainly_not_applied());
        assert!(!WriteError::unknown("lost leader").certainly_not_applied());
        let e = WriteError::Rejected(Rejected::TooLarge { limit: 10 });
        assert_eq!(e.to_string(), "too large for one log entry (limit 10 bytes)");
    }
}
