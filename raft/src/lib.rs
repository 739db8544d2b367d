//! monsys replicated state: openraft 0.9 with its log in a write-ahead log and its state
//! machine in sled.
//!
//! Data flow: the hub proposes a [`Command`] with `Raft::client_write`; openraft appends it
//! through [`LogStore`] (`raft-log` WAL, synced before openraft hears it is durable), replicates
//! it over a [`network::RaftTransport`] supplied by the binary, and once committed applies it to
//! the [`StateMachineStore`], whose trees the hub reads through a [`StateReader`].
//!
//! Layout:
//! - [`command`]: the versioned command enum and its results (the persisted log format).
//! - [`fleet`]: the fleet domain (agents, telemetry, alerts, audit log reads) applied by the
//!   state machine; its `apply` has a file per domain (`tokens`, `agents`, `ingest`, `alerts`,
//!   `anomalies`, `retention`, `replay`) behind one short dispatch.
//! - [`identity`]: tenants, users, sessions, API keys, custom roles.
//! - `audit`: appending to a tenant's hash-chained audit log, shared by the fleet, identity and
//!   settings apply code.
//! - [`log_store`]: `RaftLogStorage` on the `raft-log` WAL (entries, vote, committed, purge).
//! - [`state_machine`]: `RaftStateMachine` on sled trees + snapshot files; [`StateReader`]. One
//!   file per job: `apply` (the apply engine: runs of entries, one batch each), `settings` (the
//!   settings domain), `recovery` (open, snapshot reload, telemetry heads replayed from the log),
//!   `snapshotting` (dumping, receiving and loading snapshots), `migration` (the older layout).
//! - [`network`]: `RaftNetworkFactory` over a byte-moving [`network::RaftTransport`] trait and the
//!   server-side [`network::serve_rpc`] that decodes and dispatches incoming RPCs.
//! - [`election`]: when to campaign (pre-vote; openraft's own election timer is off) and
//!   leadership transfer, with the two RPCs they add.
//! - [`options`]: tunables and their translation into `openraft::Config`.
//! - [`data_format`]: the data directory's format marker, checked before anything is opened.
//! - [`cluster_version`]: the replicated cluster version, the versions and formats this build
//!   runs, and which log features a finalized version turns on for good.
//! - [`record`]: versioned persisted records owned by this crate (settings so far), one
//!   migration per version; the binary converts them from and to the API types.
//! - `codec` (bincode options, versioned values), `durable` (flush + fdatasync, atomic files),
//!   `snapshot` (snapshot file format and directory), `storage` ([`open`]): internals.
//!
//! Only this crate knows bincode, sled and the WAL; the binary moves opaque bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

mod audit;
pub mod cluster_version;
mod codec;
pub mod command;
pub mod data_format;
mod durable;
pub mod election;
pub mod error;
pub mod fleet;
pub mod identity;
pub mod log_store;
pub mod network;
pub mod options;
pub mod record;
mod snapshot;
pub mod state_machine;
mod storage;
#[cfg(test)]
mod test_cluster;
mod txn;

pub use codec::{MAX_RPC_BYTES, MAX_VALUE_BYTES, encoded_size};
pub use command::{
    Command, CommandResult, LOG_FEATURE_ACTOR_AUDIT, LOG_FEATURE_BATCH, LOG_FEATURE_CLUSTER_VERSION,
    LOG_FEATURE_RECORD_AUDIT, LOG_FEATURE_RESET_EXCLUSIVE, LOG_FEATURE_SETTINGS_AUDIT, LOG_FEATURES,
    Rejection, decode_command, decode_result, encode_command, encode_result,
};
pub use election::Elector;
pub use error::Error;
pub use log_store::{LogStore, check_command_size};
pub use network::{NetworkFactory, RaftTransport, RpcKind, TransportError, serve_rpc};
pub use options::Options;
pub use record::settings::{RetentionV1, SettingsRecord, SettingsRecordV1, SettingsV1};
pub use snapshot::{SnapshotFormat, SnapshotFormatSetting};
pub use state_machine::{StateMachineStore, StateReader};
pub use storage::{Storage, open};

/// Raft node id; stable for the life of a node's data directory.
pub type NodeId = u64;

/// What the cluster knows about a member: how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// HTTP address (`host:port`): public API and internal routes (Raft RPC, forwarding).
    pub api_addr: String,
    /// UDP gossip address (`host:port`), used as a gossip seed by the other members.
    pub gossip_addr: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (gossip {})", self.api_addr, self.gossip_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft type configuration of monsys.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a monsys node.
pub type Raft = openraft::Raft<TypeConfig>;
/// Metrics snapshot published by openraft.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
