//! This node's view of the cluster (members, live voters, placement), derived once per
//! change of the Raft metrics or of gossip's live set instead of once per request, and the
//! waits for a log index to be applied here or replicated to every live voter.
//!
//! Why: openraft publishes its metrics on a `watch` whose lock prefers writers. With every
//! request cloning the metrics (placement, leader checks) and every registration waiting on
//! them with a receiver of its own, thousands of readers held up the Raft core's metrics
//! updates (and the core with them) while 10,000 agents registered at once. Here one task ([`spawn`]) reads the metrics; requests read an `Arc` of the derived view,
//! and each index wait is woken once, when its index is reached.
//!
//! Consistency: the view trails openraft's metrics by at most [`COALESCE`] plus a task
//! wake-up; what uses it (placement, the log-feature gate) copes with a view that is a moment
//! old. Leader checks and routing to the leader do not use it: `Replica::leader` and
//! `Replica::is_leader` take a short borrow of the metrics (no copy), so they never lag an
//! election. The same task counts leader changes for `/metrics` (one subscriber to openraft's
//! metrics instead of two).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use monsys_actors::PlacementView;
use monsys_raft::{Node, NodeId, RaftMetrics};
use tokio::sync::{oneshot, watch};

use super::gossip::LiveView;

/// Abandoned waits (timed out) kept before they are swept.
const SWEEP_ABOVE: usize = 4096;
/// Pause after each update, so that a burst of metrics changes (openraft publishes after
/// nearly every step of its core: thousands a second under load) wakes the task once. The
/// first change after a quiet spell is seen at once; waits and views lag by at most this.
const COALESCE: Duration = Duration::from_millis(2);

/// The derived view.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Every node of the Raft configuration, voters and learners (all of them apply the log).
    pub members: BTreeSet<NodeId>,
    /// Voters gossip sees alive, with their addresses (the placement candidates).
    pub live_voters: BTreeMap<NodeId, Node>,
    /// Placement over the live voters; epoch = log index of the membership.
    pub placement: PlacementView,
}

impl ClusterView {
    fn derive(m: &RaftMetrics, live: &LiveView) -> ClusterView {
        let membership = m.membership_config.membership();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let live_voters: BTreeMap<NodeId, Node> = membership
            .voter_ids()
            .filter(|id| live.contains_key(id))
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone())))
            .collect();
        let epoch = m.membership_config.log_id().map(|l| l.index).unwrap_or(0);
        let placement = PlacementView::new(epoch, live_voters.keys().copied());
        ClusterView { members, live_voters, placement }
    }
}

/// What the view was derived from, to skip re-deriving it when only log positions moved. It
/// holds the live set it saw, so the set's address cannot be reused by a newer one.
struct Basis {
    leader: Option<NodeId>,
    membership: Option<openraft::LogId<NodeId>>,
    live: LiveView,
}

impl Basis {
    fn of(m: &RaftMetrics, live: &LiveView) -> Basis {
        Basis { leader: m.current_leader, membership: *m.membership_config.log_id(), live: live.clone() }
    }

    fn same(&self, other: &Basis) -> bool {
        self.leader == other.leader
            && self.membership == other.membership
            && Arc::ptr_eq(&self.live, &other.live)
    }
}

/// Waits for an index to be reached.
#[derive(Default)]
struct Waits {
    reached: u64,
    waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    count: usize,
    /// Waits left by the last sweep (the next sweep runs at twice as many, so sweeping stays
    /// linear in the number of waits however many are alive).
    kept: usize,
}

impl Waits {
    /// `None` when `index` is reached already, else a receiver woken when it is.
    fn wait(&mut self, index: u64) -> Option<oneshot::Receiver<()>> {
        if index <= self.reached {
            return None;
        }
        if self.count > SWEEP_ABOVE.max(2 * self.kept) {
            self.waiting.retain(|_, v| {
                v.retain(|tx| !tx.is_closed());
                !v.is_empty()
            });
            self.count = self.waiting.values().map(Vec::len).sum();
            self.kept = self.count;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.entry(index).or_default().push(tx);
        self.count += 1;
        Some(rx)
    }

    /// Sets the reached index (it may go down: a new leader's replication starts over) and
    /// wakes the waits it covers.
    fn reach(&mut self, index: u64) {
        self.reached = index;
        let later = match index.checked_add(1) {
            Some(next) => self.waiting.split_off(&next),
            None => BTreeMap::new(),
        };
        for tx in std::mem::replace(&mut self.waiting, later).into_values().flatten() {
            self.count -= 1;
            let _ = tx.send(());
        }
    }
}

/// The view and the waits of one node (held by its `Replica`).
pub struct ClusterState {
    id: NodeId,
    view: RwLock<(Arc<ClusterView>, Basis)>,
    applied: Mutex<Waits>,
    replicated: Mutex<Waits>,
}

impl ClusterState {
    /// The state of node `id` from the current metrics and live set.
    pub fn new(id: NodeId, m: &RaftMetrics, live: &LiveView) -> ClusterState {
        let s = ClusterState {
            id,
            view: RwLock::new((Arc::new(ClusterView::derive(m, live)), Basis::of(m, live))),
            applied: Mutex::default(),
            replicated: Mutex::default(),
        };
        s.advance(m);
        s
    }

