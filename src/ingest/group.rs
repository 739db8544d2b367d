//! Group commit: many agents' batches and heartbeats in one Raft entry.
//!
//! The owner node's agent actors [`GroupCommitter::submit`] one item each and wait for its own
//! outcome. The items go through the node's ingest [`Batcher`] (see `crate::batch`): under
//! light load an item is proposed alone at once; under heavy load the queue grows while the
//! [`LIMITS`]`.in_flight` slots are busy and the next group carries it all, so the number of
//! Raft entries (and fsyncs) grows much slower than the number of batches. A group is one
//! `FleetCommand::Group`, proposed to the leader from whichever node owns the agents.
//!
//! Back-pressure: the queue is bounded; a full queue answers "not applied" at once.
//! Outcomes: every item of a group gets the group's fate — committed (its own `ItemOutcome`),
//! certainly not applied or unknown (the agent retries and the seq dedupes).

use monsys_raft::fleet::{FleetCommand, FleetResult, GroupItem, ItemOutcome};
use monsys_raft::{Command, CommandResult, MAX_VALUE_BYTES};

use crate::batch::{Batcher, Limits, Sink};
use crate::lifecycle::Lifecycle;
use crate::replica::{Rejected, Replica, WriteError};

/// Largest encoded group (below the Raft entry limit, with room for the envelope).
pub const GROUP_BUDGET_BYTES: u64 = MAX_VALUE_BYTES - 4 * 1024;

/// Bounds of the ingest batcher.
pub const LIMITS: Limits = Limits {
    in_flight: 4,
    max_items: usize::MAX,
    budget_bytes: GROUP_BUDGET_BYTES,
    queue: 8192,
    full_retry_after: std::time::Duration::from_secs(2),
    what: "ingest",
};

/// Proposes groups of items to the leader.
pub struct Groups {
    replica: Replica,
}

impl Sink for Groups {
    type Item = GroupItem;
    type Output = ItemOutcome;

    fn size(item: &GroupItem) -> u64 {
        monsys_raft::encoded_size(item)
    }

    async fn commit(&self, items: Vec<GroupItem>) -> Result<Vec<ItemOutcome>, WriteError> {
        self.replica.metrics().group_committed(items.len());
        match self.replica.propose(Command::Fleet(FleetCommand::Group(items.into()))).await? {
            CommandResult::Fleet(FleetResult::Group(outcomes)) => Ok(outcomes),
            other => {
                tracing::error!(?other, "unexpected result of a group commit");
                Err(WriteError::unknown("unexpected result of a group commit"))
            }
        }
    }
}

/// Handle of a node's group committer.
#[derive(Clone)]
pub struct GroupCommitter {
    batcher: Batcher<Groups>,
}

impl GroupCommitter {
    /// Starts the committer of `replica` on `life`.
    pub fn start(replica: Replica, life: &Lifecycle) -> GroupCommitter {
        GroupCommitter { batcher: Batcher::spawn(Groups { replica }, LIMITS, &life.tasks, life.stop.clone()) }
    }

    /// Commits `item` as part of a group and returns its outcome.
    pub async fn submit(&self, item: GroupItem) -> Result<ItemOutcome, WriteError> {
        let size = Groups::size(&item);
        if size > GROUP_BUDGET_BYTES {
            return Err(WriteError::Rejected(Rejected::TooLarge { limit: GROUP_BUDGET_BYTES as usize }));
        }
        self.batcher.submit_sized(item, size).await
    }
}
