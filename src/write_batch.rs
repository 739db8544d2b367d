//! Batching of concurrent leader writes into one Raft entry.
//!
//! openraft 0.9 appends, syncs and replicates every `client_write` as its own entry, one after
//! the other, so concurrent API writes (settings, logins, key and user changes) would each pay
//! a sync on every node. [`WriteBatcher::submit`] queues one [`Command`]; a single task takes
//! the first waiting command, waits for a free slot (at most [`MAX_IN_FLIGHT`] entries are being
//! committed), drains whatever else is waiting (up to [`MAX_BATCH`] commands) and proposes it
//! as one `Command::Batch`, or alone when nothing else waits, so a write under light load
//! takes exactly the path it would without batching.
//!
//! Semantics: the commands of a batch apply in queue order, each with its own result, as if
//! proposed one after the other; all of them share the entry's fate (committed, refused or
//! unknown). Only `Command::batchable` commands come here (see [`crate::hub::Hub::write`]).

use std::sync::Arc;

use monsys_raft::{Command, CommandResult};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::ApiError;
use crate::hub::Hub;

/// Entries being committed at the same time.
pub const MAX_IN_FLIGHT: usize = 4;
/// Most commands in one batch (batchable commands are small; this keeps an entry far below
/// the entry size limit).
pub const MAX_BATCH: usize = 256;
/// Largest encoded batch (below the Raft entry limit, with room for the envelope).
const BATCH_BUDGET_BYTES: u64 = monsys_raft::MAX_VALUE_BYTES - 4 * 1024;
/// Commands waiting for a batch before submissions are refused.
const QUEUE_CAPACITY: usize = 4096;

/// A command's result and the log index of the entry that carried it.
type Reply = oneshot::Sender<Result<(CommandResult, u64), ApiError>>;

/// Handle of a node's write batcher.
#[derive(Clone)]
pub struct WriteBatcher {
    tx: mpsc::Sender<(Command, Reply)>,
}

impl WriteBatcher {
    /// Starts the batching task of `hub` (abort the handle at shutdown).
    pub fn spawn(hub: Hub) -> (WriteBatcher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        (WriteBatcher { tx }, tokio::spawn(run(hub, rx)))
    }

    /// Commits `cmd` (alone or in a batch) and returns its own result and the log index of the
    /// entry that carried it.
    pub async fn submit(&self, cmd: Command) -> Result<(CommandResult, u64), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send((cmd, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::Unavailable {
                reason: "write queue full; retry".into(),
                retry_after: std::time::Duration::from_secs(1),
            },
            mpsc::error::TrySendError::Closed(_) => ApiError::unavailable("node shutting down"),
        })?;
        rx.await.map_err(|_| ApiError::Indeterminate("the write batcher stopped; outcome unknown".into()))?
    }
}

async fn run(hub: Hub, mut rx: mpsc::Receiver<(Command, Reply)>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry = None;
    loop {
        let Some(first) = (match carry.take() {
            Some(c) => Some(c),
            None => rx.recv().await,
        }) else {
            return;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut bytes = monsys_raft::encoded_size(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(next) = rx.try_recv()
        {
            let size = monsys_raft::encoded_size(&next.0);
            if bytes + size > BATCH_BUDGET_BYTES {
                carry = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let hub = hub.clone();
        tokio::spawn(async move {
            commit(&hub, batch).await;
            drop(permit);
        });
    }
}

async fn commit(hub: &Hub, mut batch: Vec<(Command, Reply)>) {
    if batch.len() == 1 {
        let (cmd, reply) = batch.pop().expect("one command");
        let _ = reply.send(hub.commit(cmd).await.map(|r| (r.data, r.log_id.index)));
        return;
    }
    let n = batch.len();
    let (cmds, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    match hub.commit(Command::Batch(cmds)).await.map(|r| (r.data, r.log_id.index)) {
        Ok((CommandResult::Batch(results), index)) if results.len() == n => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok((result, index)));
            }
        }
        Ok(other) => {
            tracing::error!(?other, "unexpected result of a write batch");
            for reply in replies {
                let _ = reply.send(Err(ApiError::Internal("unexpected result of a write batch".into())));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}
