//! Structured lifetime of a node's tasks.
//!
//! Every task a node starts is spawned on its [`Lifecycle`]'s tracker (the HTTP server and
//! gossip's own threads are stopped separately by `node::NodeHandle::shutdown`), so stopping
//! the node can wait for all of them: `node::NodeHandle::shutdown` cancels [`Lifecycle::stop`], the
//! loops that run until then return, the work already in flight (a commit, a forwarded
//! proposal) finishes within its own timeout, and only then does the node drop its state. A
//! stopped node has therefore released its data directory (sled's lock, the WAL) by the time
//! `shutdown` returns, and nothing of it is left running detached. The waits are bounded
//! (15 s); a task that outlives them is named in a warning.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The tracker and stop signal of one node (cheap to clone).
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Every task of the node.
    pub tasks: TaskTracker,
    /// Cancelled when the node stops.
    pub stop: CancellationToken,
}

impl Lifecycle {
    /// A new lifecycle.
    pub fn new() -> Lifecycle {
        Lifecycle::default()
    }

    /// Runs `task` to completion (in the current span), tracked.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task.in_current_span());
    }

    /// Runs `task` until it ends or the node stops, whichever comes first; tracked.
    pub fn spawn_until_stop<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tasks.spawn(
            async move {
                tokio::select! {
                    _ = task => {}
                    _ = stop.cancelled() => {}
                }
            }
            .in_current_span(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stop_ends_loops_and_waits_for_work_in_flight() {
        let life = Lifecycle::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        life.spawn_until_stop(std::future::pending());
        life.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
        });
        life.stop.cancel();
        life.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), life.tasks.wait()).await.expect("every task ended");
        assert!(done_rx.await.is_ok(), "work in flight ran to its end");
        assert!(life.stop.is_cancelled());
    }
}
