//! Gossip membership with chitchat over UDP.
//!
//! Each node announces small, node-level facts only: its Raft id, HTTP address, binary version,
//! the log features it applies and the cluster versions and formats it runs (see
//! `monsys_raft::cluster_version`); the chitchat id carries the gossip address and a generation (start time in unix ms),
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
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use monsys_raft::cluster_version::{self, Formats};

use crate::clock::now_ms;

const KEY_RAFT_ID: &str = "raft_id";
const KEY_API_ADDR: &str = "api_addr";
const KEY_VERSION: &str = "version";
const KEY_LOG_FEATURES: &str = "log_features";
/// The cluster versions and formats the node runs (`cluster=0-1,data=1-2,…`); absent on builds
/// from before cluster versions.
const KEY_FORMATS: &str = "formats";
/// `"1"` while the node's request runtime has not run for longer than its stall limit.
const KEY_STALLED: &str = "stalled";
/// `"1"` once the node is draining (about to stop): peers stop placing actors on it.
const KEY_DRAINING: &str = "draining";

/// How long the request runtime may go without running before the node announces itself as
/// not live: far beyond any overload measured (heartbeats behind requests for hundreds of
/// milliseconds), short enough that a wedged node loses its agents' placement quickly.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
/// How often the request runtime proves it runs, and gossip's thread checks that it did.
const BEAT: Duration = Duration::from_millis(250);

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
    /// Cluster versions and formats the member runs; `None` for builds from before cluster
    /// versions (which run version 0 only).
    pub formats: Option<Formats>,
    /// Incarnation: start time of the member's process, unix ms.
    pub generation: u64,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
}

impl LiveMember {
    /// The newest cluster version the member runs (0 for builds from before cluster versions).
    pub fn max_cluster_version(&self) -> u32 {
        self.formats.map_or(cluster_version::UNVERSIONED, |f| f.cluster.max)
    }
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
    /// See [`STALL_LIMIT`].
    pub stall_limit: Duration,
}

/// A running gossip member; [`Gossip::shutdown`] stops it (dropping it stops it too, without
/// the goodbye).
pub struct Gossip {
    handle: ChitchatHandle,
    live_rx: watch::Receiver<LiveView>,
    watch_task: JoinHandle<()>,
    /// Proves to gossip's thread that the request runtime runs (`None` in tests that beat by
    /// hand).
    beat_task: Option<JoinHandle<()>>,
    /// Ends the gossip thread once dropped.
    _thread_stop: oneshot::Sender<()>,
}

impl Gossip {
    /// Starts gossip and the task that turns chitchat's live set into a [`LiveView`].
    pub async fn start(s: GossipSettings) -> anyhow::Result<Gossip> {
        let beat = Beat::default();
        let beat_task = beat.renew_every(BEAT);
        Self::start_with(s, beat, Some(beat_task)).await
    }

    async fn start_with(
        s: GossipSettings,
        beat: Beat,
        beat_task: Option<JoinHandle<()>>,
    ) -> anyhow::Result<Gossip> {
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
            extra_liveness_predicate: Some(Box::new(|state: &NodeState| {
                state.get(KEY_RAFT_ID).is_some()
                    && state.get(KEY_STALLED) != Some("1")
                    && state.get(KEY_DRAINING) != Some("1")
            })),
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let initial = vec![
            (KEY_RAFT_ID.to_string(), s.raft_id.to_string()),
            (KEY_API_ADDR.to_string(), s.api_addr.clone()),
            (KEY_VERSION.to_string(), monsys_proto::VERSION.to_string()),
            (KEY_LOG_FEATURES.to_string(), monsys_raft::LOG_FEATURES.join(",")),
            (KEY_FORMATS.to_string(), cluster_version::formats().announce()),
        ];
        let (handle, thread_stop) = spawn_on_own_thread(config, initial, beat, s.stall_limit).await?;
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
        Ok(Gossip { handle, live_rx, watch_task, beat_task, _thread_stop: thread_stop })
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

    /// Announces that this node is draining: from the next gossip round on, peers (and this
    /// node's own view) no longer count it live, so placement moves its actors elsewhere.
    pub async fn announce_draining(&self) {
        self.handle.chitchat().lock().await.self_node_state().set(KEY_DRAINING, "1");
    }

    /// Stops gossip.
    pub async fn shutdown(self) {
        self.watch_task.abort();
        if let Some(t) = &self.beat_task {
            t.abort();
        }
        if let Err(e) = self.handle.shutdown().await {
            tracing::debug!(error = %e, "gossip shutdown");
        }
    }
}

/// Runs chitchat on a thread and one-thread runtime of its own, so that its heartbeats and its
/// failure detector keep time while the main runtime's workers are saturated by requests (on
/// the main runtime, an overload made nodes see each other dead for a moment, which moves
/// agents' placement and adds work exactly when there is none to spare). Gossip is a few UDP
/// packets per round, so the thread costs next to nothing. The thread ends when the returned
/// sender is dropped.
///
/// The other side of that choice: gossip alone would keep a node with a wedged request
/// runtime live, and placement would keep sending its agents there. So the thread watches
/// `beat`, which the request runtime renews every [`BEAT`], and while it is older than
/// `stall_limit` the node announces `stalled`, which makes it not live for every peer.
async fn spawn_on_own_thread(
    config: ChitchatConfig,
    initial: Vec<(String, String)>,
    beat: Beat,
    stall_limit: Duration,
) -> anyhow::Result<(ChitchatHandle, oneshot::Sender<()>)> {
    let (handle_tx, handle_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let span = tracing::Span::current();
    std::thread::Builder::new().name("gossip".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = handle_tx.send(Err(anyhow::Error::from(e)));
                return;
            }
        };
        runtime.block_on(
            async move {
                let started = spawn_chitchat(config, initial, &UdpTransport).await;
                let chitchat = started.as_ref().ok().map(ChitchatHandle::chitchat);
                let _ = handle_tx.send(started);
                let Some(chitchat) = chitchat else { return };
                let mut stop_rx = stop_rx; // dropped by `Gossip`: shutdown or drop
                let mut stalled = false;
                let mut stale_checks = 0u32;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => return,
                        _ = tokio::time::sleep(BEAT) => {}
                    }
                    // stale at two checks in a row: a whole process resumed after a pause
                    // (SIGSTOP, a VM freeze) renews its beat within one
                    stale_checks = if beat.age() > stall_limit { stale_checks + 1 } else { 0 };
                    let now = stale_checks >= 2;
                    if now != stalled {
                        stalled = now;
                        if stalled {
                            tracing::warn!(?stall_limit, "the request runtime has not run within the stall limit; gossip announces this node as not live");
                        } else {
                            tracing::info!("the request runtime runs again; gossip announces this node as live");
                        }
                        chitchat.lock().await.self_node_state().set(KEY_STALLED, if stalled { "1" } else { "0" });
                    }
                }
            }
            .instrument(span),
        );
    })?;
    let handle = handle_rx.await.map_err(|_| anyhow::anyhow!("the gossip thread ended at start"))??;
    Ok((handle, stop_tx))
}

