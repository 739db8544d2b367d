//! Raft RPC over an injected byte transport.
//!
//! The binary implements [`RaftTransport`] (HTTP to `node.api_addr`, wrapped by the test
//! harness's fault injector); this module owns the encoding. A request body is the bincode of
//! the openraft request; the reply body is the bincode of `Result<Resp, RaftError<..>>` exactly
//! as [`serve_rpc`] produced it on the target, so Raft-level refusals travel as values and only
//! transport failures are transport errors.
//!
//! Error mapping on the client side:
//! - `TransportError::Unreachable` → `RPCError::Unreachable`: openraft backs off (500 ms)
//!   instead of retrying at once and logging an error per heartbeat (openraft FAQ).
//! - `TransportError::Timeout` → `RPCError::Timeout`.
//! - `TransportError::Remote` and undecodable replies → `RPCError::Network`.
//!
//! Timeouts: openraft already bounds each call (`RPCOption::hard_ttl()`: the heartbeat interval
//! for append-entries, the minimum election timeout for votes, `install_snapshot_timeout` per
//! snapshot chunk). The transport gets that bound, capped by `Options::rpc_timeout_ms` for
//! append/vote, so it can stop cleanly before openraft drops the future.
//!
//! Snapshots use openraft 0.9's default chunked transfer (`install_snapshot` per chunk of
//! `Options::snapshot_chunk_bytes`). Deliberately missing: authentication of peers (the binary's
//! transport does that), compression, and connection pooling (the transport's job).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RPCTypes};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, MAX_RPC_BYTES};
use crate::election::Elector;
use crate::{Error, Node, NodeId, Options, TypeConfig};

/// The three Raft RPCs and the two of the election layer (`election`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    /// Append entries (also heartbeats).
    AppendEntries,
    /// Request vote.
    Vote,
    /// One chunk of a snapshot.
    InstallSnapshot,
    /// Pre-vote: would the peer vote for this node now?
    PreVote,
    /// The leader asks the peer to campaign at once (leadership transfer).
    ElectNow,
}

impl RpcKind {
    /// Every kind.
    pub const ALL: [RpcKind; 5] = [
        RpcKind::AppendEntries,
        RpcKind::Vote,
        RpcKind::InstallSnapshot,
        RpcKind::PreVote,
        RpcKind::ElectNow,
    ];

    /// URL path segment of the RPC: `append`, `vote`, `snapshot`, `prevote` or `elect-now`.
    pub fn path_segment(&self) -> &'static str {
        match self {
            RpcKind::AppendEntries => "append",
            RpcKind::Vote => "vote",
            RpcKind::InstallSnapshot => "snapshot",
            RpcKind::PreVote => "prevote",
            RpcKind::ElectNow => "elect-now",
        }
    }

    /// Inverse of [`RpcKind::path_segment`].
    pub fn from_path_segment(segment: &str) -> Option<Self> {
        RpcKind::ALL.into_iter().find(|k| k.path_segment() == segment)
    }

    fn rpc_type(&self) -> RPCTypes {
        match self {
            RpcKind::AppendEntries => RPCTypes::AppendEntries,
            RpcKind::Vote | RpcKind::PreVote | RpcKind::ElectNow => RPCTypes::Vote,
            RpcKind::InstallSnapshot => RPCTypes::InstallSnapshot,
        }
    }
}

/// Why a transport could not deliver an RPC or its reply.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (connection refused, link cut, DNS failure).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No reply within the timeout.
    #[error("timeout")]
    Timeout,
    /// The peer answered with an error instead of an RPC reply.
    #[error("remote error: {0}")]
    Remote(String),
    /// The peer does not know this kind of RPC (a build older than the kind).
    #[error("rpc unknown to the peer: {0}")]
    Unsupported(String),
}

