//! Group commit: many agents' batches and heartbeats in one Raft entry.
//!
//! Callers [`GroupCommitter::submit`] one item and wait for its own outcome. A single task
//! takes the first waiting item, waits for a free proposal slot (at most
//! [`MAX_GROUPS_IN_FLIGHT`] groups are being committed at once), then drains whatever else is
//! waiting up to [`GROUP_BUDGET_BYTES`] and proposes it all as one `FleetCommand::Group`. Under
//! light load an item is proposed alone at once; under heavy load the queue grows while the
//! slots are busy and the next group carries it all, so the number of Raft entries (and fsyncs)
//! grows much slower than the number of batches.
//!
//! Back-pressure: the queue is bounded ([`QUEUE_CAPACITY`]); a full queue answers 503 at once.
//! Outcomes: every item of a group gets the group's fate — committed (its own `ItemOutcome`),
//! certainly not applied (503) or unknown (504, the agent retries and the seq dedupes).

use std::sync::Arc;

use monsys_raft::fleet::{FleetCommand, FleetResult, GroupItem, ItemOutcome};
use monsys_raft::{Command, CommandResult, MAX_VALUE_BYTES};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::ApiError;
use crate::hub::Hub;

/// Groups being committed at the same time.
pub const MAX_GROUPS_IN_FLIGHT: usize = 4;
/// Largest encoded group (below the Raft entry limit, with room for the envelope).
pub const GROUP_BUDGET_BYTES: u64 = MAX_VALUE_BYTES - 4 * 1024;
/// Items waiting for a group before submissions are refused.
pub const QUEUE_CAPACITY: usize = 8192;

struct Pending {
    item: GroupItem,
    size: u64,
    reply: oneshot::Sender<Result<ItemOutcome, ApiError>>,
}

/// Handle of a node's group committer.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommitter {
    /// Starts the committer task of `hub` (abort the handle at shutdown).
    pub fn spawn(hub: Hub) -> (GroupCommitter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(hub, rx));
        (GroupCommitter { tx }, task)
    }

    /// Commits `item` as part of a group and returns its outcome.
    pub async fn submit(&self, item: GroupItem) -> Result<ItemOutcome, ApiError> {
        let size = monsys_raft::encoded_size(&item);
        if size > GROUP_BUDGET_BYTES {
            return Err(ApiError::PayloadTooLarge { limit: GROUP_BUDGET_BYTES as usize });
        }
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Pending { item, size, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::Unavailable {
                reason: "ingest queue full; retry".into(),
                retry_after: std::time::Duration::from_secs(2),
            },
            mpsc::error::TrySendError::Closed(_) => ApiError::unavailable("node shutting down"),
        })?;
        rx.await
            .map_err(|_| ApiError::Indeterminate("the group commit task stopped; outcome unknown".into()))?
    }
}

async fn run(hub: Hub, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_GROUPS_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut bytes = first.size;
        let mut group = vec![first];
        while let Ok(p) = rx.try_recv() {
            if bytes + p.size > GROUP_BUDGET_BYTES {
                carry = Some(p);
                break;
            }
            bytes += p.size;
            group.push(p);
        }
        let hub = hub.clone();
        tokio::spawn(async move {
            commit(&hub, group).await;
            drop(permit);
        });
    }
}

async fn commit(hub: &Hub, group: Vec<Pending>) {
    let n = group.len();
    let (items, replies): (Vec<GroupItem>, Vec<_>) = group.into_iter().map(|p| (p.item, p.reply)).unzip();
    hub.metrics.group_committed(n);
    let result = hub.propose(Command::Fleet(FleetCommand::Group(items.into()))).await;
    match result {
        Ok(CommandResult::Fleet(FleetResult::Group(outcomes))) if outcomes.len() == n => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(other) => {
            tracing::error!(?other, "unexpected result of a group commit");
            for reply in replies {
                let _ = reply.send(Err(ApiError::Internal("unexpected result of a group commit".into())));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}
