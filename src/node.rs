//! Wiring and lifecycle of one hub node.
//!
//! [`start`] opens the data directory, starts Raft, the HTTP server and gossip, then bootstraps:
//! a pristine node without `join` initialises a one-node cluster and installs the admin token; a
//! pristine node with `join` asks the cluster to add it (learner, catch up, voter); a node with
//! data simply rejoins its cluster. The returned [`NodeHandle`] owns shutdown.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use monsys_raft::network::NetworkFactory;
use monsys_raft::{Command, CommandResult, Elector, Node, Raft};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cluster::gossip::{Gossip, GossipSettings, resolve};
use crate::cluster::links::LinkPolicy;
use crate::cluster::raft_transport::HttpRaftTransport;
use crate::cluster::seeds;
use crate::config::Config;
use crate::hub::{Hub, HubParts};
use crate::lifecycle::Lifecycle;
use crate::metrics::NodeMetrics;
use crate::replica::{Replica, ReplicaParts};
use crate::routing::forward::Forwarder;
use crate::secrets::{self, CLUSTER_SECRET_HEADER, ClusterSecret};

/// How long a graceful HTTP shutdown may wait for open connections.
const HTTP_DRAIN: Duration = Duration::from_secs(2);
/// How long a drain waits for gossip to stop counting this node live.
const DRAIN_PLACEMENT_WAIT: Duration = Duration::from_secs(3);
/// How long stopping waits for the node's tasks and the last holders of its state.
const TASK_DRAIN: Duration = Duration::from_secs(15);

/// A running node. Dropping it leaves the node running; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    /// Shared state (for tests and the CLI).
    pub hub: Hub,
    /// Address the HTTP server is bound to.
    pub api_addr: SocketAddr,
    /// The admin token, when this start created it (first start of a new cluster).
    pub admin_token: Option<String>,
    gossip: Arc<Gossip>,
    life: Lifecycle,
    server: JoinHandle<()>,
}

/// Seams a test can put between this node and its peers (the default is the real network).
#[derive(Clone, Default)]
pub struct Wiring {
    /// The fate of this node's messages to its peers (see `cluster::links`).
    pub links: LinkPolicy,
}

/// Starts a node, binding `config.api_addr`.
pub async fn start(config: Config) -> anyhow::Result<NodeHandle> {
    let listener = TcpListener::bind(config.api_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.api_addr))?;
    start_with_listener(config, listener).await
}

/// Starts a node on an already bound HTTP listener (tests bind port 0 first).
pub async fn start_with_listener(config: Config, listener: TcpListener) -> anyhow::Result<NodeHandle> {
    start_wired(config, listener, Wiring::default()).await
}

