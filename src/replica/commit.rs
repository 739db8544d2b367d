//! Proposing one command on this node (the leader) and what openraft's answers mean.

use std::time::Duration;

use monsys_raft::{Command, Node, NodeId, Raft, TypeConfig};
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;

use super::WriteError;

/// How long a client write may wait for commit before its outcome is reported unknown.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read barrier may wait for a quorum.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Proposes `cmd` on `raft` (this node must lead), with the size check and the commit timeout.
pub async fn commit(raft: &Raft, cmd: Command) -> Result<ClientWriteResponse<TypeConfig>, WriteError> {
    monsys_raft::check_command_size(&cmd).map_err(|e| WriteError::invalid(e.to_string()))?;
    match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(cmd)).await {
        Err(_) => Err(WriteError::unknown("commit not confirmed in time; the write may still apply")),
        Ok(r) => r.map_err(write_error),
    }
}

/// Waits until `raft`, as leader, has confirmed its leadership with a quorum and applied
/// everything committed before the call.
pub async fn barrier(raft: &Raft) -> Result<(), WriteError> {
    match tokio::time::timeout(READ_TIMEOUT, raft.ensure_linearizable()).await {
        Err(_) => Err(WriteError::not_applied("leadership not confirmed by a quorum in time")),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
            Err(WriteError::not_applied("this node is no longer the leader"))
        }
        Ok(Err(RaftError::APIError(e))) => Err(WriteError::not_applied(e.to_string())),
        Ok(Err(RaftError::Fatal(e))) => Err(WriteError::not_applied(format!("raft stopped: {e}"))),
    }
}

/// The meaning of a failed `client_write`.
pub fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => WriteError::unknown(
            "leadership changed while the write was in flight; it may or may not have applied",
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            WriteError::conflict(e.to_string())
        }
        RaftError::Fatal(e) => WriteError::not_applied(format!("raft stopped: {e}")),
    }
}

/// What a membership change timed by `tokio::time::timeout` ends with.
pub type MembershipOutcome = Result<
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, Node>>>,
    tokio::time::error::Elapsed,
>;

/// The meaning of a failed (or timed out) membership change.
pub fn membership_error(res: MembershipOutcome) -> Result<(), WriteError> {
    match res {
        Err(_) => Err(WriteError::unknown("membership change not confirmed in time")),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(WriteError::not_applied(
            "leadership changed during the membership change; check status and retry",
        )),
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Err(match e {
            ChangeMembershipError::InProgress(_) => WriteError::busy(
                format!("another membership change is in progress: {e}"),
                Duration::from_secs(2),
            ),
            other => WriteError::conflict(other.to_string()),
        }),
        Ok(Err(RaftError::Fatal(e))) => Err(WriteError::not_applied(format!("raft stopped: {e}"))),
    }
}
