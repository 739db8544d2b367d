//! Gossip membership with chitchat over UDP.
//!
//! Each node announces small, node-level facts only: its Raft id, HTTP address and binary
//! version; the chitchat id carries the gossip address and a generation (start time in unix ms),
//! so a restarted node is a new incarnation and the old one fades out as dead. The live set is
//! republished on a `watch` channel as a [`LiveView`] keyed by Raft id (highest generation wins).
//!
//! Gossip decides *liveness* quickly; it decides nothing durable. Raft membership stays the
//! authority on who is in the cluster, and the Raft members' gossip addresses are re-used as
//! seeds (see `cluster::seeds`), so no seed list has to be kept in sync by hand.
//!
//! Deliberately missing: encryption of the UDP transport. Gossip must run on a private network;
//! it carries no secret, and a forged entry can only make a node believe a peer is alive, never
//! change replicated state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, spawn_chitchat,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

const KEY_RAFT_ID: &str = "raft_id";
const KEY_API_ADDR: &str = "api_addr";
const KEY_VERSION: &str = "version";
const KEY_LOG_FEATURES: &str = "log_features";

/// A member gossip currently sees alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMember {
    /// Raft id.
    pub raft_id: u64,
    /// HTTP address announced by the member.
    pub api_addr: String,
    /// Binary version announced by the member.
    pub version: String,
    /// Log features the member can apply (comma-separated; see `monsys_raft::LOG_FEATURES`).
    /// Empty for members of versions that announce none.
    pub log_features: String,
    /// Incarnation: start time of the member's process, unix ms.
    pub generation: u64,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
}

/// The live members by Raft id.
pub type LiveView = Arc<BTreeMap<u64, LiveMember>>;

/// What gossip needs to start.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    /// Raft id of this node.
    pub raft_id: u64,
    /// UDP listen address.
    pub listen_addr: SocketAddr,
    /// Address others gossip with us at.
    pub advertise_addr: SocketAddr,
    /// HTTP address to announce.
    pub api_addr: String,
    /// Cluster name (chitchat cluster id).
    pub cluster_name: String,
    /// Seeds (`host:port`).
    pub seeds: Vec<String>,
    /// Gossip round interval.
    pub interval: Duration,
}

/// A running gossip member; dropping it does not stop it, [`Gossip::shutdown`] does.
pub struct Gossip {
    handle: ChitchatHandle,
    live_rx: watch::Receiver<LiveView>,
    watch_task: JoinHandle<()>,
}

impl Gossip {
    /// Starts gossip and the task that turns chitchat's live set into a [`LiveView`].
    pub async fn start(s: GossipSettings) -> anyhow::Result<Gossip> {
        let generation = now_ms();
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("node-{}", s.raft_id), generation, s.advertise_addr),
            cluster_id: s.cluster_name.clone(),
            gossip_interval: s.interval,
            listen_addr: s.listen_addr,
            seed_nodes: s.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                initial_interval: s.interval * 2,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: Some(Box::new(|state: &NodeState| state.get(KEY_RAFT_ID).is_some())),
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let initial = vec![
            (KEY_RAFT_ID.to_string(), s.raft_id.to_string()),
            (KEY_API_ADDR.to_string(), s.api_addr.clone()),
            (KEY_VERSION.to_string(), monsys_proto::VERSION.to_string()),
            (KEY_LOG_FEATURES.to_string(), monsys_raft::LOG_FEATURES.join(",")),
        ];
        let handle = spawn_chitchat(config, initial, &UdpTransport).await?;
        let mut chitchat_rx = handle.chitchat().lock().await.live_nodes_watcher();
        let (live_tx, live_rx) = watch::channel(to_live_view(&chitchat_rx.borrow()));
        let watch_task = tokio::spawn(
            async move {
                while chitchat_rx.changed().await.is_ok() {
                    let view = to_live_view(&chitchat_rx.borrow_and_update());
                    live_tx.send_if_modified(|old| {
                        let changed = **old != *view;
                        if changed {
                            tracing::info!(live = ?view.keys().collect::<Vec<_>>(), "gossip live set changed");
                            *old = view;
                        }
                        changed
                    });
                }
            }
            .in_current_span(),
        );
        Ok(Gossip { handle, live_rx, watch_task })
    }

    /// The current live view.
    pub fn live(&self) -> LiveView {
        self.live_rx.borrow().clone()
    }

    /// A receiver of live-view changes.
    pub fn watch(&self) -> watch::Receiver<LiveView> {
        self.live_rx.clone()
    }

    /// Starts a gossip exchange with `addr` (used to (re)connect to Raft members).
    pub fn gossip_with(&self, addr: SocketAddr) {
        if let Err(e) = self.handle.gossip(addr) {
            tracing::debug!(%addr, error = %e, "gossip command dropped");
        }
    }

    /// Stops gossip.
    pub async fn shutdown(self) {
        self.watch_task.abort();
        if let Err(e) = self.handle.shutdown().await {
            tracing::debug!(error = %e, "gossip shutdown");
        }
    }
}

fn to_live_view(nodes: &BTreeMap<ChitchatId, NodeState>) -> LiveView {
    let mut view: BTreeMap<u64, LiveMember> = BTreeMap::new();
    for (id, state) in nodes {
        let Some(raft_id) = state.get(KEY_RAFT_ID).and_then(|v| v.parse::<u64>().ok()) else { continue };
        let member = LiveMember {
            raft_id,
            api_addr: state.get(KEY_API_ADDR).unwrap_or_default().to_string(),
            version: state.get(KEY_VERSION).unwrap_or_default().to_string(),
            log_features: state.get(KEY_LOG_FEATURES).unwrap_or_default().to_string(),
            generation: id.generation_id,
            gossip_addr: id.gossip_advertise_addr,
        };
        let newer = view.get(&raft_id).is_none_or(|m| m.generation < member.generation);
        if newer {
            view.insert(raft_id, member);
        }
    }
    Arc::new(view)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Resolves a `host:port` string to one socket address.
pub async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{addr} resolves to no address"))
}