/// Moves encoded Raft RPCs between nodes. Implemented by the binary.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends an encoded RPC to `target` at `node.api_addr` and returns the encoded reply bytes.
    fn send(
        &self,
        target: NodeId,
        node: &Node,
        kind: RpcKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Creates one [`PeerNetwork`] per target for openraft.
pub struct NetworkFactory<T: RaftTransport> {
    transport: Arc<T>,
    rpc_timeout: Duration,
}

impl<T: RaftTransport> NetworkFactory<T> {
    /// A factory sending over `transport`.
    pub fn new(transport: Arc<T>, opts: &Options) -> Self {
        NetworkFactory { transport, rpc_timeout: Duration::from_millis(opts.rpc_timeout_ms) }
    }
}

impl<T: RaftTransport> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = PeerNetwork<T>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerNetwork {
            transport: self.transport.clone(),
            target,
            node: node.clone(),
            rpc_timeout: self.rpc_timeout,
        }
    }
}

/// The client side of Raft RPC to one peer.
pub struct PeerNetwork<T: RaftTransport> {
    transport: Arc<T>,
    target: NodeId,
    node: Node,
    rpc_timeout: Duration,
}

type RpcResult<Resp, E> = Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl<T: RaftTransport> PeerNetwork<T> {
    /// Encodes `req`, sends it, and decodes the target's `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        from: NodeId,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = codec::encode("raft rpc", req, MAX_RPC_BYTES).map_err(|e| network_error(&e))?;
        let sent = self.transport.send(self.target, &self.node, kind, body, timeout).await;
        let reply = sent.map_err(|e| match e {
            TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
            TransportError::Timeout => {
                RPCError::Timeout(Timeout { action: kind.rpc_type(), id: from, target: self.target, timeout })
            }
            TransportError::Remote(_) | TransportError::Unsupported(_) => network_error(&e),
        })?;
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            codec::decode("raft rpc reply", &reply, MAX_RPC_BYTES).map_err(|e| network_error(&e))?;
        decoded
            .map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }

    fn short_timeout(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().min(self.rpc_timeout)
    }
}

fn network_error<E: std::error::Error + 'static, F: std::error::Error>(
    e: &E,
) -> RPCError<NodeId, Node, RaftError<NodeId, F>> {
    RPCError::Network(NetworkError::from(AnyError::new(e)))
}

impl<T: RaftTransport> RaftNetwork<TypeConfig> for PeerNetwork<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, Infallible> {
        let from = rpc.vote.leader_id().voted_for().unwrap_or_default();
        self.call(RpcKind::AppendEntries, from, &rpc, self.short_timeout(&option)).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let from = rpc.vote.leader_id().voted_for().unwrap_or_default();
        self.call(RpcKind::InstallSnapshot, from, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, Infallible> {
        let from = rpc.vote.leader_id().voted_for().unwrap_or_default();
        self.call(RpcKind::Vote, from, &rpc, self.short_timeout(&option)).await
    }
}

/// Serves one incoming RPC: decodes `body`, hands it to the elector's `raft` (or to the
/// elector itself for pre-vote and elect-now), encodes the result.
///
/// An append-entries or snapshot chunk this node accepts (the sender is a leader of at least
/// its term) and a vote it grants restart its election clock (`Elector::heard_from_leader`).
/// Raft-level errors (e.g. the node is shutting down) are part of the encoded reply; `Err` means
/// the body did not decode (`Error::BadRequest`), a snapshot chunk names a format this build
/// cannot read (`Error::SnapshotFormat`, refused before openraft sees it), the reply did not
/// encode, or (elect-now) Raft has stopped.
pub async fn serve_rpc(elector: &Elector, kind: RpcKind, body: &[u8]) -> Result<Vec<u8>, Error> {
    let raft = elector.raft();
    match kind {
        RpcKind::AppendEntries => {
            let reply = raft.append_entries(decode_request(body)?).await;
            if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                elector.heard_from_leader();
            }
            encode_reply(&reply)
        }
        RpcKind::Vote => {
            let reply = raft.vote(decode_request(body)?).await;
            if matches!(&reply, Ok(r) if r.vote_granted) {
                elector.heard_from_leader();
            }
            encode_reply(&reply)
        }
        RpcKind::InstallSnapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode_request(body)?;
            crate::snapshot::refuse_unreadable_chunk(req.offset, &req.data)?;
            let vote = req.vote;
            let reply = raft.install_snapshot(req).await;
            if matches!(&reply, Ok(r) if r.vote == vote) {
                elector.heard_from_leader();
            }
            encode_reply(&reply)
        }
        RpcKind::PreVote => encode_reply(&elector.serve_pre_vote(decode_request(body)?)),
        RpcKind::ElectNow => encode_reply(&elector.serve_elect_now(decode_request(body)?).await?),
    }
}