    /// The current view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Waits (at most `wait`) until this node has applied `index`; true if it has.
    pub async fn applied(&self, index: u64, wait: Duration) -> bool {
        let rx = self.applied.lock().unwrap_or_else(|e| e.into_inner()).wait(index);
        wait_for(rx, wait).await
    }

    /// Waits (at most `wait`) until every live voter but this node has `index` in its log, as
    /// far as this node (the leader) knows; at once on a node that replicates to nobody.
    pub async fn replicated(&self, index: u64, wait: Duration) -> bool {
        let rx = self.replicated.lock().unwrap_or_else(|e| e.into_inner()).wait(index);
        wait_for(rx, wait).await
    }

    /// Re-derives the view from the current metrics and live set at once (for a caller that
    /// found the view empty, e.g. in the moment after a start, before the task caught up).
    pub fn refresh(&self, raft: &monsys_raft::Raft, live: &watch::Receiver<LiveView>) -> Arc<ClusterView> {
        let m = raft.metrics().borrow().clone();
        let l = live.borrow().clone();
        self.derive(&m, &l); // the waits stay with the task: an older copy must not lower them
        self.view()
    }

    fn update(&self, m: &RaftMetrics, live: &LiveView) {
        self.derive(m, live);
        self.advance(m);
    }

    fn derive(&self, m: &RaftMetrics, live: &LiveView) {
        let basis = Basis::of(m, live);
        if !self.view.read().unwrap_or_else(|e| e.into_inner()).1.same(&basis) {
            let view = Arc::new(ClusterView::derive(m, live));
            *self.view.write().unwrap_or_else(|e| e.into_inner()) = (view, basis);
        }
    }

    fn advance(&self, m: &RaftMetrics) {
        let applied = m.last_applied.map_or(0, |l| l.index);
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).reach(applied);
        let replicated = match &m.replication {
            None => u64::MAX,
            Some(r) => {
                let view = self.view();
                let others = view.live_voters.keys().filter(|id| **id != self.id);
                others.map(|id| r.get(id).copied().flatten().map_or(0, |l| l.index)).min().unwrap_or(u64::MAX)
            }
        };
        self.replicated.lock().unwrap_or_else(|e| e.into_inner()).reach(replicated);
    }
}

async fn wait_for(rx: Option<oneshot::Receiver<()>>, wait: Duration) -> bool {
    match rx {
        None => true,
        Some(rx) => matches!(tokio::time::timeout(wait, rx).await, Ok(Ok(()))),
    }
}

/// Starts the task that keeps `cluster` current and counts leader changes until the node
/// stops.
pub fn spawn(
    cluster: Arc<ClusterState>,
    raft: monsys_raft::Raft,
    mut live: watch::Receiver<LiveView>,
    node_metrics: Arc<crate::metrics::NodeMetrics>,
    life: &crate::lifecycle::Lifecycle,
) {
    let stop = life.stop.clone();
    life.spawn(async move {
        let mut metrics = raft.metrics();
        let mut leader = metrics.borrow().current_leader;
        let mut gossip_open = true;
        loop {
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                // gossip stopping freezes the live set, not the Raft side of the view
                changed = live.changed(), if gossip_open => gossip_open = changed.is_ok(),
                _ = stop.cancelled() => return,
            }
            // copies taken at once: the metrics lock is held only for the clone
            let m = metrics.borrow_and_update().clone();
            let l = live.borrow_and_update().clone();
            cluster.update(&m, &l);
            if m.current_leader != leader {
                tracing::info!(from = ?leader, to = ?m.current_leader, "leader changed");
                node_metrics.leader_changed();
                leader = m.current_leader;
            }
            tokio::time::sleep(COALESCE).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_wake_once_their_index_is_reached() {
        let mut w = Waits::default();
        w.reach(5);
        assert!(w.wait(5).is_none(), "reached already");
        let (mut six, mut nine) = (w.wait(6).unwrap(), w.wait(9).unwrap());
        w.reach(7);
        assert_eq!(six.try_recv(), Ok(()));
        assert!(nine.try_recv().is_err(), "9 is not reached");
        w.reach(3); // a new leader starts over: nothing is woken, nothing is lost
        assert!(nine.try_recv().is_err());
        w.reach(u64::MAX);
        assert_eq!(nine.try_recv(), Ok(()));
        assert_eq!(w.count, 0);
    }

    #[tokio::test]
    async fn abandoned_waits_are_swept() {
        let mut w = Waits::default();
        for i in 0..(SWEEP_ABOVE as u64 + 10) {
            drop(w.wait(100 + i)); // the caller timed out
        }
        let kept = w.wait(1).unwrap();
        assert!(w.count <= 11, "swept once past the bound: {} waits kept", w.count);
        w.reach(1);
        drop(kept);
    }
}
