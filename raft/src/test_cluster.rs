//! In-process Raft groups for this crate's tests: each node's RPCs go through a shared
//! [`Router`] that calls `serve_rpc` on the target's elector, so tests can cut nodes off and
//! play an older build that does not know the election RPCs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::election::Elector;
use crate::network::{NetworkFactory, RaftTransport, RpcKind, TransportError, serve_rpc};
use crate::{Node, NodeId, Options, Raft, StateReader, storage};

/// The nodes of a test group and the state of the links between them.
#[derive(Default)]
pub(crate) struct Router {
    nodes: Mutex<HashMap<NodeId, Elector>>,
    /// Nodes cut off from every other node (both ways).
    down: Mutex<HashSet<NodeId>>,
    /// Nodes that answer the election RPCs as an older build does (unknown RPC).
    legacy: Mutex<HashSet<NodeId>>,
}

impl Router {
    /// Cuts `id` off from every other node, or reconnects it.
    pub(crate) fn cut(&self, id: NodeId, cut: bool) {
        let mut down = self.down.lock().unwrap();
        if cut {
            down.insert(id)
        } else {
            down.remove(&id)
        };
    }

    /// The transport of node `from`.
    pub(crate) fn link(self: &Arc<Self>, from: NodeId) -> Arc<Link> {
        Arc::new(Link { from, router: self.clone() })
    }

    /// Makes `id` answer pre-vote and elect-now as a build without them.
    pub(crate) fn make_legacy(&self, id: NodeId) {
        self.legacy.lock().unwrap().insert(id);
    }
}

/// One node's side of the [`Router`].
pub(crate) struct Link {
    from: NodeId,
    router: Arc<Router>,
}

impl RaftTransport for Link {
    fn send(
        &self,
        target: NodeId,
        _node: &Node,
        kind: RpcKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let r = &self.router;
        let elector = r.nodes.lock().unwrap().get(&target).cloned();
        let cut = {
            let down = r.down.lock().unwrap();
            down.contains(&target) || down.contains(&self.from)
        };
        let legacy = r.legacy.lock().unwrap().contains(&target)
            && matches!(kind, RpcKind::PreVote | RpcKind::ElectNow);
        async move {
            let elector = elector
                .filter(|_| !cut)
                .ok_or_else(|| TransportError::Unreachable(format!("node {target}")))?;
            if legacy {
                return Err(TransportError::Unsupported(format!(
                    "404: unknown raft rpc {:?}",
                    kind.path_segment()
                )));
            }
            let served = tokio::time::timeout(timeout, serve_rpc(&elector, kind, &body)).await;
            served.map_err(|_| TransportError::Timeout)?.map_err(|e| TransportError::Remote(e.to_string()))
        }
    }
}

/// How node `id` is reached (addresses are never dialled here).
pub(crate) fn node(id: NodeId) -> Node {
    Node { api_addr: format!("n{id}:1"), gossip_addr: format!("n{id}:2") }
}

/// Fast timers, small snapshots in small chunks.
pub(crate) fn options() -> Options {
    Options {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_every_entries: 10,
        keep_logs_behind_snapshot: 0,
        snapshot_chunk_bytes: 64,
        install_snapshot_timeout_ms: 2000,
        ..Options::default()
    }
}

/// A started node.
pub(crate) struct TestNode {
    pub raft: Raft,
    pub reader: StateReader,
    pub elector: Elector,
    /// The election driver's task.
    pub driver: tokio::task::JoinHandle<()>,
}

/// Starts node `id` on `dir`, reachable through `router`, its election driver running.
pub(crate) async fn start(router: &Arc<Router>, id: NodeId, dir: &std::path::Path) -> TestNode {
    let opts = options();
    // a node stopped a moment ago may still be letting go of its files
    let mut tries = 0;
    let s = loop {
        match storage::open(dir, &opts).await {
            Ok(s) => break s,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(error = %e, "storage busy; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot open node {id}'s storage: {e}"),
        }
    };
    let config = Arc::new(opts.to_config("test").unwrap());
    let link = router.link(id);
    let raft = Raft::new(id, config, NetworkFactory::new(link.clone(), &opts), s.log, s.sm).await.unwrap();
    let elector = Elector::new(id, raft.clone(), link, &opts);
    let driver = tokio::spawn(elector.clone().run());
    router.nodes.lock().unwrap().insert(id, elector.clone());
    TestNode { raft, reader: s.reader, elector, driver }
}

/// Starts nodes `1..=n` in `dirs`, node 1 initialises the group and adds the others as voters.
pub(crate) async fn start_group(router: &Arc<Router>, dirs: &[tempfile::TempDir]) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(start(router, i as NodeId + 1, dir.path()).await);
    }
    let r1 = &nodes[0].raft;
    r1.initialize(BTreeMap::from([(1, node(1))])).await.unwrap();
    r1.wait(Some(Duration::from_secs(10))).current_leader(1, "node 1 leads").await.unwrap();
    let ids: BTreeSet<NodeId> = (1..=dirs.len() as NodeId).collect();
    for id in ids.iter().skip(1) {
        r1.add_learner(*id, node(*id), true).await.unwrap();
    }
    r1.change_membership(ids, false).await.unwrap();
    nodes
}
