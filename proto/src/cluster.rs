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
    /// Cluster versions and formats the member's binary runs, when it is live and announces
    /// them (builds from before cluster versions announce none: they run version 0 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<Formats>,
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
    /// The cluster's active version as applied on the answering node (`None` from builds
    /// before cluster versions). 0: a cluster created before cluster versions, never finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<u32>,
    /// The newest version every member supports, when it is above the active one: what
    /// `finalize-upgrade` would raise it to (`None`: nothing to finalize, or a member is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizable_to: Option<u32>,
}

/// Answer of `POST /api/v1/cluster/finalize-upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeUpgrade {
    /// The active cluster version now.
    pub active_version: u32,
    /// The active version before the request (equal: there was nothing to finalize).
    pub previous_version: u32,
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
    /// Cluster versions and formats its binary runs (`None` from builds before cluster
    /// versions, which run version 0 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<Formats>,
}

/// An inclusive range of format versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatRange {
    /// Oldest version read.
    pub min: u32,
    /// Newest version read and written.
    pub max: u32,
}

/// The formats a build reads and writes: what a node announces next to its cluster versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formats {
    /// Cluster versions the build runs in.
    pub cluster: FormatRange,
    /// The data directory's layout (`data_format`).
    pub data_dir: FormatRange,
    /// The envelope of log entries and stored values (`codec`).
    pub log_entry: FormatRange,
    /// Snapshot files (`snapshot`).
    pub snapshot: FormatRange,
    /// Node-to-node RPC (Raft RPC, forwarded proposals).
    pub internal_rpc: FormatRange,
    /// The agent wire protocol.
    pub agent_protocol: FormatRange,
}

impl Formats {
    /// The compact form announced over gossip: `cluster=0-1,data=1-2,…`.
    pub fn announce(&self) -> String {
        let parts = [
            ("cluster", self.cluster),
            ("data", self.data_dir),
            ("log", self.log_entry),
            ("snapshot", self.snapshot),
            ("rpc", self.internal_rpc),
            ("agent", self.agent_protocol),
        ];
        parts.iter().map(|(name, r)| format!("{name}={}-{}", r.min, r.max)).collect::<Vec<_>>().join(",")
    }

    /// Parses [`Formats::announce`]'s form; `None` if any part is missing or malformed.
    pub fn parse(text: &str) -> Option<Formats> {
        let mut found = std::collections::BTreeMap::new();
        for part in text.split(',') {
            let (name, range) = part.split_once('=')?;
            let (min, max) = range.split_once('-')?;
            let range = FormatRange { min: min.parse().ok()?, max: max.parse().ok()? };
            if range.min > range.max {
                return None;
            }
            found.insert(name, range);
        }
        Some(Formats {
            cluster: *found.get("cluster")?,
            data_dir: *found.get("data")?,
            log_entry: *found.get("log")?,
            snapshot: *found.get("snapshot")?,
            internal_rpc: *found.get("rpc")?,
            agent_protocol: *found.get("agent")?,
        })
    }
}
