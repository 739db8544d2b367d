//! Draining a node before it stops (SIGTERM, `monsys ctl node drain <id>`): the node hands its
//! work to the others first, so a planned restart costs clients a retry at most.
//!
//! In order (`node::NodeHandle::drain` runs the steps that need the node's parts):
//! 1. [`Draining::begin`]: readiness answers 503 `draining`, so load balancers stop sending.
//! 2. Gossip announces `draining`: peers, and this node's own view, stop counting it live, so
//!    placement moves its agent actors to their next owners; requests still arriving here are
//!    forwarded to them.
//! 3. If it leads, it hands Raft leadership to the most caught-up live voter
//!    (`Replica::transfer_leadership`: writes pause for the hand-over, tens of milliseconds),
//!    so the cluster does not wait out an election timeout when it stops.
//! 4. Its actors stop; the HTTP server then stops accepting, finishes the requests in flight,
//!    and closes agent sockets with 1001 so agents reconnect to another node.
//!
//! The drain request itself is a signal ([`Draining::request`], [`Draining::requested`]) that
//! the process's main loop waits for next to SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Whether this node is draining, and the request to drain it.
#[derive(Debug, Default)]
pub struct Draining {
    requested: CancellationToken,
    active: AtomicBool,
}

impl Draining {
    /// Asks the process to drain and stop (answered at once; the drain runs in the main loop).
    pub fn request(&self) {
        self.requested.cancel();
    }

    /// Resolves once a drain was requested.
    pub async fn requested(&self) {
        self.requested.cancelled().await
    }

    /// Marks the node as draining (step 1 above).
    pub fn begin(&self) {
        self.active.store(true, Ordering::SeqCst);
    }

    /// Whether the node is draining.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }
}
