//! The leader's batchable writes: concurrent API writes (settings, logins, key and user
//! changes, registrations) share Raft entries through a [`crate::batch::Batcher`].
//!
//! A lone command is proposed as itself, so a write under light load takes exactly the path
//! it would without batching; several become one `Command::Batch` whose results come back one
//! per command. Only `Command::batch_feature` commands come here, and only once every member
//! announces the feature (see `Replica::write`).

use monsys_raft::{Command, CommandResult, Raft};

use super::{WriteError, commit};
use crate::batch::{Limits, Sink};

/// Bounds of the write batcher.
pub const LIMITS: Limits = Limits {
    in_flight: 4,
    // batchable commands are small; this keeps an entry far below the entry size limit
    max_items: 256,
    budget_bytes: monsys_raft::MAX_VALUE_BYTES - 4 * 1024,
    queue: 4096,
    full_retry_after: std::time::Duration::from_secs(1),
    what: "write",
};

/// Commits batched writes on this node's Raft (it leads while they are submitted).
pub struct LeaderWrites {
    /// The local Raft handle.
    pub raft: Raft,
}

impl Sink for LeaderWrites {
    type Item = Command;
    /// The command's own result and the log index of the entry that carried it.
    type Output = (CommandResult, u64);

    fn size(cmd: &Command) -> u64 {
        monsys_raft::encoded_size(cmd)
    }

    async fn commit(&self, mut cmds: Vec<Command>) -> Result<Vec<(CommandResult, u64)>, WriteError> {
        if cmds.len() == 1 {
            let r = commit::commit(&self.raft, cmds.pop().expect("one command")).await?;
            return Ok(vec![(r.data, r.log_id.index)]);
        }
        let r = commit::commit(&self.raft, Command::Batch(cmds)).await?;
        let index = r.log_id.index;
        match r.data {
            CommandResult::Batch(results) => Ok(results.into_iter().map(|x| (x, index)).collect()),
            other => {
                tracing::error!(?other, "unexpected result of a write batch");
                Err(WriteError::unknown("unexpected result of a write batch"))
            }
        }
    }
}