/// Starts a node on a bound listener with the given [`Wiring`].
pub async fn start_wired(
    mut config: Config,
    listener: TcpListener,
    wiring: Wiring,
) -> anyhow::Result<NodeHandle> {
    config.validate()?;
    let api_addr = listener.local_addr()?;
    if config.advertise_api_addr.is_none() {
        config.advertise_api_addr = Some(api_addr.to_string());
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    crate::cluster::removed::refuse_start(&config.data_dir)?;
    let id = secrets::load_or_create_node_id(&config.data_dir, config.node_id)?;
    let span = tracing::info_span!("node", node = id);
    start_node(config, listener, id, wiring).instrument(span).await
}

async fn start_node(
    config: Config,
    listener: TcpListener,
    id: u64,
    wiring: Wiring,
) -> anyhow::Result<NodeHandle> {
    let api_addr = listener.local_addr()?;
    let secret = ClusterSecret::load_or_create(&config.data_dir, config.cluster_secret.as_deref())?;
    let storage = monsys_raft::open(&config.data_dir, &config.raft).await?;
    let raft_config = Arc::new(config.raft.to_config(&config.cluster_name)?);
    let transport = Arc::new(HttpRaftTransport::new(secret.clone(), wiring.links.clone()));
    let network = NetworkFactory::new(transport.clone(), &config.raft);
    let raft = Raft::new(id, raft_config, network, storage.log, storage.sm).await?;
    tracing::info!(%api_addr, data_dir = %config.data_dir.display(), "raft started");

    let life = Lifecycle::new();
    let elector = Elector::new(id, raft.clone(), transport, &config.raft);
    life.spawn_until_stop(elector.clone().run());
    let gossip = Arc::new(start_gossip(&config, id, &raft).await?);
    let metrics = Arc::new(NodeMetrics::new());
    let forwarder = Forwarder::new(
        Duration::from_millis(config.forward_timeout_ms),
        secret.clone(),
        wiring.links.clone(),
    );
    let replica = Replica::start(
        ReplicaParts {
            id,
            raft: raft.clone(),
            reader: storage.reader,
            live: gossip.watch(),
            forwarder,
            metrics: metrics.clone(),
            elector,
        },
        &life,
    );
    let mailer = crate::mail::from_config(&config).map_err(|e| anyhow::anyhow!("mail configuration: {e}"))?;
    let hub = Hub::new(HubParts {
        replica: replica.clone(),
        config: config.clone(),
        secret,
        metrics: metrics.clone(),
        mailer: Arc::from(mailer),
        life: life.clone(),
    });
    let server = spawn_server(listener, hub.clone(), life.stop.clone());
    seeds::spawn(raft.clone(), gossip.clone(), id, &life);
    crate::auth::touch::spawn_flush(hub.touches.clone(), replica, &life);
    life.spawn(metrics.upkeeper().run(crate::metrics::UPKEEP_EVERY, life.stop.clone()));
    crate::ingest::jobs::spawn(hub.clone());
    if config.auto_finalize_upgrade {
        crate::cluster::upgrade::spawn_auto(hub.replica.clone(), &life);
    }
    let admin_token = bootstrap(&hub).await?;
    Ok(NodeHandle { hub, api_addr, admin_token, gossip, life, server })
}

async fn start_gossip(config: &Config, id: u64, raft: &Raft) -> anyhow::Result<Gossip> {
    let advertise = resolve(&config.advertised_gossip_addr()).await?;
    let mut seeds = config.gossip_seeds.clone();
    let membership = raft.metrics().borrow().membership_config.clone();
    seeds.extend(
        membership.membership().nodes().filter(|(n, _)| **n != id).map(|(_, node)| node.gossip_addr.clone()),
    );
    Gossip::start(GossipSettings {
        raft_id: id,
        listen_addr: config.gossip_addr,
        advertise_addr: advertise,
        api_addr: config.advertised_api_addr(),
        cluster_name: config.cluster_name.clone(),
        seeds,
        interval: Duration::from_millis(config.gossip_interval_ms),
        stall_limit: crate::cluster::gossip::STALL_LIMIT,
    })
    .await
}

fn spawn_server(listener: TcpListener, hub: Hub, stop: CancellationToken) -> JoinHandle<()> {
    let limits = crate::server::ServerLimits {
        header_timeout: Duration::from_millis(hub.config.http_header_timeout_ms),
        per_ip: hub.config.max_connections_per_ip,
        drain: HTTP_DRAIN,
    };
    let app = crate::api::router(hub);
    tokio::spawn(crate::server::serve(listener, app, limits, stop).in_current_span())
}

/// Brings a pristine node into a cluster; returns the admin token if this start created it.
async fn bootstrap(hub: &Hub) -> anyhow::Result<Option<String>> {
    let initialized = hub.replica.raft().is_initialized().await?;
    match (&hub.config.join, initialized) {
        (Some(url), false) => {
            let (joiner, url) = (hub.clone(), url.clone());
            hub.life.spawn_until_stop(async move { join_cluster(&joiner, &url).await });
            Ok(None)
        }
        (None, false) => {
            hub.config.check_admin_token()?;
            let me = self_node(hub);
            tracing::info!("initialising a new single-node cluster");
            hub.replica.raft().initialize(std::collections::BTreeMap::from([(hub.replica.id(), me)])).await?;
            wait_until_leader(hub).await?;
            start_at_newest_version(hub).await?;
            let token = install_admin_token(hub).await?;
            install_enrollment_token(hub).await?;
            Ok(token)
        }
        (_, true) => Ok(None),
    }
}

fn self_node(hub: &Hub) -> Node {
    Node { api_addr: hub.config.advertised_api_addr(), gossip_addr: hub.config.advertised_gossip_addr() }
}

async fn wait_until_leader(hub: &Hub) -> anyhow::Result<()> {
    hub.replica
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .current_leader(hub.replica.id(), "single-node leader")
        .await?;
    Ok(())
}

/// A new cluster starts at the newest cluster version this build runs: it has no member on an
/// older build to wait for. (Committed directly: the gossip view may not list this node yet.)
async fn start_at_newest_version(hub: &Hub) -> anyhow::Result<()> {
    let version = monsys_raft::cluster_version::CLUSTER_VERSION;
    hub.replica.commit(Command::SetClusterVersion { version }).await?;
    tracing::info!(version, "new cluster started at this build's cluster version");
    Ok(())
}

async fn install_admin_token(hub: &Hub) -> anyhow::Result<Option<String>> {
    let token = hub.config.admin_token.clone().unwrap_or_else(|| secrets::random_token("msa_"));
    let result = hub.replica.write(Command::InitAdminToken { sha256: secrets::sha256(&token) }).await?;
    match result {
        CommandResult::Ok => {
            if hub.config.admin_token.is_none() {
                // Not println!: a closed stdout must not take the node down.
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "\n  monsys admin token (shown once, stored hashed):\n\n    {token}\n\n  \
                     Use it as `Authorization: Bearer <token>` or `monsys ctl --token <token>`.\n"
                );
            }
            tracing::info!("admin token installed");
            Ok(Some(token))
        }
        _ => Ok(None),
    }
}

