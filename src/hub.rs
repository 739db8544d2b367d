//! The state every request handler is given: one node's services, each a cheap clone.
//!
//! [`Hub`] is the router's state. It holds sub-states, and handlers name the one they use
//! (axum `FromRef`: `State<Replica>`, `State<Arc<Config>>`, …) or take the whole hub when they
//! need several. It adds no behaviour of its own beyond the owner hint and uptime: writes and
//! reads are the [`Replica`]'s, membership changes [`Membership`]'s, after-the-fact audit
//! events the [`Auditor`]'s, the agent plane the [`AgentPlane`]'s. This module depends only on
//! the services it holds; what takes the whole hub (handlers, extractors, middleware, the
//! leader's background jobs) sits above it, and none of the services depends on it
//! (`scripts/import-graph.py` checks that `src/` has no circle).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRef;
use axum::http::HeaderValue;
use monsys_actors::limits::LimitTable;

use crate::audit::Auditor;
use crate::auth::touch::Touches;
use crate::cluster::drain::Draining;
use crate::cluster::membership::Membership;
use crate::config::Config;
use crate::ingest::AgentPlane;
use crate::lifecycle::Lifecycle;
use crate::mail::Mailer;
use crate::metrics::NodeMetrics;
use crate::replica::Replica;
use crate::routing::forward::Forwarder;
use crate::routing::suspects::Suspects;
use crate::secrets::ClusterSecret;

/// Most rate-limit keys a node keeps.
const MAX_LIMIT_KEYS: usize = 100_000;

/// The services of one node, shared by every request: a handle on [`Services`] (one atomic
/// increment to clone, which every request does a few times).
#[derive(Clone)]
pub struct Hub(Arc<Services>);

impl std::ops::Deref for Hub {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services a [`Hub`] holds, each also usable on its own (`FromRef`).
pub struct Services {
    /// The replicated state: reads, writes, leader checks, index waits.
    pub replica: Replica,
    /// The configuration the node started with.
    pub config: Arc<Config>,
    /// Secret of node-to-node traffic.
    pub secret: ClusterSecret,
    /// Metrics registry of this node.
    pub metrics: Arc<NodeMetrics>,
    /// Client for requests forwarded to the leader or an owner.
    pub forwarder: Forwarder,
    /// Membership changes (leader only).
    pub membership: Membership,
    /// Audit events recorded after the fact.
    pub audit: Auditor,
    /// Outgoing mail.
    pub mailer: Arc<dyn Mailer>,
    /// Rate limiters of the limit keys this node owns.
    pub limits: Arc<LimitTable>,
    /// Session uses seen here, replicated in batches (idle timeout).
    pub touches: Arc<Touches>,
    /// The agent plane (actors, group commit, sockets).
    pub plane: Arc<AgentPlane>,
    /// The node's tasks and stop signal.
    pub life: Lifecycle,
    /// Whether this node drains, and the request to drain it.
    pub draining: Arc<Draining>,
    /// Owners this node found dead before gossip did (placement skips them).
    pub suspects: Suspects,
    /// `x-monsys-owner` value of this node's agents (`config.agent_url()`, checked at start).
    owner_hint: Option<HeaderValue>,
    started: Instant,
}

/// What a [`Hub`] is assembled from.
pub struct HubParts {
    /// The replica, started first.
    pub replica: Replica,
    /// Configuration.
    pub config: Config,
    /// Cluster secret.
    pub secret: ClusterSecret,
    /// Metrics registry.
    pub metrics: Arc<NodeMetrics>,
    /// Outgoing mail.
    pub mailer: Arc<dyn Mailer>,
    /// The node's tasks.
    pub life: Lifecycle,
}

impl Hub {
    /// Assembles a hub and starts the agent plane's group committer.
    pub fn new(p: HubParts) -> Hub {
        let owner_hint = p.config.agent_url().and_then(|url| match HeaderValue::from_str(&url) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(%url, "agent_url is not a valid header value; agents get no owner hint");
                None
            }
        });
        let group = crate::ingest::group::GroupCommitter::start(p.replica.clone(), &p.life);
        Hub(Arc::new(Services {
            membership: Membership::new(p.replica.clone(), p.life.clone(), p.config.data_dir.clone()),
            audit: Auditor::new(p.replica.clone(), p.life.clone()),
            forwarder: p.replica.forwarder().clone(),
            plane: AgentPlane::new(group),
            replica: p.replica,
            config: Arc::new(p.config),
            secret: p.secret,
            metrics: p.metrics,
            mailer: p.mailer,
            limits: Arc::new(LimitTable::new(MAX_LIMIT_KEYS)),
            touches: Arc::default(),
            life: p.life,
            draining: Arc::default(),
            suspects: Suspects::default(),
            owner_hint,
            started: Instant::now(),
        }))
    }

    /// The owner hint this node sends to the agents it owns (`None`: hints are off).
    pub fn owner_hint(&self) -> Option<&HeaderValue> {
        self.owner_hint.as_ref()
    }

    /// Seconds since this node started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Why this node is not ready to serve, if it is not (see `cluster::status`).
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.draining.is_active() {
            return Some("draining: this node is about to stop".into());
        }
        crate::cluster::status::not_ready_reason(
            &self.replica,
            &self.config.data_dir,
            self.config.ready_max_lag_entries,
        )
    }
}

impl FromRef<Hub> for Replica {
    fn from_ref(hub: &Hub) -> Replica {
        hub.replica.clone()
    }
}

impl FromRef<Hub> for Arc<Config> {
    fn from_ref(hub: &Hub) -> Arc<Config> {
        hub.config.clone()
    }
}

impl FromRef<Hub> for Arc<NodeMetrics> {
    fn from_ref(hub: &Hub) -> Arc<NodeMetrics> {
        hub.metrics.clone()
    }
}

impl FromRef<Hub> for Membership {
    fn from_ref(hub: &Hub) -> Membership {
        hub.membership.clone()
    }
}

impl FromRef<Hub> for Arc<AgentPlane> {
    fn from_ref(hub: &Hub) -> Arc<AgentPlane> {
        hub.plane.clone()
    }
}