/// When the request runtime last ran, as milliseconds since the beat was made.
#[derive(Clone)]
struct Beat(Arc<(std::time::Instant, std::sync::atomic::AtomicU64)>);

impl Default for Beat {
    fn default() -> Beat {
        Beat(Arc::new((std::time::Instant::now(), std::sync::atomic::AtomicU64::new(0))))
    }
}

impl Beat {
    fn now(&self) {
        let ms = self.0.0.elapsed().as_millis() as u64;
        self.0.1.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Renews the beat every `period` from the current runtime, until the task is aborted.
    fn renew_every(&self, period: Duration) -> JoinHandle<()> {
        let beat = self.clone();
        tokio::spawn(async move {
            loop {
                beat.now();
                tokio::time::sleep(period).await;
            }
        })
    }

    fn age(&self) -> Duration {
        let last = self.0.1.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis((self.0.0.elapsed().as_millis() as u64).saturating_sub(last))
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
            formats: state.get(KEY_FORMATS).and_then(Formats::parse),
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

/// Waits (at most `limit`) until the live view satisfies `cond`; whether it did.
pub async fn wait_until(
    mut rx: watch::Receiver<LiveView>,
    limit: Duration,
    cond: impl Fn(&LiveView) -> bool,
) -> bool {
    tokio::time::timeout(limit, rx.wait_for(|v| cond(v))).await.is_ok_and(|r| r.is_ok())
}

/// Resolves a `host:port` string to one socket address.
pub async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{addr} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(raft_id: u64, port: u16, seeds: Vec<String>) -> GossipSettings {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        GossipSettings {
            raft_id,
            listen_addr: addr,
            advertise_addr: addr,
            api_addr: format!("127.0.0.1:{}", 9000 + raft_id),
            cluster_name: "stall-test".into(),
            seeds,
            interval: Duration::from_millis(50),
            stall_limit: Duration::from_secs(1),
        }
    }

    fn free_udp_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_whose_request_runtime_stops_running_leaves_the_live_set_and_comes_back() {
        let (pa, pb) = (free_udp_port(), free_udp_port());
        let beat = Beat::default();
        beat.now();
        let a = Gossip::start_with(settings(1, pa, vec![format!("127.0.0.1:{pb}")]), beat.clone(), None)
            .await
            .unwrap();
        let b = Gossip::start(settings(2, pb, vec![format!("127.0.0.1:{pa}")])).await.unwrap();
        let renew = beat.renew_every(Duration::from_millis(50));
        wait("b sees a", || b.live().contains_key(&1)).await;
        // a beats for longer than its stall limit: it stays live
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(b.live().contains_key(&1), "a beating node is live");
        // a's request runtime stops running (its gossip thread still runs): a leaves b's live set
        renew.abort();
        wait("b drops the stalled a", || !b.live().contains_key(&1)).await;
        assert!(b.live().contains_key(&2), "b still sees itself");
        // and comes back once it runs again
        let _renew = beat.renew_every(Duration::from_millis(50));
        wait("b sees a again", || b.live().contains_key(&1)).await;
        a.shutdown().await;
        b.shutdown().await;
    }
}
