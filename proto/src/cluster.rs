//! Cluster status types (`GET /api/v1/cluster`, `monsys ctl cluster status`).

use serde::{Deserialize, Serialize};

/// One member as seen from the answering node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Raft node id.
    pub id: u64,
    /// HTTP address (API, internal routes).
    pub api_addr: String,
    /// UDP gossip address.
    pub gossip_addr: String,
    /// `voter` or `learner` in the Raft membership.
    pub role: String,
    /// Whether gossip currently sees the member alive (from the answering node's view).
    pub live: bool,
    /// Binary version announced over gossip, when the member is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Gossip generation (start time of the member's current incarnation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// Cluster status as answered by one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Id of the answering node.
    pub node_id: u64,
    /// Leader known to the answering node.
    pub leader: Option<u64>,
    /// Current Raft term on the answering node.
    pub term: u64,
    /// Last log index known committed/applied on the answering node.
    pub applied_index: Option<u64>,
    /// Last log index in the answering node's log.
    pub last_log_index: Option<u64>,
    /// Raft state of the answering node: Leader, Follower, Candidate, Learner.
    pub state: String,
    /// Members of the Raft configuration plus gossip view.
    pub members: Vec<MemberStatus>,
    /// Version of the answering node.
    pub version: String,
}

/// Body of `POST /api/v1/cluster/members` (used by `monsys hub --join` and `monsys ctl cluster add`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Raft id of the node to add.
    pub id: u64,
    /// Its HTTP address (`host:port`).
    pub api_addr: String,
    /// Its gossip address (`host:port`).
    pub gossip_addr: String,
    /// Promote to voter once caught up (default true).
    #[serde(default = "yes")]
    pub promote: bool,
}

fn yes() -> bool {
    true
}

/// A node's own Raft state, as `GET /internal/v1/node` reports it to the leader before the
/// leader adds it: only a node with no log of its own may join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The node's Raft id.
    pub node_id: u64,
    /// Whether the node has a Raft log or vote of its own (it started a cluster, or was a
    /// member of one).
    pub has_log: bool,
    /// Its last log index, if any.
    pub last_log_index: Option<u64>,
    /// Its current term.
    pub term: u64,
}
