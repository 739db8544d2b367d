//! Routing of actor-keyed requests to the key's owner node.
//!
//! The owner of a key is the rendezvous-hash winner over the live voters (Raft voters that gossip
//! sees alive), skipping the owners this node found dead (see `suspects`). Every node computes
//! the same owner from the same view; during churn two nodes may briefly disagree, which the
//! one-hop rule turns into a retryable 503 rather than a loop.
//!
//! [`route`] is what handlers call: it places the key, forwards when the owner is elsewhere,
//! and when the owner refuses the connection it suspects it and goes to the next owner at once
//! (handing the request back when that is this node).

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use monsys_actors::{ActorKey, PlacementView};
use monsys_raft::{Node, NodeId};

use super::HOP_HEADER;
use super::forward::ForwardFailure;
use super::suspects::SUSPECT_HEADER;
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
    let owner = if hub.suspects.any() {
        let live = hub.replica.live().borrow().clone();
        let ranked = view.placement.ranked(key);
        let alive = ranked.iter().copied().find(|id| {
            *id == hub.replica.id() || !hub.suspects.is_suspected(*id, live.get(id).map(|m| m.generation))
        });
        alive.or_else(|| ranked.first().copied())
    } else {
        view.placement.owner(key)
    };
    match owner {
        None => Err(ApiError::unavailable("no live member to place the request on")),
        Some(id) if id == hub.replica.id() => Ok(Placement::Local),
        Some(id) => Ok(Placement::Remote(id, view.live_voters[&id].clone())),
    }
}

/// What [`route`] did with a request.
pub enum Routed {
    /// This node owns the key: the request, for the handler to serve.
    Local(Request),
    /// Another node owns it and answered (relay this).
    Answered(Response),
}

/// Routes a request for `key`: hands it back when this node owns the key, otherwise forwards
/// it to the owner (one hop). An owner that refuses the connection is suspected (see
/// `suspects`) and the request goes to the next owner at once, carrying the suspicion.
pub async fn route(hub: &Hub, key: &ActorKey, req: Request) -> Result<Routed, ApiError> {
    let (mut parts, body) = req.into_parts();
    note_suspicion(hub, &mut parts);
    let Placement::Remote(id, owner) = place(hub, key)? else {
        return Ok(Routed::Local(Request::from_parts(parts, body)));
    };
    if parts.headers.contains_key(HOP_HEADER) {
        hub.metrics.forwarded("owner", "refused_second_hop");
        return Err(ApiError::unavailable(format!("owner of {key} is moving; retry")));
    }
    let limit = hub.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let client_ip = super::client_ip::client_ip(&parts, hub);
    match hub.forwarder.forward_to(&owner.api_addr, &parts, bytes.clone(), client_ip).await {
        Ok(answer) => {
            hub.metrics.forwarded("owner", "ok");
            Ok(Routed::Answered(answer))
        }
        Err(ForwardFailure::Failed(e)) => {
            hub.metrics.forwarded("owner", "error");
            Err(e)
        }
        Err(ForwardFailure::Refused(e)) => {
            hub.metrics.forwarded("owner", "refused");
            let generation = hub.replica.live().borrow().get(&id).map(|m| m.generation);
            hub.suspects.suspect(id, generation);
            tracing::info!(node = id, %key, "owner refused the connection; suspecting it and trying the next owner");
            match place(hub, key)? {
                Placement::Local => Ok(Routed::Local(Request::from_parts(parts, Body::from(bytes)))),
                Placement::Remote(next, _) if next == id => Err(e),
                Placement::Remote(_, next) => {
                    parts.headers.insert(SUSPECT_HEADER, HeaderValue::from(id));
                    let answer = hub.forwarder.forward(&next.api_addr, &parts, bytes, client_ip).await;
                    hub.metrics.forwarded("owner", if answer.is_ok() { "ok" } else { "error" });
                    answer.map(Routed::Answered)
                }
            }
        }
    }
}

/// Takes the `x-monsys-suspect` header off a request, and notes the suspicion when a peer
/// sent it (with the forwarder secret); a client's own header is ignored.
fn note_suspicion(hub: &Hub, parts: &mut axum::http::request::Parts) {
    let Some(value) = parts.headers.remove(SUSPECT_HEADER) else { return };
    if !super::client_ip::from_peer(parts, hub) {
        return;
    }
    if let Some(id) =
        value.to_str().ok().and_then(|v| v.parse::<NodeId>().ok()).filter(|id| *id != hub.replica.id())
    {
        let generation = hub.replica.live().borrow().get(&id).map(|m| m.generation);
        hub.suspects.suspect(id, generation);
    }
}