fn decode_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    codec::decode("raft rpc", body, MAX_RPC_BYTES).map_err(|e| Error::BadRequest(e.to_string()))
}

fn encode_reply<T: Serialize>(reply: &T) -> Result<Vec<u8>, Error> {
    codec::encode("raft rpc reply", reply, MAX_RPC_BYTES)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::Command;
    use crate::record::settings::SettingsV1 as Settings;
    use crate::test_cluster::{Router, node, start};

    fn put(n: u32) -> Command {
        let settings = Settings { refresh_interval_secs: n, ..Settings::default() };
        Command::PutSettings { tenant: "t".into(), expected_revision: None, settings, at_ms: u64::from(n) }
    }

    #[test]
    fn path_segments_round_trip() {
        for kind in RpcKind::ALL {
            assert_eq!(RpcKind::from_path_segment(kind.path_segment()), Some(kind));
        }
        assert_eq!(RpcKind::from_path_segment("nope"), None);
        assert_eq!(RpcKind::PreVote.path_segment(), "prevote");
        assert_eq!(RpcKind::ElectNow.path_segment(), "elect-now");
    }

    #[tokio::test]
    async fn down_peers_are_unreachable_not_network_errors() {
        let mut factory = NetworkFactory::new(Arc::new(Router::default()).link(1), &Options::default());
        let mut net = factory.new_client(9, &node(9)).await;
        let req = VoteRequest { vote: openraft::Vote::new(1, 1), last_log_id: None };
        let err = net.vote(req, RPCOption::new(Duration::from_secs(1))).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }

    /// A 3-node cluster over `serve_rpc`: writes replicate, and nodes added after the leader
    /// purged its log catch up through a chunked snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_replicates_and_catches_up_by_snapshot() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let router = Arc::new(Router::default());
        let n1 = start(&router, 1, dirs[0].path()).await;
        let r1 = &n1.raft;
        r1.initialize(BTreeMap::from([(1, node(1))])).await.unwrap();
        let wait = Some(Duration::from_secs(10));
        r1.wait(wait).current_leader(1, "leader elected").await.unwrap();

        for n in 1..=25 {
            r1.client_write(put(n)).await.unwrap();
        }
        let m = r1.wait(wait).metrics(|m| m.purged.is_some(), "log purged behind a snapshot").await.unwrap();
        let purged = m.purged.unwrap().index;

        let n2 = start(&router, 2, dirs[1].path()).await;
        let n3 = start(&router, 3, dirs[2].path()).await;
        r1.add_learner(2, node(2), true).await.unwrap();
        r1.add_learner(3, node(3), true).await.unwrap();
        r1.change_membership(BTreeSet::from([1, 2, 3]), false).await.unwrap();
        let last = r1.client_write(put(26)).await.unwrap().log_id.index;

        for (raft, name) in [(&n2.raft, "n2"), (&n3.raft, "n3")] {
            let m = raft.wait(wait).applied_index_at_least(Some(last), name).await.unwrap();
            assert!(m.snapshot.is_some_and(|s| s.index >= purged), "{name} did not install a snapshot");
        }
        for n in [&n1, &n2, &n3] {
            let doc = n.reader.settings("t").unwrap();
            assert_eq!((doc.revision, doc.settings.refresh_interval_secs), (26, 26));
        }
        for n in [n1, n2, n3] {
            n.raft.shutdown().await.unwrap();
        }
    }

    #[tokio::test]
    async fn garbage_rpc_bodies_are_bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let n = start(&Arc::new(Router::default()), 1, dir.path()).await;
        for kind in RpcKind::ALL {
            let err = serve_rpc(&n.elector, kind, b"\x01\x02").await.unwrap_err();
            assert!(err.is_bad_request(), "{kind:?}: {err}");
        }
        n.raft.shutdown().await.unwrap();
    }
}
