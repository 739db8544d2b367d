//! One batcher for every path that shares Raft entries between concurrent callers.
//!
//! openraft 0.9 appends, syncs and replicates every `client_write` as its own entry, one after
//! the other. A [`Batcher`] lets many callers share entries: callers [`Batcher::submit`] one
//! item and wait for their own outcome; one task takes the first waiting item, waits for a free
//! slot (at most [`Limits::in_flight`] entries are being committed), drains whatever else is
//! waiting (up to [`Limits::max_items`] and [`Limits::budget_bytes`]) and hands it to the
//! [`Sink`], which commits it as one entry. Under light load an item goes alone at once, so a
//! lone write takes the path it would take without batching; under load the queue grows while
//! the slots are busy and the next entry carries it all.
//!
//! Two sinks use it: the leader's batchable writes (`replica::writes`: settings, logins, user
//! and key changes, registrations) and the ingest group commit (`ingest::group`: agents'
//! batches and heartbeats, proposed to the leader from the owner node).
//!
//! Semantics: items of one entry apply in queue order, each with its own result, and share the
//! entry's fate ([`WriteError`]: not applied, unknown, refused). A full queue refuses at once
//! (`NotApplied` with [`Limits::full_retry_after`]); a stopped batcher refuses new items and
//! lets the entries in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::replica::error::WriteError;

/// Commits a run of items as one Raft entry.
pub trait Sink: Send + Sync + 'static {
    /// What callers submit.
    type Item: Send + 'static;
    /// What each caller gets back.
    type Output: Send + 'static;

    /// Encoded size of an item (counts against [`Limits::budget_bytes`]).
    fn size(item: &Self::Item) -> u64;

    /// Commits `items` as one entry: one output per item, in order, or the entry's error.
    fn commit(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Self::Output>, WriteError>> + Send;
}

/// Bounds of a batcher.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries being committed at the same time.
    pub in_flight: usize,
    /// Most items in one entry.
    pub max_items: usize,
    /// Most encoded bytes in one entry (a lone item may exceed it; the sink refuses it).
    pub budget_bytes: u64,
    /// Items waiting for an entry before submissions are refused.
    pub queue: usize,
    /// `Retry-After` of a refusal because the queue is full.
    pub full_retry_after: Duration,
    /// What the queue holds, for messages ("write", "ingest").
    pub what: &'static str,
}

type Reply<O> = oneshot::Sender<Result<O, WriteError>>;

/// An item waiting for an entry, with its size (computed once, by the caller's task).
struct Pending<S: Sink> {
    item: S::Item,
    size: u64,
    reply: Reply<S::Output>,
}

/// Handle of a running batcher (cheap to clone).
pub struct Batcher<S: Sink> {
    tx: mpsc::Sender<Pending<S>>,
    what: &'static str,
    full_retry_after: Duration,
}

impl<S: Sink> Clone for Batcher<S> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone(), what: self.what, full_retry_after: self.full_retry_after }
    }
}

impl<S: Sink> Batcher<S> {
    /// Starts the batching task on `tasks`; it stops taking items once `stop` is cancelled.
    pub fn spawn(sink: S, limits: Limits, tasks: &TaskTracker, stop: CancellationToken) -> Batcher<S> {
        let (tx, rx) = mpsc::channel(limits.queue);
        tasks.spawn(run(Arc::new(sink), limits, rx, tasks.clone(), stop).in_current_span());
        Batcher { tx, what: limits.what, full_retry_after: limits.full_retry_after }
    }

    /// Commits `item` (alone or with others) and returns its own output.
    pub async fn submit(&self, item: S::Item) -> Result<S::Output, WriteError> {
        let size = S::size(&item);
        self.submit_sized(item, size).await
    }

    /// [`Batcher::submit`] for a caller that already knows the item's [`Sink::size`].
    pub async fn submit_sized(&self, item: S::Item, size: u64) -> Result<S::Output, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Pending { item, size, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                WriteError::busy(format!("{} queue full; retry", self.what), self.full_retry_after)
            }
            mpsc::error::TrySendError::Closed(_) => WriteError::not_applied("node shutting down"),
        })?;
        rx.await
            .map_err(|_| WriteError::unknown(format!("the {} batcher stopped; outcome unknown", self.what)))?
    }
}

