//! Routing of actor-keyed requests to the key's owner node.
//!
//! The owner of a key is the rendezvous-hash winner over the live voters (Raft voters that gossip
//! sees alive). Every node computes the same owner from the same view; during churn two nodes
//! may briefly disagree, which the one-hop rule turns into a retryable 503 rather than a loop.

use axum::extract::Request;
use axum::response::Response;
use monsys_actors::{ActorKey, PlacementView};
use monsys_raft::{Node, NodeId};

use super::HOP_HEADER;
use crate::error::ApiError;
use crate::hub::Hub;

/// Where a request for an actor key must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node.
    Local,
    /// On another node.
    Remote(NodeId, Node),
}

/// The current placement view of this node: live voters, epoch = applied index of the
/// membership it was computed from.
pub fn view(hub: &Hub) -> PlacementView {
    hub.replica.view().placement.clone()
}

/// Where `key` lives now, from this node's view.
pub fn place(hub: &Hub, key: &ActorKey) -> Result<Placement, ApiError> {
    let mut view = hub.replica.view();
    if view.placement.owner(key).is_none() {
        view = hub.replica.refresh_view(); // the task may not have caught up yet
    }
    match view.placement.owner(key) {
        None => Err(ApiError::unavailable("no live member to place the request on")),
        Some(id) if id == hub.replica.id() => Ok(Placement::Local),
        Some(id) => Ok(Placement::Remote(id, view.live_voters[&id].clone())),
    }
}

/// Forwards `req` to the remote owner of `key` (one hop), or refuses when it already hopped.
pub async fn forward_to_owner(
    hub: &Hub,
    key: &ActorKey,
    owner: &Node,
    req: Request,
) -> Result<Response, ApiError> {
    if req.headers().contains_key(HOP_HEADER) {
        hub.metrics.forwarded("owner", "refused_second_hop");
        return Err(ApiError::unavailable(format!("owner of {key} is moving; retry")));
    }
    let (parts, body) = req.into_parts();
    let limit = hub.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let result =
        hub.forwarder.forward(&owner.api_addr, &parts, bytes, super::client_ip::client_ip(&parts, hub)).await;
    hub.metrics.forwarded("owner", if result.is_ok() { "ok" } else { "error" });
    result
}