/// Asks the cluster at `url` to add this node; retries while the cluster is busy or electing.
/// Creates the configured enrollment token on first start (automation, containers).
async fn install_enrollment_token(hub: &Hub) -> anyhow::Result<()> {
    let Some(token) = &hub.config.enrollment_token else { return Ok(()) };
    anyhow::ensure!(
        token.starts_with(monsys_proto::agent::ENROLLMENT_TOKEN_PREFIX) && token.len() >= 20,
        "enrollment_token must start with mse_ and have at least 20 characters"
    );
    let now = crate::clock::now_ms();
    let t = monsys_raft::fleet::EnrollmentToken {
        id: "bootstrap".into(),
        tenant: monsys_proto::DEFAULT_TENANT.into(),
        name: "created at first start".into(),
        sha256: secrets::sha256(token),
        created_at_ms: now,
        expires_at_ms: Some(now + 366 * 86_400_000),
        max_uses: None,
        uses: 0,
        revoked: false,
    };
    hub.replica.write(Command::Fleet(monsys_raft::fleet::FleetCommand::CreateEnrollmentToken(t))).await?;
    tracing::info!("enrollment token from the configuration installed");
    Ok(())
}

async fn join_cluster(hub: &Hub, url: &str) {
    let me = self_node(hub);
    let body = monsys_proto::cluster::JoinRequest {
        id: hub.replica.id(),
        api_addr: me.api_addr,
        gossip_addr: me.gossip_addr,
        promote: true,
    };
    let client = reqwest::Client::new();
    let target = format!("{}/api/v1/cluster/members", url.trim_end_matches('/'));
    for attempt in 1..=60u32 {
        let resp = client
            .post(&target)
            .header(CLUSTER_SECRET_HEADER, hub.secret.expose())
            .json(&body)
            .timeout(Duration::from_secs(180))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%url, "joined the cluster");
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::error!(%url, %status, %body, "join refused");
                return;
            }
            Ok(r) => tracing::warn!(%url, status = %r.status(), attempt, "join not accepted yet; retrying"),
            Err(e) => tracing::warn!(%url, error = %e, attempt, "join request failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::error!(%url, "giving up joining the cluster");
}

impl NodeHandle {
    /// Resolves once someone asked this node to drain (`POST /api/v1/cluster/members/{id}/drain`).
    pub async fn drain_requested(&self) {
        self.hub.draining.requested().await
    }