async fn run<S: Sink>(
    sink: Arc<S>,
    limits: Limits,
    mut rx: mpsc::Receiver<Pending<S>>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    let mut carry = None;
    loop {
        let first = match carry.take() {
            Some(c) => c,
            None => tokio::select! {
                next = rx.recv() => match next { Some(p) => p, None => return },
                _ = stop.cancelled() => return,
            },
        };
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => {
                let _ = first.reply.send(Err(WriteError::not_applied("node shutting down")));
                return;
            }
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < limits.max_items
            && let Ok(next) = rx.try_recv()
        {
            if bytes + next.size > limits.budget_bytes {
                carry = Some(next);
                break;
            }
            bytes += next.size;
            batch.push(next);
        }
        let sink = sink.clone();
        tasks.spawn(
            async move {
                commit(&*sink, batch).await;
                drop(permit);
            }
            .in_current_span(),
        );
    }
}

async fn commit<S: Sink>(sink: &S, batch: Vec<Pending<S>>) {
    let n = batch.len();
    let (items, replies): (Vec<S::Item>, Vec<Reply<S::Output>>) =
        batch.into_iter().map(|p| (p.item, p.reply)).unzip();
    match sink.commit(items).await {
        Ok(outputs) if outputs.len() == n => {
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(output));
            }
        }
        Ok(outputs) => {
            // committed, but the results cannot be matched to the callers
            tracing::error!(
                items = n,
                results = outputs.len(),
                "a batch came back with the wrong number of results"
            );
            for reply in replies {
                let _ = reply.send(Err(WriteError::unknown("unexpected result of a batched write")));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the entries it was given; fails entries that contain `0`.
    #[derive(Default)]
    struct Recorder {
        entries: Mutex<Vec<Vec<u32>>>,
        gate: tokio::sync::Notify,
        hold: std::sync::atomic::AtomicBool,
    }

    impl Sink for Arc<Recorder> {
        type Item = u32;
        type Output = u32;

        fn size(_: &u32) -> u64 {
            10
        }

        async fn commit(&self, items: Vec<u32>) -> Result<Vec<u32>, WriteError> {
            if self.hold.load(std::sync::atomic::Ordering::SeqCst) {
                self.gate.notified().await;
            }
            self.entries.lock().unwrap().push(items.clone());
            if items.contains(&0) {
                return Err(WriteError::unknown("zero"));
            }
            Ok(items.iter().map(|i| i * 2).collect())
        }
    }

    fn limits(in_flight: usize, budget_bytes: u64) -> Limits {
        Limits {
            in_flight,
            max_items: 100,
            budget_bytes,
            queue: 64,
            full_retry_after: Duration::from_secs(1),
            what: "test",
        }
    }

    #[tokio::test]
    async fn a_lone_item_goes_alone_and_gets_its_own_output() {
        let rec = Arc::new(Recorder::default());
        let tasks = TaskTracker::new();
        let b = Batcher::spawn(rec.clone(), limits(4, 1000), &tasks, CancellationToken::new());
        assert_eq!(b.submit(21).await, Ok(42));
        assert_eq!(*rec.entries.lock().unwrap(), vec![vec![21]]);
    }

    #[tokio::test]
    async fn waiting_items_share_an_entry_within_the_budget_and_share_its_fate() {
        let rec = Arc::new(Recorder::default());
        rec.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        let tasks = TaskTracker::new();
        // one slot, room for three items per entry
        let b = Batcher::spawn(rec.clone(), limits(1, 30), &tasks, CancellationToken::new());
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.submit(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await; // the first entry holds the slot
        let rest: Vec<_> = [2, 3, 0, 5]
            .into_iter()
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        rec.hold.store(false, std::sync::atomic::Ordering::SeqCst);
        rec.gate.notify_one();
        assert_eq!(first.await.unwrap(), Ok(2));
        let mut got = Vec::new();
        for r in rest {
            got.push(r.await.unwrap());
        }
        assert_eq!(*rec.entries.lock().unwrap(), vec![vec![1], vec![2, 3, 0], vec![5]]);
        assert_eq!(got[0], Err(WriteError::unknown("zero")), "the entry's fate is every item's");
        assert_eq!(got[1], Err(WriteError::unknown("zero")));
        assert_eq!(got[3], Ok(10));
    }

    #[tokio::test]
    async fn a_stopped_batcher_refuses_new_items_as_not_applied() {
        let rec = Arc::new(Recorder::default());
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let b = Batcher::spawn(rec, limits(1, 100), &tasks, stop.clone());
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        let e = b.submit(1).await.unwrap_err();
        assert!(e.certainly_not_applied(), "{e:?}");
    }
}
