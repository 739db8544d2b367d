//! The Raft plane of a node: a runtime of its own and the Raft port, a TCP listener serving
//! peer Raft RPC only.
//!
//! Why: on the HTTP port and the main runtime, Raft RPCs wait in the same queues as client
//! requests. Under a flood of agents on a small machine (10,000 agents registering and then
//! ingesting at once against three hubs on two cores) an append-entries RPC outlived its
//! heartbeat-long deadline, followers heard no leader and the cluster changed leaders again and
//! again. Here the Raft core, its replication tasks, the state machine worker and the Raft port
//! run on a dedicated runtime with one worker thread (`raft-<id>`), scheduled by the OS like any
//! other thread however many client tasks wait on the main runtime; state machine runs go to
//! that runtime's blocking threads.
//!
//! Routes on the Raft port: `POST /internal/v1/raft/{append|vote|snapshot}` with the cluster
//! secret, exactly as on the HTTP port, which keeps serving them for peers of versions without
//! a Raft port and as the fallback when this port cannot be reached (see `raft_transport`).
//! Nothing else is served here, and these requests are not in the HTTP metrics.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::post;
use monsys_raft::Raft;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tracing::Instrument;

use crate::api::internal;
use crate::secrets::ClusterSecret;

/// Largest Raft RPC body (a snapshot chunk plus framing), as on the HTTP port.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The dedicated runtime. Dropping it stops everything running on it, without waiting (it may
/// be dropped from async code).
pub struct RaftRuntime(Option<Runtime>);

impl RaftRuntime {
    /// A runtime with one worker thread named `raft-<node>`.
    pub fn new(node: u64) -> std::io::Result<RaftRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("raft-{node}"))
            .enable_all()
            .build()?;
        Ok(RaftRuntime(Some(rt)))
    }

    /// Where to spawn the Raft plane's tasks.
    pub fn handle(&self) -> &Handle {
        self.0.as_ref().expect("runtime present until drop").handle()
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// State of the Raft port's routes.
#[derive(Clone)]
pub struct RaftPortState {
    /// This node's Raft.
    pub raft: Raft,
    /// The cluster secret peers must present.
    pub secret: ClusterSecret,
}

impl FromRef<RaftPortState> for ClusterSecret {
    fn from_ref(s: &RaftPortState) -> ClusterSecret {
        s.secret.clone()
    }
}

impl FromRef<RaftPortState> for Raft {
    fn from_ref(s: &RaftPortState) -> Raft {
        s.raft.clone()
    }
}

/// Binds the Raft port at `addr` (before anything else starts, so a taken port is a clear
/// startup error).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for Raft RPC on {addr} (TCP; by default the gossip port number, set raft_addr): {e}"
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the Raft port on `rt` until `shutdown` turns true.
pub fn serve(
    rt: &Handle,
    listener: std::net::TcpListener,
    state: RaftPortState,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/internal/v1/raft/{kind}", post(internal::raft_rpc))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    let _guard = rt.enter(); // registers the listener with the Raft runtime's reactor
    let listener = tokio::net::TcpListener::from_std(listener)?;
    rt.spawn(
        async move {
            let graceful = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            });
            if let Err(e) = graceful.await {
                tracing::error!(error = %e, "raft port failed");
            }
        }
        .in_current_span(),
    );
    Ok(())
}