    /// Hands this node's work to the others before it stops (see `cluster::drain`): readiness
    /// and gossip say it is draining, leadership moves away, its actors stop once placement
    /// has moved them. Returns how long it took; call [`NodeHandle::shutdown`] next.
    pub async fn drain(&self) -> Duration {
        let started = tokio::time::Instant::now();
        let hub = &self.hub;
        hub.draining.begin();
        self.gossip.announce_draining().await;
        tracing::info!("draining: announced; waiting for placement to move this node's actors");
        let others = hub.replica.view().members.iter().any(|id| *id != hub.replica.id());
        if !others {
            // a one-node cluster has nobody to hand anything to
            hub.plane.registry.stop_all().await;
            tracing::info!(took_ms = started.elapsed().as_millis() as u64, "drained (no other member)");
            return started.elapsed();
        }
        if hub.replica.is_leader() {
            match hub.replica.transfer_leadership(None).await {
                Ok(t) => tracing::info!(
                    to = t.leader,
                    leaderless_ms = t.leaderless.as_millis() as u64,
                    "draining: leadership handed over"
                ),
                // stopping still works: the others elect a leader after their timeout
                Err(e) => tracing::warn!(error = %e, "draining: leadership could not be handed over"),
            }
        }
        let me = hub.replica.id();
        let gone = crate::cluster::gossip::wait_until(self.gossip.watch(), DRAIN_PLACEMENT_WAIT, |live| {
            !live.contains_key(&me)
        })
        .await;
        if !gone {
            tracing::warn!(
                "this node still counts itself live after {DRAIN_PLACEMENT_WAIT:?}; stopping anyway"
            );
        }
        // peers learn it a gossip round or two later; requests they still send here are forwarded
        tokio::time::sleep(Duration::from_millis(3 * hub.config.gossip_interval_ms)).await;
        hub.plane.registry.stop_all().await;
        let took = started.elapsed();
        tracing::info!(took_ms = took.as_millis() as u64, "drained");
        took
    }

    /// Stops the node and returns once it has let go of everything: the HTTP server (drained
    /// for a bounded time), every task of the node (loops end at once, work in flight within
    /// its own timeout), the agent actors, Raft and gossip. When this returns, the data
    /// directory is released (sled's lock, the WAL), so the same directory can be opened again
    /// at once.
    pub async fn shutdown(self) {
        let NodeHandle { hub, gossip, life, server, .. } = self;
        let started = tokio::time::Instant::now();
        let ms = |since: tokio::time::Instant| since.elapsed().as_millis() as u64;
        life.stop.cancel();
        let abort = server.abort_handle();
        if tokio::time::timeout(HTTP_DRAIN + Duration::from_secs(1), server).await.is_err() {
            abort.abort();
        }
        let http_ms = ms(started);
        hub.plane.registry.stop_all().await;
        // in-flight proposals fail fast once Raft is down instead of waiting out their timeouts
        if let Err(e) = hub.replica.raft().shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let phase = tokio::time::Instant::now();
        life.tasks.close();
        if tokio::time::timeout(TASK_DRAIN, life.tasks.wait()).await.is_err() {
            tracing::warn!(left = life.tasks.len(), "node tasks still running after shutdown");
        }
        let tasks_ms = ms(phase);
        let phase = tokio::time::Instant::now();
        if let Ok(gossip) = Arc::try_unwrap(gossip) {
            gossip.shutdown().await;
        }
        let gossip_ms = ms(phase);
        // the state reader holds the sled trees: wait for the last request that still holds
        // the hub (a connection the drain cut, a socket closing) to let go of it
        let replica = hub.replica.clone();
        drop(hub);
        let phase = tokio::time::Instant::now();
        let deadline = tokio::time::Instant::now() + TASK_DRAIN;
        while replica.holders() > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // where a slow stop spent its time
        tracing::info!(
            http_ms,
            tasks_ms,
            gossip_ms,
            holders_ms = ms(phase),
            took_ms = ms(started),
            "stopped"
        );
        if replica.holders() > 1 {
            tracing::warn!(holders = replica.holders(), "node state still held after shutdown");
        }
    }
}
