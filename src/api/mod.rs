//! The HTTP API: the one route table of a node.
//!
//! Every node serves the same routes. Route groups:
//! - open: health, readiness, metrics;
//! - admin, local: cluster status, placement lookup;
//! - leader-routed (`routing::leader::to_leader`): settings, membership changes, agent
//!   registration and every operator route of agents, alerts, rules and audit;
//! - owner-routed (inside the handler, after agent-token auth): ingest and heartbeats;
//! - internal (`/internal/v1`, cluster secret): Raft RPC (with a larger body limit for snapshot
//!   chunks), proposals from followers, index waits, rate-limit checks, the node's own state
//!   (asked before a join) and the removal notice.
//!
//! A declared `Content-Length` over a route's limit is refused at once (`declared_length`).
//!
//! Unknown routes answer 404 and wrong methods 405, both with the JSON error body.

pub mod agent_plane;
pub mod agent_ws;
pub mod agents;
pub mod alerts;
pub mod auth;
pub mod cluster;
pub mod declared_length;
pub mod extract;
pub mod fleet;
pub mod health;
pub mod integrity;
pub mod internal;
pub mod invites;
pub mod live;
pub mod observe;
pub mod settings;
pub mod totp;
pub mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, patch, post, put};

use crate::error::ApiError;
use crate::hub::Hub;
use crate::routing::leader::to_leader;

use self::declared_length::INTERNAL_BODY_LIMIT;

/// Builds the router of a node.
pub fn router(hub: Hub) -> Router {
    let leader_routes = Router::new()
        .route("/api/v1/settings", get(settings::get).put(settings::put))
        .route("/api/v1/cluster/members", post(cluster::add))
        .route("/api/v1/cluster/finalize-upgrade", post(cluster::finalize_upgrade))
        .route("/api/v1/cluster/members/{id}/drain", post(cluster::drain))
        .route("/api/v1/cluster/members/{id}", delete(cluster::remove))
        .route("/api/v1/cluster/members/{id}/promote", post(cluster::promote))
        .route(
            "/api/v1/enrollment-tokens",
            get(agents::list_enrollment_tokens).post(agents::create_enrollment_token),
        )
        .route("/api/v1/enrollment-tokens/{id}", delete(agents::revoke_enrollment_token))
        .route("/api/v1/agents", get(agents::list))
        .route("/api/v1/agents/{id}", get(agents::get).delete(agents::delete))
        .route("/api/v1/agents/{id}/metrics", get(agents::metrics))
        .route("/api/v1/agents/{id}/inventory", get(agents::inventory))
        .route("/api/v1/fleet/top", get(fleet::top))
        .route("/api/v1/fleet/storage", get(fleet::storage))
        .route("/api/v1/agents/{id}/processes", get(agents::processes))
        .route("/api/v1/agents/{id}/rotate-token", post(agents::rotate_token))
        .route("/api/v1/agents/{id}/rotate-signing-key", post(agents::rotate_signing_key))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/{id}/resolve", patch(alerts::resolve))
        .route("/api/v1/alerts/{id}/acknowledge", patch(alerts::acknowledge))
        .route("/api/v1/alert-rules", get(alerts::get_rules).put(alerts::put_rules))
        .route("/api/v1/audit", get(alerts::audit))
        .route("/api/v1/audit/verify", get(alerts::verify_audit))
        .route("/api/v1/auth/register", post(auth::register))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route("/api/v1/auth/me/password", put(auth::change_password))
        .route("/api/v1/ws/ticket", post(live::ticket))
        .route("/api/v1/auth/invitations", post(invites::invite))
        .route("/api/v1/auth/accept-invite", post(invites::accept))
        .route("/api/v1/auth/forgot-password", post(invites::forgot))
        .route("/api/v1/auth/reset-password", post(invites::reset))
        .route("/api/v1/auth/totp/setup", post(totp::setup))
        .route("/api/v1/auth/totp/verify", post(totp::verify))
        .route("/api/v1/auth/totp/disable", post(totp::disable))
        .route("/api/v1/auth/totp/challenge", post(totp::challenge))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/{id}", get(users::get).patch(users::update).delete(users::disable))
        .route("/api/v1/users/{id}/password", put(users::reset_password))
        .route("/api/v1/api-keys", get(users::list_keys).post(users::create_key))
        .route("/api/v1/api-keys/{id}", delete(users::revoke_key))
        .route("/api/v1/roles", get(users::list_roles))
        .route("/api/v1/roles/{id}", put(users::put_role).delete(users::delete_role))
        .route("/api/v1/integrity-anomalies", get(integrity::list))
        .route("/api/v1/integrity-anomalies/{id}/resolve", patch(integrity::resolve))
        .route_layer(from_fn_with_state(hub.clone(), crate::ratelimit::user_endpoints))
        .route("/api/v1/agents/register", post(agent_plane::register))
        .route_layer(from_fn_with_state(hub.clone(), to_leader));
    // actor-keyed: routed to the agent's owner inside the handler (after token auth)
    let owner_routes = Router::new()
        .route("/api/v1/ingest", post(agent_plane::ingest))
        .route("/api/v1/agents/{id}/heartbeat", post(agent_plane::heartbeat))
        .route("/ws/agents/{id}", get(agent_ws::connect))
        .route("/ws/alerts", get(live::alerts));
    let local_routes = Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/cluster", get(cluster::status))
        .route("/api/v1/cluster/placement/{kind}/{key}", get(cluster::placement));
    let internal = Router::new()
        .route("/internal/v1/raft/{kind}", post(internal::raft_rpc))
        .route("/internal/v1/propose", post(internal::propose))
        .route("/internal/v1/wait-applied", post(internal::wait_applied))
        .route("/internal/v1/ratelimit", post(internal::rate_limit))
        .route("/internal/v1/node", get(internal::node_state))
        .route("/internal/v1/removed", post(internal::removed))
        .route("/internal/v1/drain", post(internal::drain))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT));
    let max_body = hub.config.max_body_bytes;
    Router::new()
        .merge(leader_routes.layer(DefaultBodyLimit::max(max_body)))
        .merge(owner_routes)
        .merge(local_routes)
        .merge(internal)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_millis(
            hub.config.http_body_stall_ms,
        )))
        .layer(from_fn_with_state(max_body, declared_length::refuse_oversized))
        .layer(from_fn_with_state(
            observe::Observer { node: hub.replica.id(), metrics: hub.metrics.clone() },
            observe::observe,
        ))
        .with_state(hub)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
