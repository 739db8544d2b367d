//! The HTTP API: the one route table of a node.
//!
//! Every node serves the same routes. Route groups:
//! - open: health, readiness, metrics;
//! - admin, local: cluster status, placement lookup;
//! - leader-routed (`routing::leader::to_leader`): settings, membership changes;
//! - internal (`/internal/v1`, cluster secret): Raft RPC, with a larger body limit for snapshot
//!   chunks.
//!
//! Unknown routes answer 404 and wrong methods 405, both with the JSON error body.

pub mod cluster;
pub mod extract;
pub mod health;
pub mod internal;
pub mod observe;
pub mod settings;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};

use crate::error::ApiError;
use crate::hub::Hub;
use crate::routing::leader::to_leader;

/// Largest internal request (a snapshot chunk plus framing).
const INTERNAL_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Builds the router of a node.
pub fn router(hub: Hub) -> Router {
    let leader_routes = Router::new()
        .route("/api/v1/settings", get(settings::get).put(settings::put))
        .route("/api/v1/cluster/members", post(cluster::add))
        .route("/api/v1/cluster/members/{id}", delete(cluster::remove))
        .route("/api/v1/cluster/members/{id}/promote", post(cluster::promote))
        .route_layer(from_fn_with_state(hub.clone(), to_leader));
    let local_routes = Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/cluster", get(cluster::status))
        .route("/api/v1/cluster/placement/{kind}/{key}", get(cluster::placement));
    let internal = Router::new()
        .route("/internal/v1/raft/{kind}", post(internal::raft_rpc))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT));
    let max_body = hub.config.max_body_bytes;
    Router::new()
        .merge(leader_routes.layer(DefaultBodyLimit::max(max_body)))
        .merge(local_routes)
        .merge(internal)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(hub.clone(), observe::observe))
        .with_state(hub)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
