//! Middleware sending leader-bound requests to the Raft leader.
//!
//! Applied to the routes that write replicated state or read it linearizably. On the leader it
//! passes the request through. On a follower it buffers the body (within the body limit) and
//! forwards it to the leader once; a request that already made its hop, or that finds no leader,
//! gets 503 with `Retry-After`. `GET …?consistency=local` is served from local state on any node.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::HOP_HEADER;
use crate::error::ApiError;
use crate::hub::Hub;

/// Routes the request to the leader unless this node is it.
pub async fn to_leader(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    if hub.replica.is_leader() || wants_local_read(&req) {
        return next.run(req).await;
    }
    match forward_to_leader(&hub, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn forward_to_leader(hub: &Hub, req: Request) -> Result<Response, ApiError> {
    if req.headers().contains_key(HOP_HEADER) {
        hub.metrics.forwarded("leader", "refused_second_hop");
        return Err(ApiError::unavailable("leader changed while the request was forwarded"));
    }
    let Some((leader, node)) = hub.replica.leader() else {
        hub.metrics.forwarded("leader", "no_leader");
        return Err(ApiError::unavailable("no leader elected"));
    };
    let (parts, body) = req.into_parts();
    let limit = hub.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge { limit })?;
    tracing::debug!(leader, addr = %node.api_addr, "forwarding to leader");
    let result =
        hub.forwarder.forward(&node.api_addr, &parts, bytes, super::client_ip::client_ip(&parts, hub)).await;
    hub.metrics.forwarded("leader", if result.is_ok() { "ok" } else { "error" });
    result
}

/// `GET` with `consistency=local` (or `stale`) in the query string.
fn wants_local_read(req: &Request<Body>) -> bool {
    req.method() == Method::GET
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "consistency=local" || kv == "consistency=stale"))
}
